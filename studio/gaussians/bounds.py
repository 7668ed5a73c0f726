"""Robust bounds of a Gaussian scene: the one place that turns Gaussians into a box or a sphere.

Callers differ only in parameters: mesh extraction (``studio.export.mesh``), the PRD visibility
grid (``studio.pbr.visibility.object_bounds``) and turntable / viewer framing
(``studio.render.turntable.scene_bounds``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


@torch.no_grad()
def gaussian_bounds(
    means: Tensor,
    opacities: Optional[Tensor] = None,
    scales: Optional[Tensor] = None,
    *,
    min_opacity: float = 0.0,
    min_count: int = 1,
    quantile: float = 0.0,
    outward: bool = False,
    pad: float = 0.0,
    min_extent: float = 0.0,
    scale_pad: float = 0.0,
    margin: float = 0.0,
    sphere: bool = False,
) -> Tensor | tuple[Tensor, float]:
    """Box or sphere around the Gaussians, ignoring faint ones and a ``quantile`` of stray ones.

    Kept: the Gaussians with opacity >= ``min_opacity`` (all of them when ``opacities`` is None or
    fewer than ``min_count`` pass). The core box spans, per axis, the ``quantile`` and
    ``1 - quantile`` quantiles of their ``means`` [N,3]: linearly interpolated (``torch.quantile``,
    N <= 2^24) or, with ``outward``, the samples at or outside those ranks (``kthvalue``, any N).
    Padding (world units) = ``pad * max(longest core side, min_extent) + scale_pad * s + margin``,
    s the median largest standard deviation in ``scales`` [N,3] of the kept Gaussians.

    Returns:
        [2,3] ``(lo, hi)``: the core box grown by the padding on every side; or, with ``sphere``,
        ``(centre [3], radius)``: the core box's centre and the ``1 - quantile`` quantile of the
        kept means' distances to it, plus the padding.
    """
    pts, kept_scales = means, scales
    if opacities is not None:
        keep = opacities.reshape(-1) >= min_opacity
        if int(keep.sum()) >= min_count:
            pts = means[keep]
            kept_scales = scales[keep] if scales is not None else None
    lo, hi = _quantiles(pts, quantile, outward)
    grow = pad * float((hi - lo).max().clamp(min=min_extent))
    if kept_scales is not None:
        grow += scale_pad * float(torch.median(kept_scales.float().amax(dim=1)))
    grow += margin
    if not sphere:
        return torch.stack([lo - grow, hi + grow])
    centre = (lo + hi) / 2.0
    reach = _quantiles(torch.linalg.norm(pts - centre, dim=1), quantile, outward)[1]
    return centre, float(reach) + grow


def _quantiles(x: Tensor, q: float, outward: bool) -> tuple[Tensor, Tensor]:
    """The ``q`` and ``1 - q`` quantiles of ``x`` along dim 0 (``q <= 0.5``); ``outward``: the samples
    of rank ``k = int(q (n - 1))`` from either end."""
    if not outward:
        return torch.quantile(x, q, dim=0), torch.quantile(x, 1.0 - q, dim=0)
    n = x.shape[0]
    k = int(q * (n - 1))
    return torch.kthvalue(x, k + 1, dim=0).values, torch.kthvalue(x, n - k, dim=0).values
