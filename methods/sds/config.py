"""``ns-train sds --prompt "a matte blue capsule"``: random orbit cameras + Gaussians (or a NeRF) + SDS/VSD.

Nerfstudio's ``--prompt`` alias sets ``--pipeline.model.prompt``. Optimisers: DreamGaussian's for
the Gaussians (``studio.models.optimizers.GENERATION_OPTIMIZERS``); the NeRF option (group
``nerf``: hash grid and MLP) 1e-2, threestudio's rate for its implicit volume; the VSD fake score
(group ``guidance``) Adam at 1e-4, ProlificDreamer's LoRA rate for Stable Diffusion (the ``tiny``
preset: 1e-3 for the whole small embedded prior, configs/sds.yaml).
"""

from __future__ import annotations

from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from studio.data.orbit import OrbitDataManagerConfig
from studio.methods.sds.model import SDSModelConfig
from studio.models.optimizers import GENERATION_OPTIMIZERS, adam, with_groups
from studio.models.trainer import method_specification

sds = method_specification(
    "sds",
    VanillaPipelineConfig(datamanager=OrbitDataManagerConfig(), model=SDSModelConfig()),
    with_groups(GENERATION_OPTIMIZERS, nerf=adam(1e-2), guidance=adam(1e-4)),
    "Text-to-3D Gaussians by score distillation (SDS, DreamFusion; VSD, ProlificDreamer).",
    max_num_iterations=5000,
    steps_per_eval_image=500,
    steps_per_save=1000,
)
