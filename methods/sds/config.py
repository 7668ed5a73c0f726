"""``sds`` method specification: random orbit cameras + Gaussians + SDS/VSD text guidance.

``ns-train sds --prompt "a matte blue capsule"`` (Nerfstudio's ``--prompt`` alias sets
``--pipeline.model.prompt``). Optimiser settings are DreamGaussian's (Tang et al. 2024): means
1.6e-3 -> 1.6e-5, colour 1e-2, opacity 5e-2, scales 5e-3, rotations 5e-3; the NeRF option
(group ``nerf``: hash grid and MLP) 1e-2, threestudio's rate for its implicit volume; the VSD fake score
(group ``guidance``) trains with Adam at 1e-3 (ProlificDreamer's LoRA rate is 1e-4 for SD; the
small embedded prior tolerates more).
"""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from studio.engine.orbit_datamanager import OrbitDataManagerConfig
from studio.engine.sds_model import SDSModelConfig
from studio.engine.trainer import StudioTrainerConfig
from studio.methods.studio_splat.config import adam

GENERATION_OPTIMIZERS = {
    "means": adam(1.6e-3, ExponentialDecaySchedulerConfig(lr_final=1.6e-5, max_steps=1000)),
    "features_dc": adam(0.01),
    "features_rest": adam(0.01 / 20),
    "opacities": adam(0.05),
    "scales": adam(0.005),
    "quats": adam(0.005),
}

sds = MethodSpecification(
    config=StudioTrainerConfig(
        method_name="sds",
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(datamanager=OrbitDataManagerConfig(), model=SDSModelConfig()),
        optimizers={**GENERATION_OPTIMIZERS, "nerf": adam(1e-2), "guidance": adam(1e-3)},
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        viewer=ViewerConfig(websocket_host="127.0.0.1", quit_on_train_completion=True, num_rays_per_chunk=1 << 15),
        vis="viewer",
    ),
    description="Text-to-3D Gaussians by score distillation (SDS, DreamFusion; VSD, ProlificDreamer).",
)
