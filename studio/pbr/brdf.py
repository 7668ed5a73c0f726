"""GGX Cook-Torrance BRDF (metallic/roughness parametrisation) and its importance sampling.

Model (the one every part of ``studio.pbr`` uses, and the Monte-Carlo ground truth imports):

    f_r(n, v, l) = (1 - metallic) * albedo / pi  +  D(h) * V(n.v, n.l) * F(v.h)

* ``alpha = roughness**2`` (Disney / UE4 remapping, as Blender's Principled BSDF).
* ``D``: GGX / Trowbridge-Reitz NDF, ``D(h) = alpha^2 / (pi * ((n.h)^2 (alpha^2 - 1) + 1)^2)``.
* ``V = G / (4 n.v n.l)`` with ``G`` the *height-correlated* Smith masking-shadowing function
  of GGX (Heitz 2014, "Understanding the Masking-Shadowing Function in Microfacet-Based
  BRDFs", eq. 99), i.e.
  ``V = 0.5 / (n.l * sqrt((n.v)^2 (1 - alpha^2) + alpha^2) + n.v * sqrt((n.l)^2 (1 - alpha^2) + alpha^2))``.
  (Not the Schlick-GGX ``k = alpha/2`` approximation of Karis 2013; the split-sum LUT in
  ``studio.pbr.lut`` is integrated with this same ``V``, so shading and ground truth agree.)
* ``F``: Schlick's Fresnel, ``F = F0 + (1 - F0) (1 - v.h)^5`` with
  ``F0 = lerp(0.04, albedo, metallic)``.
* Diffuse: Lambert weighted by ``(1 - metallic)`` only (as Blender 3.x's Principled diffuse
  weight); it is not reduced by the specular Fresnel, so a white dielectric reflects slightly
  more than it receives (~1 + specular albedo, see ``tests/test_pbr.py`` white furnace).

Conventions: all directions are unit vectors in the same (world) frame pointing *away* from the
surface (``view`` towards the camera, ``light`` towards the light). Shapes broadcast over any
leading dimensions ``[...]``; scalar-per-point parameters are ``[..., 1]``.

The split-sum approximation for image-based lighting follows Karis 2013, "Real Shading in
Unreal Engine 4" (SIGGRAPH course notes): see ``studio.pbr.lut`` and ``studio.pbr.cubemap``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "DIELECTRIC_F0",
    "alpha_from_roughness",
    "ggx_ndf",
    "smith_visibility",
    "fresnel_schlick",
    "base_f0",
    "eval_brdf",
    "eval_specular",
    "sample_ggx",
    "pdf_ggx",
    "sample_cosine_hemisphere",
    "pdf_cosine_hemisphere",
    "tangent_frame",
]

DIELECTRIC_F0 = 0.04
_EPS = 1e-7
MIN_ROUGHNESS = 1e-3  # roughness is clamped to this to keep D finite (alpha >= 1e-6)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)


def alpha_from_roughness(roughness: torch.Tensor) -> torch.Tensor:
    """``alpha = roughness^2`` with roughness clamped to ``[MIN_ROUGHNESS, 1]``."""
    r = roughness.clamp(MIN_ROUGHNESS, 1.0)
    return r * r


def ggx_ndf(n_dot_h: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """GGX normal distribution ``D`` (per unit solid angle of ``h``); ``n_dot_h`` clamped >= 0."""
    a2 = alpha * alpha
    c = n_dot_h.clamp(min=0.0)
    d = c * c * (a2 - 1.0) + 1.0
    return a2 / (math.pi * d * d).clamp(min=1e-20)


def smith_visibility(n_dot_v: torch.Tensor, n_dot_l: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Height-correlated Smith GGX visibility ``V = G2 / (4 n.v n.l)`` (Heitz 2014)."""
    a2 = alpha * alpha
    nv = n_dot_v.clamp(min=0.0)
    nl = n_dot_l.clamp(min=0.0)
    gv = nl * torch.sqrt(nv * nv * (1.0 - a2) + a2)
    gl = nv * torch.sqrt(nl * nl * (1.0 - a2) + a2)
    return 0.5 / (gv + gl).clamp(min=_EPS)


def fresnel_schlick(f0: torch.Tensor, v_dot_h: torch.Tensor) -> torch.Tensor:
    """Schlick's approximation ``F0 + (1 - F0) (1 - v.h)^5``."""
    w = (1.0 - v_dot_h.clamp(0.0, 1.0)) ** 5
    return f0 + (1.0 - f0) * w


def base_f0(albedo: torch.Tensor, metallic: torch.Tensor) -> torch.Tensor:
    """``F0 = lerp(0.04, albedo, metallic)`` -> ``[..., 3]``."""
    return DIELECTRIC_F0 + (albedo - DIELECTRIC_F0) * metallic


def eval_specular(normal, view, light, f0, roughness) -> torch.Tensor:
    """Specular lobe ``D V F`` (no cosine) -> ``[..., C]`` for ``f0`` ``[..., C]``.

    Zero where ``n.l <= 0`` or ``n.v <= 0``.
    """
    alpha = alpha_from_roughness(roughness)
    h = view + light
    h = h / h.norm(dim=-1, keepdim=True).clamp(min=_EPS)
    nv, nl = _dot(normal, view), _dot(normal, light)
    nh, vh = _dot(normal, h), _dot(view, h)
    spec = ggx_ndf(nh, alpha) * smith_visibility(nv, nl, alpha) * fresnel_schlick(f0, vh)
    return torch.where((nl > 0) & (nv > 0), spec, torch.zeros_like(spec))


