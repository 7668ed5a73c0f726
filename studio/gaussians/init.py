"""Initial Gaussian parameters (3DGS, Kerbl et al. 2023, Sec. 5.1) in raw (pre-activation) form."""

from __future__ import annotations

import torch
from torch import Tensor

from studio.gaussians.sh import num_sh_bases, rgb_to_sh


def knn_mean_distance(points: Tensor, k: int = 3) -> Tensor:
    """[N] mean distance of each point [N,3] to its k nearest other points (exact, a k-d tree:
    ``scipy.spatial.cKDTree``; 0.01 for a lone point), at least 1e-7."""
    from scipy.spatial import cKDTree

    n = points.shape[0]
    if n < 2:
        return torch.full((n,), 0.01, dtype=points.dtype)
    xyz = points.detach().cpu().double().numpy()
    distances, _ = cKDTree(xyz).query(xyz, k=min(k, n - 1) + 1)  # the first neighbour is the point itself
    out = torch.from_numpy(distances[:, 1:].mean(axis=1)).to(points.dtype)
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
