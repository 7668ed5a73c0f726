"""Pixel-centre rays of an OpenCV camera (see ``studio.cameras`` for the convention)."""

from __future__ import annotations

import torch
from torch import Tensor


def camera_rays(viewmat: Tensor, K: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """Origins and directions [height*width, 3] (row-major) of the rays through the pixel centres of
    a camera (world-to-camera ``viewmat`` [4,4], intrinsics ``K`` [3,3]), on ``K``'s device.
    Directions are not normalised: each has camera-space z = 1, i.e. it is the world offset per
    unit of view depth."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=K.device),
        torch.arange(width, dtype=torch.float32, device=K.device),
        indexing="ij",
    )
    d_cam = torch.stack([(u + 0.5 - K[0, 2]) / K[0, 0], (v + 0.5 - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)
    rot, t = viewmat[:3, :3], viewmat[:3, 3]
    dirs = d_cam.reshape(-1, 3).to(rot) @ rot  # R^T d for each row
    return (-rot.T @ t).expand_as(dirs), dirs
