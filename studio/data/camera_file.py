"""Camera files given to commands (``--cameras cams.json``): the NeRF-synthetic / Nerfstudio
transforms format without images.

Read: ``camera_angle_x`` (horizontal field of view, radians) or ``fl_x`` (+ ``w``; pixels), and
``frames`` with 4x4 camera-to-world ``transform_matrix`` in OpenGL axes; ``file_path`` is optional.
Cameras come back in the rasterizer's convention (world-to-camera, OpenCV axes) with intrinsics for
a square image of the size the caller renders (the principal point at its centre).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from studio.cameras.convert import intrinsics_from_fov, opengl_c2w_to_viewmat, viewmat_to_opengl_c2w
from studio.data.checks import frames_of, pose_of, read_json
from studio.io.errors import StudioInputError


def field_of_view_deg(meta: dict, source: Path) -> float:
    """Horizontal field of view (degrees) of a transforms file."""
    if "camera_angle_x" in meta:
        angle = meta["camera_angle_x"]
    elif "fl_x" in meta and "w" in meta:
        angle = 2.0 * math.atan(0.5 * float(meta["w"]) / float(meta["fl_x"]))
    else:
        raise StudioInputError(f"{source} gives no field of view (camera_angle_x, or fl_x with w).")
    if not isinstance(angle, (int, float)) or not 0.0 < float(angle) < math.pi:
        raise StudioInputError(f"{source}: the field of view {angle!r} is not an angle in (0, pi) radians.")
    return math.degrees(float(angle))


def read_cameras(path: Path, size: int) -> tuple[Tensor, Tensor]:
    """``viewmats`` [V,4,4] (world-to-camera, OpenCV) and ``Ks`` [V,3,3] (pixels of a ``size`` x
    ``size`` image) of the frames of transforms file ``path``."""
    path = Path(path)
    meta = read_json(path)
    frames = frames_of(meta, path)
    fov = field_of_view_deg(meta, path)
    c2w = torch.from_numpy(np.stack([pose_of(f, i, path) for i, f in enumerate(frames)])).float()
    K = intrinsics_from_fov(fov, size, size)
    return opengl_c2w_to_viewmat(c2w), K.expand(len(frames), 3, 3).clone()


def check_camera_file(path: Path) -> None:
    """Raise :class:`StudioInputError` unless ``path`` is a readable camera file (field of view and
    finite poses)."""
    read_cameras(Path(path), 8)


def write_cameras(path: Path, viewmats: Tensor, fov_deg: float) -> Path:
    """Write cameras ``viewmats`` [V,4,4] (world-to-camera, OpenCV) as a transforms file."""
    from studio.io import atomic_write_text

    c2w = viewmat_to_opengl_c2w(viewmats.detach().cpu().double())
    meta = {
        "camera_angle_x": math.radians(fov_deg),
        "frames": [{"file_path": f"view_{i:03d}", "transform_matrix": m.tolist()} for i, m in enumerate(c2w)],
    }
    atomic_write_text(Path(path), json.dumps(meta, indent=1) + "\n")
    return Path(path)
