"""Deferred PBR shading of G-buffers with an environment light (split-sum + SH irradiance).

For each pixel (all tensors ``[..., C]`` with the same leading dims, e.g. ``[B, H, W, C]``):

    rgb = (1 - metallic) * albedo * E(n) / pi                     (Lambert, SH irradiance)
        + P(r, roughness) * (F0 * A(n.v, roughness) + B(n.v, roughness))   (split-sum GGX)

with ``F0 = lerp(0.04, albedo, metallic)``, ``r = reflect(-v, n)``, ``E`` the degree-2 SH
irradiance of the light (Ramamoorthi & Hanrahan 2001), ``P`` the GGX-prefiltered environment
(``CubemapLight.specular``) and ``(A, B)`` the BRDF LUT of ``studio.pbr.lut`` (Karis 2013). It is
the split-sum image-based-lighting estimate of ``int L(l) f_r(v, l) n.l dl`` for the BRDF
``studio.pbr.brdf.eval_brdf`` (no visibility/shadowing). Output is linear HDR radiance;
``studio.pbr.tonemap.tonemap`` turns it into display sRGB. Differentiable in every G-buffer
and in the light's parameters.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .brdf import base_f0
from .lut import get_brdf_lut, lut_lookup

__all__ = ["ShadeOut", "shade"]


class ShadeOut(NamedTuple):
    rgb: torch.Tensor  # [..., 3] linear HDR radiance towards the viewer
    diffuse: torch.Tensor  # [..., 3]
    specular: torch.Tensor  # [..., 3]


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-8)


def shade(
    albedo: torch.Tensor,
    roughness: torch.Tensor,
    metallic: torch.Tensor,
    normal: torch.Tensor,
    view: torch.Tensor,
    light,
    *,
    mask: torch.Tensor | None = None,
    lut: torch.Tensor | None = None,
    levels: list[torch.Tensor] | None = None,
    sh_coeffs: torch.Tensor | None = None,
) -> ShadeOut:
    """Shade G-buffers under an environment light.

    Args:
        albedo: ``[..., 3]`` linear base colour.
        roughness: ``[..., 1]`` perceptual roughness in [0, 1].
        metallic: ``[..., 1]`` in [0, 1].
        normal: ``[..., 3]`` world-space shading normal (normalised here).
        view: ``[..., 3]`` world-space direction from the surface *towards the camera*
            (normalised here); e.g. ``-ray_direction``.
        light: a ``studio.pbr.cubemap.CubemapLight`` (or anything with ``prefiltered()``,
            ``specular(dirs, roughness, levels)``, ``sh_coeffs()``, ``irradiance(n, coeffs)``).
        mask: optional ``[..., 1]`` coverage/alpha; the output is multiplied by it.
        lut: optional ``[R, R, 2]`` BRDF LUT (default ``get_brdf_lut()``).
        levels, sh_coeffs: optional precomputed ``light.prefiltered()`` / ``light.sh_coeffs()``
            (reuse them across several ``shade`` calls in one step).

    Returns ``ShadeOut(rgb, diffuse, specular)``, each ``[..., 3]`` linear.
    Pixels whose normal faces away from the viewer are shaded with ``n.v`` clamped to 1e-4.
    """
    n = _normalize(normal)
    v = _normalize(view)
    nv_raw = (n * v).sum(-1, keepdim=True)
    nv = nv_raw.clamp(1e-4, 1.0)
    refl = _normalize(2.0 * nv_raw * n - v)
    rough = roughness.clamp(0.0, 1.0)
    f0 = base_f0(albedo, metallic)

    lut = get_brdf_lut(device=n.device) if lut is None else lut
    ab = lut_lookup(lut, nv, rough)
    spec_albedo = f0 * ab[..., 0:1] + ab[..., 1:2]
    levels = light.prefiltered() if levels is None else levels
    specular = light.specular(refl, rough, levels) * spec_albedo

    coeffs = light.sh_coeffs() if sh_coeffs is None else sh_coeffs
    irradiance = light.irradiance(n, coeffs).clamp(min=0.0)  # SH ringing can dip below 0
    diffuse = (1.0 - metallic) * albedo * irradiance / math.pi

    if mask is not None:
        diffuse = diffuse * mask
        specular = specular * mask
    return ShadeOut(diffuse + specular, diffuse, specular)
