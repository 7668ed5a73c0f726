"""``studio.gaussians.gaussian_bounds``: each caller gets exactly what its own formula gave before
(the references below are those formulas, as they were written in each caller)."""

from __future__ import annotations

import pytest
import torch

from studio.export.mesh import extraction_bounds
from studio.gaussians import Gaussians, gaussian_bounds
from studio.io import StudioInputError
from studio.pbr.visibility import object_bounds
from studio.render.turntable import scene_bounds


def _reference_extraction(g: Gaussians) -> tuple[torch.Tensor, torch.Tensor]:
    opaque = g.opacities >= 0.2
    means = g.means[opaque].float()
    k = int(0.005 * (len(means) - 1))
    lo = torch.kthvalue(means, k + 1, dim=0).values
    hi = torch.kthvalue(means, len(means) - k, dim=0).values
    size = torch.median(g.scales[opaque].float().amax(dim=1))
    pad = 0.05 * float((hi - lo).max()) + 3.0 * float(size) + 1e-6
    return lo - pad, hi + pad


def _reference_turntable(g: Gaussians) -> tuple[torch.Tensor, float]:
    means = g.means.float()
    center = (torch.quantile(means, 0.01, dim=0) + torch.quantile(means, 0.99, dim=0)) / 2.0
    reach = float(torch.quantile(torch.linalg.norm(means - center, dim=1), 0.99))
    spread = 3.0 * float(g.scales.float().amax(dim=1).median())
    return center, max(reach + spread, 1e-6)


def _reference_visibility(means: torch.Tensor, opacities: torch.Tensor) -> torch.Tensor:
    keep = opacities.reshape(-1) > 0.1
    pts = means[keep] if int(keep.sum()) >= 8 else means
    lo, hi = torch.quantile(pts, 0.005, dim=0), torch.quantile(pts, 0.995, dim=0)
    margin = 0.15 * float((hi - lo).max().clamp(min=1e-3))
    return torch.stack([lo - margin, hi + margin])


def _scene(n: int, seed: int) -> Gaussians:
    """An anisotropic blob with a few far floaters, random opacities and sizes."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=gen) * torch.tensor([0.5, 1.0, 2.0]) + 0.3
    means[: max(1, n // 200)] += 30.0
    return Gaussians(
        means,
        torch.randn(n, 4, generator=gen),
        torch.rand(n, 3, generator=gen) * 0.05,
        torch.rand(n, generator=gen),
        torch.zeros(n, 1, 3),
    )


@pytest.mark.parametrize("n,seed", [(9, 0), (201, 1), (401, 2), (5000, 3)])  # n - 1 = 200 m: where float32 ranks round
def test_each_caller_gets_its_previous_bounds(n, seed):
    g = _scene(n, seed)
    lo, hi = extraction_bounds(g)
    ref_lo, ref_hi = _reference_extraction(g)
    assert torch.equal(lo, ref_lo) and torch.equal(hi, ref_hi)

    center, radius = scene_bounds(g)
    ref_center, ref_radius = _reference_turntable(g)
    assert torch.equal(torch.as_tensor(center), ref_center) and radius == ref_radius

    assert torch.equal(object_bounds(g.means, g.opacities), _reference_visibility(g.means, g.opacities))
    few = torch.where(torch.arange(n) < 5, 0.9, 0.01)  # fewer than 8 opaque: all Gaussians count
    assert torch.equal(object_bounds(g.means, few), _reference_visibility(g.means, few))


def test_bounds_shapes_and_errors():
    g = _scene(300, 4)
    box = gaussian_bounds(g.means, g.opacities, g.scales, quantile=0.01, pad=0.1)
    assert box.shape == (2, 3) and bool((box[0] < box[1]).all())
    core = gaussian_bounds(g.means, quantile=0.01)
    assert bool((box[0] < core[0]).all()) and bool((box[1] > core[1]).all())
    full = gaussian_bounds(g.means)
    assert torch.equal(full, torch.stack([g.means.min(0).values, g.means.max(0).values]))
    center, radius = gaussian_bounds(g.means, quantile=0.01, sphere=True)
    assert center.shape == (3,) and radius > 0
    faint = Gaussians(g.means, g.quats, g.scales, torch.full((300,), 0.1), g.sh)
    with pytest.raises(StudioInputError):
        extraction_bounds(faint)
