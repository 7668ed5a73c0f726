"""``studio-splat`` method specification: dataparser + full-image datamanager + 3DGS model.

Optimiser settings are the 3DGS paper's (means 1.6e-4 -> 1.6e-6 scaled by the scene extent,
SH DC 2.5e-3, SH rest 2.5e-3 / 20, opacity 5e-2, scale 5e-3, rotation 1e-3).
"""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from studio.data.dataparser import StudioDataParserConfig
from studio.engine.splat_model import SplatModelConfig
from studio.engine.trainer import StudioTrainerConfig


def adam(lr: float, scheduler=None) -> dict:
    return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": scheduler}


SPLAT_OPTIMIZERS = {
    "means": adam(1.6e-4, ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=30000)),
    "features_dc": adam(0.0025),
    "features_rest": adam(0.0025 / 20),
    "opacities": adam(0.05),
    "scales": adam(0.005),
    "quats": adam(0.001),
}

studio_splat = MethodSpecification(
    config=StudioTrainerConfig(
        method_name="studio-splat",
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(
            datamanager=FullImageDatamanagerConfig(dataparser=StudioDataParserConfig(), cache_images_type="uint8"),
            model=SplatModelConfig(),
        ),
        optimizers=SPLAT_OPTIMIZERS,
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        viewer=ViewerConfig(websocket_host="127.0.0.1", quit_on_train_completion=True, num_rays_per_chunk=1 << 15),
        vis="viewer",
    ),
    description="3D Gaussian Splatting reconstruction from posed images (NeRF-synthetic or Nerfstudio data).",
)
