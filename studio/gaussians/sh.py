"""Real spherical harmonics up to degree 3, in the 3DGS / gsplat convention.

The basis (with its signs) is the one of the 3DGS reference code (Kerbl et al. 2023,
``sh_utils.py``) that gsplat's ``spherical_harmonics`` also uses, so PLY files and renders agree
with other 3DGS tools. Colours are ``rgb = 0.5 + sum_k Y_k(d) * c_k`` (then clamped at 0 by the
renderer).
"""

from __future__ import annotations

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients per channel for ``degree``: (degree + 1)^2."""
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """SH basis values.

    Args:
        degree: 0..3.
        dirs: [..., 3] unit directions.
    Returns:
        [..., (degree + 1)^2] basis values, DC first.
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be 0..3, got {degree}.")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            _C2[0] * xy,
            _C2[1] * yz,
            _C2[2] * (2.0 * zz - xx - yy),
            _C2[3] * xz,
            _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _C3[0] * y * (3 * xx - yy),
            _C3[1] * xy * z,
            _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Evaluate SH colours (without the +0.5 offset).

    Args:
        degree: active degree; only the first (degree + 1)^2 coefficients are used.
        coeffs: [..., K, 3] coefficients, K >= (degree + 1)^2.
        dirs: [..., 3] viewing directions (normalised here; zero vectors give the DC term).
    Returns:
        [..., 3] SH values.
    """
    k = num_sh_bases(degree)
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    basis = sh_basis(degree, dirs)  # [..., k]
    return (basis.unsqueeze(-1) * coeffs[..., :k, :]).sum(dim=-2)


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """DC coefficient that renders as ``rgb``."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh_dc: Tensor) -> Tensor:
    """Colour of a DC coefficient."""
    return sh_dc * SH_C0 + 0.5


def sh_direction_std(degree: int, coeffs: Tensor, dirs: Tensor | None = None) -> Tensor:
    """Standard deviation of the SH colour over viewing directions.

    Over the whole sphere (``dirs`` None, uniform): the basis is orthonormal (the integral of
    ``Y_k Y_j`` is ``delta_kj``), so the mean colour is the DC term and the variance is
    ``sum_{k >= 1} c_k^2 / (4 pi)``, i.e. the std is ``SH_C0 * ||c_1..||``. Over a set of
    directions ``dirs`` [D,3] (the same for every Gaussian): ``c^T Cov(Y) c`` with ``Cov(Y)`` the
    covariance of the basis values over the set. Exact for the SH sum; the renderer's clamp at 0
    is left out.

    Args:
        degree: active degree; only the first (degree + 1)^2 coefficients are used.
        coeffs: [..., K, 3] coefficients, K >= (degree + 1)^2.
        dirs: optional [D,3] viewing directions (normalised here).
    Returns:
        [..., 3] std per colour channel (colour units, as ``eval_sh``).
    """
    k = num_sh_bases(degree)
    if dirs is None:
        return SH_C0 * coeffs[..., 1:k, :].square().sum(dim=-2).sqrt()
    basis = sh_basis(degree, torch.nn.functional.normalize(dirs, dim=-1))  # [D,k]
    centred = basis - basis.mean(dim=0)
    cov = (centred.T @ centred / basis.shape[0]).to(coeffs)  # [k,k]
    c = coeffs[..., :k, :]
    variance = (c * (cov @ c)).sum(dim=-2)
    return variance.clamp(min=0.0).sqrt()
