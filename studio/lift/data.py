"""ToyWorld multi-view training data for the Gaussian predictor (training split only).

Scenes: the first ``n_object`` trainable single-object seeds and the first ``n_multi`` trainable
multi-object seeds (``splits.training_seeds``; every scene is checked again with
``splits.assert_trainable``, so a held-out seed raises ``HeldOutSceneError`` before any rendering).
Each scene is rendered from ``views`` cameras on an arc around the scene centre: elevation
``e0 ~ U(elev_deg)`` (+-``elev_jitter_deg`` per view), azimuths ``a0 + span * k / (views - 1)`` with
``span ~ U(span_deg)``, distance ``cameras.radius_for(bound radius, fov) * U(radius_scale)``, with the
Monte-Carlo renderer at low sample counts (``aa`` primary rays, ``spp`` light samples per pixel),
composited in sRGB on a **white** background. Views are ordered along the arc, so a sample takes
two context views ``i < j`` (``j - i >= 2`` when possible) and 1-2 target views strictly between them
(MVSplat's interpolation setting).

Cameras are stored in the rasterizer's convention: ``viewmats`` world-to-camera with OpenCV axes,
``Ks`` in pixels with pixel centres at +0.5 (square pixels, principal point at the image centre).
``near``/``far`` per scene bound the scene's bounding sphere in every view (world units, view-space z).

The result (:class:`LiftData`) is cached as one compressed ``.npz`` under
``~/.cache/distill-studio/lift-data`` (``$DISTILL_STUDIO_CACHE`` overrides ``~/.cache/distill-studio``),
named by a hash of the :class:`LiftDataConfig`; everything is a pure function of the config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from studio.io import cache

DATA_VERSION = 1
KINDS = ("object", "multi")
_KEYS = ("images", "alpha", "depth", "viewmats", "Ks", "near", "far", "seeds", "kinds", "captions")


@dataclass(frozen=True)
class LiftDataConfig:
    """What to render (the cache key)."""

    n_object: int = 600
    """Trainable single-object seeds (the first ones of the training range)."""
    n_multi: int = 300
    """Trainable multi-object seeds (2-4 objects)."""
    views: int = 5
    res: int = 64
    aa: int = 2
    spp: int = 4
    env: str = "sky"
    fov_deg: float = 40.0
    elev_deg: tuple[float, float] = (0.0, 50.0)
    elev_jitter_deg: float = 5.0
    span_deg: tuple[float, float] = (30.0, 70.0)
    """Azimuth span from the first to the last view (degrees)."""
    radius_scale: tuple[float, float] = (1.0, 1.25)
    start_seed: Optional[int] = None
    """First seed to consider (default: the start of the training range)."""

    def key(self) -> str:
        blob = json.dumps({"v": DATA_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    def filename(self) -> str:
        return (
            f"lift-{self.n_object}o{self.n_multi}m-x{self.views}-r{self.res}-aa{self.aa}-spp{self.spp}-{self.key()}.npz"
        )

    def scenes(self) -> list[tuple[int, str]]:
        """The (seed, kind) pairs of the data set, all in the training split."""
        from studio.scenes.toyworld import splits

        out = [(s, "object") for s in splits.training_seeds(self.n_object, "object", start=self.start_seed)]
        out += [(s, "multi") for s in splits.training_seeds(self.n_multi, "multi", start=self.start_seed)]
        return out


@dataclass
class LiftData:
    """Rendered multi-view scenes (S scenes x V views)."""

    images: np.ndarray  # [S,V,H,W,3] uint8, sRGB on white
    alpha: np.ndarray  # [S,V,H,W] uint8 coverage (255 = object)
    depth: np.ndarray  # [S,V,H,W] float16 view-space z of the centre ray (0 = background)
    viewmats: np.ndarray  # [S,V,4,4] float32 world-to-camera (OpenCV)
    Ks: np.ndarray  # [S,V,3,3] float32
    near: np.ndarray  # [S] float32
    far: np.ndarray  # [S] float32
    seeds: np.ndarray  # [S] int64
    kinds: np.ndarray  # [S] str
    captions: np.ndarray  # [S] str

    @property
    def n_scenes(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_views(self) -> int:
        return int(self.images.shape[1])

    def save(self, path: Path) -> Path:
        arrays = {k: getattr(self, k) for k in _KEYS}
        arrays["kinds"], arrays["captions"] = self.kinds.astype(str), self.captions.astype(str)
        return cache.save_npz(path, arrays)

    @classmethod
    def load(cls, path: Path) -> "LiftData":
        return cls(**cache.load_npz(path, _KEYS))

    def subset(self, index: Sequence[int]) -> "LiftData":
        idx = np.asarray(index)
        return LiftData(**{k: getattr(self, k)[idx] for k in _KEYS})

    def sample(self, scenes: Sequence[int], rng: np.random.Generator, n_targets: int = 2) -> dict[str, Tensor]:
        """A batch: for each scene index, two context views ``i < j`` and ``n_targets`` target views
        between them (with ``views >= 3``; else any views). Returns float32 tensors:
        ``context_images`` [B,2,3,H,W] in [0,1], ``context_viewmats`` [B,2,4,4], ``context_Ks`` [B,2,3,3],
        ``target_images`` [B,T,3,H,W], ``target_alpha`` [B,T,1,H,W], ``target_viewmats``, ``target_Ks``,
        ``near`` [B], ``far`` [B]."""
        V = self.n_views
        ctx, tgt = [], []
        for _ in scenes:
            i, j, t = choose_views(V, n_targets, rng)
            ctx.append([i, j])
            tgt.append(t)
        s = np.asarray(scenes)[:, None]
        ctx_i, tgt_i = np.asarray(ctx), np.asarray(tgt)

        def img(idx):
            return torch.from_numpy(self.images[s, idx]).float().div(255.0).permute(0, 1, 4, 2, 3).contiguous()

        return {
            "context_images": img(ctx_i),
            "context_viewmats": torch.from_numpy(self.viewmats[s, ctx_i]).float(),
            "context_Ks": torch.from_numpy(self.Ks[s, ctx_i]).float(),
            "target_images": img(tgt_i),
            "target_alpha": torch.from_numpy(self.alpha[s, tgt_i]).float().div(255.0)[:, :, None],
            "target_viewmats": torch.from_numpy(self.viewmats[s, tgt_i]).float(),
            "target_Ks": torch.from_numpy(self.Ks[s, tgt_i]).float(),
            "near": torch.from_numpy(self.near[np.asarray(scenes)]).float(),
            "far": torch.from_numpy(self.far[np.asarray(scenes)]).float(),
        }


def choose_views(V: int, n_targets: int, rng: np.random.Generator) -> tuple[int, int, list[int]]:
    """Context pair ``(i, j)``, ``i < j``, and ``n_targets`` targets strictly between them (views are
    ordered along the arc); with fewer than 3 views the targets are drawn from all views."""
    if V < 3:
        i, j = 0, V - 1
        return i, j, [int(t) for t in rng.integers(0, V, n_targets)]
    pairs = [(i, j) for i in range(V) for j in range(i + 2, V)]
    i, j = pairs[int(rng.integers(len(pairs)))]
    inner = np.arange(i + 1, j)
    t = rng.choice(inner, n_targets, replace=len(inner) < n_targets)
    return int(i), int(j), [int(x) for x in t]


def default_cache_dir() -> Path:
    """``~/.cache/distill-studio/lift-data`` (``$DISTILL_STUDIO_CACHE`` replaces the root)."""
    return cache.default_cache_dir("lift-data")


def intrinsics(fov_deg: float, res: int) -> np.ndarray:
    """[3,3] square-pixel pinhole of horizontal field of view ``fov_deg`` on a ``res x res`` grid."""
    f = 0.5 * res / math.tan(0.5 * math.radians(fov_deg))
    return np.array([[f, 0.0, res / 2.0], [0.0, f, res / 2.0], [0.0, 0.0, 1.0]], np.float64)


def opengl_c2w_to_viewmat(c2w: np.ndarray) -> np.ndarray:
    """[4,4] camera-to-world with OpenGL axes (ToyWorld's ``cameras.look_at``) -> world-to-camera OpenCV."""
    return np.linalg.inv(c2w @ np.diag([1.0, -1.0, -1.0, 1.0]))


def render_scene(seed: int, kind: str, cfg: LiftDataConfig) -> dict:
    """Render the ``cfg.views`` arc views of training scene ``(seed, kind)`` (raises
    ``HeldOutSceneError`` for a held-out scene, before rendering)."""
    from studio.scenes.toyworld import cameras, environments, render, splits
    from studio.scenes.toyworld.materials import linear_to_srgb
    from studio.scenes.toyworld.scene import build_geometry, make_scene

    torch.set_num_threads(1)
    splits.assert_trainable(seed, kind)
    desc = make_scene(seed, kind)
    rng = np.random.default_rng([int(seed), KINDS.index(kind), 0x11F7, DATA_VERSION])
    geom = build_geometry(desc)
    env = environments.sampler(cfg.env)
    fov = math.radians(cfg.fov_deg)
    V, R = cfg.views, cfg.res
    e0 = rng.uniform(*cfg.elev_deg)
    a0 = rng.uniform(0.0, 360.0)
    span = rng.uniform(*cfg.span_deg)
    base = cameras.radius_for(geom.radius, fov)
    K = intrinsics(cfg.fov_deg, R)
    out = {k: [] for k in ("images", "alpha", "depth", "viewmats")}
    dists = []
    for v in range(V):
        elev = math.radians(e0 + rng.uniform(-cfg.elev_jitter_deg, cfg.elev_jitter_deg))
        azim = math.radians(a0 + span * v / max(V - 1, 1))
        dist = base * rng.uniform(*cfg.radius_scale)
        d = np.array([math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev)])
        c2w = cameras.look_at(geom.center + dist * d, geom.center)
        r = render.render_view(geom, env, c2w, fov, R, R, cfg.spp, rng, aovs=True, aa=cfg.aa)
        a = r["alpha"][..., None]
        rgb = linear_to_srgb(r["rgb"]) * a + (1.0 - a)
        out["images"].append((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))
        out["alpha"].append((np.clip(r["alpha"], 0, 1) * 255 + 0.5).astype(np.uint8))
        out["depth"].append(r["depth"].astype(np.float16))
        out["viewmats"].append(opengl_c2w_to_viewmat(c2w).astype(np.float32))
        dists.append(dist)
    margin = 1.05 * geom.radius
    return {
        **{k: np.stack(v) for k, v in out.items()},
        "Ks": np.repeat(K[None].astype(np.float32), V, 0),
        "near": np.float32(max(min(dists) - margin, 0.05 * min(dists))),
        "far": np.float32(max(dists) + margin),
        "seed": int(seed),
        "kind": kind,
        "caption": desc["caption"],
    }


