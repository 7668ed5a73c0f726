"""Score-distillation guidance: each guidance takes renders, conditions and the training step and
returns a dict of losses (keys ``loss_*``; other keys are detached diagnostics to log).

* ``SDS`` (DreamFusion), ``VSD`` (ProlificDreamer / SwiftBrush), ``BSD`` (DreamCraft3D), ``CSDS``
  (Sparse3D's category score distillation, with ``category_prompt``);
* ``VPSDS`` (VP3D's visual-prompted SDS: a text prior and a visual-prompt prior in one
  compositional CFG);
* timestep schedules as data (``schedules``); view-dependent prompts (``prompting``) and
  Perp-Neg's view-dependent negative prompts for SDS (``perp_neg``).

The CFG convention is diffusers': eps_u + s (eps_c - eps_u) (``guided_output``; it and the DDIM
``sample`` live in ``studio.priors.sampling``).
"""

from studio.guidance.bsd import BSD, augment_views, finetune, view_dependent_t_range
from studio.guidance.csds import CSDS, category_prompt
from studio.guidance.perp_neg import Negatives, PerpNeg, perp_neg_combine, view_conditions
from studio.guidance.prompting import VIEWS, ViewPrompting, batch_condition, view_dependent_prompts
from studio.guidance.schedules import (
    DreamCraft3DSchedule,
    DreamGaussianLinear,
    TimestepSchedule,
    UniformTimesteps,
    step_value,
)
from studio.guidance.sds import SDS, model_latents, sds_weight, surrogate_loss
from studio.guidance.vp_sds import VPSDS, shares_model_space, visual_direction
from studio.guidance.vsd import VSD, denoising_loss, fake_score_loss, variational_score
from studio.priors.sampling import guided_output, sample

__all__ = [
    "BSD",
    "CSDS",
    "SDS",
    "VSD",
    "VPSDS",
    "VIEWS",
    "DreamCraft3DSchedule",
    "DreamGaussianLinear",
    "Negatives",
    "PerpNeg",
    "TimestepSchedule",
    "UniformTimesteps",
    "ViewPrompting",
    "batch_condition",
    "augment_views",
    "category_prompt",
    "denoising_loss",
    "fake_score_loss",
    "finetune",
    "guided_output",
    "model_latents",
    "perp_neg_combine",
    "sample",
    "sds_weight",
    "shares_model_space",
    "step_value",
    "surrogate_loss",
    "variational_score",
    "view_conditions",
    "visual_direction",
    "view_dependent_prompts",
    "view_dependent_t_range",
]
