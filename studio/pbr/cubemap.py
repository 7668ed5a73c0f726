"""Cubemap environment light: learnable radiance, GGX-prefiltered mip chain, SH irradiance.

Cube layout: ``[6, R, R, C]``, faces in OpenGL order ``+X, -X, +Y, -Y, +Z, -Z`` of the *world*
frame (Z up, as ``studio.pbr.envmap``), each face indexed ``[t (row), s (column)]`` with the
OpenGL cube-map (s, t) table (``s = (sc / |ma| + 1) / 2``, ``t = (tc / |ma| + 1) / 2``):

    face  ma   sc   tc          face  ma   sc   tc
    +X    x    -z   -y          -Y    y    +x   -z
    -X    x    +z   -y          +Z    z    +x   -y
    +Y    y    +x   +z          -Z    z    -x   -y

``direction_to_cube``/``cube_directions`` are exact inverses; ``cube_lookup`` is bilinear inside
a face (clamped at face edges; no filtering across seams).

Split-sum specular (Karis 2013): level ``k`` of the mip chain holds the environment convolved
with the GGX lobe of roughness ``roughness_levels[k]`` under the ``n = v = r`` assumption,
``P_k(r) = int L(l) D(h) n.l dl / int D(h) n.l dl`` (exactly what Karis's importance-sampled
prefilter estimates), computed as a fixed, row-normalised linear operator on the
(box-downsampled) cube of that level's resolution; weights below ``1e-4`` of a row's maximum are
dropped and the rest stored sparse (dense when over 25% remain). The operator is built once per (resolution, roughness,
device) and cached in memory, so prefiltering is one (sparse) matmul per level and
differentiable in the light. Level 0 has roughness 0 (the cube itself). Lookups interpolate
linearly between levels in roughness (default levels 0, 1/8, 1/4, 1/2, 3/4, 1).

Diffuse: irradiance from the degree-2 (9 coefficient) SH projection of the radiance,
``E(n) = sum_lm A_l L_lm Y_lm(n)`` with ``A = (pi, 2pi/3, pi/4)`` (Ramamoorthi & Hanrahan 2001,
"An Efficient Representation for Irradiance Environment Maps"); texel solid angles are exact,
so a constant radiance ``c`` gives ``E = pi c`` to float precision.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .brdf import alpha_from_roughness, ggx_ndf
from .envmap import sample_equirect

__all__ = [
    "cube_directions",
    "direction_to_cube",
    "cube_lookup",
    "cube_solid_angles",
    "equirect_to_cube",
    "downsample_cube",
    "prefilter_cube",
    "sh_basis",
    "sh_project",
    "sh_irradiance",
    "cosine_lobe",
    "CubemapLight",
    "level_resolution",
]


# --------------------------------------------------------------------------- geometry
def _face_dir(face: int, sc: torch.Tensor, tc: torch.Tensor) -> torch.Tensor:
    one = torch.ones_like(sc)
    return {
        0: lambda: torch.stack([one, -tc, -sc], -1),
        1: lambda: torch.stack([-one, -tc, sc], -1),
        2: lambda: torch.stack([sc, one, tc], -1),
        3: lambda: torch.stack([sc, -one, -tc], -1),
        4: lambda: torch.stack([sc, -tc, one], -1),
        5: lambda: torch.stack([-sc, -tc, -one], -1),
    }[face]()


def cube_directions(resolution: int, device=None, dtype=torch.float32, normalize: bool = True) -> torch.Tensor:
    """Directions of texel centres -> ``[6, R, R, 3]`` (unit unless ``normalize=False``)."""
    c = (torch.arange(resolution, device=device, dtype=dtype) + 0.5) / resolution * 2.0 - 1.0
    tc, sc = torch.meshgrid(c, c, indexing="ij")
    d = torch.stack([_face_dir(f, sc, tc) for f in range(6)])
    return d / d.norm(dim=-1, keepdim=True) if normalize else d


def direction_to_cube(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Directions ``[..., 3]`` -> ``(face [...] long, s [...], t [...])`` with ``s, t`` in [0, 1]."""
    x, y, z = d.unbind(-1)
    ax, ay, az = x.abs(), y.abs(), z.abs()
    is_x = (ax >= ay) & (ax >= az)
    is_y = ~is_x & (ay >= az)
    face = torch.where(
        is_x, torch.where(x >= 0, 0, 1), torch.where(is_y, torch.where(y >= 0, 2, 3), torch.where(z >= 0, 4, 5))
    )
    ma = torch.where(is_x, ax, torch.where(is_y, ay, az)).clamp(min=1e-12)
    sc = torch.where(is_x, torch.where(x >= 0, -z, z), torch.where(is_y, x, torch.where(z >= 0, x, -x)))
    tc = torch.where(is_x, -y, torch.where(is_y, torch.where(y >= 0, z, -z), -y))
    return face, (sc / ma + 1.0) * 0.5, (tc / ma + 1.0) * 0.5


