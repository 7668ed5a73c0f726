"""``ns-train flashworld --data DIR``: train FlashWorld (one-step 3D Gaussian generation) on a folder of scenes.

DIR is a NeRF-synthetic scene folder or a folder of them (``studio scenes make``). The default
phase is ``dmd`` (cross-mode post-training from the embedded ``toy-mv`` dual model);
``--pipeline.model.phase dual`` pre-trains (from scratch, or from ``--pipeline.model.init``). The
generator is trained with Adam (warm-up, cosine decay to 10%). Scale-out: Nerfstudio's
``--machine.num-devices`` (DDP) for ``dual``; for ``dmd`` (two optimisers) use
``torchrun --nproc_per_node=K -m studio.generators.train --phase dmd``.
"""

from __future__ import annotations

from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import CosineDecaySchedulerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from studio.methods.flashworld.model import FlashWorldModelConfig
from studio.models.orbit_data import OrbitDataManagerConfig
from studio.models.trainer import method_specification

flashworld = method_specification(
    "flashworld",
    VanillaPipelineConfig(datamanager=OrbitDataManagerConfig(), model=FlashWorldModelConfig()),
    {
        "generator": {
            "optimizer": AdamOptimizerConfig(lr=2e-4),
            "scheduler": CosineDecaySchedulerConfig(warm_up_end=100, learning_rate_alpha=0.1, max_steps=3000),
        }
    },
    "One-step 3D Gaussian scene generation from an image and/or a caption (FlashWorld: dual-mode pre-training, cross-mode DMD).",
    max_num_iterations=3000,
    steps_per_eval_image=500,
    steps_per_save=1000,
)
