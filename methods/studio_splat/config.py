"""``ns-train studio-splat``: dataparser + full-image datamanager + the 3DGS model (``studio.models.splat``).

Optimiser settings are the 3DGS paper's (``studio.models.optimizers.SPLAT_OPTIMIZERS``).
"""

from __future__ import annotations

from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from studio.data.dataparser import StudioDataParserConfig
from studio.models.optimizers import SPLAT_OPTIMIZERS, with_groups
from studio.models.splat import SplatModelConfig
from studio.models.trainer import method_specification

studio_splat = method_specification(
    "studio-splat",
    VanillaPipelineConfig(
        datamanager=FullImageDatamanagerConfig(dataparser=StudioDataParserConfig(), cache_images_type="uint8"),
        model=SplatModelConfig(),
    ),
    with_groups(SPLAT_OPTIMIZERS),
    "3D Gaussian Splatting reconstruction from posed images (NeRF-synthetic or Nerfstudio data).",
    max_num_iterations=30000,
    steps_per_eval_image=500,
    steps_per_save=2000,
)
