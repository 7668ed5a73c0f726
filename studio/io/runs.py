"""Files of ``ns-train`` runs: the latest checkpoint, its tensors and the dataparser transform.

Loading never executes anything from the run folder: configs go through the restricted YAML
loader and checkpoints through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

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


def checkpoint_gaussian_params(state: dict, names: Sequence[str]) -> tuple[dict, list[str]]:
    """The per-Gaussian parameters ``names`` of a checkpoint's pipeline state (raw, before
    activation) and the names it lacks."""
    params = {name: state.get(GAUSSIAN_PREFIX + name) for name in names}
    return params, [name for name, value in params.items() if value is None]
