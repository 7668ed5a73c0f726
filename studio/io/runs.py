"""Load results of ``ns-train`` runs (config.yml + nerfstudio_models/ + dataparser_transforms.json).

Loading never executes anything from the run folder: configs go through the restricted YAML
loader and checkpoints through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from studio.io.config_loader import load_trainer_config
from studio.io.errors import StudioInputError

GAUSSIAN_PREFIX = "_model.gaussians.params."


def latest_checkpoint(config_path: Path) -> Path:
    """The newest ``step-*.ckpt`` beside ``config_path``."""
    ckpts = sorted((config_path.parent / "nerfstudio_models").glob("step-*.ckpt"))
    if not ckpts:
        raise StudioInputError(f"no checkpoint found in {config_path.parent / 'nerfstudio_models'}.")
    return ckpts[-1]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A Nerfstudio checkpoint loaded with ``weights_only=True``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise StudioInputError(f"checkpoint {path} cannot be loaded safely ({err.__class__.__name__}).") from None


def dataparser_transform(config_path: Path) -> tuple[torch.Tensor, float]:
    """(transform [3,4], scale) that Nerfstudio applied to the input world (identity if absent)."""
    path = config_path.parent / "dataparser_transforms.json"
    if not path.exists():
        return torch.eye(4)[:3], 1.0
    data = json.loads(path.read_text(encoding="utf-8"))
    return torch.tensor(data["transform"], dtype=torch.float32), float(data["scale"])


@dataclass
class NerfRun:
    """A NeRF run's trained field (``studio.nerf.HashGridField``, eval mode) and the dataparser
    (transform [3,4], scale) that maps input-world points into the field's frame."""

    field: Any
    transform: torch.Tensor
    scale: float


def load_run(config_path: Path, device: str = "cpu"):
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
            field.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        except RuntimeError:
            raise StudioInputError(f"run {config_path.parent} holds no NeRF matching its config.") from None
        return NerfRun(field.to(device).eval(), *dataparser_transform(config_path))
    from studio.gaussians.trainable import PARAM_NAMES

    params, missing = checkpoint_gaussian_params(state, PARAM_NAMES)
    if missing:
        raise StudioInputError(f"run {config_path.parent} holds no Gaussian scene (missing {', '.join(missing)}).")
    return world_gaussians(params, *dataparser_transform(config_path), device=device)


def checkpoint_gaussian_params(state: dict, names: Sequence[str]) -> tuple[dict, list[str]]:
    """The per-Gaussian parameters ``names`` of a checkpoint's pipeline state (raw, before
    activation) and the names it lacks."""
    params = {name: state.get(GAUSSIAN_PREFIX + name) for name in names}
    return params, [name for name, value in params.items() if value is None]


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
    scene = load_run(config_path, device)
    if isinstance(scene, NerfRun):
        raise StudioInputError(f"run {Path(config_path).parent} is a NeRF, not Gaussians: `studio export mesh --load-config` "
                               "extracts its surface.")
    return scene