def cube_lookup(cube: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of ``cube`` ``[6, R, R, C]`` in directions ``d`` ``[..., 3]`` -> ``[..., C]``."""
    R, C = cube.shape[1], cube.shape[-1]
    face, s, t = direction_to_cube(d.to(cube.dtype))
    x = (s * R - 0.5).clamp(0.0, R - 1.0)
    y = (t * R - 0.5).clamp(0.0, R - 1.0)
    x0 = x.detach().floor().clamp(max=max(R - 2, 0)).long()
    y0 = y.detach().floor().clamp(max=max(R - 2, 0)).long()
    x1 = (x0 + 1).clamp(max=R - 1)
    y1 = (y0 + 1).clamp(max=R - 1)
    fx = (x - x0.to(x.dtype))[..., None]
    fy = (y - y0.to(y.dtype))[..., None]
    flat = cube.reshape(6 * R * R, C)
    base = face * (R * R)

    def g(yy, xx):
        # index_select, not flat[idx]: its backward (index_add) sums in a fixed order on the CPU,
        # where the backward of advanced indexing adds atomically (run-to-run float differences)
        return flat.index_select(0, (base + yy * R + xx).reshape(-1)).reshape(*yy.shape, C)

    top = g(y0, x0) * (1 - fx) + g(y0, x1) * fx
    bot = g(y1, x0) * (1 - fx) + g(y1, x1) * fx
    return top * (1 - fy) + bot * fy


def cube_solid_angles(resolution: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Exact solid angle of each texel -> ``[6, R, R]`` (sums to ``4 pi``)."""
    e = torch.linspace(-1.0, 1.0, resolution + 1, dtype=torch.float64)
    a, b = torch.meshgrid(e, e, indexing="ij")
    f = torch.atan2(a * b, torch.sqrt(a * a + b * b + 1.0))
    w = f[1:, 1:] - f[:-1, 1:] - f[1:, :-1] + f[:-1, :-1]
    return w.to(device=device, dtype=dtype)[None].expand(6, resolution, resolution).contiguous()


def equirect_to_cube(image: torch.Tensor, resolution: int, supersample: int | None = None) -> torch.Tensor:
    """Resample an equirect ``[H, W, C]`` (Blender convention) -> cube ``[6, R, R, C]``.

    Each texel averages ``supersample^2`` bilinear lookups; the default picks about one lookup
    per equirect pixel (``ceil(W / (4 R))``, at most 32) so small bright sources (suns) keep
    their energy. Differentiable in ``image``.
    """
    H, W, C = image.shape
    ss = supersample or max(1, min(32, math.ceil(W / (4 * resolution))))
    c = (torch.arange(resolution * ss, device=image.device, dtype=image.dtype) + 0.5) / (resolution * ss) * 2.0 - 1.0
    tc, sc = torch.meshgrid(c, c, indexing="ij")
    faces = []
    for f in range(6):  # face by face keeps the working set small
        d = _face_dir(f, sc, tc)
        vals = sample_equirect(image, d / d.norm(dim=-1, keepdim=True))  # [Rs, Rs, C]
        vals = vals.permute(2, 0, 1)[None]
        faces.append((F.avg_pool2d(vals, ss) if ss > 1 else vals)[0].permute(1, 2, 0))
    return torch.stack(faces).contiguous()


def downsample_cube(cube: torch.Tensor, resolution: int) -> torch.Tensor:
    """Box-downsample ``[6, R, R, C]`` to ``[6, r, r, C]`` (``R`` a multiple of ``r``)."""
    R = cube.shape[1]
    if resolution == R:
        return cube
    if R % resolution:
        raise ValueError(f"cube resolution {R} is not a multiple of {resolution}")
    x = cube.permute(0, 3, 1, 2)
    return F.avg_pool2d(x, R // resolution).permute(0, 2, 3, 1).contiguous()


# --------------------------------------------------------------------------- GGX prefilter
_OPS: dict[tuple, torch.Tensor] = {}


@torch.no_grad()
def _prefilter_operator(resolution: int, roughness: float, device) -> torch.Tensor:
    """Row-normalised ``[6 R^2, 6 R^2]`` GGX prefilter operator (sparse COO or dense)."""
    key = (resolution, round(float(roughness), 6), str(device))
    op = _OPS.get(key)
    if op is not None:
        return op
    n_dir = cube_directions(resolution, dtype=torch.float64).reshape(-1, 3)
    omega = cube_solid_angles(resolution, dtype=torch.float64).reshape(-1)
    alpha = alpha_from_roughness(torch.tensor(float(roughness), dtype=torch.float64))
    N = n_dir.shape[0]
    rows, cols, vals = [], [], []
    chunk = max(1, 2_000_000 // N)
    for i0 in range(0, N, chunk):
        n = n_dir[i0 : i0 + chunk]  # [c, 3]
        nl = n @ n_dir.T  # [c, N] (l = texel direction)
        # n.h with h = normalize(n + l): n.h = (1 + n.l) / |n + l| = sqrt((1 + n.l) / 2)
        nh = torch.sqrt(((1.0 + nl) * 0.5).clamp(min=0.0))
        w = ggx_ndf(nh, alpha) * nl.clamp(min=0.0) * omega[None]
        w = torch.where(w >= 1e-4 * w.amax(1, keepdim=True), w, torch.zeros_like(w))
        w = w / w.sum(1, keepdim=True)
        r, c = torch.nonzero(w, as_tuple=True)
        rows.append(r + i0)
        cols.append(c)
        vals.append(w[r, c])
    rows, cols, vals = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    if vals.numel() > 0.25 * N * N:
        op = torch.zeros(N, N, dtype=torch.float32)
        op[rows, cols] = vals.float()
    else:
        op = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals.float(), (N, N), check_invariants=False).coalesce()
    op = op.to(device)
    _OPS[key] = op
    return op


def prefilter_cube(cube: torch.Tensor, roughness: float) -> torch.Tensor:
    """GGX-prefilter ``cube`` ``[6, R, R, C]`` for ``roughness`` (``n = v = r``), same size.

    Roughness 0 returns ``cube``. Differentiable in ``cube``.
    """
    if roughness <= 0.0:
        return cube
    R, C = cube.shape[1], cube.shape[-1]
    op = _prefilter_operator(R, roughness, cube.device)
    flat = cube.reshape(6 * R * R, C)
    out = torch.sparse.mm(op, flat) if op.is_sparse else op.to(flat.dtype) @ flat
    return out.reshape(6, R, R, C)


# --------------------------------------------------------------------------- SH irradiance
_SH_A = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)
_SH_BAND = (0, 1, 1, 1, 2, 2, 2, 2, 2)  # degree of each coefficient of ``sh_basis``


def cosine_lobe(count: int = 9, device=None, dtype=torch.float32) -> torch.Tensor:
    """Clamped-cosine convolution factors ``A_l`` ``[count]`` of the first ``count`` (1, 4 or 9)
    coefficients of ``sh_basis``: ``E(n) = sum_k A_k L_k Y_k(n)`` (R&H 2001)."""
    return torch.tensor([_SH_A[_SH_BAND[k]] for k in range(count)], device=device, dtype=dtype)


def sh_basis(d: torch.Tensor) -> torch.Tensor:
    """Real SH basis up to degree 2 at unit directions ``[..., 3]`` -> ``[..., 9]``.

    Order ``Y00, Y1-1 (y), Y10 (z), Y11 (x), Y2-2 (xy), Y2-1 (yz), Y20, Y21 (xz), Y22``.
    """
    x, y, z = d.unbind(-1)
    return torch.stack(
        [
            torch.full_like(x, 0.282094791773878),
            0.488602511902920 * y,
            0.488602511902920 * z,
            0.488602511902920 * x,
            1.092548430592079 * x * y,
            1.092548430592079 * y * z,
            0.315391565252520 * (3.0 * z * z - 1.0),
            1.092548430592079 * x * z,
            0.546274215296040 * (x * x - y * y),
        ],
        -1,
    )


def sh_project(cube: torch.Tensor) -> torch.Tensor:
    """Project radiance ``[6, R, R, C]`` onto degree-2 SH -> ``[9, C]``."""
    R = cube.shape[1]
    d = cube_directions(R, device=cube.device, dtype=cube.dtype)
    w = cube_solid_angles(R, device=cube.device, dtype=cube.dtype)
    Y = sh_basis(d) * w[..., None]  # [6, R, R, 9]
    return torch.einsum("fijk,fijc->kc", Y, cube)


def sh_irradiance(coeffs: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Irradiance ``E(n)`` ``[..., C]`` from radiance SH ``coeffs`` ``[9, C]`` (R&H 2001)."""
    a = cosine_lobe(9, device=coeffs.device, dtype=coeffs.dtype)
    return sh_basis(normal.to(coeffs.dtype)) @ (coeffs * a[:, None])


# --------------------------------------------------------------------------- learnable light
def level_resolution(resolution: int, roughness: float, min_resolution: int = 8) -> int:
    """Face resolution of the mip level for ``roughness``.

    Roughness 0 -> ``resolution``; otherwise the power of two ``>= 1 / alpha`` (a texel of
    about ``pi / 2 * alpha`` radians, a fraction of the GGX lobe's width ``~2 alpha`` in ``l``),
    clamped to ``[min_resolution, resolution / 2]``.
    """
    if roughness <= 0.0:
        return resolution
    alpha = max(float(roughness), 1e-3) ** 2
    res = 2 ** math.ceil(math.log2(1.0 / alpha))
    res = min(max(res, min_resolution), max(resolution // 2, 1))
    while resolution % res:
        res //= 2
    return max(res, 1)


class CubemapLight(nn.Module):
    """Learnable HDR environment light ``[6, R, R, 3]`` with an ``exp`` activation.

    ``radiance = exp(log_radiance)`` (linear, non-negative). ``roughness_levels`` are the
    prefiltered mip levels, level ``k`` at face resolution ``level_resolution(R, r_k)`` (for
    ``R = 64``: 64, 32, 16, 8, 8, 8 for roughness 0, 1/8, 1/4, 1/2, 3/4, 1). Building the
    prefilter operators costs a few seconds once per process (cached in memory); a prefiltering
    forward pass then costs a few milliseconds to tens of ms on a CPU.

    Methods used by ``studio.pbr.shading``: ``prefiltered()`` (list of cubes), ``specular(dirs,
    roughness, levels)``, ``sh_coeffs()`` and ``irradiance(normal, coeffs)``.
    """

    def __init__(
        self,
        resolution: int = 64,
        init_radiance: float = 1.0,
        roughness_levels: Sequence[float] = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0),
        min_resolution: int = 8,
        learnable: bool = True,
    ):
        super().__init__()
        if roughness_levels[0] != 0.0 or list(roughness_levels) != sorted(roughness_levels):
            raise ValueError("roughness_levels must be increasing and start at 0")
        self.resolution = int(resolution)
        self.roughness_levels = tuple(float(r) for r in roughness_levels)
        self.level_resolutions = tuple(
            level_resolution(self.resolution, r, min_resolution) for r in self.roughness_levels
        )
        init = torch.full((6, resolution, resolution, 3), math.log(max(init_radiance, 1e-8)))
        self.log_radiance = nn.Parameter(init, requires_grad=learnable)

    @classmethod
    def from_equirect(
        cls, image, resolution: int = 64, supersample: int | None = None, min_radiance: float = 1e-4, **kwargs
    ) -> "CubemapLight":
        """Initialise from an equirect ``[H, W, 3]`` (tensor or array, e.g. ``read_envmap``)."""
        img = torch.as_tensor(image, dtype=torch.float32)
        light = cls(resolution, **kwargs)
        with torch.no_grad():
            cube = equirect_to_cube(img, resolution, supersample)
            light.log_radiance.copy_(cube.clamp(min=min_radiance).log())
        return light

    def radiance(self) -> torch.Tensor:
        return torch.exp(self.log_radiance)

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        """Radiance seen along ``dirs`` ``[..., 3]`` -> ``[..., 3]`` (bilinear)."""
        return cube_lookup(self.radiance(), dirs)

    def prefiltered(self) -> list[torch.Tensor]:
        return self.prefilter(self.radiance())

    def prefilter(self, cube: torch.Tensor) -> list[torch.Tensor]:
        """The mip chain of this light's levels for any radiance ``cube`` ``[6, R, R, C]`` (e.g. a
        part of the light), as ``specular(..., levels)`` reads it."""
        return [
            prefilter_cube(downsample_cube(cube, res), r)
            for r, res in zip(self.roughness_levels, self.level_resolutions)
        ]

    def specular(
        self, dirs: torch.Tensor, roughness: torch.Tensor, levels: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Prefiltered radiance along reflection ``dirs`` ``[..., 3]`` at ``roughness`` ``[..., 1]``."""
        levels = self.prefiltered() if levels is None else levels
        rl = torch.tensor(self.roughness_levels, device=dirs.device, dtype=dirs.dtype)
        r = roughness.clamp(0.0, 1.0).to(dirs.dtype)
        # piecewise-linear weights over the (possibly uneven) roughness levels
        idx = torch.searchsorted(rl, r.detach().contiguous(), right=True).clamp(1, len(rl) - 1)
        lo, hi = rl[idx - 1], rl[idx]
        t = ((r - lo) / (hi - lo)).clamp(0.0, 1.0)
        out = torch.zeros(*dirs.shape[:-1], 3, device=dirs.device, dtype=dirs.dtype)
        for k, cube in enumerate(levels):
            w = torch.where(idx == k + 1, 1.0 - t, torch.zeros_like(t)) + torch.where(idx == k, t, torch.zeros_like(t))
            if bool((w > 0).any()):
                out = out + w * cube_lookup(cube, dirs)
        return out

    def sh_coeffs(self) -> torch.Tensor:
        return sh_project(self.radiance())

    def irradiance(self, normal: torch.Tensor, coeffs: torch.Tensor | None = None) -> torch.Tensor:
        coeffs = self.sh_coeffs() if coeffs is None else coeffs
        return sh_irradiance(coeffs, normal)

    def to_equirect(self, height: int, width: int) -> torch.Tensor:
        from .envmap import equirect_directions

        return self(equirect_directions(height, width, device=self.log_radiance.device))
