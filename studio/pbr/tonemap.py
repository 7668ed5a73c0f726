"""Tone mapping and transfer functions.

* ``aces_filmic``: Krzysztof Narkowicz's 2015 curve fit of the ACES RRT+ODT ("ACES Filmic Tone
  Mapping Curve"), ``y = x (2.51 x + 0.03) / (x (2.43 x + 0.59) + 0.14)`` clamped to [0, 1], on
  linear-light input. Narkowicz notes the fit reaches the reference curve's levels when the
  input is pre-scaled by 0.6; that is ``exposure=0.6`` (default 1.0, the common usage). It is
  monotone non-decreasing on ``[0, inf)``. Not the full RRT/ODT (no gamut mapping).
* ``linear_to_srgb`` / ``srgb_to_linear``: the IEC 61966-2-1 piecewise sRGB transfer function,
  ``kornia.color.linear_rgb_to_rgb`` / ``rgb_to_linear_rgb`` on input clamped to [0, 1] (kornia
  does not clamp), on channels-last colours [..., 3].

``tonemap`` = ACES then sRGB encoding (the usual display pipeline for rendered HDR images).
"""

from __future__ import annotations

import kornia
import torch

__all__ = ["aces_filmic", "linear_to_srgb", "srgb_to_linear", "tonemap"]


def aces_filmic(x: torch.Tensor, exposure: float = 1.0) -> torch.Tensor:
    """Narkowicz ACES fit; linear HDR ``[..., C]`` -> linear display values in ``[0, 1]``."""
    x = (x * exposure).clamp(min=0.0)
    y = x * (2.51 * x + 0.03) / (x * (2.43 * x + 0.59) + 0.14)
    return y.clamp(0.0, 1.0)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear ``[..., 3]`` in ``[0, 1]`` -> sRGB-encoded ``[..., 3]`` in ``[0, 1]`` (input clamped to [0, 1])."""
    return kornia.color.linear_rgb_to_rgb(x.clamp(0.0, 1.0)[..., None, None])[..., 0, 0]


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded ``[..., 3]`` in ``[0, 1]`` -> linear ``[..., 3]`` in ``[0, 1]`` (input clamped to [0, 1])."""
    return kornia.color.rgb_to_linear_rgb(x.clamp(0.0, 1.0)[..., None, None])[..., 0, 0]


def tonemap(x: torch.Tensor, exposure: float = 1.0) -> torch.Tensor:
    """Linear HDR ``[..., 3]`` -> display sRGB in ``[0, 1]``: ``linear_to_srgb(aces_filmic(x, exposure))``."""
    return linear_to_srgb(aces_filmic(x, exposure))
