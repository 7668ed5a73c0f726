"""EWA projection of 3D Gaussians to 2D (Zwicker et al. 2001; 3DGS, Kerbl et al. 2023, Eq. 5).

Follows gsplat 1.4's "classic" projection exactly, so every backend shares one definition:
    cov3d  = R S S^T R^T                                  (R from the normalised quaternion)
    mean_c = W mean + t,  cov_c = W cov3d W^T             (W, t from the world-to-camera viewmat)
    J      = [[fx/z, 0, -fx*tx/z^2], [0, fy/z, -fy*ty/z^2]]
             with tx/z, ty/z clamped to 1.3x the field of view (gsplat's ``persp_proj``)
    cov2d  = J cov_c J^T + eps2d * I                      (the 0.3 px low-pass filter)
    radius = ceil(3 * sqrt(lambda_max(cov2d)))            (integer pixels; not differentiable)
A Gaussian gets radius 0 (culled) when z < near_plane, det(cov2d) <= 0, or its square
[mean - r, mean + r] misses the image. Pixel (row i, col j) has its centre at (j + 0.5, i + 0.5).

This vectorised PyTorch version (autograd gives its backward) is the reference and serves the
``torch`` backend and CUDA tensors; the ``studio`` backend projects float32 CPU tensors with the
fused kernels of ``cuda/gauss_project_cpu.cpp`` (``project_gaussians(..., fused=True)``: same
maths, hand-written backward).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from studio.gaussians.rotation import quat_to_rotmat


class Projected(NamedTuple):
    """Per-camera 2D Gaussians.

    means2d [C,N,2] pixels; conics [C,N,3] upper triangle (a, b, c) of inv(cov2d);
    depths [C,N] view-space z; radii [C,N] int32 pixels (0 = culled).
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """[N,4] quats, [N,3] linear scales -> [N,3,3] world covariances R S S^T R^T."""
    m = quat_to_rotmat(quats) * scales.unsqueeze(-2)
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    eps2d: float = 0.3,
    fused: bool = False,
) -> Projected:
    """Project N Gaussians into C cameras.

    Args:
        means [N,3], quats [N,4], scales [N,3]: world-space Gaussians.
        viewmats [C,4,4]: world-to-camera, OpenCV axes. Ks [C,3,3]: pinhole intrinsics (pixels).
        width, height: image size in pixels. near_plane: view-space z cut. eps2d: low-pass (px^2).
        fused: float32 CPU tensors go to the extension's fused kernels (same maths; other tensors
            always take this PyTorch code).
    Returns:
        ``Projected`` (differentiable in means2d, conics, depths).
    """
    inputs = (means, quats, scales, viewmats, Ks)
    if fused and not any(t.is_cuda or t.dtype != torch.float32 for t in inputs):
        from studio.render._studio_impl import ProjectGaussiansCPU

        return Projected(*ProjectGaussiansCPU.apply(*inputs, width, height, near_plane, eps2d))
    rot = viewmats[:, None, :3, :3]  # [C,1,3,3]
    mean_c = (rot @ means[None, :, :, None]).squeeze(-1) + viewmats[:, None, :3, 3]  # [C,N,3]
    cov_c = rot @ covariance_3d(quats, scales)[None] @ rot.transpose(-1, -2)  # [C,N,3,3]

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C,1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    x, y, z = mean_c.unbind(-1)
    valid_z = z >= near_plane
    z_safe = torch.where(valid_z, z, torch.ones_like(z))
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x / z_safe))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y / z_safe))
    zeros = torch.zeros_like(z_safe)
    jac = torch.stack(
        [fx / z_safe, zeros, -fx * tx / z_safe**2, zeros, fy / z_safe, -fy * ty / z_safe**2], dim=-1
    ).reshape(z.shape + (2, 3))
    cov2d = jac @ cov_c @ jac.transpose(-1, -2)  # [C,N,2,2]
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    valid = valid_z & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], dim=-1)

    with torch.no_grad():
        half_trace = 0.5 * (a + c)
        lam_max = half_trace + torch.sqrt(torch.clamp(half_trace * half_trace - det, min=0.01))
        radius = torch.ceil(3.0 * torch.sqrt(lam_max))
        mx, my = means2d.unbind(-1)
        on_image = (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (my - radius < height)
        keep = valid & on_image & (radius > 0.0)
        radii = torch.where(keep, radius, torch.zeros_like(radius)).to(torch.int32)
    return Projected(means2d=means2d, conics=conics, depths=z, radii=radii)
