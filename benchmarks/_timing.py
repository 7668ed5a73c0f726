"""Timing helper shared by the kernel benchmarks (``rasterize.py``, ``mesh_rasterize.py``)."""

from __future__ import annotations

from typing import Callable, Sequence, Tuple


def best_of(*steps_and_repeats: Tuple[Callable[[], Sequence], int]):
    """(step, repeats) pairs, each step returning (forward s, backward s, ...): one warm-up each,
    then the steps interleaved (so that all of them see the same machine load), each keeping the
    repeat with the smallest forward + backward time. Returns that result, or a list of them when
    several steps are given."""
    runs = [[] for _ in steps_and_repeats]
    for step, _ in steps_and_repeats:
        step()
    for r in range(max(n for _, n in steps_and_repeats)):
        for k, (step, n) in enumerate(steps_and_repeats):
            if r < n:
                runs[k].append(step())
    best = [min(rs, key=lambda x: x[0] + x[1]) for rs in runs]
    return best if len(best) > 1 else best[0]
