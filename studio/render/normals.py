"""Surface normals from an expected-depth map (used for ``RenderOut.normal``)."""

from __future__ import annotations

import torch
from torch import Tensor


def depth_to_normal(depth: Tensor, alpha: Tensor, Ks: Tensor) -> Tensor:
    """Camera-space normals from depth by central differences of back-projected points.

    Args:
        depth: [C,H,W,1] view-space z. alpha: [C,H,W,1] coverage. Ks: [C,3,3] intrinsics.
    Returns:
        [C,H,W,3] unit normals in the camera frame (OpenCV axes), facing the camera (n_z <= 0);
        zero at the image border and unless the pixel and its four neighbours have alpha > 0.5:
        a difference across a silhouette mixes the surface with whatever lies behind it, and
        such a normal, used as a target (e.g. ``prd``'s normal consistency), bends the Gaussians
        along the silhouette.
    """
    n_cams, h, w, _ = depth.shape
    ys = torch.arange(h, device=depth.device, dtype=depth.dtype) + 0.5
    xs = torch.arange(w, device=depth.device, dtype=depth.dtype) + 0.5
    py, px = torch.meshgrid(ys, xs, indexing="ij")
    fx, fy = Ks[:, 0, 0].view(-1, 1, 1), Ks[:, 1, 1].view(-1, 1, 1)
    cx, cy = Ks[:, 0, 2].view(-1, 1, 1), Ks[:, 1, 2].view(-1, 1, 1)
    z = depth[..., 0]
    points = torch.stack([(px - cx) / fx * z, (py - cy) / fy * z, z], dim=-1)  # [C,H,W,3]
    dx = torch.zeros_like(points)
    dy = torch.zeros_like(points)
    dx[:, :, 1:-1] = points[:, :, 2:] - points[:, :, :-2]
    dy[:, 1:-1] = points[:, 2:] - points[:, :-2]
    normal = torch.nn.functional.normalize(torch.cross(dy, dx, dim=-1), dim=-1)
    normal = torch.where(normal[..., 2:] > 0, -normal, normal)
    solid = alpha[..., 0] > 0.5
    valid = torch.zeros_like(solid)
    valid[:, 1:-1, 1:-1] = (
        solid[:, 1:-1, 1:-1] & solid[:, :-2, 1:-1] & solid[:, 2:, 1:-1] & solid[:, 1:-1, :-2] & solid[:, 1:-1, 2:]
    )
    return normal * valid[..., None].to(normal.dtype)
