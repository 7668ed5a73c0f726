"""Image metrics. Nothing here downloads: LPIPS is used only when its weights are already local."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Optional

import kornia
import torch
from torch import Tensor


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB for images in [0,1] (any shape; mean over all values)."""
    mse = torch.mean((pred - target) ** 2)
    return -10.0 * torch.log10(mse.clamp(min=1e-12))


def ssim(pred: Tensor, target: Tensor, window: int = 11) -> Tensor:
    """Structural similarity (Wang et al. 2004): ``kornia.metrics.ssim`` with a ``window`` x ``window``
    Gaussian window (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2, averaged over the 'valid' pixels only
    (those whose window lies inside the image). The 3DGS reference zero-pads to 'same' size,
    which lowers the border pixels' scores; 'valid' leaves them out.

    Args:
        pred, target: [B,C,H,W] (or [C,H,W]) images in [0,1], H and W >= ``window``.
    Returns:
        scalar mean SSIM (differentiable; used by the 3DGS D-SSIM loss too).
    """
    if pred.ndim == 3:
        pred, target = pred[None], target[None]
    return kornia.metrics.ssim(pred, target, window, max_val=1.0, eps=0.0, padding="valid").mean()


def _alexnet_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _alexnet_weights_present() -> bool:
    return any(_alexnet_dir().glob("alexnet-owt-*.pth"))


def lpips_missing_reason() -> str:
    """One line saying why ``lpips_if_available`` returns None and what would enable LPIPS."""
    return f"LPIPS not computed: no AlexNet weights (alexnet-owt-*.pth) in {_alexnet_dir()}; nothing is downloaded."


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
