"""Adaptive density control: gsplat's 3DGS ``DefaultStrategy`` with a cap on the Gaussian count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import torch
from gsplat.strategy import DefaultStrategy


@dataclass
class CappedStrategy(DefaultStrategy):
    """Clone/split/prune and opacity reset as in 3DGS (gsplat 1.4), growing only below ``max_gaussians``.

    The cap is checked before each densification step, so one step may overshoot it by at most
    the number of Gaussians it adds; CPU presets use it to bound the per-iteration cost.
    """

    max_gaussians: int = 1_000_000

    def _grow_gs(
        self,
        params: Dict[str, torch.nn.Parameter],
        optimizers: Dict[str, torch.optim.Optimizer],
        state: Dict[str, Any],
        step: int,
    ) -> Tuple[int, int]:
        if params["means"].shape[0] >= self.max_gaussians:
            return 0, 0
        return super()._grow_gs(params, optimizers, state, step)
