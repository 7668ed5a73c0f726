"""Feature-lift geometry: camera-frame normals, unprojection/projection (NeRF-synthetic OpenGL
camera-to-world, OpenCV pixel axes), pixel centres, visibility in another view and bilinear
feature sampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

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
