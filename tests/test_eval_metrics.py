"""``studio.metrics.ssim`` (C++ on float32 CPU images, else PyTorch) against ``kornia.metrics.ssim``."""

from __future__ import annotations

import kornia
import pytest
import torch

from studio.metrics import psnr, ssim, ssim_torch


def _reference_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """kornia's SSIM with the same settings: 11x11 Gaussian window (sigma 1.5), 'valid' pixels."""
    if pred.ndim == 3:
        pred, target = pred[None], target[None]
    return kornia.metrics.ssim(pred, target, 11, max_val=1.0, eps=0.0, padding="valid").mean()


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 3, 64, 48), (1, 1, 11, 11), (4, 3, 40, 100)])
@pytest.mark.parametrize("implementation", ["cpu-kernels", "torch"])
def test_ssim_matches_kornia(shape, implementation):
    gen = torch.Generator().manual_seed(len(shape) + shape[-1])
    a = torch.rand(shape, generator=gen)
    b = (a + 0.2 * torch.randn(shape, generator=gen)).clamp(0, 1)
    if implementation == "torch":
        a4, b4 = (a, b) if a.ndim == 4 else (a[None], b[None])
        value = ssim_torch(a4, b4)
        ga = a4.clone().requires_grad_(True)
        ssim_torch(ga, b4).backward()
    else:
        value = ssim(a, b)
        ga = a.clone().requires_grad_(True)
        ssim(ga, b).backward()
    assert float(value) == pytest.approx(float(_reference_ssim(a, b)), abs=1e-6)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    gb = a.clone().requires_grad_(True)
    _reference_ssim(gb, b).backward()
    assert torch.allclose(ga.grad.reshape(gb.shape), gb.grad, rtol=1e-4, atol=1e-6 * float(gb.grad.abs().max()))


def test_ssim_gradient_in_target_and_float64():
    """A target that needs a gradient, and float64 images, take the PyTorch path with the same values."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 24, 24, generator=gen), torch.rand(3, 24, 24, generator=gen)
    target = b.clone().requires_grad_(True)
    ssim(a, target).backward()
    assert target.grad is not None and target.grad.abs().sum() > 0
    assert float(ssim(a.double(), b.double())) == pytest.approx(float(ssim(a, b)), abs=1e-6)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[:, :8], b[:, :8])


def test_psnr():
    a = torch.zeros(2, 3, 4, 4)
    assert float(psnr(a, a + 0.1)) == pytest.approx(20.0, abs=1e-4)
