"""Text-to-3D by score distillation on Gaussians or a NeRF (DreamFusion's SDS, or ProlificDreamer's VSD).

Every step renders ``views_per_batch`` random orbit views (``studio.engine.orbit_datamanager``)
and applies one guidance from ``studio.guidance`` with a text prior from ``studio.priors``
(default: the embedded ``toy-t2i``; any name or path ``studio.priors.load_prior`` accepts):

* ``sds``: ``L = 0.5 ||x - sg(x - w(t)(eps_cfg - eps))||^2`` (DreamFusion Eq. 3 as a loss);
* ``vsd``: the same with ``eps_cfg - eps_fake`` and the fake score's own denoising loss
  (ProlificDreamer Eq. 7-8); the fake score is a trainable copy of the prior conditioned on the
  camera (``studio.cameras.sampling.camera_vector``) and trained by the ``guidance`` optimizer.

The scene is Gaussians (default, DreamGaussian's settings, with densification) or, with
``--pipeline.model.representation nerf``, a hash-grid radiance field volume-rendered at the same
views (``studio.nerf``; DreamFusion and ProlificDreamer distil NeRFs; optimiser group ``nerf``).

View-dependent prompting (DreamFusion Sec. 3.2) appends ", front view" etc. per camera; it is
off for the embedded prior (ToyWorld captions have no view words) and on for real priors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation

from studio.cameras.sampling import OrbitViews, camera_vector
from studio.engine.generation_model import GenerationModel, GenerationModelConfig
from studio.guidance import SDS, VSD, UniformTimesteps, ViewPrompting
from studio.nerf import HashGridField, HashGridFieldConfig, render_cameras
from studio.priors.base import Condition


@dataclass
class SDSModelConfig(GenerationModelConfig):
    """``sds`` options; fields left ``None`` come from the preset (configs/sds.yaml)."""

    _target: Type = field(default_factory=lambda: SDSModel)
    prompt: str = "a matte blue capsule"
    """Text prompt (``ns-train sds --prompt``)."""
    negative_prompt: str = ""
    """Text of the unconditional CFG branch."""
    prior: Optional[str] = None
    """Text-to-image prior: an embedded name (toy-t2i), a diffusers name (sd-2.1-base, if-i) or a
    path (None: the preset's; toy-t2i on CPU)."""
    guidance: Literal["sds", "vsd"] = "sds"
    """Score distillation variant."""
    guidance_scale: Optional[float] = None
    """CFG scale (DreamFusion 100 for SDS, ProlificDreamer 7.5 for VSD; preset per prior size)."""
    weighting: Literal["sds", "uniform", "fantasia3d"] = "sds"
    """w(t) of the gradient."""
    t_range: Tuple[float, float] = (0.02, 0.98)
    """Timestep range as fractions of T."""
    t_max_final: Optional[float] = None
    """If set, t_max anneals linearly to this value by step ``t_anneal_steps`` (ProlificDreamer style)."""
    t_anneal_steps: int = 1000
    """Step at which the annealed t_max reaches ``t_max_final``."""
    view_dependent_prompt: Optional[bool] = None
    """Append view words to the prompt (default: on for real priors, off for toy ones)."""
    opacity_weight: float = 0.0
    """Weight of a binary-entropy opacity regulariser on the rendered alpha (0: off)."""
    representation: Literal["gaussians", "nerf"] = "gaussians"
    """The optimised scene: Gaussians, or a NeRF (hash-grid field + volume rendering, ``studio.nerf``)."""
    nerf: HashGridFieldConfig = field(default_factory=HashGridFieldConfig)
    """The NeRF's field and sampling (``--pipeline.model.nerf.*``; used with ``representation nerf``)."""


class SDSModel(GenerationModel):
    """See module docstring."""

    config: SDSModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        from studio.priors import load_prior

        cfg = self.config
        self.prior_name = cfg.prior or "toy-t2i"
        prior = load_prior(self.prior_name, device="cpu")  # the pipeline moves the model (and it) to its device
        schedule = UniformTimesteps(cfg.t_range[0], self._t_max())
        if cfg.guidance == "vsd":
            self.guidance = VSD(prior, guidance_scale=float(cfg.guidance_scale or 7.5), weighting=cfg.weighting, schedule=schedule)
        else:
            self.guidance = SDS(prior, guidance_scale=float(cfg.guidance_scale or 100.0), weighting=cfg.weighting, schedule=schedule)
        self.view_prompting = ViewPrompting() if self._view_dependent(self.prior_name) else None
        self._cond_cache: Dict[str, Condition] = {}
        self.field = HashGridField(cfg.nerf) if cfg.representation == "nerf" else None

    def _t_max(self):
        cfg = self.config
        if cfg.t_max_final is None:
            return cfg.t_range[1]
        return [0, cfg.t_range[1], cfg.t_max_final, cfg.t_anneal_steps]  # [start_step, start, end, end_step]

    @staticmethod
    def _view_dependent(prior: str) -> bool:
        return not str(prior).startswith("toy-")

    def _condition(self, text: str) -> Condition:
        if text not in self._cond_cache:
            with torch.no_grad():
                self._cond_cache[text] = self.guidance.prior.condition(text=text).to(self.device)
        return self._cond_cache[text]

    def text_conditions(self, views: OrbitViews) -> Tuple[Condition, Condition]:
        """(conditional [B,...], unconditional [1,...]) embeddings for the batch's views."""
        cfg = self.config
        vdp = cfg.view_dependent_prompt if cfg.view_dependent_prompt is not None else self.view_prompting is not None
        if vdp:
            prompts = (self.view_prompting or ViewPrompting()).prompts(cfg.prompt, views.azimuth, views.elevation)
        else:
            prompts = [cfg.prompt] * len(views.azimuth)
        conds = [self._condition(p) for p in prompts]
        cond = Condition.cat(conds, [1] * len(conds))
        return cond, self._condition(cfg.negative_prompt)

    def render_any(self, cameras: Cameras) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        if self.field is None:
            return super().render_any(cameras)
        bg = self.background()
        cfg = self.config.nerf
        rgb, alpha, depth = render_cameras(self.field, cameras.to(self.device), cfg.radius, cfg.samples_per_ray, bg,
                                           perturb=self.training)
        return rgb.clamp(0.0, 1.0), alpha, depth, bg

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        if self.field is None:
            return super().get_training_callbacks(attrs)

        def before(step: int) -> None:  # a NeRF has no densification
            self.step = step

        return [TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], before)]

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        return super().get_metrics_dict(outputs, batch) if self.field is None else {}

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_param_groups() if self.field is None else {"nerf": list(self.field.parameters())}
        if isinstance(self.guidance, VSD):
            groups["guidance"] = self.guidance.trainable_parameters()
        return groups

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        views = OrbitViews(batch["elevation"], batch["azimuth"], batch["distance"], batch["fov"])
        cond, uncond = self.text_conditions(views)
        images = outputs["rgb_views"].permute(0, 3, 1, 2)
        if isinstance(self.guidance, VSD):
            out = self.guidance(images, cond, uncond, self.step, camera=camera_vector(views).to(self.device))
            losses = {"loss_vsd": out["loss_vsd"], "loss_vsd_fake": out["loss_vsd_fake"]}
        else:
            losses = {"loss_sds": self.guidance(images, cond, uncond, self.step)["loss_sds"]}
        if self.config.opacity_weight > 0:
            a = outputs["alpha_views"].clamp(1e-4, 1 - 1e-4)
            losses["opacity_loss"] = self.config.opacity_weight * -(a * a.log() + (1 - a) * (1 - a).log()).mean()
        return losses
