"""PBR asset export of an inverse-rendering (``prd``) run: textured glTF mesh + environment light.

``export_pbr`` writes

* a glTF binary (.glb): the surface mesh of ``studio.export.mesh.extract_mesh`` (world
  coordinates of the input dataset), UV-unwrapped with xatlas, with a metallic-roughness PBR
  material whose ``baseColorTexture`` (sRGB-encoded albedo) and ``metallicRoughnessTexture``
  (linear; G = roughness, B = metallic, R = 255, unused) are baked from the Gaussians
  (``studio.export.bake``);
* the recovered environment light as an equirect .exr (linear radiance, Blender convention,
  rotated into the input world frame), next to it (``<stem>_env.exr``) or at ``env_output``.

The distillation progress ``p`` of each Gaussian says how much of its colour the PBR part carries
(PRD Eq. 5: ``C = p I_pbr + (1 - p) I_radiance``). Where ``p`` is low the PBR attributes were
barely trained (the composite showed the radiance field there), so the export uses ``p``:

* the albedo baked is the per-Gaussian blend ``p * albedo + (1 - p) * radiance_albedo``
  (``blended_albedo``), with ``radiance_albedo`` the albedo that reproduces the radiance field's
  view-independent colour under the learned light with Lambertian shading (``radiance_albedo``):
  where the PBR part is untrained the asset keeps the colours the run shows instead of the
  albedo's initial grey. Its lighting is only partly removed (specular highlights, shadows and
  ambient occlusion remain). ``blend_low_progress=False`` bakes the PBR albedo as it is;
  roughness and metallic are always the PBR ones (the radiance field has no estimate of them);
* the share of the surface with ``p < 0.5`` (opacity-weighted Gaussian count,
  ``low_progress_fraction``) is returned, written into the .glb (the mesh's glTF ``extras``,
  ``studio_pbr``) and, above ``LOW_PROGRESS_WARN_FRACTION``, announced by a one-line warning
  (``low_progress_warning``).

A ``no-progress`` run (pure PBR) counts as ``p = 1`` everywhere.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from studio.io.errors import StudioInputError

LIGHT_KEY = "_model.light.log_radiance"
LOW_PROGRESS = 0.5
"""Progress below which a Gaussian's materials count as weakly trained."""
LOW_PROGRESS_WARN_FRACTION = 0.1
"""Share of the surface with ``p < LOW_PROGRESS`` above which the export warns."""


@dataclass
class PBRRun:
    """A loaded ``prd`` run in the input data's world coordinates.

    ``gaussians``: ``studio.gaussians.Gaussians`` (activated, world frame); ``albedo`` [N,3]
    (linear, [0,1]), ``roughness`` [N,1], ``metallic`` [N,1], ``progress`` [N,1] (1 for a
    ``no-progress`` run), aligned with the Gaussians; ``light``: the ``CubemapLight`` (training frame); ``rotation`` [3,3]: the dataparser
    rotation A (training direction = A @ world direction).
    """

    gaussians: object
    albedo: Tensor
    roughness: Tensor
    metallic: Tensor
    progress: Tensor
    light: object
    rotation: Tensor


