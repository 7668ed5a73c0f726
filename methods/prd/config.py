"""``prd`` method specification: dataparser + full-image datamanager + ``PRDModel``.

Optimiser settings: the 3DGS ones for the radiance field (as ``studio-splat``); PBR attributes,
progress and light at 1e-2 (Adam), as GaussianShader-style Gaussian inverse renderers use.
``--load-stage FILE`` (top level) starts from a stage-1 file and shortens the run accordingly.
"""

from __future__ import annotations

import copy

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from studio.data.dataparser import StudioDataParserConfig
from studio.engine.prd_model import PRDModelConfig
from studio.engine.trainer import StagedTrainerConfig
from studio.methods.studio_splat.config import SPLAT_OPTIMIZERS, adam

PRDTrainerConfig = StagedTrainerConfig  # the name earlier runs' config.yml files refer to

prd = MethodSpecification(
    config=StagedTrainerConfig(
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
