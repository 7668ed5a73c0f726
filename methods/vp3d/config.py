"""``ns-train vp3d --prompt "a glossy red torus" [--visual-prompt style.png]``: random orbit cameras
+ Gaussians + VP3D (visual prompt, VP-SDS, differentiable rewards).

``--visual-prompt`` is a top-level flag (``VP3DTrainerConfig``) copied down to
``--pipeline.model.visual-prompt``, as Nerfstudio does for ``--prompt``; ``--load-stage`` starts from
a run's ``geometry.safetensors``. Optimisers: DreamGaussian's for the Gaussians
(``studio.models.optimizers.GENERATION_OPTIMIZERS``, as ``sds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from studio.data.orbit import OrbitDataManagerConfig
from studio.methods.vp3d.model import VP3DModelConfig
from studio.models.optimizers import GENERATION_OPTIMIZERS, with_groups
from studio.models.trainer import StagedTrainerConfig, method_specification


@dataclass
class VP3DTrainerConfig(StagedTrainerConfig):
    """StagedTrainerConfig with the top-level ``--visual-prompt``."""

    visual_prompt: Optional[Path] = None
    """Visual prompt image (RGBA or RGB) for stylised text-to-3D; without it one is sampled from the text prior."""

    def validate_inputs(self) -> None:
        """``--visual-prompt`` is copied to the model before its inputs are checked."""
        if self.visual_prompt is not None:
            self.pipeline.model.visual_prompt = self.visual_prompt
        super().validate_inputs()


vp3d = method_specification(
    "vp3d",
    VanillaPipelineConfig(datamanager=OrbitDataManagerConfig(), model=VP3DModelConfig()),
    with_groups(GENERATION_OPTIMIZERS),
    "Text-to-3D with a 2D visual prompt (VP3D): visual-prompted SDS + differentiable rewards.",
    trainer=VP3DTrainerConfig,
    steps_per_eval_image=500,
    steps_per_save=1000,
)
