"""``studio.metrics.ssim`` (kornia) against the separable-Gaussian formula it replaced."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from studio.metrics import psnr, ssim


def _reference_ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The formula studio used before kornia: 'valid' separable Gaussian blur, C1 = 0.01^2, C2 = 0.03^2."""
    if pred.ndim == 3:
        pred, target = pred[None], target[None]
    ch = pred.shape[1]
    x = torch.arange(window, dtype=torch.float32) - (window - 1) / 2.0
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = (g / g.sum()).to(pred)
    kx, ky = g.view(1, 1, 1, -1).repeat(ch, 1, 1, 1), g.view(1, 1, -1, 1).repeat(ch, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kx, groups=ch), ky, groups=ch)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(pred), blur(target)
    sxx, syy, sxy = blur(pred * pred) - mu_x**2, blur(target * target) - mu_y**2, blur(pred * target) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))).mean()


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 3, 64, 48), (1, 1, 11, 11), (4, 3, 40, 100)])
def test_ssim_matches_previous_formula(shape):
    gen = torch.Generator().manual_seed(len(shape) + shape[-1])
    a = torch.rand(shape, generator=gen)
    b = (a + 0.2 * torch.randn(shape, generator=gen)).clamp(0, 1)
    assert float(ssim(a, b)) == pytest.approx(float(_reference_ssim(a, b)), abs=1e-6)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    ga, gb = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
    ssim(ga, b).backward()
    _reference_ssim(gb, b).backward()
    assert torch.allclose(ga.grad, gb.grad, rtol=1e-4, atol=1e-6 * float(gb.grad.abs().max()))


def test_psnr():
    a = torch.zeros(2, 3, 4, 4)
    assert float(psnr(a, a + 0.1)) == pytest.approx(20.0, abs=1e-4)
