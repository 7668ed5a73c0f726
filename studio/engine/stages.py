"""Step ranges of multi-stage methods (``prd``, ``dreamcraft3d``): stage k (1-based) covers the
global steps ``[sum(iters[:k-1]), sum(iters[:k]))``; steps past the end belong to the last stage."""

from __future__ import annotations

from itertools import accumulate
from typing import List, Sequence


def stage_bounds(iters: Sequence[int]) -> List[int]:
    """Cumulative end step of each stage."""
    return list(accumulate(int(n) for n in iters))


def stage_of(step: int, iters: Sequence[int]) -> int:
    """Stage (1-based) of global step ``step``."""
    bounds = stage_bounds(iters)
    for k, end in enumerate(bounds):
        if step < end:
            return k + 1
    return len(bounds)
