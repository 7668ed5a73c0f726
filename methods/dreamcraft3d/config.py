"""``ns-train dreamcraft3d --data image.png [--prompt "..."]``: one reference image + random views + DreamCraft3D.

``--load-stage`` starts from a saved stage. Optimisers: DreamGaussian rates for the coarse
Gaussians (``GENERATION_OPTIMIZERS``, as ``sds``); the DMTet's signed distance and deformation
5e-3 (released geometry config), its grid colours 1e-2 (as vertex colours); mesh vertices 5e-4 (the released DMTet stage
uses 5e-3 on SDF values of a 128 grid; vertices move in world units), vertex colours 1e-2,
texture 3e-3 (the released hash-grid texture uses 1e-2; Adam moves every texel of an explicit
texture by about the learning rate per step whatever its gradient, so the guidance's noise
becomes texel noise; see methods/dreamcraft3d/README.md), the render-score copy 1e-3.
"""

from __future__ import annotations

from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from studio.data.reference import ReferenceDataManagerConfig
from studio.methods.dreamcraft3d.model import DreamCraft3DModelConfig
from studio.models.optimizers import GENERATION_OPTIMIZERS, adam, with_groups
from studio.models.trainer import StagedTrainerConfig, method_specification

dreamcraft3d = method_specification(
    "dreamcraft3d",
    VanillaPipelineConfig(datamanager=ReferenceDataManagerConfig(), model=DreamCraft3DModelConfig()),
    with_groups(
        GENERATION_OPTIMIZERS,
        dmtet_sdf=adam(5e-3),
        dmtet_deform=adam(5e-3),
        dmtet_color=adam(1e-2),
        mesh_verts=adam(5e-3 * 0.1),
        mesh_colors=adam(1e-2),
        texture=adam(3e-3),
        guidance=adam(1e-3),
    ),
    "Image-to-3D (DreamCraft3D): reference-view losses + hybrid novel-view/text score distillation.",
    trainer=StagedTrainerConfig,
    steps_per_eval_image=500,
    steps_per_save=1000,
)
