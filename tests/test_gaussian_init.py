"""``studio.gaussians.init``: initial Gaussian scales from nearest-neighbour distances."""

from __future__ import annotations

import torch

from studio.gaussians.init import knn_mean_distance


def test_knn_mean_distance_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(500, 3, generator=gen, dtype=torch.float64)
    d = torch.cdist(points, points)
    expected = torch.topk(d, 4, largest=False).values[:, 1:].mean(-1)
    assert torch.allclose(knn_mean_distance(points), expected, atol=1e-12)
    grid = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    assert torch.allclose(knn_mean_distance(grid, k=1), torch.tensor([1.0, 1.0, 2.0]))
    assert torch.allclose(knn_mean_distance(grid[:1]), torch.tensor([0.01]))
