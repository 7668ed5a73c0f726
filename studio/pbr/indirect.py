"""Indirect (one-bounce and more) diffuse light from the radiance field: an irradiance volume of SH
and per-Gaussian SH.

The environment light reaches a surface point only through the directions its visibility leaves
open; through the others it sees the scene, which sends it the light the scene reflects. The
radiance field (the 3DGS colours) *is* that outgoing light, as observed. Two forms, as the two
papers that add indirect light to Gaussian inverse rendering have it:

* ``IndirectVolume`` (GS-IR, Liang et al. CVPR 2024, bakes occlusion and indirect illumination
  into volumes of SH at grid points): at every grid point, rays in ``n_dirs`` Fibonacci directions
  are marched through the Gaussians' density and collect the radiance field's colour (linear;
  ``studio.pbr.gaussian_density``, ``DensityGrid.march``); rays that escape collect nothing, so the
  result is the incident light from the occluded directions alone. It is projected on degree-2 SH
  per colour channel, looked up trilinearly one cell off the surface along the normal (as
  ``studio.pbr.visibility``), and turned into irradiance with the clamped-cosine convolution
  (Ramamoorthi & Hanrahan 2001). GS-IR learns its indirect volume and mixes it as
  ``AO E_env + (1 - AO) E_ind``; ours is baked from the radiance field, which already holds only
  the occluded part, so it adds: ``E = AO E_env + E_ind``.
* ``gaussian_sh_irradiance`` (Relightable 3D Gaussians, Gao et al. 2023: every Gaussian carries
  learnable SH of its "local" incident light, added to the visible environment): per-Gaussian
  degree-1 SH of incident indirect radiance [N,4,3], turned into irradiance along the Gaussian's
  normal; the caller splats it as a G-buffer and may tie it to the volume above (a regulariser).

Under another light the baked or learned indirect light is wrong (it is the training light's
bounce). ``relight_scale`` is the first-order fix: indirect light is linear in the light, so it
scales by the ratio of the two lights' mean radiance per channel (exact when the new light has the
training light's angular distribution, a colour/intensity correction otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from studio.pbr.cubemap import cosine_lobe, sh_basis
from studio.pbr.gaussian_density import DensityGrid
from studio.pbr.visibility import fibonacci_directions, grid_lookup

__all__ = ["IndirectVolume", "bake_indirect", "gaussian_sh_irradiance", "relight_scale"]


def _irradiance(coeffs: Tensor, normals: Tensor) -> Tensor:
    """Irradiance [..., 3] from radiance SH ``coeffs`` [..., K, 3] (K = 4 or 9, ``sh_basis`` order)
    at unit ``normals`` [..., 3]; may dip below 0 (SH ringing), not clamped."""
    K = coeffs.shape[-2]
    lobe = cosine_lobe(K, device=coeffs.device, dtype=coeffs.dtype)
    basis = sh_basis(normals.to(coeffs.dtype))[..., :K] * lobe  # [..., K]
    return (basis[..., None] * coeffs).sum(-2)


@dataclass
class IndirectVolume:
    """Degree-2 SH of the incident indirect radiance (linear RGB) at grid points:
    ``coeffs`` [R,R,R,9,3] over ``aabb`` [2,3] (module docstring)."""

    coeffs: Tensor
    aabb: Tensor

    def cell_size(self) -> float:
        """Largest grid spacing (world units): the lookup offset along the normal."""
        return float((self.aabb[1] - self.aabb[0]).max()) / self.coeffs.shape[0]

    def irradiance(self, points: Tensor, normals: Tensor) -> Tensor:
        """Indirect irradiance [..., 3] at surface ``points`` with unit ``normals`` (both [..., 3])."""
        R = self.coeffs.shape[0]
        flat = self.coeffs.reshape(R, R, R, 27)
        c = grid_lookup(flat, self.aabb, points + self.cell_size() * normals).reshape(points.shape[:-1] + (9, 3))
        return _irradiance(c, normals).clamp(min=0.0)


@torch.no_grad()
def bake_indirect(
    density: DensityGrid, aabb: Tensor, resolution: int, n_dirs: int = 64, chunk: int = 512
) -> IndirectVolume:
    """Bake ``IndirectVolume`` at ``resolution``^3 cell centres of ``aabb`` [2,3] from a
    ``DensityGrid`` splatted with linear radiance colours [.., 3] (module docstring). Rays start
    1.5 density voxels out, past the grid point's own surface (as ``bake_visibility``)."""
    device = density.sigma.device
    aabb = aabb.to(device).float()
    lo, hi = aabb[0], aabb[1]
    dirs = fibonacci_directions(n_dirs, device)  # [D,3]
    basis = sh_basis(dirs) * (4.0 * math.pi / n_dirs)  # [D,9] quadrature weights
    axes = [lo[k] + (hi[k] - lo[k]) * (torch.arange(resolution, device=device) + 0.5) / resolution for k in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # [P,3], x-major
    start = 1.5 * density.voxel_size()
    coeffs = torch.empty(points.shape[0], 9, 3, device=device)
    for s in range(0, points.shape[0], chunk):
        p = points[s : s + chunk]
        origins = p[:, None, :].expand(-1, n_dirs, -1)
        _, light = density.march(origins, dirs[None].expand(p.shape[0], -1, -1), start=start, with_color=True)
        coeffs[s : s + chunk] = torch.einsum("pdc,dk->pkc", light, basis)
    return IndirectVolume(coeffs.reshape(resolution, resolution, resolution, 9, 3), aabb)


def gaussian_sh_irradiance(coeffs: Tensor, normals: Tensor) -> Tensor:
    """Irradiance [N,3] from per-Gaussian incident-radiance SH ``coeffs`` [N,K,3] (K = 4: degree 1,
    or 9) along unit ``normals`` [N,3]. Not clamped (clamp to >= 0 before shading): a clamp at 0
    stops the gradient of coefficients that start at zero. Differentiable in both."""
    return _irradiance(coeffs, normals)


def relight_scale(trained, light) -> Tensor:
    """Per-channel factor [3] that carries indirect light learned under the light ``trained`` to
    ``light`` (both ``CubemapLight``-like, with ``sh_coeffs()``): the ratio of their mean radiances
    (their SH DC terms). No gradient."""
    with torch.no_grad():
        old, new = trained.sh_coeffs()[0], light.sh_coeffs()[0]
        return new.to(old) / old.clamp(min=1e-8)
