"""Visibility of the environment baked into a grid of SH (PRD Sec. 3.3, before diffuse distillation).

PRD bakes, at the points of a regular grid, the visibility V(x, w) of the environment (1 = the
direction w escapes the scene) projected onto spherical harmonics, and shades with it:

* diffuse: the irradiance is scaled by the ambient occlusion of the normal,
  ``AO(n) = (1/pi) int V(w) max(0, n.w) dw`` (SH convolution with the clamped cosine,
  Ramamoorthi & Hanrahan 2001, degree 2);
* specular: the prefiltered radiance is scaled by ``V(x, r)`` at the reflection direction.

Scaling the split-sum terms by these factors is an approximation (visibility and light are
integrated separately), the usual one for baked occlusion; the paper does not state its exact
form, so this is ours.

Lookups are offset by one grid cell along the surface normal, as irradiance probes use a
surface bias (DDGI). A surface point lies within one cell of grid points inside the object,
which see no environment; trilinear interpolation without the offset mixes them in and darkens
every surface (methods/prd/README.md has the measured effect).

Baking (``bake_visibility``): the Gaussians' opacity is splatted into a density grid (each
Gaussian adds ``4 * opacity * 2 pi s_a s_b / h^3``, its opacity-weighted cross-section over the
voxel volume: a layer of opaque splats filling a voxel has optical depth ~4 across it), then from
every SH grid point ``n_dirs`` Fibonacci directions are ray-marched through the density
(transmittance ``exp(-sum sigma dt)``, starting 1.5 voxels out to skip the point's own surface),
and ``V`` is projected on degree-2 SH. Units: world lengths; the grid spans ``aabb`` [2,3].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from studio.gaussians.bounds import gaussian_bounds
from studio.pbr.cubemap import cosine_lobe, sh_basis
from studio.pbr.gaussian_density import trilinear_splat


def grid_lookup(values: Tensor, aabb: Tensor, points: Tensor) -> Tensor:
    """Trilinear lookup of a cell-centred grid ``values`` [R,R,R,C] (index order x, y, z) over
    ``aabb`` [2,3] at world ``points`` [..., 3], clamped to the box -> [..., C]."""
    lo, hi = aabb[0], aabb[1]
    u = ((points - lo) / (hi - lo)).clamp(0.0, 1.0) * 2.0 - 1.0  # [-1, 1]
    grid = values.permute(3, 2, 1, 0)[None]  # [1, C, D=z, H=y, W=x]
    flat = u.reshape(1, -1, 1, 1, 3)
    out = F.grid_sample(grid, flat, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, :, 0, 0].T.reshape(points.shape[:-1] + (values.shape[-1],))


@dataclass
class VisibilityGrid:
    """Degree-2 SH of the environment visibility on a grid: ``coeffs`` [R,R,R,9] over ``aabb`` [2,3]."""

    coeffs: Tensor
    aabb: Tensor

    def cell_size(self) -> float:
        """Largest grid spacing (world units): the lookup offset."""
        return float((self.aabb[1] - self.aabb[0]).max()) / self.coeffs.shape[0]

    def _lookup(self, points: Tensor) -> Tensor:
        """Trilinear SH coefficients [..., 9] at world ``points`` [..., 3] (clamped to the box)."""
        return grid_lookup(self.coeffs, self.aabb, points)

    def ambient_occlusion(self, points: Tensor, normals: Tensor) -> Tensor:
        """``AO(n)`` [..., 1] in [0, 1] at ``points`` with unit ``normals`` (both [..., 3])."""
        a = cosine_lobe(9, device=points.device)
        c = self._lookup(points + self.cell_size() * normals)
        return ((c * a * sh_basis(normals)).sum(-1, keepdim=True) / math.pi).clamp(0.0, 1.0)

    def visibility(self, points: Tensor, dirs: Tensor, normals: Tensor) -> Tensor:
        """``V(x, w)`` [..., 1] in [0, 1] at surface ``points`` with unit ``normals`` towards unit
        ``dirs`` (all [..., 3])."""
        return (
            (self._lookup(points + self.cell_size() * normals) * sh_basis(dirs)).sum(-1, keepdim=True).clamp(0.0, 1.0)
        )

    def state(self) -> dict[str, Tensor]:
        return {"coeffs": self.coeffs, "aabb": self.aabb}


def object_bounds(means: Tensor, opacities: Tensor, min_opacity: float = 0.1, pad: float = 0.15) -> Tensor:
    """The grid's box [2,3]: ``gaussian_bounds`` of the Gaussians with opacity >= ``min_opacity``
    (all when fewer than 8 pass), their 0.5th-99.5th percentile per axis (stray floaters do not
    stretch it), padded by ``pad`` times its longest side (at least 1e-3)."""
    return gaussian_bounds(
        means, opacities, min_opacity=min_opacity, min_count=8, quantile=0.005, pad=pad, min_extent=1e-3
    )


def fibonacci_directions(n: int, device=None) -> Tensor:
    """n nearly uniform unit directions [n,3] on the sphere."""
    k = torch.arange(n, dtype=torch.float64, device=device) + 0.5
    z = 1.0 - 2.0 * k / n
    r = (1.0 - z * z).clamp(min=0).sqrt()
    phi = math.pi * (3.0 - math.sqrt(5.0)) * k
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1).float()


def density_grid(means: Tensor, scales: Tensor, opacities: Tensor, aabb: Tensor, resolution: int) -> Tensor:
    """Opacity density [R,R,R] (index order x, y, z; 1/length) splatted trilinearly from Gaussians."""
    lo, hi = aabb[0], aabb[1]
    h = float(((hi - lo) / resolution).max())
    s = scales.sort(dim=-1, descending=True).values
    mass = 4.0 * opacities * 2.0 * math.pi * s[:, 0] * s[:, 1] / h**3
    g = ((means - lo) / (hi - lo) * resolution - 0.5).clamp(0.0, resolution - 1.0)  # voxel-centre coords
    return trilinear_splat(g, mass[:, None], resolution)[..., 0]


@torch.no_grad()
def bake_visibility(
    means: Tensor,
    scales: Tensor,
    opacities: Tensor,
    aabb: Tensor,
    resolution: int = 16,
    density_resolution: int = 48,
    n_dirs: int = 64,
    chunk: int = 1024,
) -> VisibilityGrid:
    """Bake ``VisibilityGrid`` (see the module docstring) of Gaussians (means [N,3], linear scales
    [N,3], opacities [N]) at ``resolution``^3 points spanning ``aabb`` [2,3]."""
    device = means.device
    aabb = aabb.to(device).float()
    lo, hi = aabb[0], aabb[1]
    sigma = density_grid(means, scales, opacities, aabb, density_resolution)
    volume = sigma.permute(2, 1, 0)[None, None]  # [1,1,z,y,x] for grid_sample (x, y, z) coords
    h = float(((hi - lo) / density_resolution).max())
    n_steps = int(math.ceil(float((hi - lo).norm()) / h)) + 1
    dirs = fibonacci_directions(n_dirs, device)  # [D,3]
    basis = sh_basis(dirs) * (4.0 * math.pi / n_dirs)  # [D,9] quadrature weights
    axes = [lo[k] + (hi[k] - lo[k]) * (torch.arange(resolution, device=device) + 0.5) / resolution for k in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # [P,3], x-major
    ts = (1.5 + torch.arange(n_steps, device=device, dtype=torch.float32)) * h  # [S]
    coeffs = torch.empty(points.shape[0], 9, device=device)
    for start in range(0, points.shape[0], chunk):
        p = points[start : start + chunk]  # [p,3]
        x = p[:, None, None, :] + dirs[None, :, None, :] * ts[None, None, :, None]  # [p,D,S,3]
        inside = ((x >= lo) & (x <= hi)).all(-1)
        u = ((x - lo) / (hi - lo)) * 2.0 - 1.0
        s = F.grid_sample(volume, u.reshape(1, -1, 1, 1, 3), mode="bilinear", padding_mode="zeros", align_corners=False)
        s = s.reshape(x.shape[:-1]) * inside
        vis = torch.exp(-s.sum(-1) * h)  # [p,D]
        coeffs[start : start + chunk] = vis @ basis
    return VisibilityGrid(coeffs.reshape(resolution, resolution, resolution, 9), aabb)