def eval_brdf(normal, view, light, albedo, roughness, metallic) -> torch.Tensor:
    """BRDF value ``f_r`` (without the ``n.l`` cosine) -> ``[..., 3]``.

    Args:
        normal: ``[..., 3]`` unit shading normal.
        view: ``[..., 3]`` unit direction from the surface towards the viewer.
        light: ``[..., 3]`` unit direction from the surface towards the light.
        albedo: ``[..., 3]`` linear base colour in ``[0, 1]``.
        roughness: ``[..., 1]`` perceptual roughness in ``[0, 1]`` (``alpha = roughness^2``).
        metallic: ``[..., 1]`` in ``[0, 1]``.

    Returns ``(1 - metallic) albedo / pi + D V F`` (zero below either horizon). All leading
    dimensions broadcast. Differentiable in every argument.
    """
    f0 = base_f0(albedo, metallic)
    spec = eval_specular(normal, view, light, f0, roughness)
    nv, nl = _dot(normal, view), _dot(normal, light)
    diff = (1.0 - metallic) * albedo / math.pi
    diff = torch.where((nl > 0) & (nv > 0), diff, torch.zeros_like(diff))
    return diff + spec


def tangent_frame(normal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal ``(t, b)`` with ``t x b = n`` (Duff et al. 2017 branchless basis)."""
    x, y, z = normal.unbind(-1)
    sign = torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
    a = -1.0 / (sign + z)
    b = x * y * a
    t = torch.stack([1.0 + sign * x * x * a, sign * b, -sign * x], -1)
    bt = torch.stack([b, sign + y * y * a, -y], -1)
    return t, bt


def _to_world(local: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    t, b = tangent_frame(normal)
    return local[..., 0:1] * t + local[..., 1:2] * b + local[..., 2:3] * normal


def sample_ggx(normal, view, roughness, u) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Importance-sample the GGX lobe: half vector ``h ~ D(h) n.h``, ``l = reflect(-v, h)``.

    (Karis 2013, "ImportanceSampleGGX".)

    Args:
        normal: ``[..., 3]`` unit normal.
        view: ``[..., 3]`` unit direction towards the viewer.
        roughness: ``[..., 1]`` (``alpha = roughness^2``).
        u: ``[..., 2]`` uniform random numbers in ``[0, 1)`` (e.g. ``torch.rand``, Hammersley).

    Returns ``(light [..., 3], half [..., 3], pdf [..., 1])`` where ``pdf = D(h) n.h / (4 v.h)``
    is the density of ``light`` per unit solid angle. Samples with ``n.l <= 0`` are valid
    directions below the horizon (the BRDF is zero there): the estimator
    ``mean(f_r * n.l / pdf)`` stays unbiased when they count as zero.
    """
    alpha = alpha_from_roughness(roughness)
    u1, u2 = u[..., 0:1], u[..., 1:2]
    a2 = alpha * alpha
    cos_t = torch.sqrt(((1.0 - u1) / (1.0 + (a2 - 1.0) * u1)).clamp(0.0, 1.0))
    sin_t = torch.sqrt((1.0 - cos_t * cos_t).clamp(min=0.0))
    phi = 2.0 * math.pi * u2
    h_local = torch.cat([sin_t * torch.cos(phi), sin_t * torch.sin(phi), cos_t], -1)
    normal, h_local = torch.broadcast_tensors(normal, h_local)
    h = _to_world(h_local, normal)
    vh = _dot(view, h)
    light = 2.0 * vh * h - view
    pdf = ggx_ndf(cos_t, alpha) * cos_t / (4.0 * vh.abs().clamp(min=_EPS))
    return light, h, pdf


def pdf_ggx(normal, view, light, roughness) -> torch.Tensor:
    """Density (per solid angle of ``light``) of ``sample_ggx`` -> ``[..., 1]``."""
    alpha = alpha_from_roughness(roughness)
    h = view + light
    h = h / h.norm(dim=-1, keepdim=True).clamp(min=_EPS)
    nh = _dot(normal, h)
    h = torch.where(nh < 0, -h, h)  # the sampled half vector lies in the normal's hemisphere
    nh = nh.abs()
    vh = _dot(view, h)
    return ggx_ndf(nh, alpha) * nh / (4.0 * vh.abs().clamp(min=_EPS))


def sample_cosine_hemisphere(normal, u) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine-weighted direction about ``normal`` ``[..., 3]`` from ``u`` ``[..., 2]``.

    Returns ``(light [..., 3], pdf [..., 1])`` with ``pdf = n.l / pi``.
    """
    r = torch.sqrt(u[..., 0:1])
    phi = 2.0 * math.pi * u[..., 1:2]
    z = torch.sqrt((1.0 - u[..., 0:1]).clamp(min=0.0))
    local = torch.cat([r * torch.cos(phi), r * torch.sin(phi), z], -1)
    normal, local = torch.broadcast_tensors(normal, local)
    return _to_world(local, normal), z / math.pi


def pdf_cosine_hemisphere(normal, light) -> torch.Tensor:
    return _dot(normal, light).clamp(min=0.0) / math.pi
