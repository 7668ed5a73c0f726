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


def plucker_raymaps(viewmats: Tensor, Ks: Tensor, height: int, width: int) -> Tensor:
    """Plücker coordinates of the ray through every pixel centre (Plücker 1865; the camera
    conditioning of CAT3D and FlashWorld).

    Args:
        viewmats: [...,4,4] world-to-camera (OpenCV); Ks: [...,3,3] intrinsics in pixels for a
            ``height x width`` image.
    Returns:
        [...,6,height,width]: unit direction ``d`` (world frame) then moment ``o x d`` (``o`` the
        camera centre, world units), channels first.
    """
    v, u = torch.meshgrid(
        torch.arange(height, dtype=Ks.dtype, device=Ks.device) + 0.5,
        torch.arange(width, dtype=Ks.dtype, device=Ks.device) + 0.5,
        indexing="ij",
    )
    pix = torch.stack([u, v, torch.ones_like(u)], -1)  # [H,W,3]
    d_cam = torch.einsum("...ij,hwj->...hwi", torch.linalg.inv(Ks), pix)
    rot, t = viewmats[..., :3, :3], viewmats[..., :3, 3]
    d = torch.nn.functional.normalize(torch.einsum("...ji,...hwj->...hwi", rot, d_cam), dim=-1)  # R^T d_cam
    origin = -torch.einsum("...ji,...j->...i", rot, t)  # -R^T t
    moment = torch.cross(origin[..., None, None, :].expand_as(d), d, dim=-1)
    return torch.cat([d, moment], -1).movedim(-1, -3)


def relative_to_first(viewmats: Tensor) -> Tensor:
    """[B,V,4,4] world-to-camera matrices re-expressed in the frame of view 0 (view 0 becomes the
    identity), the reference frame in which multi-view priors read their Plücker raymaps."""
    return viewmats @ torch.linalg.inv(viewmats[:, :1])
