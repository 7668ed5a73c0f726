"""Viser client cameras <-> the project's camera convention (``studio.cameras``).

Viser reports a client camera in world coordinates with OpenCV axes (x right, y down, z forward;
see ``CameraHandle.wxyz`` and the client's ``CameraControls.tsx``): ``wxyz`` is R_world_camera,
``position`` the camera centre, ``fov`` the vertical field of view in radians, ``aspect`` the
canvas width / height. So the camera-to-world matrix is ``[R | position]`` and our viewmat is its
inverse; K follows from the vertical fov with pixel centres at +0.5 and square pixels.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

MIN_SIDE = 32


def quat_to_matrix(wxyz: Sequence[float]) -> np.ndarray:
    """Rotation matrix [3,3] of a (w, x, y, z) quaternion (normalised here)."""
    w, x, y, z = np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(wxyz)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def image_size(aspect: float, long_side: int) -> tuple[int, int]:
    """(width, height) with ``width / height`` close to ``aspect`` and the longer side ``long_side``."""
    long_side = max(int(long_side), MIN_SIDE)
    if aspect >= 1.0:
        return long_side, max(round(long_side / aspect), 1)
    return max(round(long_side * aspect), 1), long_side


def viser_to_opencv(
    wxyz: Sequence[float], position: Sequence[float], fov_y: float, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera viewmat [4,4] (OpenCV) and pinhole K [3,3] of a viser client camera."""
    rot_wc = quat_to_matrix(wxyz)
    viewmat = np.eye(4)
    viewmat[:3, :3] = rot_wc.T
    viewmat[:3, 3] = -rot_wc.T @ np.asarray(position, dtype=np.float64)
    focal = 0.5 * height / math.tan(0.5 * fov_y)
    K = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
    return viewmat, K


def initial_eye(center: np.ndarray, distance: float, up: Sequence[float], elevation_deg: float = 20.0) -> np.ndarray:
    """A camera position ``distance`` from ``center``, raised ``elevation_deg`` above the plane orthogonal to ``up``.

    The horizontal direction is the first world axis (or the second when ``up`` is close to it),
    so with +Z up the camera looks at the scene from +X, as the first turntable frame does.
    """
    up = np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    helper = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    side = helper - (helper @ up) * up
    side /= np.linalg.norm(side)
    el = math.radians(elevation_deg)
    return np.asarray(center, dtype=np.float64) + distance * (math.cos(el) * side + math.sin(el) * up)


def nerfstudio_camera(c2w_opengl, K: np.ndarray, width: int, height: int):
    """Nerfstudio ``Cameras`` (one perspective camera) of a camera-to-world [3,4] (OpenGL axes) and K [3,3].

    ``c2w_opengl`` (array or tensor) is cast to float32; fx, fy, cx, cy are read from ``K``.
    """
    import torch
    from nerfstudio.cameras.cameras import Cameras, CameraType

    c2w = torch.as_tensor(c2w_opengl).to(torch.float32)[None]
    K = np.asarray(K, dtype=np.float64)
    return Cameras(
        camera_to_worlds=c2w,
        fx=float(K[0, 0]),
        fy=float(K[1, 1]),
        cx=float(K[0, 2]),
        cy=float(K[1, 2]),
        width=int(width),
        height=int(height),
        camera_type=CameraType.PERSPECTIVE,
    )
