"""Plane-sweep cost volume (MVSplat, Chen et al. ECCV 2024, arXiv:2403.14627, Sec. 3.1 "Multi-view depth
estimation", paragraph "Cost volume construction"; equation numbers as in the arXiv version).

For a reference view ``i`` with features ``F^i`` [C,h,w] (1/4 resolution) and another view ``j``:

1. ``D`` depth candidates ``{d_m}`` are sampled uniformly in **inverse depth** between ``near`` and
   ``far`` (:func:`depth_candidates`; m = 0 is ``near``, m = D-1 is ``far``).
2. Plane-sweep warp (the paper's Eq. 1): ``F^{j->i}_{d_m} = W(F^j, P^i, P^j, d_m)``: each reference
   pixel centre is unprojected at depth ``d_m``, projected into view ``j`` and ``F^j`` is sampled
   there bilinearly (:func:`warp_features`; zero outside view ``j`` or behind its camera).
3. Correlation (Eq. 2): ``C^i_{d_m} = F^i . F^{j->i}_{d_m} / sqrt(C)`` (dot product over channels).
4. Stacking the D correlations gives the cost volume ``C^i`` [D,h,w] (Eq. 3). With more than two
   views the correlations with all other views are averaged (as MVSplat does for V > 2).

Cameras follow :func:`studio.render.rasterize`: world-to-camera OpenCV ``viewmats``, ``Ks`` in
pixels of the grid they describe, pixel (row y, col x) centred at (x + 0.5, y + 0.5); use
:func:`scale_intrinsics` to move full-resolution intrinsics to the feature grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def depth_candidates(near: Tensor, far: Tensor, num: int) -> Tensor:
    """``num`` depths uniform in inverse depth from ``near`` (index 0) to ``far`` (index num-1).

    Args:
        near, far: [B] view-space depths (world units), 0 < near < far.
    Returns:
        [B,num] depths (world units).
    """
    t = torch.linspace(0.0, 1.0, num, dtype=near.dtype, device=near.device)
    inv = 1.0 / near[:, None] + t[None] * (1.0 / far[:, None] - 1.0 / near[:, None])
    return 1.0 / inv


def scale_intrinsics(Ks: Tensor, sx: float, sy: float) -> Tensor:
    """Intrinsics of the same camera on a grid resized by ``(sx, sy)`` (e.g. 1/4 for a 1/4-res
    feature map). With pixel centres at +0.5, the whole first two rows scale: ``u' = sx * u``."""
    S = torch.diag(torch.tensor([sx, sy, 1.0], dtype=Ks.dtype, device=Ks.device))
    return S @ Ks


def warp_features(
    feat_src: Tensor,
    viewmat_ref: Tensor,
    K_ref: Tensor,
    viewmat_src: Tensor,
    K_src: Tensor,
    depths: Tensor,
) -> tuple[Tensor, Tensor]:
    """Plane-sweep warp of source-view features into the reference view (the paper's Eq. 1).

    Args:
        feat_src: [B,C,h,w] features of the source view ``j``.
        viewmat_ref, viewmat_src: [B,4,4] world-to-camera (OpenCV).
        K_ref, K_src: [B,3,3] intrinsics on the ``h x w`` grids (reference grid and source grid).
        depths: [B,D] reference-view depth candidates (world units).
    Returns:
        ``warped`` [B,D,C,h,w]: ``F^j`` sampled where the reference pixel at depth ``d_m`` projects;
        ``valid`` [B,D,h,w] (bool): the point lies in front of camera ``j`` and inside its image.
    """
    B, C, h, w = feat_src.shape
    D = depths.shape[1]
    ys = torch.arange(h, dtype=feat_src.dtype, device=feat_src.device) + 0.5
    xs = torch.arange(w, dtype=feat_src.dtype, device=feat_src.device) + 0.5
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    pix = torch.stack([x, y, torch.ones_like(x)], -1).reshape(-1, 3)  # [hw,3]
    rays = pix @ torch.linalg.inv(K_ref).transpose(-1, -2)  # [B,hw,3], z = 1
    rel = viewmat_src @ torch.linalg.inv(viewmat_ref)  # ref camera -> src camera
    R, t = rel[:, :3, :3], rel[:, :3, 3]
    pts = rays[:, None] * depths[:, :, None, None]  # [B,D,hw,3] in the reference camera
    cam = torch.einsum("bij,bdpj->bdpi", R, pts) + t[:, None, None, :]
    uvw = torch.einsum("bij,bdpj->bdpi", K_src, cam)
    z = uvw[..., 2]
    uv = uvw[..., :2] / z.clamp(min=1e-6)[..., None]
    hs, ws = feat_src.shape[-2:]
    grid = torch.stack([2.0 * uv[..., 0] / ws - 1.0, 2.0 * uv[..., 1] / hs - 1.0], -1)  # align_corners=False
    valid = (z > 1e-6) & (grid.abs() <= 1.0).all(-1)
    grid = torch.where(valid[..., None], grid, torch.full_like(grid, 2.0))  # outside: zeros padding
    src = feat_src[:, None].expand(B, D, C, hs, ws).reshape(B * D, C, hs, ws)
    warped = F.grid_sample(
        src, grid.reshape(B * D, h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return warped.reshape(B, D, C, h, w), valid.reshape(B, D, h, w)


def correlation(feat_ref: Tensor, warped: Tensor) -> Tensor:
    """Dot-product correlation over channels, scaled by ``1/sqrt(C)`` (the paper's Eq. 2).

    Args:
        feat_ref: [B,C,h,w]; warped: [B,D,C,h,w].
    Returns:
        [B,D,h,w].
    """
    return (feat_ref[:, None] * warped).sum(2) / math.sqrt(feat_ref.shape[1])


def build_cost_volume(features: Tensor, viewmats: Tensor, Ks: Tensor, depths: Tensor) -> Tensor:
    """Cost volumes of every view against all the others (Eq. 1-3; mean over the other views).

    Args:
        features: [B,V,C,h,w] per-view features (V >= 2).
        viewmats: [B,V,4,4] world-to-camera (OpenCV).
        Ks: [B,V,3,3] intrinsics **on the h x w feature grid** (see :func:`scale_intrinsics`).
        depths: [B,D] depth candidates (:func:`depth_candidates`), shared by all views of an item.
    Returns:
        [B,V,D,h,w] correlation cost volumes (higher = better match).
    """
    B, V = features.shape[:2]
    if V < 2:
        raise ValueError(f"a cost volume needs at least 2 views, got {V}")
    out = []
    for i in range(V):
        acc = 0.0
        for j in range(V):
            if j == i:
                continue
            warped, _ = warp_features(features[:, j], viewmats[:, i], Ks[:, i], viewmats[:, j], Ks[:, j], depths)
            acc = acc + correlation(features[:, i], warped)
        out.append(acc / (V - 1))
    return torch.stack(out, 1)


def expected_inverse_depth(prob: Tensor, depths: Tensor) -> Tensor:
    """Depth from a distribution over candidates as the expected **inverse** depth (MVSplat Sec. 3.1,
    "Depth estimation": softmax over candidates, weighted average).

    Args:
        prob: [B,V,D,h,w] softmax over D; depths: [B,D].
    Returns:
        [B,V,h,w] depth = 1 / sum_m p_m / d_m (world units).
    """
    inv = (prob * (1.0 / depths)[:, None, :, None, None]).sum(2)
    return 1.0 / inv
