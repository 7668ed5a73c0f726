"""Split-sum BRDF integration LUT (Karis 2013, "Real Shading in Unreal Engine 4").

The specular part of image-based lighting is approximated as

    int L(l) f_spec(v, l) n.l dl  ~=  prefiltered_L(r, roughness) * (F0 * A + B)

with ``A(n.v, roughness) = int (f_spec / F) (1 - Fc) n.l dl`` and
``B(n.v, roughness) = int (f_spec / F) Fc n.l dl``, ``Fc = (1 - v.h)^5``, for the BRDF of
``studio.pbr.brdf`` (GGX, ``alpha = roughness^2``, height-correlated Smith ``V``).

Layout: ``lut[i, j] = (A, B)`` with ``n.v = i / (R - 1)`` and ``roughness = j / (R - 1)`` (the
grid includes both ends, like ``align_corners=True``, so roughness 1 and ``n.v = 1`` are exact
entries); ``lut_lookup`` interpolates bilinearly. Shape ``[R, R, 2]`` float32. (The ``n.v = 0``
row is the grazing limit; shading clamps ``n.v >= 1e-4``.)

It is computed by our own code (importance sampling ``sample_ggx`` with a Hammersley sequence,
``samples`` per texel; 64x64 with 4096 samples takes 1-3 s on one CPU core) and
cached twice: in memory (per process) and as a small ``.npy`` file (32 KiB for R=64) under
``$STUDIO_CACHE_DIR/pbr/`` (default ``~/.cache/distill-studio/pbr/``), named by every parameter
and a version tag, e.g. ``brdf_lut_ggx-smithhc_R64_N4096_v2.npy``. A missing, unreadable or
malformed cache file is recomputed and rewritten atomically; an unwritable cache dir is ignored.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .brdf import MIN_ROUGHNESS, smith_visibility

__all__ = ["compute_brdf_lut", "get_brdf_lut", "lut_lookup", "cache_dir", "hammersley"]

_VERSION = "v2"
_MEM: dict[tuple[int, int], torch.Tensor] = {}


def cache_dir() -> Path:
    root = os.environ.get("STUDIO_CACHE_DIR") or (Path.home() / ".cache" / "distill-studio")
    return Path(root) / "pbr"


def hammersley(n: int, dtype=torch.float64) -> torch.Tensor:
    """``[n, 2]`` Hammersley points ``(i / n, radical_inverse_2(i))``."""
    i = torch.arange(n, dtype=torch.int64)
    bits = torch.zeros(n, dtype=torch.float64)
    scale = 0.5
    x = i.clone()
    while bool((x > 0).any()):
        bits = bits + (x & 1).to(torch.float64) * scale
        x = x >> 1
        scale *= 0.5
    return torch.stack([i.to(torch.float64) / n, bits], -1).to(dtype)


@torch.no_grad()
def compute_brdf_lut(resolution: int = 64, samples: int = 4096) -> torch.Tensor:
    """Integrate ``(A, B)`` by GGX importance sampling -> ``[R, R, 2]`` float32 (CPU).

    Same sampling as ``brdf.sample_ggx`` (``h ~ D(h) n.h``), written out in the tangent frame
    ``n = +z``, ``v = (sqrt(1 - n.v^2), 0, n.v)`` and vectorised over the whole table. Each
    sample contributes ``f_spec n.l / pdf / F = 4 V n.l v.h / n.h`` (``n.l > 0``).
    """
    R, S = resolution, samples
    grid = torch.linspace(0.0, 1.0, R, dtype=torch.float64)
    nv = grid[:, None, None]  # [R, 1, 1]
    rough = grid[None, :, None]  # [1, R, 1]
    u = hammersley(S, torch.float64)
    u1, phi = u[:, 0][None, None], (2.0 * math.pi * u[:, 1])[None, None]  # [1, 1, S]
    alpha = rough.clamp(MIN_ROUGHNESS, 1.0) ** 2
    a2 = alpha * alpha
    cos_t = torch.sqrt(((1.0 - u1) / (1.0 + (a2 - 1.0) * u1)).clamp(0.0, 1.0))  # [1, R, S]
    sin_t = torch.sqrt((1.0 - cos_t * cos_t).clamp(min=0.0))
    out = torch.zeros(R, R, 2, dtype=torch.float64)
    for i0 in range(0, R, 8):  # chunks over n.v keep the working set small
        c = nv[i0 : i0 + 8]
        s = torch.sqrt(1.0 - c * c)
        vh = s * sin_t * torch.cos(phi) + c * cos_t  # [r, R, S]
        nl = 2.0 * vh * cos_t - c
        vis = smith_visibility(c.expand_as(nl), nl, alpha)
        w = torch.where(nl > 0, vis * 4.0 * nl * vh.clamp(min=0.0) / cos_t.clamp(min=1e-12), torch.zeros_like(nl))
        fc = (1.0 - vh.clamp(0.0, 1.0)) ** 5
        out[i0 : i0 + 8, :, 0] = (w * (1.0 - fc)).mean(-1)
        out[i0 : i0 + 8, :, 1] = (w * fc).mean(-1)
    return out.to(torch.float32)


def _cache_file(resolution: int, samples: int) -> Path:
    return cache_dir() / f"brdf_lut_ggx-smithhc_R{resolution}_N{samples}_{_VERSION}.npy"


def get_brdf_lut(resolution: int = 64, samples: int = 4096, device=None, use_file_cache: bool = True) -> torch.Tensor:
    """The ``[R, R, 2]`` LUT, from memory, the file cache, or computed (then cached)."""
    key = (resolution, samples)
    lut = _MEM.get(key)
    if lut is None and use_file_cache:
        path = _cache_file(resolution, samples)
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape == (resolution, resolution, 2) and arr.dtype == np.float32 and np.isfinite(arr).all():
                lut = torch.from_numpy(arr.copy())
        except (OSError, ValueError):
            lut = None
    if lut is None:
        lut = compute_brdf_lut(resolution, samples)
        if use_file_cache:
            try:
                from studio.io.atomic import atomic_path

                with atomic_path(_cache_file(resolution, samples)) as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, lut.numpy())
            except OSError:
                pass
    _MEM[key] = lut
    return lut if device is None else lut.to(device)


def lut_lookup(lut: torch.Tensor, n_dot_v: torch.Tensor, roughness: torch.Tensor) -> torch.Tensor:
    """Bilinear LUT lookup -> ``[..., 2]`` = ``(A, B)``; ``n_dot_v``, ``roughness`` ``[..., 1]``.

    Differentiable in ``n_dot_v`` and ``roughness`` (piecewise linear); inputs clamped to [0, 1].
    """
    R = lut.shape[0]
    lut = lut.to(device=n_dot_v.device, dtype=n_dot_v.dtype)
    n_dot_v, roughness = torch.broadcast_tensors(n_dot_v, roughness)
    x = n_dot_v[..., 0].clamp(0.0, 1.0) * (R - 1)
    y = roughness[..., 0].clamp(0.0, 1.0) * (R - 1)
    x0 = x.detach().floor().clamp(max=R - 2).long()
    y0 = y.detach().floor().clamp(max=R - 2).long()
    fx = (x - x0.to(x.dtype))[..., None]
    fy = (y - y0.to(y.dtype))[..., None]
    flat = lut.reshape(R * R, 2)

    def g(ix, iy):
        # index_select: a reproducible backward on the CPU (see studio.pbr.cubemap.cube_lookup)
        return flat.index_select(0, (ix * R + iy).reshape(-1)).reshape(*ix.shape, 2)

    top = g(x0, y0) * (1 - fy) + g(x0, y0 + 1) * fy
    bot = g(x0 + 1, y0) * (1 - fy) + g(x0 + 1, y0 + 1) * fy
    return top * (1 - fx) + bot * fx
