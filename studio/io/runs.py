"""Load results of ``ns-train`` runs (config.yml + nerfstudio_models/ + dataparser_transforms.json).

Loading never executes anything from the run folder: configs go through the restricted YAML
loader and checkpoints through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def is_nerf_run(config_path: Path) -> bool:
    """Whether the run optimised a NeRF (``sds --pipeline.model.representation nerf``), not Gaussians."""
    model = load_trainer_config(Path(config_path)).pipeline.model  # refuses unsafe or foreign configs
    return getattr(model, "representation", "gaussians") == "nerf"


def load_gaussians_from_config(config_path: Path, device: str = "cpu"):
    """The trained Gaussians of a run, in the input data's world coordinates.

    Works for every method whose model keeps a ``TrainableGaussians`` at ``model.gaussians``.
    """
    from studio.export.transform import dataparser_to_world
    from studio.gaussians.trainable import PARAM_NAMES, TrainableGaussians

    config_path = Path(config_path)
    if is_nerf_run(config_path):
        raise StudioInputError(f"run {config_path.parent} is a NeRF, not Gaussians: `studio export mesh --load-config` "
                               "extracts its surface.")
    state = load_checkpoint(latest_checkpoint(config_path))["pipeline"]
    params = {name: state.get(GAUSSIAN_PREFIX + name) for name in PARAM_NAMES}
    missing = [name for name, value in params.items() if value is None]
    if missing:
        raise StudioInputError(f"run {config_path.parent} holds no Gaussian scene (missing {', '.join(missing)}).")
    gaussians = TrainableGaussians(params).activated().detach()
    transform, scale = dataparser_transform(config_path)
    return dataparser_to_world(gaussians, transform, scale).to(device)


def load_nerf_from_config(config_path: Path, device: str = "cpu"):
    """The trained field (``studio.nerf.HashGridField``, eval mode) of a NeRF run and the run's
    (dataparser transform [3,4], scale) to map its points back to the input world."""
    from studio.nerf import HashGridField

    config_path = Path(config_path)
    model = load_trainer_config(config_path).pipeline.model
    prefix = "_model.field."
    state = {k[len(prefix):]: v for k, v in load_checkpoint(latest_checkpoint(config_path))["pipeline"].items() if k.startswith(prefix)}
    field = HashGridField(model.nerf)
    try:
        field.load_state_dict(state)
    except RuntimeError:
        raise StudioInputError(f"run {config_path.parent} holds no NeRF matching its config.") from None
    return field.to(device).eval(), dataparser_transform(config_path)
