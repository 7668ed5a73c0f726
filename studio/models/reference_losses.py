"""Reference-view losses of image-to-3D methods (DreamCraft3D, Sparse3D, ...).

Given renders of the reference camera and the preprocessed reference (``ReferenceDataManager``):

* ``rgb``: MSE of the render against the reference composited over the same background
  (threestudio/DreamCraft3D: ``gt = rgb * mask + bg * (1 - mask)``);
* ``mask``: MSE of the rendered alpha against the mask;
* ``depth_rel``: 1 - Pearson correlation between rendered depth and the given depth map inside
  the mask (DreamCraft3D Sec. 3.1: monocular depth has unknown scale and shift). The map stores
  depth (larger = farther); invert disparity maps before passing them;
* ``normal``: 1 - cos between rendered and given camera-space normals inside the mask.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of two 1-D tensors (0 when either is constant)."""
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm()).clamp(min=1e-8)


def reference_losses(
    rgb: Tensor,
    alpha: Tensor,
    depth: Tensor,
    background: Tensor,
    batch: Dict[str, Tensor],
    normal: Optional[Tensor] = None,
) -> Dict[str, Tensor]:
    """Unweighted losses {"rgb", "mask", ["depth_rel"], ["normal"]} of one reference render:
    ``rgb`` [S,S,3] (composited over ``background`` [3]), ``alpha`` and ``depth`` [S,S,1],
    ``normal`` [S,S,3] camera-space (optional); targets ``ref_rgb`` (over white), ``ref_mask``,
    ``ref_depth``, ``ref_normal`` from ``batch``."""
    mask = batch["ref_mask"]
    white_rgb = batch["ref_rgb"]
    fg = (white_rgb - (1.0 - mask)) / mask.clamp(min=1e-3)  # straight colour where covered
    gt = torch.where(mask > 1e-3, fg * mask + background * (1.0 - mask), background.expand_as(white_rgb))
    out = {"rgb": ((rgb - gt) ** 2).mean(), "mask": ((alpha - mask) ** 2).mean()}
    inside = mask[..., 0] > 0.5
    if "ref_depth" in batch and inside.sum() > 8:
        out["depth_rel"] = 1.0 - pearson(depth[..., 0][inside], batch["ref_depth"][..., 0][inside])
    if normal is not None and "ref_normal" in batch and inside.sum() > 8:
        cos = (torch.nn.functional.normalize(normal, dim=-1) * batch["ref_normal"]).sum(-1)
        out["normal"] = (1.0 - cos[inside]).mean()
    return out
