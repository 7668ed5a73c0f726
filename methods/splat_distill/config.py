"""``ns-train splat-distill --data DIR``: fine-tune a 2D feature model to be 3D-aware (Splat and Distill).

DIR is a NeRF-synthetic scene folder or a folder of them. The student (every weight, or LoRA
adapters) is trained with Adam (warm-up, cosine decay to 10%); the teacher follows it as an EMA after every step
(``methods/splat_distill/model.py``). ``studio export features --load-config CFG --output
student.safetensors`` writes the student as a plain 2D feature model.
"""

from __future__ import annotations

from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import CosineDecaySchedulerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from studio.methods.splat_distill.datamanager import SceneSetDataManagerConfig
from studio.methods.splat_distill.model import SplatDistillModelConfig
from studio.models.trainer import method_specification

splat_distill = method_specification(
    "splat-distill",
    VanillaPipelineConfig(datamanager=SceneSetDataManagerConfig(), model=SplatDistillModelConfig()),
    {
        "student": {
            "optimizer": AdamOptimizerConfig(lr=1e-4),  # chosen on validation among 2e-5, 5e-5, 1e-4
            "scheduler": CosineDecaySchedulerConfig(warm_up_end=50, learning_rate_alpha=0.1, max_steps=2000),
        }
    },
    "3D-aware fine-tuning of a 2D feature model through feed-forward Gaussian feature lifting (Splat and Distill).",
    max_num_iterations=2000,
    steps_per_eval_image=500,
    steps_per_save=500,
)
