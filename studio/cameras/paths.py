"""Camera paths: look-at, orbits and latitude rings around a box (mesh extraction views)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from studio.cameras.convert import intrinsics_from_fov


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


def views_around(lo: Tensor, hi: Tensor, n_views: int, image_size: int, fov_deg: float) -> tuple[Tensor, Tensor]:
    """Cameras around the box ``[lo, hi]`` (world units, [3] each) that see all of it:
    viewmats [C,4,4] (OpenCV world-to-camera) and Ks [C,3,3] (``image_size`` px square, ``fov_deg``).

    Rings at the centres of ``R ~ sqrt(n/2)`` equal-area latitude bands about +z, each holding a
    share of the views proportional to its circumference (largest-remainder rounding), at the
    distance where the box's bounding sphere fills the field of view.
    """
    center = 0.5 * (lo + hi)
    radius = 0.5 * float((hi - lo).norm()) / math.sin(math.radians(0.5 * fov_deg))
    n_rings = max(2, round(math.sqrt(n_views / 2)))
    z = [-1.0 + (2 * i + 1) / n_rings for i in range(n_rings)]
    share = np.array([math.sqrt(1.0 - zi * zi) for zi in z])
    share = share / share.sum() * n_views
    counts = np.floor(share).astype(int)
    counts[np.argsort(counts - share)[: n_views - counts.sum()]] += 1
    mats = [
        orbit_viewmats(int(c), radius, math.degrees(math.asin(zi)), center=center.tolist(), up=(0.0, 0.0, 1.0))
        for zi, c in zip(z, counts)
        if c > 0
    ]
    viewmats = torch.cat(mats)
    K = intrinsics_from_fov(fov_deg, image_size, image_size)
    return viewmats, K[None].expand(len(viewmats), 3, 3).contiguous()


def _slerp(a: Tensor, b: Tensor, s: Tensor) -> Tensor:
    """Spherical interpolation of unit vectors ``a``, ``b`` [B,3] at fractions ``s`` [n] -> [B,n,3]."""
    cos = (a * b).sum(-1, keepdim=True).clamp(-1.0, 1.0)[:, None]  # [B,1,1]
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    s = s[None, :, None]
    lerp = (1 - s) * a[:, None] + s * b[:, None]
    slerp = (torch.sin((1 - s) * omega) * a[:, None] + torch.sin(s * omega) * b[:, None]) / sin.clamp(min=1e-8)
    out = torch.where(sin > 1e-4, slerp, lerp)
    return torch.nn.functional.normalize(out, dim=-1)


def interpolate_viewmats(first: Tensor, last: Tensor, n: int) -> Tensor:
    """[B,n,4,4] world-to-camera matrices (OpenCV) from ``first`` to ``last`` [B,4,4] (both included),
    orbiting the point the two optical axes pass closest to (:func:`studio.cameras.normalize.focus_point`):
    the direction from that point is slerped (the great circle through both, evenly spaced in
    angle), the distance and the camera's "up" interpolated, every camera looks at the point."""
    from studio.cameras.normalize import focus_point

    pair = torch.stack([first, last], 1)
    focus = focus_point(pair)  # [B,3]
    c2w = torch.linalg.inv(pair)
    eyes = c2w[..., :3, 3] - focus[:, None]  # [B,2,3]
    dist = eyes.norm(dim=-1)  # [B,2]
    s = torch.linspace(0.0, 1.0, n, dtype=first.dtype, device=first.device)
    dirs = _slerp(eyes[:, 0] / dist[:, :1], eyes[:, 1] / dist[:, 1:], s)  # [B,n,3]
    radius = (1 - s)[None] * dist[:, :1] + s[None] * dist[:, 1:]  # [B,n]
    ups = _slerp(-c2w[:, 0, :3, 1], -c2w[:, 1, :3, 1], s)  # image up = -y (OpenCV)
    out = [
        torch.stack([look_at(focus[b] + radius[b, i] * dirs[b, i], focus[b], ups[b, i]) for i in range(n)])
        for b in range(first.shape[0])
    ]
    return torch.stack(out)
