"""Camera paths: look-at and orbits (turntables, mesh extraction views, viewer defaults)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """World-to-camera [4,4] (OpenCV axes) of a camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that appears upwards in the image (image y points down).
    """
    forward = torch.nn.functional.normalize(target - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up), dim=0)
    down = torch.linalg.cross(forward, right)
    rot = torch.stack([right, down, forward])  # rows: camera axes in world
    viewmat = torch.eye(4, dtype=eye.dtype)
    viewmat[:3, :3] = rot
    viewmat[:3, 3] = -rot @ eye
    return viewmat


def orbit_viewmats(
    n: int,
    radius: float,
    elevation_deg: float | Sequence[float] = 20.0,
    center: Sequence[float] = (0.0, 0.0, 0.0),
    up: Sequence[float] = (0.0, 0.0, 1.0),
) -> Tensor:
    """[n,4,4] world-to-camera matrices on a circle around ``center``.

    The orbit turns about ``up``; ``elevation_deg`` (one value or one per view) lifts the camera
    above the plane orthogonal to ``up``. Azimuths are evenly spaced starting at 0.
    """
    up_t = torch.nn.functional.normalize(torch.tensor(up, dtype=torch.float32), dim=0)
    ctr = torch.tensor(center, dtype=torch.float32)
    helper = torch.tensor([1.0, 0.0, 0.0]) if abs(float(up_t[0])) < 0.9 else torch.tensor([0.0, 1.0, 0.0])
    e1 = torch.nn.functional.normalize(helper - (helper @ up_t) * up_t, dim=0)
    e2 = torch.linalg.cross(up_t, e1)
    elevs = [float(elevation_deg)] * n if isinstance(elevation_deg, (int, float)) else [float(e) for e in elevation_deg]
    mats = []
    for i in range(n):
        az = 2.0 * math.pi * i / n
        el = math.radians(elevs[i])
        direction = math.cos(el) * (math.cos(az) * e1 + math.sin(az) * e2) + math.sin(el) * up_t
        mats.append(look_at(ctr + radius * direction, ctr, up_t))
    return torch.stack(mats)
