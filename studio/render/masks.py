"""Image masks around an object's silhouette (``prd``'s progress loss, its error-split benchmark)."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def silhouette_band(alpha: Tensor, width: int) -> Tuple[Tensor, Tensor]:
    """Split an image at the silhouette of ``alpha > 0.5``.

    Args:
        alpha: [H,W] coverage in [0, 1] (e.g. a ground-truth alpha channel).
        width: pixels on each side of the silhouette that form the band (>= 1).
    Returns:
        (interior, band): boolean [H,W] masks. ``interior`` holds the object's pixels farther
        than ``width`` pixels (Chebyshev distance) from any background pixel; ``band`` the
        pixels within ``width`` of the silhouette on either side. The rest is background.
    """
    solid = (alpha > 0.5).to(alpha.dtype)[None, None]
    grown = F.max_pool2d(solid, 2 * width + 1, stride=1, padding=width)[0, 0] > 0.5
    shrunk = -F.max_pool2d(-solid, 2 * width + 1, stride=1, padding=width)[0, 0] > 0.5
    return shrunk, grown & ~shrunk


def progress_band(alpha: Tensor, max_width: int, max_share: float) -> Tensor:
    """The widest silhouette band (``silhouette_band``) of at most ``max_width`` pixels that holds
    at most ``max_share`` of the object's pixels (alpha > 0.5); boolean [H,W], empty if even a
    1-pixel band holds more. Small objects thus keep most of their pixels."""
    solid = int((alpha > 0.5).sum())
    for width in range(max_width, 0, -1):
        interior, band = silhouette_band(alpha, width)
        if solid - int(interior.sum()) <= max_share * solid:
            return band
    return torch.zeros_like(alpha, dtype=torch.bool)
