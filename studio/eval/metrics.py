"""Image metrics. Nothing here downloads: LPIPS is used only when its weights are already local."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB for images in [0,1] (any shape; mean over all values)."""
    mse = torch.mean((pred - target) ** 2)
    return -10.0 * torch.log10(mse.clamp(min=1e-12))


@functools.lru_cache(maxsize=4)
def _gauss_window(size: int, sigma: float) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity (Wang et al. 2004) with an 11x11 Gaussian window, valid padding.

    Args:
        pred, target: [B,3,H,W] (or [3,H,W]) images in [0,1].
    Returns:
        scalar mean SSIM (differentiable; used by the 3DGS D-SSIM loss too).
    """
    if pred.ndim == 3:
        pred, target = pred[None], target[None]
    ch = pred.shape[1]
    g = _gauss_window(window, sigma).to(pred)
    kx = g.view(1, 1, 1, -1).repeat(ch, 1, 1, 1)
    ky = g.view(1, 1, -1, 1).repeat(ch, 1, 1, 1)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(x, kx, groups=ch), ky, groups=ch)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(pred), blur(target)
    sxx = blur(pred * pred) - mu_x**2
    syy = blur(target * target) - mu_y**2
    sxy = blur(pred * target) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).mean()


def _alexnet_weights_present() -> bool:
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return any(hub.glob("alexnet-owt-*.pth"))


@functools.lru_cache(maxsize=1)
def lpips_if_available() -> Optional[Callable[[Tensor, Tensor], Tensor]]:
    """torchmetrics LPIPS (AlexNet) when its backbone weights are in the local torch hub cache.

    Returns None otherwise (never downloads). The returned callable takes [B,3,H,W] in [0,1].
    """
    if not _alexnet_weights_present():
        return None
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
    return lambda pred, target: metric.to(pred.device)(pred.clamp(0, 1), target.clamp(0, 1))
