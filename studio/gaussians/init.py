"""Initial Gaussian parameters (3DGS, Kerbl et al. 2023, Sec. 5.1) in raw (pre-activation) form."""

from __future__ import annotations

import torch
from torch import Tensor

from studio.gaussians.sh import num_sh_bases, rgb_to_sh


def knn_mean_distance(points: Tensor, k: int = 3, chunk: int = 4096) -> Tensor:
    """[N] mean distance of each point to its k nearest neighbours (chunked brute force)."""
    n = points.shape[0]
    out = torch.empty(n, dtype=points.dtype)
    for start in range(0, n, chunk):
        d = torch.cdist(points[start : start + chunk], points)  # [B,N]
        nearest = torch.topk(d, min(k + 1, n), largest=False).values[:, 1:]
        out[start : start + chunk] = nearest.mean(dim=-1) if nearest.numel() else 0.01
    return out.clamp(min=1e-7)


def initial_params(points: Tensor, rgb: Tensor, sh_degree: int, opacity: float = 0.1) -> dict[str, Tensor]:
    """Raw parameters for Gaussians seeded at ``points``.

    Args:
        points: [N,3] world positions. rgb: [N,3] colours in [0,1]. sh_degree: 0..3.
        opacity: initial opacity (stored as a logit).
    Returns:
        dict with means [N,3], scales [N,3] (log of the mean 3-NN distance, isotropic), quats [N,4]
        (identity), features_dc [N,3], features_rest [N,K-1,3] (zeros), opacities [N] (logits).
    """
    n = points.shape[0]
    scales = torch.log(knn_mean_distance(points))[:, None].repeat(1, 3)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    return {
        "means": points.clone().float(),
        "scales": scales.float(),
        "quats": quats,
        "features_dc": rgb_to_sh(rgb.float()),
        "features_rest": torch.zeros(n, num_sh_bases(sh_degree) - 1, 3),
        "opacities": torch.logit(torch.full((n,), opacity)),
    }


def random_points(n: int, half_size: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """n points uniform in the cube [-half_size, half_size]^3 with random colours ([N,3], [N,3])."""
    points = (torch.rand(n, 3, generator=generator) * 2.0 - 1.0) * half_size
    return points, torch.rand(n, 3, generator=generator)