def _render_job(args):
    seed, kind, cfg = args
    return render_scene(seed, kind, cfg)


def make_data(
    cfg: LiftDataConfig,
    scenes: Optional[Sequence[tuple[int, str]]] = None,
    workers: int = 2,
    progress: Optional[Callable[[int, int], None]] = None,
) -> LiftData:
    """Render the data set of ``cfg`` (or of the given ``(seed, kind)`` scenes; each must be
    trainable) with ``workers`` processes; ``progress(done, total)`` is called after each scene."""
    from studio.scenes.toyworld import splits

    scenes = cfg.scenes() if scenes is None else [(int(s), str(k)) for s, k in scenes]
    for s, k in scenes:  # fail before any rendering
        if k not in KINDS:
            raise ValueError(f"scene kind must be one of {KINDS}, got {k!r}")
        splits.assert_trainable(s, k)
    results = cache.map_jobs(_render_job, [(s, k, cfg) for s, k in scenes], workers, progress)
    stack = lambda key: np.stack([r[key] for r in results])  # noqa: E731
    return LiftData(
        images=stack("images"),
        alpha=stack("alpha"),
        depth=stack("depth"),
        viewmats=stack("viewmats"),
        Ks=stack("Ks"),
        near=np.array([r["near"] for r in results], np.float32),
        far=np.array([r["far"] for r in results], np.float32),
        seeds=np.array([r["seed"] for r in results], np.int64),
        kinds=np.array([r["kind"] for r in results]),
        captions=np.array([r["caption"] for r in results]),
    )


def load_or_make(
    cfg: LiftDataConfig,
    cache_dir: Optional[Path] = None,
    workers: int = 2,
    log: Callable[[str], None] = print,
    progress: Optional[Callable[[int, int], None]] = None,
) -> LiftData:
    """The cached data set of ``cfg`` (rendered and saved on first use) in ``cache_dir`` (default
    :func:`default_cache_dir`), as ``cfg.filename()``."""
    return cache.load_or_make(
        Path(cache_dir or default_cache_dir()) / cfg.filename(),
        load=LiftData.load,
        make=lambda: make_data(cfg, workers=workers, progress=progress),
        save=LiftData.save,
        what="ToyWorld lift data",
        plan=f"{cfg.n_object} object + {cfg.n_multi} multi-object training scenes x {cfg.views} views at "
        f"{cfg.res}x{cfg.res} (aa {cfg.aa}, spp {cfg.spp}, {workers} workers)",
        count=lambda data: data.n_scenes * data.n_views,
        log=log,
    )
