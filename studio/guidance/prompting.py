"""View-dependent prompting (DreamFusion, Poole et al. 2023, Sec. 3.2 / 4).

DreamFusion appends a view word to the prompt from the camera's direction: "overhead view" above
an elevation threshold, else "front view", "side view" or "back view" by azimuth. Thresholds
default to threestudio's (front/back cones of +-45 degrees, overhead above 60 degrees);
DreamCraft3D's texture stage uses 30/30.

Angles are degrees. Azimuth 0 looks at the object's front, any range is accepted (wrapped to
(-180, 180]); elevation is positive above the horizon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
from torch import Tensor

from studio.priors.base import Condition

VIEWS = ("front", "side", "back", "overhead")


def wrap_azimuth(azimuth_deg: Tensor) -> Tensor:
    """Azimuths (degrees, [B] or a scalar, any range) wrapped to [-180, 180), float64 [B] on the CPU."""
    az = torch.as_tensor(azimuth_deg, dtype=torch.float64).reshape(-1).cpu()
    return torch.remainder(az + 180.0, 360.0) - 180.0


@dataclass(frozen=True)
class ViewPrompting:
    """Thresholds (degrees) and the suffix of each view in ``VIEWS`` order."""

    front_threshold: float = 45.0
    back_threshold: float = 45.0
    overhead_threshold: float = 60.0
    suffixes: tuple = (", front view", ", side view", ", back view", ", overhead view")

    def view_index(self, azimuth_deg: Tensor, elevation_deg: Tensor) -> Tensor:
        """Index into ``VIEWS`` per camera, LongTensor [B] (azimuth/elevation [B] or scalars)."""
        az, el = torch.broadcast_tensors(
            wrap_azimuth(azimuth_deg), torch.as_tensor(elevation_deg, dtype=torch.float64).reshape(-1).cpu()
        )
        idx = torch.ones(az.shape, dtype=torch.long)  # side
        idx[az.abs() < self.front_threshold] = 0
        idx[az.abs() > 180.0 - self.back_threshold] = 2
        idx[el > self.overhead_threshold] = 3
        return idx

    def all_prompts(self, prompt: str) -> List[str]:
        """``prompt`` with each suffix, in ``VIEWS`` order: every string :meth:`prompts` can return."""
        return [prompt + s for s in self.suffixes]

    def prompts(self, prompt: str, azimuth_deg: Tensor, elevation_deg: Tensor) -> List[str]:
        """``prompt`` + the view suffix of each camera, one string per camera."""
        return [prompt + self.suffixes[i] for i in self.view_index(azimuth_deg, elevation_deg).tolist()]


def view_dependent_prompts(prompt: str, azimuth_deg: Tensor, elevation_deg: Tensor, **thresholds) -> List[str]:
    """Per-view prompts with default (or given) ``ViewPrompting`` thresholds."""
    return ViewPrompting(**thresholds).prompts(prompt, azimuth_deg, elevation_deg)


def batch_condition(conditions: Dict[str, Condition], prompts: Sequence[str]) -> Condition:
    """The conditions of ``prompts`` (each embedded once, batch 1, in ``conditions``) stacked to [B,...]."""
    return Condition.cat([conditions[p] for p in prompts], [1] * len(prompts))
