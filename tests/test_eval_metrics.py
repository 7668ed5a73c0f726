"""``studio.metrics.ssim`` (one depthwise convolution per axis) against ``kornia.metrics.ssim``."""

from __future__ import annotations

import kornia
import pytest
import torch

from studio.metrics import psnr, ssim


def _reference_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """kornia's SSIM with the same settings: 11x11 Gaussian window (sigma 1.5), 'valid' pixels."""
    if pred.ndim == 3:
        pred, target = pred[None], target[None]
    return kornia.metrics.ssim(pred, target, 11, max_val=1.0, eps=0.0, padding="valid").mean()


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 3, 64, 48), (1, 1, 11, 11), (4, 3, 40, 100)])
def test_ssim_matches_kornia(shape):
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
