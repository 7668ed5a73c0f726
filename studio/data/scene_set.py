"""Sets of NeRF-synthetic scenes (``--data DIR``: one scene folder or a folder of them, as ``studio
scenes make`` writes), read at a training resolution: what multi-scene methods (``splat-distill``,
``flashworld``) train on.

A scene's train split is composited over white and resized to a square ``resolution``; its views
carry world-to-camera ``viewmats`` (OpenCV), intrinsics in pixels of the resized image, their
directions from the scene centre and ``near``/``far`` that bound the scene's sphere (``meta.json``
``bounds`` when present, else the sphere the field of view frames at the cameras' mean distance).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from studio.cameras.convert import opengl_c2w_to_viewmat
from studio.data.nerf_synthetic import read_nerf_synthetic
from studio.io.errors import StudioInputError


def _is_scene(path: Path) -> bool:
    return (path / "transforms_train.json").is_file()


def scene_folders(data: Path) -> List[Path]:
    """``data`` itself when it is a NeRF-synthetic scene (``transforms_train.json``), else its
    sub-folders that are (sorted); raises one StudioInputError line when there are none."""
    data = Path(data)
    if not data.is_dir():
        raise StudioInputError(f"--data {data} is not a folder of scenes (or a scene folder).")
    if _is_scene(data):
        return [data]
    found = sorted(p for p in data.iterdir() if p.is_dir() and _is_scene(p))
    if not found:
        raise StudioInputError(
            f"--data {data} holds no NeRF-synthetic scene (a folder with transforms_train.json), e.g. from `studio scenes make`."
        )
    return found


def check_scene_set(data: Path) -> None:
    """Validation of ``--data``: a NeRF-synthetic scene or a folder of them, every split of every
    scene valid (frames, poses, image headers: ``studio.data.formats.validate_dataset``)."""
    from studio.data.formats import validate_dataset

    data = Path(data)
    if (data / "transforms.json").is_file() or data.is_file():
        validate_dataset(data)  # a broken Nerfstudio dataset gets its own message first
        raise StudioInputError(
            f"--data {data} is a Nerfstudio dataset; the method reads NeRF-synthetic scene folders "
            "(transforms_train.json), or a folder of them."
        )
    for scene in scene_folders(data):
        validate_dataset(scene)


@dataclass
class SceneViews:
    """One scene's train split at the training resolution (CPU tensors, V views)."""

    images: Tensor  # [V,3,H,W] float32 in [0,1], over white
    alpha: Tensor  # [V,1,H,W] float32 coverage (1 where no alpha channel)
    viewmats: Tensor  # [V,4,4] world-to-camera (OpenCV)
    Ks: Tensor  # [V,3,3]
    directions: Tensor  # [V,3] unit vectors from the scene centre to the cameras
    near: float
    far: float


def _bounds(root: Path, centres: np.ndarray, fov_x: float) -> Tuple[np.ndarray, float]:
    """(centre [3], radius) of the scene sphere: meta.json's ``bounds``, else the sphere the field of
    view frames at the mean camera distance from the cameras' centroid of look-at (origin)."""
    meta_path = root / "meta.json"
    if meta_path.is_file():
        try:
            b = json.loads(meta_path.read_text(encoding="utf-8"))["bounds"]
            return np.asarray(b["center"], dtype=np.float64), float(b["radius"])
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            pass
    dist = float(np.linalg.norm(centres, axis=1).mean())
    return np.zeros(3), dist * math.sin(0.5 * fov_x)


def load_scene_views(root: Path, resolution: int) -> SceneViews:
    """Read ``root``'s train split at ``resolution`` x ``resolution`` (square images only)."""
    from studio.data.images import over_white, read_image

    frames = read_nerf_synthetic(root, "train")
    if frames.width != frames.height:
        raise StudioInputError(f"{root}: the scene set needs square images, got {frames.width}x{frames.height}.")
    rgba = [read_image(p) for p in frames.image_paths]
    size = (resolution, resolution)

    def resized(arrays: List[np.ndarray]) -> Tensor:
        x = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays]).float()
        return F.interpolate(x, size=size, mode="bilinear", antialias=True).clamp(0, 1).contiguous()

    images = resized([over_white(a) for a in rgba])
    alpha = resized([a[..., 3:4] if a.shape[-1] == 4 else np.ones_like(a[..., :1]) for a in rgba])
    s = resolution / frames.width
    K = torch.tensor([[frames.fx * s, 0.0, frames.cx * s], [0.0, frames.fy * s, frames.cy * s], [0.0, 0.0, 1.0]])
    c2w = torch.from_numpy(frames.camera_to_worlds).double()
    centres = c2w[:, :3, 3].numpy()
    fov_x = 2.0 * math.atan(0.5 * frames.width / frames.fx)
    centre, radius = _bounds(root, centres, fov_x)
    rel = centres - centre
    dist = np.linalg.norm(rel, axis=1)
    return SceneViews(
        images=images,
        alpha=alpha,
        viewmats=opengl_c2w_to_viewmat(c2w).float(),
        Ks=K.expand(len(frames.image_paths), 3, 3).clone(),
        directions=torch.from_numpy(rel / dist[:, None]).float(),
        near=float(max(1e-3, dist.min() - radius)),
        far=float(dist.max() + radius),
    )


def view_angles(directions: Tensor) -> Tensor:
    """[V,V] angles (degrees) between the views' directions [V,3]."""
    return torch.rad2deg(torch.arccos((directions @ directions.T).clamp(-1, 1)))


def scene_caption(root: Path) -> str:
    """The caption in a scene folder's ``meta.json`` (ToyWorld writes one), else ""."""
    meta = Path(root) / "meta.json"
    return json.loads(meta.read_text(encoding="utf-8")).get("caption", "") if meta.is_file() else ""
