"""Interactive rendering of ``prd`` (Progressive Radiance Distillation) runs for viser clients.

``PRDRenderer`` offers ``GaussianRenderer``'s interface to ``studio.viewer.app`` (``render(viewmat,
K, width, height, mode) -> uint8 [H,W,3]``, cameras in the input data's world frame, OpenCV axes)
and renders with ``PRDModel.render_gbuffers``. The modes are the PRD channels (``PRD_CHANNELS``),
with ``p_x`` the splatted progress and ``I_radiance`` the radiance field's image over the background:

* ``pbr`` (the default): the PBR image alone, shaded under the chosen light, over the background
  by the coverage: what relighting shows and ``studio eval prd`` scores (``render_relit``); it
  does not depend on the radiance field;
* ``radiance_residual``: ``(1 - p_x) * I_radiance``, the part of the composite that is baked under
  the training light and does not follow the chosen one (the background where ``p_x = 0``);
* ``composite``: PRD Eq. 5, ``p_x * I_pbr + (1 - p_x) * I_radiance`` (the ``pbr`` part under the
  chosen light plus the un-relit residual: the training image under the learned light, a
  mixture of two lights under any other);
* ``radiance`` (the radiance field), ``albedo`` (linear, shown sRGB-encoded), ``roughness``,
  ``metallic``, ``normal`` (world, shown as n/2 + 1/2) and ``progress`` (p_x).

Straight-colour channels are composited over the model's background by the coverage.

The PBR shading uses the learned light (``LEARNED_ENV``) or an equirect .exr/.hdr file (Blender's
convention, ``studio.pbr.envmap``), rotated about the world up axis +Z by ``rotation_deg``,
counter-clockwise seen from +Z: the rotated environment seen along ``d`` is the original one seen
along ``Rz(-angle) d`` (for an equirect image that is a roll of its columns by ``-angle/360*W``,
since ``u = 0.5 - atan2(y, x) / 2pi``). The cube light is resampled directly at its texel
directions (rotation and the run's dataparser rotation folded in), and cached per (source, angle).

The model lives in Nerfstudio's dataparser frame ``x_dp = s (A x + b)``; cameras, normals and
light directions are mapped between it and the world frame here.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

PRD_CHANNELS = (
    "pbr",
    "radiance_residual",
    "composite",
    "radiance",
    "albedo",
    "roughness",
    "metallic",
    "normal",
    "progress",
)
LEARNED_ENV = "learned"
FILE_LIGHT_RESOLUTION = 32
BLENDER_STUDIOLIGHTS = Path("/usr/share/blender/datafiles/studiolights/world")
ENVMAP_SUFFIXES = (".exr", ".hdr")
_MAX_ENV_WIDTH = 1024  # equirect files are box-filtered down to this width first (keeps suns' energy)
_LIGHT_CACHE_SIZE = 16


def is_prd_config(path: Path) -> bool:
    """Whether ``path`` is a run's config.yml of a relighting method (``studio.models.registry``;
    read with the restricted loader)."""
    path = Path(path)
    if path.suffix.lower() not in (".yml", ".yaml"):
        return False
    from studio.io.config_loader import load_trainer_config
    from studio.models.registry import relighting_methods

    try:
        return getattr(load_trainer_config(path), "method_name", None) in relighting_methods()
    except Exception:  # noqa: BLE001 - not a readable run config: the Gaussian path reports the error
        return False


def dataset_dir(config) -> Optional[Path]:
    """The dataset folder of a trainer config (``data`` or the dataparser's), if it exists."""
    candidates = [getattr(config, "data", None)]
    try:
        candidates.append(config.pipeline.datamanager.dataparser.data)
    except AttributeError:
        pass
    for data in candidates:
        if data is None:
            continue
        data = Path(data)
        if data.is_file():
            data = data.parent
        if data.is_dir():
            return data
    return None


def list_envmaps(data_dir: Optional[Path], studiolights: Path = BLENDER_STUDIOLIGHTS) -> "OrderedDict[str, Path]":
    """Environment maps to offer: label -> file.

    The dataset's meta.json ``env`` (the training light) and ``relight`` entries (``file`` relative
    to the dataset folder), then Blender's studio lights (``studiolights/*.exr``) when present.
    Missing files are left out.
    """
    found: "OrderedDict[str, Path]" = OrderedDict()
    if data_dir is not None and (Path(data_dir) / "meta.json").is_file():
        try:
            meta = json.loads((Path(data_dir) / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        entries = []
        if isinstance(meta.get("env"), dict):
            entries.append(meta["env"])
        if isinstance(meta.get("relight"), list):
            entries.extend(e for e in meta["relight"] if isinstance(e, dict))
        for entry in entries:
            file = entry.get("file")
            if not isinstance(file, str):
                continue
            path = (Path(data_dir) / file).resolve()
            if path.is_file() and path.suffix.lower() in ENVMAP_SUFFIXES and path not in found.values():
                found[f"dataset: {entry.get('name') or path.stem}"] = path
    if studiolights.is_dir():
        for path in sorted(studiolights.glob("*.exr")):
            if path.resolve() not in found.values():
                found[f"blender: {path.stem}"] = path.resolve()
    return found


def rotation_z(angle_deg: float) -> torch.Tensor:
    """[3,3] rotation about +Z, counter-clockwise seen from +Z (x -> y for 90 degrees)."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float32)


def _downsample_equirect(image: torch.Tensor, max_width: int = _MAX_ENV_WIDTH) -> torch.Tensor:
    """Box-filter an equirect [H,W,3] by an integer factor so its width is at most ``max_width``."""
    H, W, _ = image.shape
    k = math.ceil(W / max_width)
    if k <= 1:
        return image
    H2, W2 = (H // k) * k, (W // k) * k
    x = image[:H2, :W2].permute(2, 0, 1)[None]
    return F.avg_pool2d(x, k)[0].permute(1, 2, 0).contiguous()


def _resample_cube(lookup, resolution: int, to_source: torch.Tensor, supersample: int) -> torch.Tensor:
    """Cube [6,R,R,3] whose texel direction ``d`` holds ``lookup(d @ to_source.T)``, box-averaged over ``supersample^2``."""
    from studio.pbr.cubemap import _face_dir

    n = resolution * supersample
    c = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2.0 - 1.0
    tc, sc = torch.meshgrid(c, c, indexing="ij")
    faces = []
    for f in range(6):
        d = _face_dir(f, sc, tc)
        d = d / d.norm(dim=-1, keepdim=True)
        vals = lookup(d @ to_source.T).permute(2, 0, 1)[None]
        faces.append((F.avg_pool2d(vals, supersample) if supersample > 1 else vals)[0].permute(1, 2, 0))
    return torch.stack(faces).contiguous()


def _light_from_cube(cube: torch.Tensor, like) -> "CubemapLight":  # noqa: F821
    from studio.pbr.cubemap import CubemapLight

    light = CubemapLight(
        cube.shape[1],
        roughness_levels=like.roughness_levels if like is not None else (0.0, 0.125, 0.25, 0.5, 0.75, 1.0),
        learnable=False,
    )
    with torch.no_grad():
        light.log_radiance.copy_(cube.clamp(min=1e-4).log())
    return light


class PRDRenderer:
    """Renders a prd run into single cameras as uint8 RGB images [H,W,3] (module docstring)."""

    modes = PRD_CHANNELS

    def __init__(
        self, model, transform: torch.Tensor, scale: float, envmaps: Optional["OrderedDict[str, Path]"] = None
    ):
        self.model = model
        self.device = (
            next(iter(model.parameters())).device if any(True for _ in model.parameters()) else torch.device("cpu")
        )
        mat = torch.as_tensor(transform, dtype=torch.float64)
        self.rotation = mat[:3, :3]  # A: world -> dataparser rotation
        self.translation = mat[:3, 3]
        self.scale = float(scale)
        self.envmaps = envmaps if envmaps is not None else OrderedDict()
        self.env: str = LEARNED_ENV  # LEARNED_ENV or a file path
        self.rotation_deg: float = 0.0
        self._lights: "OrderedDict[tuple, object]" = OrderedDict()
        self._images: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()  # one render at a time
        self._cache_lock = threading.Lock()  # the light cache (GUI threads build lights while a render runs)

    @classmethod
    def from_config(cls, config_path: Path, backend: str = "auto", device: Optional[str] = None) -> "PRDRenderer":
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        from studio.models.runs import load_run

        run = load_run(config_path, device, backend=None if backend == "auto" else backend)
        return cls(run.model, run.transform, run.scale, list_envmaps(dataset_dir(run.config)))

    # ---- environment -------------------------------------------------------------------------
    def set_environment(self, env: Optional[str] = None, rotation_deg: Optional[float] = None) -> None:
        """Choose the light (``LEARNED_ENV`` or an .exr/.hdr path) and/or its rotation about +Z (degrees).

        Raises ``FileNotFoundError``/``OSError`` (and keeps the previous light) when a file cannot be read.
        """
        new_env = (
            self.env if env is None else (LEARNED_ENV if env in ("", LEARNED_ENV) else str(Path(env).expanduser()))
        )
        new_rot = self.rotation_deg if rotation_deg is None else float(rotation_deg)
        self.light(new_env, new_rot)  # validate (and cache) before switching
        self.env, self.rotation_deg = new_env, new_rot

    def _equirect(self, path: str) -> torch.Tensor:
        if path not in self._images:
            from studio.pbr.envmap import read_envmap

            image = torch.as_tensor(read_envmap(path), dtype=torch.float32)
            self._images[path] = _downsample_equirect(image)
        return self._images[path]

    def light(self, env: str, rotation_deg: float):
        """The CubemapLight for (env, rotation) in the model's frame; None = the learned light unrotated."""
        angle = float(rotation_deg) % 360.0
        angle = 0.0 if math.isclose(angle, 360.0) or abs(angle) < 1e-6 else angle
        key = (env, round(angle, 4))
        if env == LEARNED_ENV and key[1] == 0.0 and self._identity_frame():
            return None
        with self._cache_lock:
            if key in self._lights:
                self._lights.move_to_end(key)
                return self._lights[key]
        A = self.rotation.to(torch.float32)
        # cube direction d (model frame) -> world A^T d -> unrotated world Rz(-angle) A^T d
        to_world_source = rotation_z(-angle) @ A.T
        learned = self.model.light
        with torch.no_grad():
            if env == LEARNED_ENV:
                radiance = learned.radiance().detach().cpu().float()
                from studio.pbr.cubemap import cube_lookup

                cube = _resample_cube(lambda d: cube_lookup(radiance, d), radiance.shape[1], A @ to_world_source, 2)
            else:
                from studio.pbr.envmap import sample_equirect

                image = self._equirect(env)
                ss = max(1, min(16, math.ceil(image.shape[1] / (4 * FILE_LIGHT_RESOLUTION))))
                cube = _resample_cube(lambda d: sample_equirect(image, d), FILE_LIGHT_RESOLUTION, to_world_source, ss)
        light = _light_from_cube(cube, learned).to(self.device)
        with self._cache_lock:
            self._lights[key] = light
            while len(self._lights) > _LIGHT_CACHE_SIZE:
                self._lights.popitem(last=False)
        return light

    def _identity_frame(self) -> bool:
        return bool(torch.allclose(self.rotation, torch.eye(3, dtype=self.rotation.dtype), atol=1e-6))

    # ---- rendering ---------------------------------------------------------------------------
    def camera(self, viewmat: np.ndarray, K: np.ndarray, width: int, height: int):
        """Nerfstudio ``Cameras`` (dataparser frame, OpenGL axes) of a world viewmat (OpenCV) and K."""
        from studio.viewer.camera import nerfstudio_camera

        c2w = np.linalg.inv(np.asarray(viewmat, dtype=np.float64))
        A, b = self.rotation.numpy(), self.translation.numpy()
        rot = A @ c2w[:3, :3] @ np.diag([1.0, -1.0, -1.0])  # OpenCV -> OpenGL camera axes
        center = self.scale * (A @ c2w[:3, 3] + b)
        return nerfstudio_camera(np.concatenate([rot, center[:, None]], axis=1), K, width, height)

    def render_channels(self, viewmat: np.ndarray, K: np.ndarray, width: int, height: int) -> dict[str, np.ndarray]:
        """Every channel of ``PRD_CHANNELS`` as a display image, float32 [H,W,3] in [0,1]."""
        from studio.pbr.tonemap import linear_to_srgb

        light = self.light(self.env, self.rotation_deg)
        camera = self.camera(viewmat, K, width, height)
        with self._lock, torch.no_grad():
            out = self.model.render_gbuffers(camera, light=light)
        acc = out["accumulation"]
        bg = out["background"].to(acc).reshape(1, 1, -1)

        def over(straight: torch.Tensor) -> torch.Tensor:
            if straight.shape[-1] == 1:
                straight = straight.expand(-1, -1, 3)
            return straight.clamp(0.0, 1.0) * acc + (1.0 - acc) * bg

        normal_world = out["normal"] @ self.rotation.to(out["normal"])  # A^T n for each row n
        progress = out["progress"].clamp(0.0, 1.0)
        images = {
            "pbr": over(out["pbr"]),
            "radiance_residual": (1.0 - progress) * over(out["radiance"]),
            "composite": out["rgb"],
            "radiance": over(out["radiance"]),
            "albedo": over(linear_to_srgb(out["albedo"].clamp(0.0, 1.0))),
            "roughness": over(out["roughness"]),
            "metallic": over(out["metallic"]),
            "normal": over(normal_world * 0.5 + 0.5),
            "progress": progress.expand(-1, -1, 3),
        }
        return {k: v.clamp(0.0, 1.0).float().cpu().numpy() for k, v in images.items()}

    def render(self, viewmat: np.ndarray, K: np.ndarray, width: int, height: int, mode: str = "pbr") -> np.ndarray:
        """Image of channel ``mode`` (one of ``PRD_CHANNELS``) seen by (viewmat [4,4], K [3,3])."""
        if mode not in PRD_CHANNELS:
            raise ValueError(f"Unknown render mode {mode!r}; choose one of {PRD_CHANNELS}.")
        image = self.render_channels(viewmat, K, width, height)[mode]
        return (image * 255.0 + 0.5).astype(np.uint8)
