"""Physically based shading: GGX Cook-Torrance, split-sum IBL, cubemap lights, tone mapping.

Modules (one concept each):

* ``brdf``     -- ``eval_brdf`` (GGX / height-correlated Smith / Schlick + Lambert),
  ``sample_ggx``, ``pdf_ggx``, ``sample_cosine_hemisphere`` (used by Monte-Carlo ground truth).
* ``lut``      -- split-sum BRDF LUT ``[R, R, 2]`` computed by importance sampling, cached.
* ``envmap``   -- equirect <-> direction in Blender's world convention; .exr/.hdr read/write.
* ``cubemap``  -- ``CubemapLight`` (learnable ``exp`` cubemap), GGX-prefiltered mips, SH irradiance.
* ``tonemap``  -- ACES (Narkowicz fit) and sRGB.
* ``shading``  -- ``shade``: deferred shading of G-buffers with a ``CubemapLight``.
* ``visibility`` -- environment visibility baked into a grid of SH (ambient occlusion, V(x, w)).
* ``gaussian_density`` -- Gaussians splatted into a density (and colour) grid; rays marched through it.
* ``shadow_rays`` -- the brightest texels of a light and their ray-traced visibility (sharp shadows).
* ``indirect`` -- indirect light from the radiance field: SH irradiance volume, per-Gaussian SH.
* ``transport`` -- ``shade_transport``: ``shade`` with baked visibility, shadow rays and indirect light.
"""

from . import tonemap  # the module (its `tonemap` function is `tonemap.tonemap`)
from .brdf import eval_brdf, pdf_cosine_hemisphere, pdf_ggx, sample_cosine_hemisphere, sample_ggx
from .cubemap import CubemapLight, cube_lookup, equirect_to_cube, sh_irradiance, sh_project
from .envmap import dir_to_uv, read_envmap, sample_equirect, uv_to_dir, write_exr, write_hdr
from .lut import get_brdf_lut, lut_lookup
from .shading import ShadeOut, shade
from .tonemap import aces_filmic, linear_to_srgb, srgb_to_linear

__all__ = [
    "eval_brdf",
    "sample_ggx",
    "pdf_ggx",
    "sample_cosine_hemisphere",
    "pdf_cosine_hemisphere",
    "get_brdf_lut",
    "lut_lookup",
    "dir_to_uv",
    "uv_to_dir",
    "sample_equirect",
    "read_envmap",
    "write_exr",
    "write_hdr",
    "CubemapLight",
    "cube_lookup",
    "equirect_to_cube",
    "sh_project",
    "sh_irradiance",
    "ShadeOut",
    "shade",
    "aces_filmic",
    "linear_to_srgb",
    "srgb_to_linear",
    "tonemap",  # module
]
