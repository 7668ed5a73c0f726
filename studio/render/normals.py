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
    h, w = depth.shape[1:3]
    if h < 3 or w < 3:
        return torch.zeros(depth.shape[:3] + (3,), device=depth.device, dtype=depth.dtype)
    ys = torch.arange(h, device=depth.device, dtype=depth.dtype) + 0.5
    xs = torch.arange(w, device=depth.device, dtype=depth.dtype) + 0.5
    fx, fy = Ks[:, 0, 0].view(-1, 1, 1), Ks[:, 1, 1].view(-1, 1, 1)
    cx, cy = Ks[:, 0, 2].view(-1, 1, 1), Ks[:, 1, 2].view(-1, 1, 1)
    z = depth[..., 0]
    points = torch.stack([(xs - cx) / fx * z, (ys[:, None] - cy) / fy * z, z], dim=-1)  # [C,H,W,3]
    dx = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]  # interior pixels [C,H-2,W-2,3]
    dy = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    normal = torch.nn.functional.normalize(torch.linalg.cross(dy, dx, dim=-1), dim=-1)
    normal = torch.where(normal[..., 2:] > 0, -normal, normal)
    solid = alpha[..., 0] > 0.5
    valid = solid[:, 1:-1, 1:-1] & solid[:, :-2, 1:-1] & solid[:, 2:, 1:-1] & solid[:, 1:-1, :-2] & solid[:, 1:-1, 2:]
    normal = normal * valid[..., None].to(normal.dtype)
    return torch.nn.functional.pad(normal, (0, 0, 1, 1, 1, 1))  # zero at the image border
