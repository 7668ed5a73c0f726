"""PBR asset export of an inverse-rendering (``prd``) run: textured glTF mesh + environment light.

``export_pbr`` writes

* a glTF binary (.glb): the surface mesh of ``studio.export.mesh.extract_mesh`` (world
  coordinates of the input dataset), UV-unwrapped with xatlas, with a metallic-roughness PBR
  material whose ``baseColorTexture`` (sRGB-encoded albedo) and ``metallicRoughnessTexture``
  (linear; G = roughness, B = metallic, R = 255, unused) are baked from the Gaussians
  (``studio.export.bake``);
* the recovered environment light as an equirect .exr (linear radiance, Blender convention,
  rotated into the input world frame), next to it (``<stem>_env.exr``) or at ``env_output``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from studio.io.errors import StudioInputError

LIGHT_KEY = "_model.light.log_radiance"


@dataclass
class PBRRun:
    """A loaded ``prd`` run in the input data's world coordinates.

    ``gaussians``: ``studio.gaussians.Gaussians`` (activated, world frame); ``albedo`` [N,3]
    (linear, [0,1]), ``roughness`` [N,1], ``metallic`` [N,1], ``progress`` [N,1], aligned with the
    Gaussians; ``light``: the ``CubemapLight`` (training frame); ``rotation`` [3,3]: the dataparser
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
) -> dict:
    """Extract, unwrap and bake a ``prd`` run; write the .glb and the environment .exr.

    Mesh options as ``studio export mesh`` (``extract_mesh``); ``texture_size``: texels per side
    of both textures; ``env_height``: rows of the equirect light (width twice that).
    Returns a summary dict (paths, sizes, counts).
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
        run.albedo,
        run.roughness,
        run.metallic,
        texture_size=texture_size,
        k=k,
    )
    glb_bytes = save_glb(output, baked.to_trimesh())
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
    }
