"""``ns-train prd``: dataparser + full-image datamanager + ``PRDModel``.

Optimisers: the 3DGS ones for the radiance field (as ``studio-splat``); PBR attributes, progress
and light at 1e-2 (Adam), as GaussianShader-style Gaussian inverse renderers use.
"""

from __future__ import annotations

from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from studio.data.dataparser import StudioDataParserConfig
from studio.methods.prd.model import PRDModelConfig
from studio.models.optimizers import SPLAT_OPTIMIZERS, adam, with_groups
from studio.models.trainer import StagedTrainerConfig, method_specification

PRDTrainerConfig = StagedTrainerConfig  # the name earlier runs' config.yml files refer to

prd = method_specification(
    "prd",
    VanillaPipelineConfig(
        datamanager=FullImageDatamanagerConfig(dataparser=StudioDataParserConfig(), cache_images_type="uint8"),
        model=PRDModelConfig(),
    ),
    with_groups(
        SPLAT_OPTIMIZERS,
        **{name: adam(0.01) for name in ("albedo", "roughness", "metallic", "progress", "light", "indirect")},
    ),
    "Progressive Radiance Distillation: PBR inverse rendering with Gaussian splatting (Ye et al. 2024).",
    trainer=StagedTrainerConfig,
    steps_per_eval_image=500,
    steps_per_save=5000,
)
