"""Loss pieces shared by the generators' training phases (:mod:`studio.generators.train`,
:mod:`studio.generators.leap`)."""

from __future__ import annotations

from torch import Tensor

from studio.priors.base import Condition


def generated_mask(cond: Condition) -> Tensor:
    """[B,V,1,1,1] weights of the views a loss covers: 0 for the given views."""
    return (1.0 - cond.tensors["ref_mask"])[:, :, None, None, None]


def masked_mse(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``(a - b)^2`` [B,V,C,h,w] over the views ``mask`` [B,V,1,1,1] keeps."""
    per = (a - b).pow(2) * mask
    return per.sum() / (mask.sum() * a[0, 0].numel()).clamp(min=1.0)
