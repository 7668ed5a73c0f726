"""Procedural solid textures, evaluated at object-local 3D points (no UVs needed).

A texture is a small dict (JSON-serialisable, stored in ``meta.json``)::

    {"type": "none"}
    {"type": "checker", "scale": 4.0, "color2": [r, g, b]}       # 3D checker of cell 1/scale
    {"type": "stripes", "scale": 6.0, "axis": 2, "color2": [...]}  # bands along a local axis
    {"type": "noise", "scale": 3.0, "amount": 0.5}                 # value-noise fBm tint

Solid (3D) textures are the triplanar-free way to texture arbitrary meshes: the colour depends
only on the local point, so it is identical from every view and follows the object when moved.
All colours are linear RGB.
"""

from __future__ import annotations

import numpy as np

TEXTURES = ("none", "checker", "stripes", "noise")


def _hash3(i: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point ``i`` [..., 3]."""
    i = i.astype(np.int64)
    h = (i[..., 0] * 73856093) ^ (i[..., 1] * 19349663) ^ (i[..., 2] * 83492791) ^ (seed * 2654435761)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).astype(np.float64) / float(0x1000000)


def value_noise(p: np.ndarray, seed: int = 0) -> np.ndarray:
    """Trilinear value noise in [0, 1) at points ``p`` [..., 3] (smoothstep interpolation)."""
    f = np.floor(p)
    t = p - f
    t = t * t * (3 - 2 * t)
    out = 0.0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (
                    (t[..., 0] if dx else 1 - t[..., 0])
                    * (t[..., 1] if dy else 1 - t[..., 1])
                    * (t[..., 2] if dz else 1 - t[..., 2])
                )
                out = out + w * _hash3(f + np.array([dx, dy, dz]), seed)
    return out


def fbm(p: np.ndarray, octaves: int = 4, seed: int = 0) -> np.ndarray:
    """Fractal sum of value noise, normalised to [0, 1)."""
    total, amp, norm = 0.0, 1.0, 0.0
    for o in range(octaves):
        total = total + amp * value_noise(p * (2.0**o), seed + o)
        norm += amp
        amp *= 0.5
    return total / norm


def eval_texture(tex: dict, base: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Albedo at local points ``p`` [N, 3] for base colour ``base`` [3] -> [N, 3] (linear RGB)."""
    kind = tex.get("type", "none")
    base = np.asarray(base, dtype=np.float64)
    n = p.shape[0]
    if kind == "none":
        return np.broadcast_to(base, (n, 3)).copy()
    if kind == "checker":
        c = np.floor(p * tex.get("scale", 4.0) + 1e-4).astype(np.int64).sum(-1) % 2
        return np.where(c[:, None] == 0, base, np.asarray(tex["color2"], dtype=np.float64))
    if kind == "stripes":
        c = np.floor(p[:, tex.get("axis", 2)] * tex.get("scale", 6.0)).astype(np.int64) % 2
        return np.where(c[:, None] == 0, base, np.asarray(tex["color2"], dtype=np.float64))
    if kind == "noise":
        v = fbm(p * tex.get("scale", 3.0), seed=int(tex.get("seed", 0)))
        a = tex.get("amount", 0.5)
        return base[None] * (1.0 - a + 2.0 * a * v[:, None]).clip(0.0, None).clip(
            None, 1.0 / np.maximum(base.max(), 1e-3)
        )
    raise ValueError(f"unknown texture type {kind!r}; one of {TEXTURES}")
