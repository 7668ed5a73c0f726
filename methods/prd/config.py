"""``prd`` method specification: dataparser + full-image datamanager + ``PRDModel``.

Optimiser settings: the 3DGS ones for the radiance field (as ``studio-splat``); PBR attributes,
progress and light at 1e-2 (Adam), as GaussianShader-style Gaussian inverse renderers use.
``--load-stage FILE`` (top level) starts from a stage-1 file and shortens the run accordingly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Type

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from studio.data.dataparser import StudioDataParserConfig
from studio.engine.prd_model import DEFAULT_STAGE_ITERS, PRDModelConfig
from studio.engine.trainer import StudioTrainer, StudioTrainerConfig
from studio.io.errors import StudioInputError
from studio.methods.studio_splat.config import SPLAT_OPTIMIZERS, adam


@dataclass
class PRDTrainerConfig(StudioTrainerConfig):
    """StudioTrainerConfig + ``--load-stage``; the run length is the sum of the stage lengths."""

    _target: Type = field(default_factory=lambda: StudioTrainer)
    load_stage: Optional[Path] = None
    """Start from stage1.safetensors of an earlier prd run (skips stage 1; e.g. for ablations)."""

    def resolve_run_length(self) -> None:
        model = self.pipeline.model
        stages = [int(n) for n in (model.stage_iters or DEFAULT_STAGE_ITERS)]
        model.load_stage = self.load_stage
        if self.load_stage is not None and not Path(self.load_stage).is_file():
            raise StudioInputError(f"--load-stage {self.load_stage} is not a file.")
        self.max_num_iterations = sum(stages) - (stages[0] if self.load_stage is not None else 0)

    def setup(self, **kwargs):
        self.pipeline.model.stage_dir = self.get_base_dir()
        return super().setup(**kwargs)


prd = MethodSpecification(
    config=PRDTrainerConfig(
        method_name="prd",
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(
            datamanager=FullImageDatamanagerConfig(dataparser=StudioDataParserConfig(), cache_images_type="uint8"),
            model=PRDModelConfig(),
        ),
        optimizers={
            **copy.deepcopy(SPLAT_OPTIMIZERS),
            "albedo": adam(0.01),
            "roughness": adam(0.01),
            "metallic": adam(0.01),
            "progress": adam(0.01),
            "light": adam(0.01),
        },
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        viewer=ViewerConfig(websocket_host="127.0.0.1", quit_on_train_completion=True, num_rays_per_chunk=1 << 15),
        vis="viewer",
    ),
    description="Progressive Radiance Distillation: PBR inverse rendering with Gaussian splatting (Ye et al. 2024).",
)
