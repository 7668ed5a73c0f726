"""``ns-train videoscene --data DIR``: train VideoScene's one-step student (leap flow distillation).

DIR is a ToyWorld scene folder or a folder of them made with ``studio scenes make --path arc``
(train views in arcs: camera trajectories). The default phase is ``leap`` (3D-aware leap flow
distillation of the embedded interpolation teacher); ``--pipeline.model.phase teacher`` fine-tunes
``toy-mv`` into that teacher. Adam, warm-up, cosine decay to 10%. Scale-out: Nerfstudio's
``--machine.num-devices`` (DDP), or ``torchrun --nproc_per_node=K -m studio.generators.train --phase leap``.
The policy network: ``python -m studio.generators.policy``.
"""

from __future__ import annotations

from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import CosineDecaySchedulerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from studio.methods.videoscene.datamanager import VideoSceneDataManagerConfig
from studio.methods.videoscene.model import VideoSceneModelConfig
from studio.models.trainer import method_specification

videoscene = method_specification(
    "videoscene",
    VanillaPipelineConfig(datamanager=VideoSceneDataManagerConfig(), model=VideoSceneModelConfig()),
    {
        "generator": {
            "optimizer": AdamOptimizerConfig(lr=5e-5),
            "scheduler": CosineDecaySchedulerConfig(warm_up_end=50, learning_rate_alpha=0.1, max_steps=2000),
        }
    },
    "One-step 3D scenes from two views: coarse feed-forward Gaussians, one leap of a distilled video model (VideoScene).",
    max_num_iterations=2000,
    steps_per_eval_image=500,
    steps_per_save=1000,
)
