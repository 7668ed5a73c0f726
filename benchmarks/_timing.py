"""Timing helpers shared by the kernel benchmarks (``rasterize.py``, ``mesh_rasterize.py``)."""

from __future__ import annotations

import statistics
from typing import Callable, List, Sequence, Tuple


def interleaved(*steps_and_repeats: Tuple[Callable[[], Sequence], int]) -> List[Tuple[Sequence, List[float]]]:
    """(step, repeats) pairs, each step returning (forward s, backward s, ...): one warm-up each,
    then the steps interleaved (so that all of them see the same machine load). Returns, per step,
    (the result of its repeat with the smallest forward + backward time, the forward + backward
    times of all its repeats in order). Only the best result so far is kept alive: holding every
    repeat's outputs would make each repeat allocate (and page-fault) fresh memory, which a
    training loop, freeing its outputs every step, does not."""
    best: list = [None] * len(steps_and_repeats)
    totals: List[List[float]] = [[] for _ in steps_and_repeats]
    for step, _ in steps_and_repeats:
        step()
    for r in range(max(n for _, n in steps_and_repeats)):
        for k, (step, n) in enumerate(steps_and_repeats):
            if r < n:
                result = step()
                totals[k].append(result[0] + result[1])
                if best[k] is None or totals[k][-1] < best[k][0] + best[k][1]:
                    best[k] = result
                del result
    return list(zip(best, totals))


def best_of(*steps_and_repeats: Tuple[Callable[[], Sequence], int]):
    """``interleaved``'s best result per step; a list when several steps are given."""
    best = [result for result, _ in interleaved(*steps_and_repeats)]
    return best if len(best) > 1 else best[0]


def paired_ratio(slow: Sequence[float], fast: Sequence[float]) -> float:
    """Median over repeats r of slow[r] / fast[r], for the repeats both have. Interleaved repeats
    run back to back, so each ratio sees one machine state: on a machine whose speed drifts, this
    is steadier than the ratio of two independent best-of times."""
    return statistics.median(a / b for a, b in zip(slow, fast))