def load_pbr_run(config_path: str | os.PathLike, device: str = "cpu") -> PBRRun:
    """Load the Gaussians, PBR attributes and light of a ``prd`` run (``config.yml``).

    Goes through the same safe loaders as ``studio export gaussians|mesh`` (restricted YAML,
    ``weights_only`` checkpoint) and the same dataparser -> world transform.

    Raises:
        StudioInputError: missing files, or the run holds no PBR materials / light (not ``prd``).
    """
    from studio.export.runs import world_gaussians
    from studio.gaussians.pbr import PBR_PARAM_NAMES, activate_pbr
    from studio.gaussians.trainable import PARAM_NAMES
    from studio.io.config_loader import load_trainer_config
    from studio.io.runs import checkpoint_gaussian_params, dataparser_transform, latest_checkpoint, load_checkpoint
    from studio.pbr.cubemap import CubemapLight

    config_path = Path(config_path)
    config = load_trainer_config(config_path)
    model_cfg = getattr(getattr(config, "pipeline", None), "model", None)
    if getattr(model_cfg, "ablation", None) == "3dgs":
        raise StudioInputError(f"run {config_path.parent} is a prd '3dgs' ablation: it has no trained materials.")
    state = load_checkpoint(latest_checkpoint(config_path))["pipeline"]
    raw, missing = checkpoint_gaussian_params(state, PARAM_NAMES + tuple(PBR_PARAM_NAMES))
    if missing or LIGHT_KEY not in state:
        what = ", ".join(missing + ([] if LIGHT_KEY in state else ["light"]))
        raise StudioInputError(
            f"run {config_path.parent} is not a prd (inverse rendering) run: its checkpoint has no {what}."
        )
    transform, scale = dataparser_transform(config_path)
    gaussians = world_gaussians(raw, transform, scale, device)
    pbr = {k: v.detach().float() for k, v in activate_pbr(raw).items()}
    if getattr(model_cfg, "ablation", None) == "no-progress":  # pure PBR: the model ignores p
        pbr["progress"] = torch.ones_like(pbr["progress"])
    log_radiance = state[LIGHT_KEY].float()
    light = CubemapLight(int(log_radiance.shape[1]), learnable=False)
    with torch.no_grad():
        light.log_radiance.copy_(log_radiance)
    return PBRRun(
        gaussians=gaussians,
        albedo=pbr["albedo"].to(device),
        roughness=pbr["roughness"].to(device),
        metallic=pbr["metallic"].to(device),
        progress=pbr["progress"].to(device),
        light=light.to(device),
        rotation=torch.as_tensor(transform, dtype=torch.float32)[:3, :3].to(device),
    )


# ---- distillation progress ---------------------------------------------------------------------
def low_progress_fraction(progress: Tensor, opacities: Tensor) -> float:
    """Opacity-weighted share of the Gaussians whose progress ``p`` [N,1] is below ``LOW_PROGRESS``
    (opacities [N] in [0,1]); 0 when every opacity is 0."""
    weight = opacities.reshape(-1).float()
    low = (progress.reshape(-1) < LOW_PROGRESS).float()
    total = float(weight.sum())
    return float((weight * low).sum()) / total if total > 0 else 0.0


def low_progress_warning(fraction: float, blended: bool) -> Optional[str]:
    """One line about the share ``fraction`` of the surface with ``p < 0.5``; None below
    ``LOW_PROGRESS_WARN_FRACTION``. ``blended``: whether its albedo was blended (``blended_albedo``)."""
    if fraction <= LOW_PROGRESS_WARN_FRACTION:
        return None
    what = (
        "its albedo is blended with one estimated from the radiance field, with lighting partly baked in"
        if blended
        else "its materials are weakly trained"
    )
    return f"warning: {100 * fraction:.0f}% of the surface has distillation progress p < {LOW_PROGRESS}: {what}."


@torch.no_grad()
def radiance_albedo(run: PBRRun) -> Tensor:
    """Per-Gaussian albedo [N,3] (linear, [0,1]) estimated from the radiance field.

    The view-independent colour ``rgb = 0.5 + SH_C0 * sh[:, 0]`` (sRGB, as the run's images) is
    decoded to linear and divided by Lambertian shading under the learned light,
    ``E(n) / pi`` (``studio.pbr.shading``'s diffuse term), with ``n`` the Gaussian's shortest axis
    turned away from the opacity-weighted centre of the Gaussians (an outward normal for a
    compact object) and ``E`` floored at 5% of its mean over the Gaussians (no blow-up where
    the light barely reaches).
    """
    from studio.gaussians.pbr import shortest_axis_normals
    from studio.gaussians.sh import sh_to_rgb
    from studio.pbr.tonemap import srgb_to_linear

    g = run.gaussians
    weight = g.opacities.reshape(-1, 1).float()
    centre = (g.means * weight).sum(0) / weight.sum().clamp(min=1e-12)
    outward = -shortest_axis_normals(g.means, g.quats, g.scales, centre)  # world frame
    normals = outward @ run.rotation.to(outward).T  # the light's (training) frame
    irradiance = run.light.irradiance(normals).clamp(min=0.0)
    irradiance = irradiance.clamp(min=float(0.05 * irradiance.mean()) + 1e-8)
    linear = srgb_to_linear(sh_to_rgb(g.sh[:, 0]).clamp(0.0, 1.0))
    return (linear * math.pi / irradiance).clamp(0.0, 1.0)


