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


def gaussian_window_1d(window: int, sigma: float = 1.5, dtype: torch.dtype = torch.float32) -> Tensor:
    """[window] normalised Gaussian weights centred on the middle tap (sigma in pixels)."""
    x = torch.arange(window, dtype=dtype) - (window - 1) / 2
    weights = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return weights / weights.sum()


def ssim(pred: Tensor, target: Tensor, window: int = 11) -> Tensor:
    """Structural similarity (Wang et al. 2004, Eq. 13) with a ``window`` x ``window`` Gaussian window
    (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2, averaged over the 'valid' pixels only (those whose window
    lies inside the image). The 3DGS reference zero-pads to 'same' size, which lowers the border
    pixels' scores; 'valid' leaves them out.

    The same values as ``kornia.metrics.ssim(..., padding="valid")``. Float32 CPU images (with a
    constant target) go to the C++ kernels of ``cuda/image_ssim_cpu.cpp`` (forward and backward
    in two passes each; SSIM is in every 3DGS training step); others to ``ssim_torch``.

    Args:
        pred, target: [B,C,H,W] (or [C,H,W]) images in [0,1], H and W >= ``window``.
    Returns:
        scalar mean SSIM (differentiable in ``pred``, and in ``target`` through ``ssim_torch``).
    """
    if pred.ndim == 3:
        pred, target = pred[None], target[None]
    height, width = pred.shape[-2:]
    if height < window or width < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels; got {height}x{width}.")
    on_cpu = not (pred.is_cuda or target.is_cuda) and pred.dtype == target.dtype == torch.float32
    if on_cpu and not target.requires_grad:
        weights = gaussian_window_1d(window)
        return _SSIMCPU.apply(pred.reshape(-1, height, width), target.reshape(-1, height, width), weights)
    return ssim_torch(pred, target, window)


def ssim_torch(pred: Tensor, target: Tensor, window: int = 11) -> Tensor:
    """``ssim`` in PyTorch ([B,C,H,W] images): the five local statistics (means, second moments)
    blurred in one separable depthwise convolution per axis."""
    batch, channels = pred.shape[:2]
    maps = torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1)  # [B,5C,H,W]
    g = gaussian_window_1d(window, dtype=pred.dtype).to(pred.device)
    groups = 5 * channels
    maps = F.conv2d(maps, g.view(1, 1, 1, window).expand(groups, 1, 1, window), groups=groups)
    maps = F.conv2d(maps, g.view(1, 1, window, 1).expand(groups, 1, window, 1), groups=groups)
    mu_p, mu_t, e_pp, e_tt, e_pt = maps.reshape(batch, 5, channels, *maps.shape[-2:]).unbind(1)
    c1, c2 = 0.01**2, 0.03**2
    mu_pp, mu_tt, mu_pt = mu_p * mu_p, mu_t * mu_t, mu_p * mu_t
    numerator = (2.0 * mu_pt + c1) * (2.0 * (e_pt - mu_pt) + c2)
    denominator = (mu_pp + mu_tt + c1) * ((e_pp - mu_pp) + (e_tt - mu_tt) + c2)
    return (numerator / denominator).mean()


class _SSIMCPU(torch.autograd.Function):
    """The extension's ``ssim_fwd_cpu`` / ``ssim_bwd_cpu`` on [P,H,W] planes; gradient in pred only."""

    @staticmethod
    def forward(ctx, pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
        from studio.ext import load_extension

        inputs = [pred.detach().contiguous(), target.detach().contiguous(), weights.contiguous()]
        ctx.save_for_backward(*inputs)
        return load_extension("image", with_cuda=False).ssim_fwd_cpu(*inputs)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        from studio.ext import load_extension

        grad = load_extension("image", with_cuda=False).ssim_bwd_cpu(*ctx.saved_tensors, float(grad_out))
        return grad, None, None


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
