"""Feature-lift data: scene discovery, AOV checks and loading the splits of NeRF-synthetic scenes
(images, depth, normals, ids, cameras) at the evaluation resolution."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from studio.eval.feature_lift.settings import BACKGROUND_DEPTH, EVAL_RESOLUTION
from studio.io.errors import StudioInputError


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
