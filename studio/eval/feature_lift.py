"""The ``studio eval feature-lift`` protocol: 3D awareness of frozen 2D features (Probe3D-style).

After "Probing the 3D Awareness of Visual Foundation Models" (El Banani et al., CVPR 2024): a
feature model is frozen, small probes are trained on its dense features of the scenes' *train*
views and scored on the *test* views; multi-view correspondence needs no training. Every model is
measured with the same :class:`ProbeSettings` (module constants below), so numbers of two models
(teacher vs student) compare.

Data: NeRF-synthetic scene folders (or folders of them) whose train and test splits carry
``depth_XXXX.exr`` (view-space z, 0 or >= 1e6 off-object) and ``normal_XXXX.exr`` (world-space
unit normals) beside ``r_XXX.png``, and optionally ``id_XXXX.png`` (16-bit ids, 0 = background):
what ToyWorld (``studio scenes make``) and ``shared/tools/blender_scene.py`` write. Everything is
resampled to the evaluation resolution (longer side ``EVAL_RESOLUTION``): images bilinearly with
antialiasing and composited over white, ground-truth maps by nearest neighbour; the intrinsics
scale with them. Camera-to-world matrices are NeRF-synthetic's (OpenGL axes); pixel (row i,
col j) is centred at (j+0.5, i+0.5) (DESIGN.md "Core interfaces").

Metrics (``evaluate_feature_lift``; image metrics are the mean over test views of per-view values):

* ``depth_rmse`` / ``depth_delta1``: the depth probe's prediction, scaled per image by the
  least-squares scale ``s = sum(p g) / sum(p p)`` over the object pixels, then RMSE (scene units)
  and the fraction of object pixels with ``max(p/g, g/p) < 1.25``.
* ``normal_rmse_deg`` / ``normal_recall_{11,22,30}``: angle between the normal probe's unit normal
  and the true normal in the camera frame (OpenCV axes); per-image RMSE and fraction below
  11.25 / 22.5 / 30 degrees.
* ``corr_recall_{5,10,20}px``: for every ordered pair (A, B) of test views of a scene, up to
  ``CORR_POINTS`` object pixels of A that are visible in B (unprojected with A's depth, projected
  into B, kept when B's depth at that pixel agrees within ``CORR_OCCLUSION_TOL``) are matched to
  the object pixel of B whose bilinearly sampled feature has the highest cosine similarity; recall
  is the fraction of matches within 5/10/20 px of the true projection (evaluation resolution),
  pooled over points. ``corr_recall_10px_by_angle`` bins the 10 px recall by the angle between
  the two viewing rays of the point (``CORR_ANGLE_BINS``); empty bins are None.
* ``seg_miou``: per scene with id maps, a linear probe to the scene's train ids (background
  included as a class), mean IoU over the classes present in its test views (ids unseen in
  training are ignored); mean over those scenes; None without id maps.

Plus ``corr_recall_10px_by_angle``, ``n_scenes``, ``n_test_views`` and ``settings`` (the
:class:`ProbeSettings` used).

Feature models follow ``studio.features.FeatureModel``: ``prepare(images)`` resizes [B,3,H,W] in
[0,1] to a size ``forward`` accepts, ``forward`` returns [B,D,H/p,W/p]. Any object with that
interface works here (this module does not import ``studio.features``).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.io.errors import StudioInputError

# ------------------------------------------------------------------------------ fixed settings
EVAL_RESOLUTION = 128
"""Longer image side (pixels) at which every metric is computed; pixel thresholds refer to it."""
PROBE_HIDDEN = 128
"""Channels of the dense probes: 1x1 conv D->hidden, two residual 3x3 conv units (DPT's
``ResidualConvUnit``) at the feature map's resolution, a 1x1 conv to hidden/4, bilinear upsampling
to the evaluation resolution, a 3x3 output conv (the heavy layers run at patch resolution, so the
protocol fits a CPU)."""
PROBE_STEPS = 1000
"""AdamW steps of every probe (depth, normals, segmentation)."""
PROBE_BATCH = 8
"""Train views per probe step (sampled with replacement by a seeded generator)."""
PROBE_LR = 1e-3
"""Peak learning rate: linear warm-up over the first 10% of steps, cosine decay to 0."""
PROBE_WEIGHT_DECAY = 1e-4
"""AdamW weight decay of the probes."""
PROBE_SEED = 0
"""Seed of probe initialisation, batch order and correspondence point sampling."""
DEPTH_SILOG_LAMBDA = 0.85
"""Depth probe loss: scale-invariant log loss ``mean(d^2) - lambda mean(d)^2``, d = log p - log g
per image (Eigen et al. 2014; 0.85 as in BTS/AdaBins); the probe predicts log depth."""
DEPTH_DELTA = 1.25
"""Ratio threshold of ``depth_delta1``."""
NORMAL_THRESHOLDS_DEG = (11.25, 22.5, 30.0)
"""Angular thresholds of ``normal_recall_{11,22,30}``; the normal probe minimises the mean angle."""
CORR_THRESHOLDS_PX = (5.0, 10.0, 20.0)
"""Pixel thresholds of ``corr_recall_{5,10,20}px``."""
CORR_POINTS = 1000
"""Query points per ordered test-view pair (object pixels of A visible in B, seeded sample)."""
CORR_OCCLUSION_TOL = 0.03
"""A point projected into B is visible when ``|z_B - depth_B| <= tol * z_B`` at its pixel."""
CORR_ANGLE_BINS = (0.0, 30.0, 60.0, 90.0, 180.0)
"""Edges (degrees) of the viewing-angle bins of ``corr_recall_10px_by_angle``."""
FEATURE_BATCH = 8
"""Images per feature-model forward pass."""
BACKGROUND_DEPTH = 1e6
"""Depths at or above this (Blender's background) or <= 0 (ToyWorld's) mark pixels without surface."""

METRIC_KEYS = (
    "depth_rmse",
    "depth_delta1",
    "normal_rmse_deg",
    "normal_recall_11",
    "normal_recall_22",
    "normal_recall_30",
    "corr_recall_5px",
    "corr_recall_10px",
    "corr_recall_20px",
    "seg_miou",
)
"""The headline metrics, in table order."""


@dataclass(frozen=True)
class ProbeSettings:
    """The protocol's settings (defaults: the module constants). Use one instance for every model
    that is compared; tests shrink it."""

    resolution: int = EVAL_RESOLUTION
    hidden: int = PROBE_HIDDEN
    steps: int = PROBE_STEPS
    batch: int = PROBE_BATCH
    lr: float = PROBE_LR
    weight_decay: float = PROBE_WEIGHT_DECAY
    seed: int = PROBE_SEED
    silog_lambda: float = DEPTH_SILOG_LAMBDA
    depth_delta: float = DEPTH_DELTA
    normal_thresholds_deg: tuple[float, ...] = NORMAL_THRESHOLDS_DEG
    corr_thresholds_px: tuple[float, ...] = CORR_THRESHOLDS_PX
    corr_points: int = CORR_POINTS
    corr_occlusion_tol: float = CORR_OCCLUSION_TOL
    corr_angle_bins: tuple[float, ...] = CORR_ANGLE_BINS
    feature_batch: int = FEATURE_BATCH

    def as_dict(self) -> dict:
        """JSON-able copy (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# ------------------------------------------------------------------------------------ data
@dataclass
class SplitViews:
    """One split of one scene at the evaluation resolution (CPU tensors, N views of H x W).

    ``images`` [N,3,H,W] RGB in [0,1] over white; ``depth`` [N,H,W] view-space z in scene units,
    0 where no surface; ``normals`` [N,H,W,3] world-space unit normals, 0 where none; ``ids``
    [N,H,W] int64 id values (0 = background) or None; ``c2w`` [N,4,4] camera-to-world (OpenGL
    axes); ``K`` [3,3] pinhole intrinsics at H x W (pixel centres at +0.5).
    """

    images: Tensor
    depth: Tensor
    normals: Tensor
    ids: Optional[Tensor]
    c2w: Tensor
    K: Tensor

    @property
    def valid(self) -> Tensor:
        """[N,H,W] bool: pixels with a surface (depth > 0)."""
        return self.depth > 0


@dataclass
class Scene:
    """A scene folder's train and test splits."""

    root: Path
    train: SplitViews
    test: SplitViews


def _is_scene(path: Path) -> bool:
    return (path / "transforms_train.json").is_file() and (path / "transforms_test.json").is_file()


def find_scenes(paths: Sequence[Path]) -> List[Path]:
    """Scene folders of ``--data`` values: each is a NeRF-synthetic scene (``transforms_train.json``
    and ``transforms_test.json``) or a folder whose sub-folders (sorted) include such scenes."""
    if not paths:
        raise StudioInputError("no scene folder given.")
    scenes: List[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise StudioInputError(f"scene folder {path} does not exist or is not a folder.")
        found = [path] if _is_scene(path) else sorted(p for p in path.iterdir() if p.is_dir() and _is_scene(p))
        if not found:
            raise StudioInputError(
                f"{path} is neither a NeRF-synthetic scene folder (transforms_train.json + transforms_test.json) "
                "nor a folder of them."
            )
        scenes += [p for p in found if p not in scenes]
    return scenes


def aov_path(image_path: Path, name: str, fallback_index: int, suffix: str) -> Path:
    """The AOV ``<name>_XXXX<suffix>`` beside ``image_path`` (``r_007.png`` -> index 7; a name
    without a trailing number uses ``fallback_index``, its position in the split)."""
    image_path = Path(image_path)
    m = re.search(r"(\d+)$", image_path.stem)
    index = int(m.group(1)) if m else fallback_index
    return image_path.parent / f"{name}_{index:04d}{suffix}"


def check_scene_aovs(root: Path, splits: Sequence[str] = ("train", "test")) -> None:
    """Raise one StudioInputError sentence when a split of scene ``root`` lacks depth/normal EXRs
    (names the folder and the missing files) or one of them has a bad header. Reads headers only."""
    from studio.data.nerf_synthetic import read_nerf_synthetic
    from studio.io.headers import check_exr

    for split in splits:
        frames = read_nerf_synthetic(Path(root), split)
        missing: Dict[str, List[Path]] = {"depth": [], "normal": []}
        for k, image in enumerate(frames.image_paths):
            for name in missing:
                path = aov_path(image, name, k, ".exr")
                if path.is_file():
                    check_exr(path, f"{name} AOV")
                else:
                    missing[name].append(path)
        lacking = {name: paths for name, paths in missing.items() if paths}
        if lacking:
            what = " and ".join(f"{len(p)} {name}_XXXX.exr" for name, p in lacking.items())
            first = next(iter(lacking.values()))[0]
            raise StudioInputError(
                f"scene folder {root} lacks {what} AOVs in its {split} split (e.g. {first}); feature-lift needs "
                "depth and normal EXRs as written by `studio scenes make` or shared/tools/blender_scene.py."
            )


def eval_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(W', H') with the longer side ``resolution`` and the aspect ratio kept (rounded)."""
    scale = resolution / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """[N,C,H,W] -> [N,C,h,w]; ``nearest`` samples the source pixel under each target centre."""
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest-exact")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _read_exr(path: Path) -> np.ndarray:
    from studio.pbr.envmap import read_envmap

    try:
        return np.asarray(read_envmap(path), np.float32)
    except OSError as err:
        raise StudioInputError(f"AOV {path} cannot be decoded ({' '.join(str(err).split())[:200]}).") from None


def _read_ids(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, ValueError):
        raise StudioInputError(f"id map {path} cannot be read.") from None
    return (arr[..., 0] if arr.ndim == 3 else arr).astype(np.int64)


def load_split(root: Path, split: str, resolution: int = EVAL_RESOLUTION) -> SplitViews:
    """Read one split of a scene with its AOVs at the evaluation resolution (see
    :class:`SplitViews`). ``id_XXXX.png`` are used only when every view has one."""
    from studio.data.nerf_synthetic import read_nerf_synthetic
    from studio.eval.inverse import over_white, read_image

    root = Path(root)
    check_scene_aovs(root, (split,))
    frames = read_nerf_synthetic(root, split)
    W, H = eval_size(frames.width, frames.height, resolution)
    images, depths, normals, ids = [], [], [], []
    id_paths = [aov_path(p, "id", k, ".png") for k, p in enumerate(frames.image_paths)]
    with_ids = all(p.is_file() for p in id_paths)
    for k, path in enumerate(frames.image_paths):
        images.append(torch.from_numpy(over_white(read_image(path))).permute(2, 0, 1))
        depth = _read_exr(aov_path(path, "depth", k, ".exr"))[..., 0]
        normal = _read_exr(aov_path(path, "normal", k, ".exr"))[..., :3]
        if depth.shape != (frames.height, frames.width) or normal.shape[:2] != depth.shape:
            raise StudioInputError(f"the AOVs of {path} are not {frames.width}x{frames.height} like the image.")
        surface = np.isfinite(depth) & (depth > 0) & (depth < BACKGROUND_DEPTH)
        surface &= np.isfinite(normal).all(-1) & (np.linalg.norm(np.nan_to_num(normal), axis=-1) > 0.5)
        depths.append(torch.from_numpy(np.where(surface, depth, 0.0).astype(np.float32)))
        unit = normal / np.maximum(np.linalg.norm(np.nan_to_num(normal), axis=-1, keepdims=True), 1e-8)
        normals.append(torch.from_numpy(np.where(surface[..., None], unit, 0.0).astype(np.float32)))
        if with_ids:
            id_map = _read_ids(id_paths[k])
            if id_map.shape != depth.shape:
                raise StudioInputError(f"id map {id_paths[k]} is not {frames.width}x{frames.height} like the image.")
            ids.append(torch.from_numpy(id_map))
    size = (H, W)
    images_t = _resize(torch.stack(images).float(), size, "bilinear").clamp(0, 1)
    depth_t = _resize(torch.stack(depths)[:, None], size, "nearest")[:, 0]
    normal_t = _resize(torch.stack(normals).permute(0, 3, 1, 2), size, "nearest").permute(0, 2, 3, 1)
    ids_t = _resize(torch.stack(ids)[:, None].double(), size, "nearest")[:, 0].long() if with_ids else None
    sx, sy = W / frames.width, H / frames.height
    K = torch.tensor(
        [[frames.fx * sx, 0.0, frames.cx * sx], [0.0, frames.fy * sy, frames.cy * sy], [0.0, 0.0, 1.0]],
        dtype=torch.float32,
    )
    c2w = torch.from_numpy(frames.camera_to_worlds).float()
    return SplitViews(images_t.contiguous(), depth_t.contiguous(), normal_t.contiguous(), ids_t, c2w, K)


def load_scene(root: Path, resolution: int = EVAL_RESOLUTION) -> Scene:
    """Both splits of a scene folder (checks the AOVs of both before reading any data)."""
    check_scene_aovs(Path(root))
    return Scene(Path(root), load_split(root, "train", resolution), load_split(root, "test", resolution))


# -------------------------------------------------------------------------------- geometry
_GL_TO_CV = torch.tensor([1.0, -1.0, -1.0])


def camera_normals(normals: Tensor, c2w: Tensor) -> Tensor:
    """World normals [N,H,W,3] -> camera-frame normals with OpenCV axes (x right, y down, z
    forward), given camera-to-world [N,4,4] with OpenGL axes. Zero vectors stay zero."""
    R = c2w[:, :3, :3].to(normals)
    return torch.einsum("nhwk,nkc->nhwc", normals, R) * _GL_TO_CV.to(normals)


def unproject(uv: Tensor, z: Tensor, K: Tensor, c2w: Tensor) -> Tensor:
    """Pixel positions ``uv`` [P,2] (x, y in pixels, centres at +0.5) with view-space depth ``z`` [P]
    -> world points [P,3], for one camera (``K`` [3,3], ``c2w`` [4,4] OpenGL axes)."""
    x = (uv[:, 0] - K[0, 2]) / K[0, 0] * z
    y = (uv[:, 1] - K[1, 2]) / K[1, 1] * z
    cam_cv = torch.stack([x, y, z], -1)
    cam_gl = cam_cv * _GL_TO_CV.to(cam_cv)
    return cam_gl @ c2w[:3, :3].T.to(cam_gl) + c2w[:3, 3].to(cam_gl)


def project(points: Tensor, K: Tensor, c2w: Tensor) -> tuple[Tensor, Tensor]:
    """World points [P,3] -> (pixel positions [P,2], view-space depth z [P]; z <= 0 is behind)."""
    cam_gl = (points - c2w[:3, 3].to(points)) @ c2w[:3, :3].to(points)
    cam_cv = cam_gl * _GL_TO_CV.to(points)
    z = cam_cv[:, 2]
    zs = torch.where(z.abs() > 1e-8, z, torch.full_like(z, 1e-8))
    uv = torch.stack([K[0, 0] * cam_cv[:, 0] / zs + K[0, 2], K[1, 1] * cam_cv[:, 1] / zs + K[1, 2]], -1)
    return uv, z


def pixel_centres(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(flat indices [P], pixel-centre positions [P,2] as (x, y)) of the True pixels of ``mask`` [H,W]."""
    W = mask.shape[1]
    flat = torch.nonzero(mask.reshape(-1), as_tuple=False)[:, 0]
    uv = torch.stack([(flat % W).float() + 0.5, (flat // W).float() + 0.5], -1)
    return flat, uv


def visible_in(points: Tensor, depth_b: Tensor, K: Tensor, c2w_b: Tensor, tol: float) -> tuple[Tensor, Tensor]:
    """(uv in B [P,2], visible [P] bool) of world ``points`` [P,3] in view B with depth map
    ``depth_b`` [H,W]: in front, inside the image, and within ``tol * z`` of B's depth there."""
    H, W = depth_b.shape
    uv, z = project(points, K, c2w_b)
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    col = uv[:, 0].floor().long().clamp(0, W - 1)
    row = uv[:, 1].floor().long().clamp(0, H - 1)
    seen = depth_b[row, col]
    return uv, inside & (seen > 0) & ((seen - z).abs() <= tol * z.abs())


def sample_features(features: Tensor, uv: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear samples [P,D] of a feature map [D,h,w] covering an image of ``size`` (H, W) at
    pixel positions ``uv`` [P,2] of that image."""
    H, W = size
    grid = torch.stack([uv[:, 0] / W * 2 - 1, uv[:, 1] / H * 2 - 1], -1).to(features)
    out = F.grid_sample(features[None].float(), grid[None, None], mode="bilinear", align_corners=False)
    return out[0, :, 0].T


# ---------------------------------------------------------------------------------- metrics
def align_depth_scale(pred: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """``pred`` [N,H,W] times the per-image least-squares scale ``sum(p g) / sum(p p)`` over
    ``mask`` (images without mask pixels or with zero prediction keep scale 1)."""
    m = mask.to(pred.dtype)
    num = (pred * gt * m).sum((1, 2))
    den = (pred * pred * m).sum((1, 2))
    scale = torch.where(den > 0, num / den.clamp(min=1e-12), torch.ones_like(den))
    return pred * scale[:, None, None]


def depth_metrics(pred: Tensor, gt: Tensor, mask: Tensor, delta: float = DEPTH_DELTA) -> Dict[str, float]:
    """{"rmse", "delta1"}: means over images (with mask pixels) of the per-image RMSE and
    ``max(p/g, g/p) < delta`` fraction after scale alignment; depths [N,H,W], mask [N,H,W]."""
    aligned = align_depth_scale(pred.float(), gt.float(), mask)
    rmse, d1 = [], []
    for p, g, m in zip(aligned, gt.float(), mask):
        if not m.any():
            continue
        p, g = p[m], g[m]
        rmse.append(float(torch.sqrt(torch.mean((p - g) ** 2))))
        ratio = torch.maximum(p / g.clamp(min=1e-9), g / p.clamp(min=1e-9))
        d1.append(float((ratio < delta).float().mean()))
    return {"rmse": _mean(rmse), "delta1": _mean(d1)}


def angular_error_deg(pred: Tensor, gt: Tensor) -> Tensor:
    """Angles in degrees between vectors [...,3] (both normalised here)."""
    cos = (F.normalize(pred.float(), dim=-1) * F.normalize(gt.float(), dim=-1)).sum(-1)
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


def normal_metrics(
    pred: Tensor, gt: Tensor, mask: Tensor, thresholds: Sequence[float] = NORMAL_THRESHOLDS_DEG
) -> Dict[str, float]:
    """{"rmse_deg", "recall_<t>" per threshold}: means over images of the per-image angular RMSE
    and fraction of mask pixels below each threshold; normals [N,H,W,3], mask [N,H,W]."""
    err = angular_error_deg(pred, gt)
    rows: Dict[str, List[float]] = {"rmse_deg": [], **{f"recall_{t:g}": [] for t in thresholds}}
    for e, m in zip(err, mask):
        if not m.any():
            continue
        e = e[m]
        rows["rmse_deg"].append(float(torch.sqrt(torch.mean(e**2))))
        for t in thresholds:
            rows[f"recall_{t:g}"].append(float((e < t).float().mean()))
    return {k: _mean(v) for k, v in rows.items()}


def mean_iou(pred: Tensor, gt: Tensor, n_classes: int) -> Optional[float]:
    """Mean IoU over classes ``0..n_classes-1`` with a non-empty union; ``gt`` < 0 is ignored.
    ``pred`` and ``gt`` are integer tensors of one shape. None when no class occurs."""
    keep = gt >= 0
    p, g = pred[keep], gt[keep]
    ious = []
    for c in range(n_classes):
        inter = ((p == c) & (g == c)).sum()
        union = ((p == c) | (g == c)).sum()
        if union > 0:
            ious.append(float(inter) / float(union))
    return _mean(ious)


def correspondence_metrics(
    errors: Tensor,
    angles: Tensor,
    thresholds: Sequence[float] = CORR_THRESHOLDS_PX,
    bins: Sequence[float] = CORR_ANGLE_BINS,
    binned_threshold: float = 10.0,
) -> Dict[str, object]:
    """{"recall_<t>px": fraction of ``errors`` [P] (pixels) below t, "by_angle": {bin label:
    recall at ``binned_threshold`` of the points whose ``angles`` [P] (degrees) fall in the bin}}.
    Bin labels are "a-b" and "a+" for the last one; empty bins and empty inputs give None."""
    out: Dict[str, object] = {}
    for t in thresholds:
        out[f"recall_{t:g}px"] = float((errors < t).float().mean()) if errors.numel() else None
    by_angle: Dict[str, Optional[float]] = {}
    for k, (lo, hi) in enumerate(zip(bins[:-1], bins[1:])):
        last = k == len(bins) - 2
        label = f"{lo:g}+" if last and hi >= 180 else f"{lo:g}-{hi:g}"
        inside = (angles >= lo) & ((angles <= hi) if last else (angles < hi))
        by_angle[label] = float((errors[inside] < binned_threshold).float().mean()) if inside.any() else None
    out["by_angle"] = by_angle
    return out


def _mean(values: Sequence[float]) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


# ---------------------------------------------------------------------------------- features
@torch.no_grad()
def extract_features(model: nn.Module, images: Tensor, batch: int = FEATURE_BATCH) -> Tensor:
    """Frozen features [N,D,h,w] (float32, CPU) of ``images`` [N,3,H,W] in [0,1]: ``model.prepare``
    then ``model(...)`` in batches, on the model's device."""
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    model.eval()
    out = []
    for start in range(0, len(images), batch):
        x = model.prepare(images[start : start + batch].to(device))
        f = model(x)
        if f.dim() != 4 or f.shape[0] != x.shape[0] or f.shape[1] != model.dim:
            raise ValueError(
                f"feature model {getattr(model, 'name', '?')} returned {list(f.shape)}, expected [B,{model.dim},h,w]."
            )
        out.append(f.detach().float().cpu())
    return torch.cat(out)


# ------------------------------------------------------------------------------------ probes
class ResidualConvUnit(nn.Module):
    """DPT's residual unit: x + conv3x3(relu(conv3x3(relu(x))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class DenseProbe(nn.Module):
    """Features [B,D,h,w] -> per-pixel outputs [B,C,H,W] (see ``PROBE_HIDDEN``)."""

    def __init__(self, dim: int, out_channels: int, hidden: int, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)
        self.inp = nn.Conv2d(dim, hidden, 1)
        self.blocks = nn.Sequential(ResidualConvUnit(hidden), ResidualConvUnit(hidden))
        self.reduce = nn.Conv2d(hidden, max(1, hidden // 4), 1)
        self.out = nn.Conv2d(max(1, hidden // 4), out_channels, 3, padding=1)

    def forward(self, features: Tensor) -> Tensor:
        x = self.reduce(F.relu(self.blocks(self.inp(features))))
        x = F.interpolate(F.relu(x), size=self.size, mode="bilinear", align_corners=False)
        return self.out(x)


class LinearProbe(nn.Module):
    """Features [B,D,h,w] -> logits [B,C,H,W]: a 1x1 conv, bilinearly upsampled."""

    def __init__(self, dim: int, out_channels: int, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)
        self.conv = nn.Conv2d(dim, out_channels, 1)

    def forward(self, features: Tensor) -> Tensor:
        return F.interpolate(self.conv(features), size=self.size, mode="bilinear", align_corners=False)


def silog_loss(pred_log: Tensor, depth: Tensor, lam: float = DEPTH_SILOG_LAMBDA) -> Tensor:
    """Scale-invariant log loss of predicted log depth [B,1,H,W] against depth [B,H,W] (0 = no
    surface): per image ``mean(d^2) - lam mean(d)^2`` over its surface pixels, mean over images."""
    m = (depth > 0).float()
    d = (pred_log[:, 0] - torch.log(depth.clamp(min=1e-6))) * m
    n = m.sum((1, 2)).clamp(min=1)
    per = (d**2).sum((1, 2)) / n - lam * (d.sum((1, 2)) / n) ** 2
    return per[m.sum((1, 2)) > 0].mean() if (m.sum((1, 2)) > 0).any() else pred_log.sum() * 0


def angular_loss(pred: Tensor, normals: Tensor) -> Tensor:
    """Mean angle (radians) between predicted [B,3,H,W] and true normals [B,H,W,3] (zero = none)."""
    m = normals.norm(dim=-1) > 0.5
    if not m.any():
        return pred.sum() * 0
    cos = (F.normalize(pred.permute(0, 2, 3, 1), dim=-1) * normals).sum(-1)[m]
    return torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6)).mean()


def fit_probe(
    probe: nn.Module,
    features: Tensor,
    targets: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    settings: ProbeSettings,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Train ``probe`` on frozen ``features`` [N,D,h,w] against ``targets`` [N,...] with AdamW
    (``settings``: steps, batch, lr with warm-up + cosine, weight decay, seed). Returns it in eval mode."""
    probe.to(device).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warm = max(1, settings.steps // 10)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, settings.steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(settings.seed)
    for _ in range(settings.steps):
        idx = torch.randint(len(features), (min(settings.batch, len(features)),), generator=gen)
        loss = loss_fn(probe(features[idx].to(device)), targets[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return probe.eval()


@torch.no_grad()
def _predict(probe: nn.Module, features: Tensor, batch: int, device) -> Tensor:
    return torch.cat([probe(features[i : i + batch].to(device)).float().cpu() for i in range(0, len(features), batch)])


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# ------------------------------------------------------------------------------ the protocol
def depth_normal_probes(
    train_feats: Tensor,
    train: SplitViews,
    test_feats: Tensor,
    test: SplitViews,
    settings: ProbeSettings,
    device: str | torch.device = "cpu",
) -> Dict[str, Optional[float]]:
    """Train the depth and normal probes on (features, ground truth) of ``train`` views and score
    them on ``test`` (splits possibly concatenated over scenes). Returns the depth_* and normal_*
    metric keys."""
    size = tuple(train.depth.shape[-2:])
    dim = train_feats.shape[1]
    depth_probe = _seeded(settings.seed, lambda: DenseProbe(dim, 1, settings.hidden, size))
    fit_probe(
        depth_probe, train_feats, train.depth, lambda p, t: silog_loss(p, t, settings.silog_lambda), settings, device
    )
    pred_depth = torch.exp(_predict(depth_probe, test_feats, settings.batch, device)[:, 0].clamp(-20, 20))
    d = depth_metrics(pred_depth, test.depth, test.valid, settings.depth_delta)

    normal_probe = _seeded(settings.seed + 1, lambda: DenseProbe(dim, 3, settings.hidden, size))
    fit_probe(normal_probe, train_feats, camera_normals(train.normals, train.c2w), angular_loss, settings, device)
    pred_normal = _predict(normal_probe, test_feats, settings.batch, device).permute(0, 2, 3, 1)
    n = normal_metrics(pred_normal, camera_normals(test.normals, test.c2w), test.valid, settings.normal_thresholds_deg)
    t11, t22, t30 = settings.normal_thresholds_deg[:3]
    return {
        "depth_rmse": d["rmse"],
        "depth_delta1": d["delta1"],
        "normal_rmse_deg": n["rmse_deg"],
        "normal_recall_11": n[f"recall_{t11:g}"],
        "normal_recall_22": n[f"recall_{t22:g}"],
        "normal_recall_30": n[f"recall_{t30:g}"],
    }


def segmentation_miou(
    train_feats: Tensor,
    train: SplitViews,
    test_feats: Tensor,
    test: SplitViews,
    settings: ProbeSettings,
    device: str | torch.device = "cpu",
) -> Optional[float]:
    """mIoU of a linear probe from features to the id classes of one scene (classes: the id values
    of its train views; test pixels of other ids ignored). None without id maps."""
    if train.ids is None or test.ids is None:
        return None
    classes = torch.unique(train.ids)
    lookup = {int(v): k for k, v in enumerate(classes)}

    def to_class(ids: Tensor) -> Tensor:
        out = torch.full_like(ids, -1)
        for value, k in lookup.items():
            out[ids == value] = k
        return out

    probe = _seeded(settings.seed + 2, lambda: LinearProbe(train_feats.shape[1], len(classes), train.ids.shape[-2:]))
    fit_probe(
        probe,
        train_feats,
        to_class(train.ids),
        lambda p, t: F.cross_entropy(p, t, ignore_index=-1),
        settings,
        device,
    )
    pred = _predict(probe, test_feats, settings.batch, device).argmax(1)
    return mean_iou(pred, to_class(test.ids), len(classes))


def correspondence_errors(
    feats: Tensor, views: SplitViews, settings: ProbeSettings, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(pixel errors [P], viewing-angle differences in degrees [P]) of nearest-neighbour matches
    over every ordered pair of ``views`` (one scene) with features ``feats`` [N,D,h,w] (see the
    module docstring, ``corr_recall_*``)."""
    N, (H, W) = len(views.depth), views.depth.shape[-2:]
    centres = [pixel_centres(views.valid[i]) for i in range(N)]
    normed = []
    for i in range(N):
        normed.append(F.normalize(sample_features(feats[i], centres[i][1], (H, W)), dim=-1))
    errors, angles = [], []
    for a in range(N):
        flat_a, uv_a = centres[a]
        if not len(flat_a):
            continue
        points = unproject(uv_a, views.depth[a].reshape(-1)[flat_a], views.K, views.c2w[a])
        for b in range(N):
            if b == a or not len(centres[b][0]):
                continue
            uv_b, vis = visible_in(points, views.depth[b], views.K, views.c2w[b], settings.corr_occlusion_tol)
            idx = torch.nonzero(vis, as_tuple=False)[:, 0]
            if len(idx) > settings.corr_points:
                idx = idx[torch.randperm(len(idx), generator=generator)[: settings.corr_points]]
            if not len(idx):
                continue
            sim = normed[a][idx] @ normed[b].T  # [P, M] cosine similarities
            best = sim.argmax(1)
            errors.append((centres[b][1][best] - uv_b[idx]).norm(dim=-1))
            ray_a = points[idx] - views.c2w[a, :3, 3]
            ray_b = points[idx] - views.c2w[b, :3, 3]
            angles.append(angular_error_deg(ray_a, ray_b))
    if not errors:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(errors), torch.cat(angles)


def evaluate_feature_lift(
    model: nn.Module,
    data: Sequence[Path],
    settings: ProbeSettings = ProbeSettings(),
    device: str | torch.device = "cpu",
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, object]:
    """The whole protocol (module docstring) for one frozen feature ``model`` over the scene folders
    of ``data`` (see :func:`find_scenes`). Depth/normal probes are trained once on the train views
    of all scenes (which must share one evaluation size); segmentation probes per scene.

    Returns ``METRIC_KEYS`` + ``corr_recall_10px_by_angle``, ``n_scenes``, ``n_test_views``,
    ``settings``. ``progress`` receives a line per phase and, at the end, the wall seconds of each."""
    say = progress or (lambda _msg: None)
    roots = find_scenes(data)
    for root in roots:
        check_scene_aovs(root)
    t0 = time.perf_counter()
    seconds: Dict[str, float] = {}
    scenes = []
    for root in roots:
        say(f"loading {root}")
        scenes.append(load_scene(root, settings.resolution))
    sizes = {tuple(s.train.depth.shape[-2:]) for s in scenes} | {tuple(s.test.depth.shape[-2:]) for s in scenes}
    if len(sizes) != 1:
        raise StudioInputError(
            f"the scenes of --data have different image aspect ratios ({sorted(sizes)} at the evaluation size); "
            "evaluate them separately."
        )
    seconds["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("extracting features")
    train_feats = [extract_features(model, s.train.images, settings.feature_batch) for s in scenes]
    test_feats = [extract_features(model, s.test.images, settings.feature_batch) for s in scenes]
    seconds["features"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("training depth and normal probes")
    metrics: Dict[str, object] = depth_normal_probes(
        torch.cat(train_feats),
        _concat([s.train for s in scenes]),
        torch.cat(test_feats),
        _concat([s.test for s in scenes]),
        settings,
        device,
    )
    seconds["depth_normal_probes"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("correspondence")
    gen = torch.Generator().manual_seed(settings.seed)
    errs, angs = zip(*(correspondence_errors(f, s.test, settings, gen) for f, s in zip(test_feats, scenes)))
    corr = correspondence_metrics(
        torch.cat(errs), torch.cat(angs), settings.corr_thresholds_px, settings.corr_angle_bins
    )
    t5, t10, t20 = settings.corr_thresholds_px[:3]
    metrics.update(
        corr_recall_5px=corr[f"recall_{t5:g}px"],
        corr_recall_10px=corr[f"recall_{t10:g}px"],
        corr_recall_20px=corr[f"recall_{t20:g}px"],
    )
    by_angle = correspondence_metrics(
        torch.cat(errs), torch.cat(angs), (), settings.corr_angle_bins, binned_threshold=t10
    )["by_angle"]
    seconds["correspondence"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("segmentation probes")
    mious = [
        segmentation_miou(tr, s.train, te, s.test, settings, device)
        for tr, te, s in zip(train_feats, test_feats, scenes)
    ]
    metrics["seg_miou"] = _mean([m for m in mious if m is not None])
    seconds["segmentation"] = time.perf_counter() - t0

    out: Dict[str, object] = {key: metrics[key] for key in METRIC_KEYS}
    out["corr_recall_10px_by_angle"] = by_angle
    out["n_scenes"] = len(scenes)
    out["n_test_views"] = int(sum(len(s.test.depth) for s in scenes))
    out["settings"] = settings.as_dict()
    say("done (seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()) + ")")
    return out


def _concat(splits: Sequence[SplitViews]) -> SplitViews:
    """Views of several splits as one (ids dropped unless every split has them; K of the first)."""
    ids = [s.ids for s in splits]
    return SplitViews(
        images=torch.cat([s.images for s in splits]),
        depth=torch.cat([s.depth for s in splits]),
        normals=torch.cat([s.normals for s in splits]),
        ids=torch.cat(ids) if all(i is not None for i in ids) else None,
        c2w=torch.cat([s.c2w for s in splits]),
        K=splits[0].K,
    )
