"""Shading of G-buffers with light transport: baked visibility, shadow rays, indirect light.

``shade_transport`` extends ``studio.pbr.shading.shade`` (split-sum GGX + SH irradiance of an
environment light) with what the scene does to that light, each part optional:

* ``visibility`` (``VisibilityGrid``, baked SH): the diffuse term is scaled by the ambient
  occlusion of the normal, the specular term by the visibility of the reflection direction
  (``studio.pbr.visibility``);
* ``shadows`` (``DensityGrid`` of the Gaussians): the ``shadow_lights`` brightest texels of the
  light (each with at least ``shadow_min_share`` of its power) are taken out of it and shaded as directional lights with ray-traced visibility
  (``studio.pbr.shadow_rays``): diffuse ``(1 - m) albedo / pi sum_k V_k P_k max(0, n.w_k)``; their
  split-sum specular (the prefiltered lobe of those texels alone) is scaled by the mean of their
  ``V_k`` weighted by ``luminance(P_k) max(0, r.w_k)``. The rest of the light is shaded as without
  shadows (scaled by ``visibility`` when given);
* ``indirect`` ([..., 3] indirect irradiance, linear; ``studio.pbr.indirect``): added to the
  diffuse irradiance, ``(1 - m) albedo / pi E_ind`` (not occluded again: it comes from the occluders).

With none of them it is ``shade``; with ``visibility`` alone it is the baked-visibility shading
prd has always used, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from studio.pbr.cubemap import sh_project
from studio.pbr.gaussian_density import DensityGrid
from studio.pbr.shading import ShadeOut, shade
from studio.pbr.shadow_rays import dominant_lights, shadow_visibility
from studio.pbr.visibility import VisibilityGrid

__all__ = ["LightTransport", "shade_transport"]

_LUMINANCE = (0.2126, 0.7152, 0.0722)


@dataclass
class LightTransport:
    """What the scene does to the environment light (module docstring): ``visibility`` (baked SH),
    ``shadows`` (density for shadow rays towards the ``shadow_lights`` brightest texels that carry at
    least ``shadow_min_share`` of the light's power, starting ``shadow_bias`` voxels off the
    surface), each None when unused."""

    visibility: Optional[VisibilityGrid] = None
    shadows: Optional[DensityGrid] = None
    shadow_lights: int = 4
    shadow_min_share: float = 0.0
    shadow_bias: float = 2.0


def _reflect(normal: Tensor, view: Tensor) -> Tensor:
    r = 2.0 * (normal * view).sum(-1, keepdim=True) * normal - view
    return torch.nn.functional.normalize(r, dim=-1)


def shade_transport(
    albedo: Tensor,
    roughness: Tensor,
    metallic: Tensor,
    normal: Tensor,
    view: Tensor,
    points: Tensor,
    light,
    transport: LightTransport,
    indirect: Optional[Tensor] = None,
    trace: Optional[Tensor] = None,
) -> ShadeOut:
    """Shade G-buffers ([..., C] as ``shade``; unit world ``normal``, ``view`` towards the camera,
    world surface ``points`` [..., 3]) under ``light`` (a ``CubemapLight``) with ``transport`` and
    optional ``indirect`` irradiance [..., 3]. Shadow rays are traced only where ``trace`` [..., 1]
    (bool, e.g. covered pixels) is true. Returns ``ShadeOut`` (linear), differentiable in the
    G-buffers, the light and ``indirect`` (not through the visibility)."""
    grid = transport.visibility
    suns = None
    if transport.shadows is not None and transport.shadow_lights > 0:
        suns = dominant_lights(light.radiance(), transport.shadow_lights, transport.shadow_min_share)
    if suns is None or suns.directions.shape[0] == 0:
        shaded = shade(albedo, roughness, metallic, normal, view, light)
        diffuse, specular = shaded.diffuse, shaded.specular
        if grid is not None:
            diffuse = diffuse * grid.ambient_occlusion(points, normal)
            specular = specular * grid.visibility(points, _reflect(normal, view), normal)
    else:
        diffuse, specular = _shade_with_shadow_rays(
            albedo, roughness, metallic, normal, view, points, light, suns, transport, trace
        )
    if indirect is not None:
        diffuse = diffuse + (1.0 - metallic) * albedo * indirect / math.pi
    return ShadeOut(diffuse + specular, diffuse, specular)


def _shade_with_shadow_rays(albedo, roughness, metallic, normal, view, points, light, suns, transport, trace):
    """(diffuse, specular) [..., 3]: the light less its brightest texels ``suns`` shaded as
    ``shade`` with the baked visibility, plus those texels with ray-traced visibility (module
    docstring)."""
    radiance = light.radiance()
    sun_cube = radiance * suns.mask
    sun_levels = light.prefilter(sun_cube)
    rest_levels = [full - part for full, part in zip(light.prefiltered(), sun_levels)]
    rest_coeffs = light.sh_coeffs() - sh_project(sun_cube)
    rest = shade(albedo, roughness, metallic, normal, view, light, levels=rest_levels, sh_coeffs=rest_coeffs)
    sun = shade(
        albedo, roughness, metallic, normal, view, light, levels=sun_levels, sh_coeffs=torch.zeros_like(rest_coeffs)
    )
    refl = _reflect(normal, view)
    diffuse, specular = rest.diffuse, rest.specular
    if transport.visibility is not None:
        diffuse = diffuse * transport.visibility.ambient_occlusion(points, normal)
        specular = specular * transport.visibility.visibility(points, refl, normal)

    cos_n = (normal @ suns.directions.T).clamp(min=0.0)  # [..., K]
    cos_r = (refl @ suns.directions.T).clamp(min=0.0)
    need = (cos_n > 0) | (cos_r > 0)
    if trace is not None:
        need = need & trace
    vis = shadow_visibility(transport.shadows, points, normal, suns.directions, need, transport.shadow_bias)
    irradiance = (vis * cos_n) @ suns.power  # [..., 3]
    diffuse = diffuse + (1.0 - metallic) * albedo * irradiance / math.pi
    lum = suns.power.detach() @ torch.tensor(_LUMINANCE, device=radiance.device, dtype=radiance.dtype)  # [K]
    weight = cos_r * lum + 1e-8
    sun_vis = (weight * vis).sum(-1, keepdim=True) / weight.sum(-1, keepdim=True)
    specular = specular + sun.specular * sun_vis
    return diffuse, specular
