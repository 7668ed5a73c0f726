"""The trained scene of a run read straight from its checkpoint (no model built, no prior loaded):
Gaussians in the input data's world coordinates, or a NeRF field (``sds`` with a NeRF).

Loading never executes anything from the run folder: configs go through the restricted YAML
loader and checkpoints through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from studio.io.config_loader import load_trainer_config
from studio.io.errors import StudioInputError
from studio.io.runs import checkpoint_gaussian_params, dataparser_transform, latest_checkpoint, load_checkpoint


@dataclass
class NerfRun:
    """A NeRF run's trained field (``studio.nerf.HashGridField``, eval mode) and the dataparser
    (transform [3,4], scale) that maps input-world points into the field's frame."""

    field: Any
    transform: torch.Tensor
    scale: float


def read_run_scene(config_path: Path, device: str = "cpu"):
    """The trained scene of a run, reading its config once: its Gaussians in the input data's world
    coordinates (every method whose model keeps a ``TrainableGaussians`` at ``model.gaussians``),
    or, for a NeRF run (``sds --pipeline.model.representation nerf``), a ``NerfRun``."""
    config_path = Path(config_path)
    model = load_trainer_config(config_path).pipeline.model  # refuses unsafe or foreign configs
    state = load_checkpoint(latest_checkpoint(config_path))["pipeline"]
    if getattr(model, "representation", "gaussians") == "nerf":
        from studio.nerf import HashGridField

        prefix = "_model.field."
        field = HashGridField(model.nerf)
        try:
            field.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        except RuntimeError:
            raise StudioInputError(f"run {config_path.parent} holds no NeRF matching its config.") from None
        return NerfRun(field.to(device).eval(), *dataparser_transform(config_path))
    from studio.gaussians.trainable import PARAM_NAMES

    params, missing = checkpoint_gaussian_params(state, PARAM_NAMES)
    if missing:
        raise StudioInputError(f"run {config_path.parent} holds no Gaussian scene (missing {', '.join(missing)}).")
    return world_gaussians(params, *dataparser_transform(config_path), device=device)


def read_run_mesh(config_path: Path):
    """The final mesh of a mesh-stage run (``dreamcraft3d``) from its latest checkpoint
    (``studio.export.result_mesh.state_mesh``: a ``TexturedMesh`` after the texture stage, a
    vertex-coloured ``trimesh.Trimesh`` after the geometry stage), its vertices moved from the
    dataparser frame into the input data's world frame like ``read_run_scene``'s Gaussians (the
    identity for a single-image run, which has no dataparser transform); None when the run holds
    no mesh."""
    from studio.export.result_mesh import state_mesh
    from studio.export.transform import dataparser_points_to_world
    from studio.mesh.textured import TexturedMesh

    config_path = Path(config_path)
    load_trainer_config(config_path)  # refuses unsafe or foreign configs
    mesh = state_mesh(load_checkpoint(latest_checkpoint(config_path))["pipeline"], prefix="_model.")
    if isinstance(mesh, TexturedMesh):
        mesh.verts = dataparser_points_to_world(mesh.verts, *dataparser_transform(config_path)).float()
    elif mesh is not None:
        mesh.vertices = dataparser_points_to_world(mesh.vertices, *dataparser_transform(config_path)).numpy()
    return mesh


def world_gaussians(params: dict, transform: torch.Tensor, scale: float, device: str = "cpu"):
    """Activated Gaussians (``studio.gaussians.Gaussians``) of raw parameters (``PARAM_NAMES``
    at least), moved from the run's dataparser frame (``dataparser_transform``: transform [3,4],
    scale) into the input data's world frame."""
    from studio.export.transform import dataparser_to_world
    from studio.gaussians.trainable import PARAM_NAMES, TrainableGaussians

    gaussians = TrainableGaussians({name: params[name] for name in PARAM_NAMES}).activated().detach()
    return dataparser_to_world(gaussians, transform, scale).to(device)


def load_gaussians_from_config(config_path: Path, device: str = "cpu"):
    """The trained Gaussians of a run, in the input data's world coordinates (``load_run``); a
    NeRF run is refused with one sentence."""
    scene = read_run_scene(config_path, device)
    if isinstance(scene, NerfRun):
        raise StudioInputError(
            f"run {Path(config_path).parent} is a NeRF, not Gaussians: `studio export mesh --load-config` "
            "extracts its surface."
        )
    return scene
