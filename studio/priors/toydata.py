"""ToyWorld training data for the embedded priors (training split only).

For each training seed (``splits.training_seeds``; every seed is checked again with
``splits.assert_trainable``, so a held-out seed or caption raises ``HeldOutSceneError``), build the
single-object scene (``make_scene`` + ``build_geometry``) and render ``views`` random views with the
Monte-Carlo renderer at low sample counts (``aa`` primary rays, ``spp`` light samples per pixel),
composited in sRGB on a white background (as NeRF-synthetic loaders do with RGBA images).

Cameras look at the scene centre from elevation ``U(elev_deg)`` and azimuth ``U(0, 2 pi)`` at the
distance where the bounding sphere fits the field of view (``cameras.radius_for``) times
``U(radius_scale)``; elevation/azimuth are radians, the radius in world units. Views of one seed
give ``toy-nvs`` its (reference, target) pairs; ``toy-t2i`` uses every view with its seed's caption.

The result (:class:`ToyData`) is cached as one compressed ``.npz`` (uint8 images
``[S, V, H, W, 3]``, captions ``[S]``, seeds ``[S]``, elevation/azimuth/radius ``[S, V]``) under
``~/.cache/distill-studio/priors-data`` (``$DISTILL_STUDIO_CACHE`` overrides ``~/.cache/distill-studio``),
named by a hash of the :class:`DataConfig`; everything is a pure function of the config.
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

from studio.io import cache

DATA_VERSION = 1
_KEYS = ("images", "captions", "seeds", "elevation", "azimuth", "radius")


@dataclass(frozen=True)
class DataConfig:
    """What to render (the cache key)."""

    n_seeds: int = 2000
    """Training seeds (single objects), the first ``n_seeds`` trainable ones."""
    views: int = 8
    """Random views per seed."""
    res: int = 32
    aa: int = 4
    spp: int = 16
    env: str = "sky"
    fov_deg: float = 40.0
    elev_deg: tuple = (-10.0, 70.0)
    radius_scale: tuple = (1.0, 1.25)
    start_seed: Optional[int] = None
    """First seed to consider (default: the start of the training range)."""

    def key(self) -> str:
        blob = json.dumps({"v": DATA_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    def filename(self) -> str:
        return f"toyworld-{self.n_seeds}x{self.views}-r{self.res}-aa{self.aa}-spp{self.spp}-{self.env}-{self.key()}.npz"


@dataclass
class ToyData:
    images: np.ndarray  # [S, V, H, W, 3] uint8, white background
    captions: np.ndarray  # [S] str
    seeds: np.ndarray  # [S] int64
    elevation: np.ndarray  # [S, V] float32, radians
    azimuth: np.ndarray  # [S, V] float32, radians
    radius: np.ndarray  # [S, V] float32, world units

    @property
    def n_seeds(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_views(self) -> int:
        return int(self.images.shape[1])

    def save(self, path: Path) -> Path:
        arrays = {k: getattr(self, k) for k in _KEYS}
        arrays["captions"] = self.captions.astype(str)
        return cache.save_npz(path, arrays)

    @classmethod
    def load(cls, path: Path) -> "ToyData":
        return cls(**cache.load_npz(path, _KEYS))


def default_cache_dir() -> Path:
    """``~/.cache/distill-studio/priors-data`` (``$DISTILL_STUDIO_CACHE`` replaces the root)."""
    return cache.default_cache_dir("priors-data")


def render_seed(seed: int, cfg: DataConfig) -> dict:
    """Render ``cfg.views`` random views of training scene ``seed`` (raises for a held-out scene)."""
    rng = np.random.default_rng([int(seed), 0x5EED, DATA_VERSION])
    V = cfg.views
    elev = np.radians(rng.uniform(*cfg.elev_deg, V))
    azim = rng.uniform(0.0, 2 * math.pi, V)
    scale = rng.uniform(*cfg.radius_scale, V)
    return render_views(seed, elev, azim, scale, cfg, rng, training=True)


def render_views(
    seed: int, elevation, azimuth, radius_scale, cfg: DataConfig, rng: np.random.Generator, training: bool = True
) -> dict:
    """Render single-object scene ``seed`` from the given elevations/azimuths (radians) and radius
    scales (x the framing distance) -> dict(seed, caption, images [V,H,W,3] uint8 on white,
    elevation, azimuth, radius). With ``training`` (the default) a held-out scene raises
    ``HeldOutSceneError``; evaluation and ``studio prior sample`` pass ``training=False``."""
    import torch

    from studio.scenes.toyworld import cameras, environments, render, splits
    from studio.scenes.toyworld.materials import linear_to_srgb
    from studio.scenes.toyworld.scene import build_geometry, make_scene

    torch.set_num_threads(1)
    desc = make_scene(seed, "object")
    if training:
        splits.assert_trainable(seed, "object")
        if splits.split_of(seed, desc["caption"], desc["category"]) != "train":  # belt and braces
            raise splits.HeldOutSceneError(f"caption {desc['caption']!r} of seed {seed} is held out")
    geom = build_geometry(desc)
    env = environments.sampler(cfg.env)
    fov = math.radians(cfg.fov_deg)
    base = cameras.radius_for(geom.radius, fov)
    elev, azim, scale = (np.atleast_1d(np.asarray(a, np.float64)) for a in (elevation, azimuth, radius_scale))
    elev, azim, scale = np.broadcast_arrays(elev, azim, scale)
    radius = base * scale
    imgs = np.zeros((len(elev), cfg.res, cfg.res, 3), np.uint8)
    for v in range(len(elev)):
        d = np.array([math.cos(elev[v]) * math.cos(azim[v]), math.cos(elev[v]) * math.sin(azim[v]), math.sin(elev[v])])
        c2w = cameras.look_at(geom.center + radius[v] * d, geom.center)
        out = render.render_view(geom, env, c2w, fov, cfg.res, cfg.res, cfg.spp, rng, aovs=False, aa=cfg.aa)
        a = out["alpha"][..., None]
        rgb = linear_to_srgb(out["rgb"]) * a + (1.0 - a)
        imgs[v] = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    return {
        "seed": int(seed),
        "caption": desc["caption"],
        "images": imgs,
        "elevation": elev.astype(np.float32),
        "azimuth": azim.astype(np.float32),
        "radius": radius.astype(np.float32),
    }


def _render_job(args):
    seed, cfg = args
    return render_seed(seed, cfg)


def make_data(
    cfg: DataConfig,
    seeds: Optional[Sequence[int]] = None,
    workers: int = 2,
    progress: Optional[Callable[[int, int], None]] = None,
) -> ToyData:
    """Render the data set of ``cfg`` (or of the given ``seeds``; each must be trainable) with
    ``workers`` processes; ``progress(done, total)`` is called after each seed."""
    from studio.scenes.toyworld import splits

    if seeds is None:
        seeds = splits.training_seeds(cfg.n_seeds, "object", start=cfg.start_seed)
    seeds = [int(s) for s in seeds]
    for s in seeds:  # fail before any rendering
        splits.assert_trainable(s, "object")
    results = cache.map_jobs(_render_job, [(s, cfg) for s in seeds], workers, progress)
    return ToyData(
        images=np.stack([r["images"] for r in results]),
        captions=np.array([r["caption"] for r in results]),
        seeds=np.array([r["seed"] for r in results], np.int64),
        elevation=np.stack([r["elevation"] for r in results]),
        azimuth=np.stack([r["azimuth"] for r in results]),
        radius=np.stack([r["radius"] for r in results]),
    )


def load_or_make(
    cfg: DataConfig,
    cache_dir: Optional[Path] = None,
    workers: int = 2,
    log: Callable[[str], None] = print,
    progress: Optional[Callable[[int, int], None]] = None,
) -> ToyData:
    """The cached data set of ``cfg`` (rendered and saved on first use) in ``cache_dir`` (default
    :func:`default_cache_dir`), as ``cfg.filename()``."""
    return cache.load_or_make(
        Path(cache_dir or default_cache_dir()) / cfg.filename(),
        load=ToyData.load,
        make=lambda: make_data(cfg, workers=workers, progress=progress),
        save=ToyData.save,
        what="ToyWorld prior data",
        plan=f"{cfg.n_seeds} training seeds x {cfg.views} views at {cfg.res}x{cfg.res} "
        f"(aa {cfg.aa}, spp {cfg.spp}, {workers} workers)",
        count=lambda data: data.n_seeds * data.n_views,
        log=log,
    )
