"""Sharp shadows of the brightest light directions, by shadow rays through the Gaussians.

A grid of degree-2 SH visibility (``studio.pbr.visibility``) cannot hold the shadow of a small
bright source: a sun lights a surface through a cone of a few degrees, and its shadow edge is as
sharp as the occluder. So the light is split into the ``count`` texels that carry the most power
(luminance times solid angle; ``dominant_lights``), each at least ``min_share`` of the total, and
the rest. The rest is shaded as before
(split-sum + SH irradiance, scaled by the baked visibility); each dominant texel is a directional
light of power ``L_k Omega_k`` towards ``w_k`` whose visibility ``V(x, w_k)`` is the
transmittance of a ray from the shading point through the Gaussians' density
(``shadow_visibility``; ``studio.pbr.gaussian_density``). The split is exact: the two parts add
up to the whole light, so with every ray unoccluded the image is the unshadowed one.

Shadow rays start at ``x + bias * h * n`` (``h`` the density grid's voxel, ``n`` the shading
normal), as shadow maps and ray tracers offset the surface, so a surface does not shadow itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from studio.pbr.cubemap import cube_directions, cube_solid_angles
from studio.pbr.gaussian_density import DensityGrid

__all__ = ["DominantLights", "dominant_lights", "shadow_visibility"]

_LUMINANCE = (0.2126, 0.7152, 0.0722)


@dataclass
class DominantLights:
    """The ``K`` brightest texels of a cube light: unit ``directions`` [K,3] (towards the light),
    ``power`` [K,3] (radiance times solid angle: the irradiance each gives a surface facing it),
    and ``mask`` [6,R,R,1] (1 on those texels), so ``radiance * mask`` is their part of the light."""

    directions: Tensor
    power: Tensor
    mask: Tensor


def dominant_lights(radiance: Tensor, count: int, min_share: float = 0.0) -> DominantLights:
    """The ``count`` texels of ``radiance`` [6,R,R,3] with the most power (luminance times solid
    angle), less those with under ``min_share`` of the light's total power (so ``K`` may be 0:
    a light without a dominant source casts no ray-traced shadows). Differentiable in
    ``radiance`` (the choice of texels is not)."""
    R = radiance.shape[1]
    omega = cube_solid_angles(R, device=radiance.device, dtype=radiance.dtype)  # [6,R,R]
    lum = radiance.detach() @ torch.tensor(_LUMINANCE, device=radiance.device, dtype=radiance.dtype)
    power = (lum * omega).reshape(-1)
    top = torch.topk(power, min(count, 6 * R * R))
    index = top.indices[top.values >= min_share * power.sum()]
    dirs = cube_directions(R, device=radiance.device, dtype=radiance.dtype).reshape(-1, 3)[index]
    power = radiance.reshape(-1, 3)[index] * omega.reshape(-1)[index, None]
    mask = torch.zeros(6 * R * R, 1, device=radiance.device, dtype=radiance.dtype)
    mask[index] = 1.0
    return DominantLights(dirs, power, mask.reshape(6, R, R, 1))


def shadow_visibility(
    density: DensityGrid, points: Tensor, normals: Tensor, directions: Tensor, need: Tensor, bias: float = 2.0
) -> Tensor:
    """Transmittance [..., K] from surface ``points`` [..., 3] (unit ``normals`` [..., 3]) towards
    each of the unit ``directions`` [K, 3], traced only where ``need`` [..., K] is true (1 elsewhere).
    Rays start ``bias`` voxels of ``density`` off the surface along the normal. No gradient."""
    K = directions.shape[0]
    vis = torch.ones(points.shape[:-1] + (K,), device=points.device)
    if not bool(need.any()):
        return vis
    origins = (points + bias * density.voxel_size() * normals).detach()
    pix, k = torch.nonzero(need.reshape(-1, K), as_tuple=True)
    trans, _ = density.march(origins.reshape(-1, 3)[pix], directions.detach()[k])
    vis.reshape(-1, K)[pix, k] = trans
    return vis
