"""Procedural HDR environment maps (equirectangular, linear float32 ``[H, W, 3]``).

Blender's world convention (DESIGN.md; the same as :mod:`studio.pbr.envmap`): Z up, for a unit
direction ``d`` pointing from the scene to the environment
``u = 0.5 - atan2(d.y, d.x) / (2 pi)``, ``v = 0.5 + asin(d.z) / pi``, ``v = 1`` at row 0 (top).

Environments (by name; all deterministic, ``ENVIRONMENTS`` lists them):

* ``sky``: blue sky gradient over a grey-brown ground, a warm sun disc (high sun, from +X+Y).
* ``sunset``: orange horizon glow, a low sun from -Y, dark blue zenith.
* ``studio``: dark grey room with three rectangular softboxes (key, fill, rim) and a white top.
* ``overcast``: bright, soft, nearly uniform sky with a dim ground (almost no shadows).
* ``night``: dark blue with one small cold spotlight from above (high contrast).
* ``sun``: a dim blue sky and a small, very bright white sun (1.5 deg radius, 50 deg high, from
  +X-Y, ``SUN_DIRECTION``) that gives about 80% of an upward surface's irradiance: hard shadows,
  for the shadow-ray ablation of ``prd`` (methods/prd/README.md).

Intensities are chosen so a white diffuse object renders near 0.6-0.9 in linear RGB.
"""

from __future__ import annotations

import math

import numpy as np

ENVIRONMENTS = ("sky", "sunset", "studio", "overcast", "night", "sun")
SUN_DIRECTION = (0.55, -0.35, 0.76)  # the ``sun`` environment's sun (unit after normalising), ~50 deg high
DEFAULT_SIZE = (128, 256)  # H, W


def directions(height: int, width: int) -> np.ndarray:
    """Unit direction of each pixel centre -> ``[H, W, 3]`` (Blender convention)."""
    u = (np.arange(width) + 0.5) / width
    v = 1.0 - (np.arange(height) + 0.5) / height
    phi = (0.5 - u)[None, :] * 2 * math.pi
    lat = (v - 0.5)[:, None] * math.pi
    c = np.cos(lat)
    return np.stack([c * np.cos(phi), c * np.sin(phi), np.broadcast_to(np.sin(lat), (height, width))], -1)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _disc(d: np.ndarray, center, radius_deg: float, soft_deg: float = 0.5) -> np.ndarray:
    """Soft-edged disc mask of angular radius ``radius_deg`` around ``center``."""
    ang = np.degrees(np.arccos(np.clip(d @ _unit(center), -1, 1)))
    return np.clip((radius_deg + soft_deg - ang) / (2 * soft_deg), 0.0, 1.0)


def _rect(d: np.ndarray, center, up, half_w: float, half_h: float) -> np.ndarray:
    """Mask of a rectangle (softbox) facing the origin, in gnomonic coordinates about ``center``."""
    c = _unit(center)
    right = _unit(np.cross(up, c))
    upv = np.cross(c, right)
    dc = d @ c
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (d @ right) / dc
        y = (d @ upv) / dc
    m = (dc > 0) & (np.abs(x) < half_w) & (np.abs(y) < half_h)
    return m.astype(np.float64)