def blended_albedo(run: PBRRun) -> Tensor:
    """``p * albedo + (1 - p) * radiance_albedo(run)`` per Gaussian [N,3] (linear, [0,1]): the
    albedo of the PRD composite, the PBR one where ``p = 1``, the radiance field's where ``p = 0``."""
    p = run.progress.reshape(-1, 1).clamp(0.0, 1.0)
    return p * run.albedo + (1.0 - p) * radiance_albedo(run)


# ---- environment light -------------------------------------------------------------------------
@torch.no_grad()
def environment_equirect(
    light, height: int = 256, width: Optional[int] = None, rotation: Optional[Tensor] = None
) -> np.ndarray:
    """The light as a world-frame equirect image.

    Args:
        light: ``CubemapLight`` (training frame); height, width (default 2 * height): pixels;
        rotation [3,3]: dataparser rotation A (training direction = A @ world direction;
        default identity).
    Returns:
        [H,W,3] float32 linear radiance, Blender equirect convention (``studio.pbr.envmap``).
    """
    from studio.pbr.envmap import equirect_directions

    width = int(width or 2 * height)
    dev = light.log_radiance.device
    dirs = equirect_directions(int(height), width, device=dev)
    if rotation is not None:
        dirs = dirs @ torch.as_tensor(rotation, dtype=dirs.dtype, device=dev).T
    return light(dirs).float().cpu().numpy()


# ---- whole export ------------------------------------------------------------------------------
def default_env_path(output: str | os.PathLike) -> Path:
    """``<dir>/<stem>_env.exr`` beside the .glb ``output``."""
    output = Path(output)
    return output.with_name(f"{output.stem}_env.exr")


def export_pbr(
    config_path: str | os.PathLike,
    output: str | os.PathLike,
    env_output: Optional[str | os.PathLike] = None,
    *,
    texture_size: int = 1024,
    env_height: int = 256,
    resolution: int = 256,
    n_views: int = 60,
    image_size: int = 256,
    min_component_fraction: float = 0.01,
    k: int = 8,
    backend: str = "auto",
    device: str = "cpu",
    blend_low_progress: bool = True,
) -> dict:
    """Extract, unwrap and bake a ``prd`` run; write the .glb and the environment .exr.

    Mesh options as ``studio export mesh`` (``extract_mesh``); ``texture_size``: texels per side
    of both textures; ``env_height``: rows of the equirect light (width twice that);
    ``blend_low_progress``: bake ``blended_albedo`` (default) rather than the PBR albedo alone.
    Returns a summary dict (paths, sizes, counts, ``low_progress_fraction``, ``albedo``: "blended"
    or "pbr", ``warning``: ``low_progress_warning``'s line or None).
    """
    from studio.export.bake import bake_pbr_textures
    from studio.export.mesh import extract_mesh
    from studio.io.exr import write_exr
    from studio.mesh.textured import save_glb

    output = Path(output)
    env_path = Path(env_output) if env_output is not None else default_env_path(output)
    run = load_pbr_run(config_path, device=device)
    g = run.gaussians
    mesh = extract_mesh(
        g,
        resolution=resolution,
        n_views=n_views,
        image_size=image_size,
        min_component_fraction=min_component_fraction,
        backend=backend,
        device=device,
    )
    baked = bake_pbr_textures(
        np.asarray(mesh.vertices),
        np.asarray(mesh.faces),
        g.means,
        g.quats,
        g.scales,
        g.opacities,
        blended_albedo(run) if blend_low_progress else run.albedo,
        run.roughness,
        run.metallic,
        texture_size=texture_size,
        k=k,
    )
    fraction = low_progress_fraction(run.progress, g.opacities)
    albedo_source = "blended" if blend_low_progress else "pbr"
    asset = baked.to_trimesh()
    asset.metadata["studio_pbr"] = {
        "low_progress_fraction": fraction,
        "low_progress_threshold": LOW_PROGRESS,
        "albedo": albedo_source,
    }
    glb_bytes = save_glb(output, asset)
    env = environment_equirect(run.light, env_height, 2 * env_height, run.rotation)
    write_exr(env_path, env)
    return {
        "output": output,
        "env_output": env_path,
        "glb_bytes": glb_bytes,
        "env_bytes": env_path.stat().st_size,
        "vertices": len(baked.vertices),
        "faces": len(baked.faces),
        "texture_size": texture_size,
        "coverage": float(baked.coverage.mean()),
        "env_shape": tuple(env.shape),
        "low_progress_fraction": fraction,
        "albedo": albedo_source,
        "warning": low_progress_warning(fraction, blend_low_progress),
    }
