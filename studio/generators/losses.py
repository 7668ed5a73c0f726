"""Loss and training pieces shared by the generators' training phases (:mod:`studio.generators.train`,
:mod:`studio.generators.leap`, the generator methods)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from studio.priors.base import Condition


def generated_mask(cond: Condition) -> Tensor:
    """[B,V,1,1,1] weights of the views a loss covers: 0 for the given views."""
    return (1.0 - cond.tensors["ref_mask"])[:, :, None, None, None]


def masked_mse(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``(a - b)^2`` [B,V,C,h,w] over the views ``mask`` [B,V,1,1,1] keeps."""
    per = (a - b).pow(2) * mask
    return per.sum() / (mask.sum() * a[0, 0].numel()).clamp(min=1.0)


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, decay: float) -> None:
    """``average <- decay * average + (1 - decay) * model``, parameter by parameter (the exported
    EMA weights; leap distillation's target network)."""
    for a, p in zip(average.parameters(), model.parameters()):
        a.lerp_(p.detach(), 1.0 - decay)