def make_environment(name: str, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """The named procedural environment -> float32 ``[H, W, 3]`` linear RGB radiance."""
    H, W = size
    d = directions(H, W)
    z = d[..., 2:3]
    if name == "sky":
        zenith, horizon, ground = np.array([0.25, 0.45, 0.9]), np.array([0.85, 0.9, 1.0]), np.array([0.25, 0.22, 0.18])
        t = np.clip(z, 0, 1) ** 0.5
        img = np.where(
            z > 0, horizon * (1 - t) + zenith * t, ground + (horizon - ground) * np.exp(8 * np.minimum(z, 0)) * 0.3
        )
        img = img * 0.9
        img = img + _disc(d, [0.5, 0.6, 0.62], 2.5, 0.6)[..., None] * np.array([60.0, 52.0, 40.0])
    elif name == "sunset":
        zenith, horizon, ground = (
            np.array([0.08, 0.12, 0.35]),
            np.array([1.2, 0.55, 0.25]),
            np.array([0.12, 0.08, 0.07]),
        )
        t = np.clip(z, 0, 1) ** 0.35
        img = np.where(z > 0, horizon * (1 - t) + zenith * t, ground)
        img = img + _disc(d, [0.2, -1.0, 0.12], 3.0, 0.8)[..., None] * np.array([50.0, 26.0, 10.0])
    elif name == "studio":
        img = np.full((H, W, 3), 0.05) + 0.12 * np.clip(z, 0, 1)
        up = np.array([0.0, 0.0, 1.0])
        img = img + _rect(d, [1.0, -0.8, 0.7], up, 0.35, 0.5)[..., None] * np.array([6.0, 5.8, 5.4])  # key
        img = img + _rect(d, [-1.0, -0.5, 0.3], up, 0.45, 0.45)[..., None] * np.array([1.6, 1.7, 1.9])  # fill
        img = img + _rect(d, [-0.3, 1.0, 0.8], up, 0.2, 0.6)[..., None] * np.array([5.0, 5.0, 5.0])  # rim
        img = img + _rect(d, [0.0, 0.001, 1.0], np.array([0.0, 1.0, 0.0]), 0.4, 0.4)[..., None] * 1.5  # top
    elif name == "overcast":
        t = np.clip(z, 0, 1)
        img = np.where(z > 0, np.array([0.9, 0.92, 0.95]) * (0.8 + 0.4 * t), np.array([0.25, 0.25, 0.24]))
    elif name == "night":
        img = np.where(z > 0, np.array([0.02, 0.03, 0.07]) * (1 + np.clip(z, 0, 1)), np.array([0.01, 0.01, 0.015]))
        img = img + _disc(d, [-0.3, 0.3, 1.0], 7.0, 2.0)[..., None] * np.array([6.0, 7.0, 9.0])
    elif name == "sun":
        t = np.clip(z, 0, 1)
        img = np.where(z > 0, np.array([0.10, 0.14, 0.24]) * (1.2 - 0.4 * t), np.array([0.05, 0.045, 0.04]))
        img = img + _disc(d, SUN_DIRECTION, 1.5, 0.3)[..., None] * np.array([900.0, 880.0, 840.0])
    else:
        raise ValueError(f"unknown environment {name!r}; one of {ENVIRONMENTS}")
    return np.ascontiguousarray(img, dtype=np.float32)


def solid_angles(height: int, width: int) -> np.ndarray:
    """Exact solid angle of each pixel -> ``[H]`` (one value per row; the map sums to 4 pi)."""
    i = np.arange(height + 1)
    zz = np.sin((0.5 - i / height) * math.pi)
    return (zz[:-1] - zz[1:]) * (2 * math.pi / width)


class EnvSampler:
    """Piecewise-constant environment: lookup, importance sampling and pdf (per solid angle).

    Pixel ``(i, j)`` is picked with probability proportional to ``luminance * solid angle``
    (plus 5% uniform-in-solid-angle to keep every direction reachable), then a direction
    uniform in solid angle within that pixel. Radiance lookups are nearest-pixel, so the map
    the renderer integrates is exactly the piecewise-constant image.
    """

    def __init__(self, image: np.ndarray):
        self.image = np.asarray(image, dtype=np.float64)
        H, W, _ = self.image.shape
        self.H, self.W = H, W
        self.omega_row = solid_angles(H, W)
        lum = self.image @ np.array([0.2126, 0.7152, 0.0722])
        w = lum * self.omega_row[:, None]
        p = 0.95 * w / w.sum() + 0.05 * (np.broadcast_to(self.omega_row[:, None], (H, W)) / (4 * math.pi))
        self.prob = p.reshape(-1)
        self.cdf = np.cumsum(self.prob)
        self.cdf /= self.cdf[-1]
        self.z_edges = np.sin((0.5 - np.arange(H + 1) / H) * math.pi)

    def index(self, d: np.ndarray) -> np.ndarray:
        u = 0.5 - np.arctan2(d[..., 1], d[..., 0]) / (2 * math.pi)
        v = 0.5 + np.arcsin(np.clip(d[..., 2], -1, 1)) / math.pi
        j = np.clip((u * self.W).astype(np.int64), 0, self.W - 1)
        i = np.clip(((1.0 - v) * self.H).astype(np.int64), 0, self.H - 1)
        return i * self.W + j

    def lookup(self, d: np.ndarray) -> np.ndarray:
        return self.image.reshape(-1, 3)[self.index(d)]

    def pdf(self, d: np.ndarray) -> np.ndarray:
        k = self.index(d)
        return self.prob[k] / self.omega_row[k // self.W]

    def sample(self, u: np.ndarray) -> np.ndarray:
        """Directions from uniforms ``u`` [N, 3] -> [N, 3]."""
        k = np.minimum(np.searchsorted(self.cdf, u[:, 0], side="right"), self.cdf.size - 1)
        i, j = k // self.W, k % self.W
        z = self.z_edges[i] + (self.z_edges[i + 1] - self.z_edges[i]) * u[:, 1]
        uu = (j + u[:, 2]) / self.W
        phi = (0.5 - uu) * 2 * math.pi
        r = np.sqrt(np.clip(1 - z * z, 0, None))
        return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)


_SAMPLERS: dict[str, EnvSampler] = {}


def sampler(name: str) -> EnvSampler:
    """The :class:`EnvSampler` of environment ``name`` at ``DEFAULT_SIZE``, built once per process
    and shared (treat it as read-only)."""
    if name not in _SAMPLERS:
        _SAMPLERS[name] = EnvSampler(make_environment(name))
    return _SAMPLERS[name]
