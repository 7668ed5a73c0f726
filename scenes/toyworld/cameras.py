"""Camera paths: orbit, random-on-sphere, forward-facing and arcs; OpenGL camera-to-world matrices.

Cameras look at ``target`` with the camera's -Z axis, +Y up (OpenGL / NeRF-synthetic /
Blender), world up +Z. ``radius_for`` picks the distance at which a bounding sphere fits the
field of view with a margin. Every path is deterministic (``random`` takes a seed).
"""

from __future__ import annotations

import math

import numpy as np

PATHS = ("orbit", "random", "forward", "arc", "ring")
ARC_VIEWS = 5
"""Views per arc of the ``arc`` path's train split."""
RING_ELEVATION = 15.0
"""Elevation (degrees) of the ``ring`` path's train views: below the test ring (20-40 deg), so never a test view."""


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world 4x4 (OpenGL axes: x right, y up, camera looks along -z)."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-6:  # looking straight along up
        right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    upv = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, upv, back, eye
    return m


def radius_for(bound_radius: float, fov_x: float, margin: float = 1.15) -> float:
    return margin * bound_radius / math.sin(0.5 * fov_x)


def _sph(radius, elev_deg, az_deg, target):
    e, a = math.radians(elev_deg), math.radians(az_deg)
    return np.asarray(target) + radius * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])


def camera_path(kind: str, n: int, split: str, target, radius: float, seed: int = 0) -> np.ndarray:
    """``n`` camera-to-world matrices ``[n, 4, 4]`` of path ``kind`` for ``split``.

    * ``orbit``: train views on a golden-angle spiral over elevations -15..65 deg; test views
      on a ring at 30 +- 10 deg elevation, offset in azimuth (never identical to a train view);
      val views on the same ring, half a step from the test views.
    * ``random``: uniform on the sphere cap of elevation -10..75 deg (seeded per split).
    * ``forward``: forward-facing (LLFF-like): eyes jittered on a plane 1 radius wide in front of
      the scene (towards -Y), all looking at the target; test views on a small inner circle.
    * ``arc``: train views in consecutive groups of :data:`ARC_VIEWS` on arcs (camera trajectories):
      each arc at elevation ``U(0, 50)`` deg (+-5 per view), from azimuth ``U(0, 360)`` over a span
      of ``U(30, 70)`` deg, evenly, distance ``radius x U(1, 1.25)`` (the Gaussian predictor's
      training arcs, :mod:`studio.lift.data`; seeded); test and val views as ``orbit``'s rings.
    * ``ring``: train views evenly spaced in azimuth (360/n deg apart from azimuth 0) at
      :data:`RING_ELEVATION`, so any k evenly strided of them are spread around the object (the
      sparse-view protocol's inputs, e.g. views 0, 3, 6 of 9: 120 deg apart); test and val views
      as ``orbit``'s rings.
    """
    target = np.asarray(target, dtype=np.float64)
    mats = []
    if kind == "arc" and split == "train":
        rng = np.random.default_rng([seed, 11])
        for i in range(n):
            if i % ARC_VIEWS == 0:
                elev0, az0, span = rng.uniform(0.0, 50.0), rng.uniform(0.0, 360.0), rng.uniform(30.0, 70.0)
            az = az0 + span * (i % ARC_VIEWS) / (ARC_VIEWS - 1)
            dist = radius * rng.uniform(1.0, 1.25)
            mats.append(look_at(_sph(dist, elev0 + rng.uniform(-5.0, 5.0), az, target), target))
    elif kind == "ring" and split == "train":
        for i in range(n):
            mats.append(look_at(_sph(radius, RING_ELEVATION, 360.0 * i / max(n, 1), target), target))
    elif kind in ("orbit", "arc", "ring"):
        for i in range(n):
            if split == "train":
                s = (i + 0.5) / n
                elev = -15.0 + 80.0 * s
                az = (i * 137.508) % 360.0
            else:  # test ring; val is the same ring shifted by half a step (never a test view)
                shift = 0.5 if split == "val" else 0.0
                elev = 30.0 + 10.0 * math.sin(2.0 * math.pi * (i + shift) / max(n, 1))
                az = 360.0 * (i + shift) / max(n, 1) + 17.0
            mats.append(look_at(_sph(radius, elev, az, target), target))
    elif kind == "random":
        rng = np.random.default_rng([seed, {"train": 0, "val": 1, "test": 2}.get(split, 3)])
        lo, hi = math.sin(math.radians(-10.0)), math.sin(math.radians(75.0))
        for _ in range(n):
            z = rng.uniform(lo, hi)
            az = rng.uniform(0, 360.0)
            mats.append(look_at(_sph(radius, math.degrees(math.asin(z)), az, target), target))
    elif kind == "forward":
        rng = np.random.default_rng([seed, 7, {"train": 0, "val": 1, "test": 2}.get(split, 3)])
        base = target + radius * np.array([0.0, -math.cos(math.radians(15)), math.sin(math.radians(15))])
        right, up = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.26, 0.97])
        for i in range(n):
            if split == "train":
                x, y = rng.uniform(-0.5, 0.5, 2) * radius * np.array([0.8, 0.5])
            else:
                a = 2 * math.pi * (i + (0.5 if split == "test" else 0.0)) / max(n, 1)
                x, y = 0.2 * radius * math.cos(a), 0.12 * radius * math.sin(a)
            mats.append(look_at(base + x * right + y * up, target))
    else:
        raise ValueError(f"unknown camera path {kind!r}; one of {PATHS}")
    return np.stack(mats) if mats else np.zeros((0, 4, 4))
