"""``ns-train sparse3d --data DIR``: 2-3 posed views -> Gaussians, distilled from a multiview-consistent prior.

``--category NAME`` (top level) names the object's category for C-SDS (default: the dataset's
meta.json ``"category"``). Optimisers: DreamGaussian's for the Gaussians
(``studio.models.optimizers.GENERATION_OPTIMIZERS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from studio.data.sparse_views import SparseViewDataManagerConfig, dataset_category
from studio.io.errors import StudioInputError
from studio.methods.sparse3d.model import Sparse3DModelConfig
from studio.models.optimizers import GENERATION_OPTIMIZERS
from studio.models.trainer import StudioTrainerConfig, method_specification


@dataclass
class Sparse3DTrainerConfig(StudioTrainerConfig):
    """StudioTrainerConfig + ``--category`` (copied to ``--pipeline.model.category``)."""

    category: Optional[str] = None
    """Object category for C-SDS, e.g. "torus" (default: the dataset's meta.json "category")."""

    def validate_inputs(self) -> None:
        """Copy ``--category`` down, check the inputs, then refuse C-SDS without a category (before
        anything is written)."""
        model = self.pipeline.model
        if self.category is not None:
            model.category = self.category
        super().validate_inputs()
        if (
            model.csds != "none"
            and model.category is None
            and dataset_category(Path(self.pipeline.datamanager.data)) is None
        ):
            raise StudioInputError(
                f"--data {self.pipeline.datamanager.data} has no meta.json category: C-SDS needs the object's "
                "category, pass --category NAME (or --pipeline.model.csds none)."
            )


sparse3d = method_specification(
    "sparse3d",
    VanillaPipelineConfig(datamanager=SparseViewDataManagerConfig(), model=Sparse3DModelConfig()),
    GENERATION_OPTIMIZERS,
    "Sparse-view reconstruction: a multiview-consistent prior with an epipolar controller and C-SDS (Sparse3D).",
    trainer=Sparse3DTrainerConfig,
    max_num_iterations=3000,
    steps_per_eval_image=500,
    steps_per_save=1000,
)
