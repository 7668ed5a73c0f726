"""Nerfstudio ``Cameras`` -> (viewmats, Ks) in the rasterizer's convention."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from studio.cameras.convert import opengl_c2w_to_viewmat


def cameras_to_viewmats(cameras: Any) -> tuple[Tensor, Tensor, int, int]:
    """Convert a batch of Nerfstudio perspective cameras (all of one size).

    Args:
        cameras: ``nerfstudio.cameras.cameras.Cameras`` with C cameras (camera-to-world, OpenGL).
    Returns:
        viewmats [C,4,4] world-to-camera (OpenCV), Ks [C,3,3], width, height (pixels).
    """
    c2w = cameras.camera_to_worlds.reshape(-1, 3, 4)
    viewmats = opengl_c2w_to_viewmat(c2w)
    n = c2w.shape[0]
    Ks = torch.zeros(n, 3, 3, device=c2w.device, dtype=c2w.dtype)
    Ks[:, 0, 0] = cameras.fx.reshape(-1)
    Ks[:, 1, 1] = cameras.fy.reshape(-1)
    Ks[:, 0, 2] = cameras.cx.reshape(-1)
    Ks[:, 1, 2] = cameras.cy.reshape(-1)
    Ks[:, 2, 2] = 1.0
    return viewmats, Ks, int(cameras.width.reshape(-1)[0]), int(cameras.height.reshape(-1)[0])


def camera_extent(camera_to_worlds: Tensor) -> float:
    """3DGS scene extent: 1.1 x the largest distance of a camera centre from their mean (1 if none)."""
    centers = camera_to_worlds[..., :3, 3].reshape(-1, 3)
    if centers.shape[0] == 0:
        return 1.0
    return 1.1 * float((centers - centers.mean(0)).norm(dim=-1).max().clamp(min=1e-6))


def nerfstudio_cameras(viewmats: Tensor, K: Tensor, size: int) -> Any:
    """Nerfstudio ``Cameras`` (OpenGL camera-to-world) of viewmats [C,4,4] (OpenCV) sharing K [3,3],
    ``size`` x ``size`` pixels (Nerfstudio is imported here, so importing this module stays light)."""
    from nerfstudio.cameras.cameras import Cameras

    from studio.cameras.convert import viewmat_to_opengl_c2w

    return Cameras(
        camera_to_worlds=viewmat_to_opengl_c2w(viewmats)[:, :3, :4],
        fx=float(K[0, 0]),
        fy=float(K[1, 1]),
        cx=float(K[0, 2]),
        cy=float(K[1, 2]),
        width=size,
        height=size,
    )
