"""Evaluation: image metrics (PSNR, SSIM, optional local LPIPS) and evaluation commands."""

from studio.eval.metrics import lpips_if_available, psnr, ssim

__all__ = ["lpips_if_available", "psnr", "ssim"]
