"""PCA colouring of N-D features (for looking at lifted features: viewer, render sheets)."""

from __future__ import annotations

import torch
from torch import Tensor


def pca_basis(features: Tensor, k: int = 3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Principal axes of ``features`` [N,D]: ``(mean [D], axes [D,k], lo [k], hi [k])`` where
    ``lo``/``hi`` are the 1st/99th percentiles of the projections (the colour range)."""
    x = features.detach().float().reshape(-1, features.shape[-1])
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / max(len(x) - 1, 1)  # [D,D]; eigh is deterministic
    _, vecs = torch.linalg.eigh(cov)
    v = vecs.flip(-1)[:, : min(k, x.shape[1])]
    v = v * torch.where(v.sum(0) < 0, -1.0, 1.0)  # fixed sign per axis
    proj = (x - mean) @ v
    sample = proj[torch.linspace(0, len(proj) - 1, min(len(proj), 100_000)).long()]
    lo, hi = torch.quantile(sample, 0.01, dim=0), torch.quantile(sample, 0.99, dim=0)
    return mean, v, lo, hi


def pca_colors(features: Tensor, basis: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> Tensor:
    """[..., D] features -> [..., 3] RGB in [0,1]: projections on the first three principal axes
    (of ``features`` itself, or a given :func:`pca_basis` so several maps share one colouring),
    each stretched from its 1st to its 99th percentile."""
    mean, v, lo, hi = basis if basis is not None else pca_basis(features)
    proj = (features.float() - mean.to(features.device)) @ v.to(features.device)
    rgb = (proj - lo.to(proj.device)) / (hi - lo).clamp(min=1e-6).to(proj.device)
    if rgb.shape[-1] < 3:
        rgb = torch.cat([rgb, rgb.new_full((*rgb.shape[:-1], 3 - rgb.shape[-1]), 0.5)], -1)
    return rgb.clamp(0, 1)
