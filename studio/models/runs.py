"""``load_run``: a trained ``ns-train`` run (config.yml + latest checkpoint) as a model in eval mode.

The one loader that evaluation (``studio eval``), export, the viewer and the benchmarks use. The
config is read with the restricted YAML loader and the checkpoint with ``weights_only=True``
(``studio.io``); nothing from the run folder is executed. Without ``with_data`` the model is
built without reading the dataset (a scene box from the dataparser settings, one training view).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from studio.io.config_loader import load_trainer_config
from studio.io.errors import StudioInputError
from studio.io.runs import dataparser_transform, latest_checkpoint, load_checkpoint


@dataclass
class Run:
    """A loaded run: its TrainerConfig, model (eval mode, on ``device``), the pipeline when built
    with the dataset (else None), the checkpoint step and the dataparser transform [3,4] and scale
    that map input-world points into the model's frame."""

    config: Any
    model: Any
    pipeline: Optional[Any]
    step: int
    transform: torch.Tensor
    scale: float


def load_run(
    config_path: str | Path,
    device: Optional[str] = None,
    *,
    with_data: bool = False,
    data: Optional[Path] = None,
    backend: Optional[str] = None,
) -> Run:
    """Load the run whose ``config.yml`` is ``config_path`` (see module docstring).

    ``with_data`` builds the whole
    pipeline with its dataset (``data`` replaces the dataset folder); ``backend`` replaces the
    model's rasterizer backend.
    """
    config_path = Path(config_path)
    config = load_trainer_config(config_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_config = config.pipeline.model
    if backend is not None and hasattr(model_config, "backend"):
        model_config.backend = backend
    if hasattr(model_config, "load_stage"):
        model_config.load_stage = None  # the checkpoint holds everything; never read another run's file
    ckpt = load_checkpoint(latest_checkpoint(config_path))
    step = int(ckpt.get("step", 0))
    pipeline = None
    if with_data:
        if data is not None:
            config.data = data
            config.pipeline.datamanager.data = data
            if hasattr(config.pipeline.datamanager, "dataparser"):
                config.pipeline.datamanager.dataparser.data = data
        pipeline = config.pipeline.setup(device=device, test_mode="test")
        pipeline.eval()
        pipeline.load_pipeline(ckpt["pipeline"], step)
        pipeline.eval()
        model = pipeline.model
    else:
        model = _model_without_data(config, ckpt["pipeline"], config_path).to(device).eval()
    return Run(config, model, pipeline, step, *dataparser_transform(config_path))


def _model_without_data(config, state: dict, config_path: Path):
    from nerfstudio.data.scene_box import SceneBox

    dataparser = getattr(config.pipeline.datamanager, "dataparser", None)
    half = float(getattr(dataparser, "scene_box_half_size", 1.5) or 1.5)
    scene_box = SceneBox(aabb=torch.tensor([[-half] * 3, [half] * 3], dtype=torch.float32))
    model = config.pipeline.model.setup(scene_box=scene_box, num_train_data=1, metadata={})
    prefix = "_model."
    model_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(model_state, strict=False)
    except RuntimeError:
        raise StudioInputError(f"run {config_path.parent}: its checkpoint does not match its config.") from None
    return model
