"""Opacity field of a Gaussian scene on a voxel grid (for density-level mesh extraction).

``D(x) = sum_i o_i exp(-0.5 (x - mu_i)^T Sigma_i^-1 (x - mu_i))`` with ``Sigma_i = R_i S_i^2 R_i^T``,
each Gaussian evaluated where its Mahalanobis distance is below ``n_sigma``, within ``MAX_RADIUS``
voxels of its centre (larger blobs are cut there). DreamGaussian's mesh extraction thresholds
this field; so does ``extract_mesh(method="density")``.
A level set of a thin shell of Gaussians has two sheets, outside and inside the shell; rendering
sees the outer one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from studio.gaussians import Gaussians
from studio.gaussians.rotation import quat_to_rotmat

_MAX_ENTRIES = 1 << 22  # Gaussian x voxel evaluations per chunk (memory bound)
MAX_RADIUS = 16  # voxels


@torch.no_grad()
def opacity_field(g: Gaussians, lo: Tensor, voxel: float, dims: tuple[int, int, int], n_sigma: float = 3.0) -> Tensor:
    """``D`` at the voxel centres ``lo + voxel * (i, j, k)``: [X,Y,Z] float32 (opacity units, >= 0)."""
    device = g.means.device
    field = torch.zeros(dims, dtype=torch.float32, device=device).reshape(-1)
    rot = quat_to_rotmat(g.quats.float())  # [N,3,3]
    inv_cov = rot @ torch.diag_embed(1.0 / g.scales.float().clamp_min(1e-8) ** 2) @ rot.transpose(1, 2)
    centre = (g.means.float() - lo) / voxel  # [N,3] in voxel units
    radius = torch.ceil(n_sigma * g.scales.float().amax(dim=1) / voxel).long().clamp(1, MAX_RADIUS)
    upper = torch.tensor(dims, device=device)
    strides = torch.tensor([dims[1] * dims[2], dims[2], 1], device=device)
    for r in torch.unique(radius).tolist():  # Gaussians of one window size together
        ids = torch.nonzero(radius == r)[:, 0]
        span = torch.arange(-r, r + 1, device=device)
        offsets = torch.stack(torch.meshgrid(span, span, span, indexing="ij"), -1).reshape(-1, 3)  # [K,3]
        chunk = max(1, _MAX_ENTRIES // len(offsets))
        for start in range(0, len(ids), chunk):
            sel = ids[start : start + chunk]
            cells = torch.round(centre[sel]).long()[:, None, :] + offsets[None]  # [n,K,3]
            d = (cells.float() - centre[sel][:, None, :]) * voxel  # world units
            m = torch.einsum("nki,nij,nkj->nk", d, inv_cov[sel], d)
            value = g.opacities[sel].float()[:, None] * torch.exp(-0.5 * m)
            valid = ((cells >= 0) & (cells < upper)).all(-1) & (m < n_sigma * n_sigma)
            flat = (cells * strides).sum(-1)
            field.index_add_(0, flat[valid], value[valid])
    return field.reshape(dims)
