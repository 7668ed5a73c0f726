"""Feature lifting onto pixel-aligned Gaussians (Splat and Distill; the lifting step of issue 23).

Teacher features computed on the context views (patch grid ``h x w``, e.g. a ViT's 1/14 grid) are
upsampled bilinearly to the pixel grid ``H x W`` of the context images, then assigned **one-to-one**
to the pixel-aligned Gaussians: the Gaussian of pixel ``(v, y, x)`` (index ``v*H*W + y*W + x``,
:class:`studio.lift.gaussians.PixelGaussians`) takes the feature of that pixel. The lifted features
are rasterized as N-D "colours" at any target camera (:func:`render_features`), the same alpha
blending as RGB: ``f(p) = sum_i w_i(p) f_i + T(p) * background``.

Round trip: features lifted from view A and rendered back at view A reproduce the input features
where the Gaussians cover the pixel (tested: cosine > 0.99 where alpha > 0.5).
"""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from studio.lift.gaussians import LiftRender, PixelGaussians, render


def upsample_features(features: Tensor, height: int, width: int, mode: str = "bilinear") -> Tensor:
    """[B,V,D,h,w] patch features -> [B,V,D,H,W] per-pixel features (``align_corners=False``: patch
    centres sit at the centres of the pixel blocks they cover)."""
    B, V, D, h, w = features.shape
    if (h, w) == (height, width):
        return features
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    up = F.interpolate(features.reshape(B * V, D, h, w), size=(height, width), mode=mode, **kw)
    return up.reshape(B, V, D, height, width)


def assign_features(pixel_features: Tensor) -> Tensor:
    """[B,V,D,H,W] per-pixel features -> [B,N,D] in the Gaussians' pixel order ``v*H*W + y*W + x``."""
    B, V, D, H, W = pixel_features.shape
    return pixel_features.permute(0, 1, 3, 4, 2).reshape(B, V * H * W, D)


def lift_features(
    features: Tensor, gaussians: PixelGaussians, H: Optional[int] = None, W: Optional[int] = None
) -> Tensor:
    """Lift context-view features onto the Gaussians, one feature per Gaussian.

    Args:
        features: [B,V,D,h,w] features of the V context views (any grid; e.g. teacher patch features).
        gaussians: the pixel-aligned Gaussians predicted from the same V views (``[B,V,H,W]`` depth).
        H, W: pixel grid of the Gaussians (default: ``gaussians.image_size``; must match it).
    Returns:
        [B,N,D] with N = V*H*W: row ``v*H*W + y*W + x`` is the bilinearly upsampled feature of pixel
        (y, x) of view v. Pass it as ``colors`` to :func:`render_features`.
    """
    gh, gw = gaussians.image_size
    H, W = H or gh, W or gw
    if (H, W) != (gh, gw):
        raise ValueError(f"Gaussians are aligned to {gh}x{gw} pixels, not {H}x{W}")
    if features.ndim != 5 or features.shape[:2] != gaussians.depth.shape[:2]:
        raise ValueError(
            f"features must be [B,V,D,h,w] with B,V = {tuple(gaussians.depth.shape[:2])}, got {tuple(features.shape)}"
        )
    return assign_features(upsample_features(features, H, W))


def render_features(
    gaussians: PixelGaussians,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    background: Optional[Tensor] = None,
    **kwargs,
) -> LiftRender:
    """Rasterize lifted features at target cameras.

    Args:
        gaussians: B items of N pixel-aligned Gaussians.
        features: [B,N,D] per-Gaussian features (:func:`lift_features`), or [B,V,D,h,w] context-view
            features (lifted here first).
        viewmats: [B,C,4,4] world-to-camera (OpenCV); Ks: [B,C,3,3].
        width, height: target size in pixels.
        background: feature behind the Gaussians ([D], [B,D] or [B,C,D]; default 0).
        kwargs: ``near_plane``, ``eps2d``, ``backend`` for :func:`studio.render.rasterize`.
    Returns:
        :class:`LiftRender` with ``color`` [B,C,H,W,D] the rendered features, ``alpha`` [B,C,H,W,1].
    """
    if features.ndim == 5:
        features = lift_features(features, gaussians)
    return render(gaussians, viewmats, Ks, width, height, colors=features, background=background, **kwargs)
