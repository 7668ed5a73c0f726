"""Diffusion-timestep schedules for score distillation, as data.

A schedule maps the training step to the distribution of the timestep t that a guidance noises
its renders to. Ranges are fractions of the prior's T (``num_train_timesteps``), converted to
integers as threestudio does: ``[int(T * lo), int(T * hi)]``, both ends included.

Any fraction may be a step-dependent value in threestudio's notation (see ``step_value``):
``[start_step, start_value, end_value, end_step]`` ramps linearly between the two steps, so a jump
at step n is ``[n, old, new, n + 1]``.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

StepValue = Union[float, Sequence[float]]


def step_value(value: StepValue, step: int) -> float:
    """A number, or ``[start_step, start_value, end_value, end_step]`` (``[start_value, end_value,
    end_step]`` starts at step 0) linearly interpolated at ``step`` and held outside the ramp."""
    if isinstance(value, (int, float)):
        return float(value)
    value = [float(v) for v in value]
    if len(value) == 3:
        value = [0.0] + value
    if len(value) != 4:
        raise ValueError(f"a step value is a number or [start_step, start, end, end_step], got {value}")
    start_step, start, end, end_step = value
    if end_step <= start_step:
        return end if step >= start_step else start
    r = min(max((step - start_step) / (end_step - start_step), 0.0), 1.0)
    return start + r * (end - start)


def _int_range(lo: float, hi: float, T: int) -> Tuple[int, int]:
    lo_i, hi_i = int(T * lo), min(int(T * hi), T - 1)
    if not 0.0 <= lo <= hi <= 1.0 or lo_i > hi_i:
        raise ValueError(f"timestep range ({lo}, {hi}) is not inside [0, 1]")
    return lo_i, hi_i


class TimestepSchedule:
    """Base class: ``sample(step, batch)`` -> integer timesteps [batch] in [0, T-1]."""

    def range(self, step: int) -> Tuple[float, float]:
        """The (low, high) fractions of T that ``sample`` draws from at ``step``."""
        raise NotImplementedError

    def sample(
        self,
        step: int,
        batch: int,
        generator: Optional[torch.Generator] = None,
        num_train_timesteps: int = 1000,
        device: Union[str, torch.device, None] = None,
    ) -> Tensor:
        raise NotImplementedError


class UniformTimesteps(TimestepSchedule):
    """t ~ U{int(T t_min), ..., int(T t_max)} independently per batch element (DreamFusion,
    ProlificDreamer). ``t_min``/``t_max`` may be step values, e.g. ProlificDreamer's annealing of
    the upper end from 0.98 to 0.5 at step 5000 is ``UniformTimesteps(0.02, [5000, 0.98, 0.5, 5001])``.
    """

    def __init__(self, t_min: StepValue = 0.02, t_max: StepValue = 0.98):
        self.t_min, self.t_max = t_min, t_max

    def range(self, step: int) -> Tuple[float, float]:
        return step_value(self.t_min, step), step_value(self.t_max, step)

    def sample(self, step, batch, generator=None, num_train_timesteps=1000, device=None) -> Tensor:
        lo, hi = _int_range(*self.range(step), num_train_timesteps)
        t = torch.randint(lo, hi + 1, (batch,), generator=generator, dtype=torch.long)
        return t.to(device) if device is not None else t


class DreamGaussianLinear(TimestepSchedule):
    """DreamGaussian's schedule (Tang et al. 2024, released ``main.py``): one t for the whole batch,
    decreasing linearly with training progress, t = round((1 - step / total_steps) T) clipped to
    [int(T t_min), int(T t_max)]."""

    def __init__(self, total_steps: int, t_min: float = 0.02, t_max: float = 0.98):
        if total_steps <= 0:
            raise ValueError("total_steps must be positive")
        self.total_steps, self.t_min, self.t_max = int(total_steps), float(t_min), float(t_max)

    def range(self, step: int) -> Tuple[float, float]:
        r = min(max(step / self.total_steps, 0.0), 1.0)
        f = min(max(1.0 - r, self.t_min), self.t_max)
        return f, f

    def sample(self, step, batch, generator=None, num_train_timesteps=1000, device=None) -> Tensor:
        T = num_train_timesteps
        lo, hi = _int_range(self.t_min, self.t_max, T)
        r = min(max(step / self.total_steps, 0.0), 1.0)
        t = min(max(round((1.0 - r) * T), lo), hi)
        return torch.full((batch,), t, dtype=torch.long, device=device)


class DreamCraft3DSchedule(UniformTimesteps):
    """DreamCraft3D's timestep sampling per stage (Sun et al. 2024). The paper's "diffusion
    timestep annealing" (Sec. 3.2) samples large t first and anneals to smaller ones; the numbers
    here are those of the released configs (github.com/deepseek-ai/DreamCraft3D, ``configs/``):

    * ``"coarse"`` (``dreamcraft3d-coarse-*.yaml``): t ~ U(0.7, 0.85) annealed linearly over the
      first ``anneal_steps`` = 200 steps to U(0.2, 0.5) (the same for the DeepFloyd and the
      Zero123 guidance);
    * ``"geometry"`` (``dreamcraft3d-geometry.yaml``): t ~ U(0.02, 0.5);
    * ``"texture"`` (``dreamcraft3d-texture.yaml``, the BSD stage): t ~ U(0.05, t_max) with t_max
      annealed linearly from 0.5 to 0.2 over ``anneal_steps`` = 5000 (the stage's length).
    """

    STAGES = ("coarse", "geometry", "texture")

    def __init__(self, stage: str = "coarse", anneal_steps: Optional[int] = None):
        if stage == "coarse":
            n = 200 if anneal_steps is None else anneal_steps
            super().__init__([0, 0.7, 0.2, n], [0, 0.85, 0.5, n])
        elif stage == "geometry":
            super().__init__(0.02, 0.5)
        elif stage == "texture":
            n = 5000 if anneal_steps is None else anneal_steps
            super().__init__(0.05, [0, 0.5, 0.2, n])
        else:
            raise ValueError(f"unknown DreamCraft3D stage {stage!r}; one of {self.STAGES}")
        self.stage = stage
