"""Text-to-3D by score distillation on Gaussians or a NeRF (DreamFusion's SDS, or ProlificDreamer's VSD).

Every step renders ``views_per_batch`` random orbit views (``studio.data.orbit``)
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
from typing import ClassVar, Dict, List, Literal, Optional, Tuple, Type

from nerfstudio.cameras.cameras import Cameras
from torch import Tensor
from torch.nn import Parameter

from studio.cameras.sampling import OrbitViews, camera_vector
from studio.guidance import SDS, VSD, Negatives, UniformTimesteps, ViewPrompting, view_conditions
from studio.io.errors import StudioInputError
from studio.io.inputs import Input, Kind
from studio.models.generation import GenerationModel, GenerationModelConfig
from studio.models.staged import Stage, StagedModel
from studio.nerf import HashGridField, HashGridFieldConfig, render_cameras
from studio.priors import check_prior
from studio.priors.base import Condition

PAPER_GUIDANCE_SCALES = {"sds": 100.0, "vsd": 7.5}
"""CFG scale of each guidance when ``guidance_scale`` is not set: DreamFusion Sec. 3 (100) and
ProlificDreamer Sec. 5 (7.5)."""


@dataclass
class SDSModelConfig(GenerationModelConfig):
    """``sds`` options; defaults are DreamFusion's with Stable Diffusion (the ``full`` preset),
    configs/sds.yaml overrides."""

    _target: Type = field(default_factory=lambda: SDSModel)
    stage_names: ClassVar[Tuple[str, ...]] = ("distill",)
    prompt: str = "a matte blue capsule"
    """Text prompt (``ns-train sds --prompt``)."""
    negative_prompt: str = ""
    """Text of the unconditional CFG branch."""
    prior: str = "sd-2.1-base"
    """Text-to-image prior: an embedded name (toy-t2i), a diffusers name (sd-2.1-base, if-i) or a path."""
    guidance: Literal["sds", "vsd"] = "sds"
    """Score distillation variant."""
    guidance_scale: Optional[float] = None
    """CFG scale (default: the paper's, DreamFusion's 100 for SDS and ProlificDreamer's 7.5 for VSD)."""
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
    perp_neg: bool = False
    """Perp-Neg (``studio.guidance.perp_neg``) instead of plain CFG: view-interpolated prompts, the
    other views as perpendicular negatives (threestudio's ``prompt_processor.use_perp_neg``); needs
    view-dependent prompting and ``guidance sds``."""
    representation: Literal["gaussians", "nerf"] = "gaussians"
    """The optimised scene: Gaussians, or a NeRF (hash-grid field + volume rendering, ``studio.nerf``)."""
    nerf: HashGridFieldConfig = field(default_factory=HashGridFieldConfig)
    """The NeRF's field and sampling (``--pipeline.model.nerf.*``; used with ``representation nerf``)."""

    def inputs(self) -> List[Input]:
        """The prompt and the prior, checked before the run writes anything."""
        return [
            Input("--prompt", Kind.PROMPT, self.prompt, required=True),
            Input("--pipeline.model.prior", Kind.PRIOR, self.prior, check=check_prior),
        ]


class DistillStage(Stage):
    """The one stage of ``sds``: guidance losses on the scene; Gaussians densify after each step."""

    name = "distill"

    def after_step(self, step: int) -> None:
        if self.model.field is None:  # a NeRF has no densification
            self.model.densify(step)


class SDSModel(StagedModel, GenerationModel):
    """See module docstring."""

    config: SDSModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        self.prior_name = cfg.prior
        prior = self.load_prior(self.prior_name)
        self.view_prompting = ViewPrompting() if self._view_dependent(self.prior_name) else None
        # every prompt a step can ask for, embedded before the guidance clones the prior (VSD)
        self._cond_cache: Dict[str, Condition] = self.embed_prompts(prior, self._all_prompts())
        schedule = UniformTimesteps(cfg.t_range[0], self._t_max())
        guidance = VSD if cfg.guidance == "vsd" else SDS
        scale = cfg.guidance_scale if cfg.guidance_scale is not None else PAPER_GUIDANCE_SCALES[cfg.guidance]
        self.guidance = guidance(prior, guidance_scale=scale, weighting=cfg.weighting, schedule=schedule)
        if cfg.perp_neg and (cfg.guidance != "sds" or self._view_prompting() is None):
            raise StudioInputError(
                "--pipeline.model.perp-neg needs --pipeline.model.guidance sds and view-dependent prompts."
            )
        self.field = HashGridField(cfg.nerf) if cfg.representation == "nerf" else None
        self.init_stages([DistillStage(self)])

    def _t_max(self):
        cfg = self.config
        if cfg.t_max_final is None:
            return cfg.t_range[1]
        return [0, cfg.t_range[1], cfg.t_max_final, cfg.t_anneal_steps]  # [start_step, start, end, end_step]

    @staticmethod
    def _view_dependent(prior: str) -> bool:
        return not str(prior).startswith("toy-")

    def _view_prompting(self) -> Optional[ViewPrompting]:
        """The view-dependent prompting in use, or None."""
        cfg = self.config
        vdp = cfg.view_dependent_prompt if cfg.view_dependent_prompt is not None else self.view_prompting is not None
        return (self.view_prompting or ViewPrompting()) if vdp else None

    def _all_prompts(self) -> List[str]:
        """The prompt (with each view word when view-dependent), the negative prompt and "" (the
        priors' own null condition)."""
        cfg = self.config
        vp = self._view_prompting()
        prompts = vp.all_prompts(cfg.prompt) if vp is not None else [cfg.prompt]
        return prompts + [cfg.negative_prompt, ""]

    def text_conditions(self, views: OrbitViews) -> Tuple[Condition, Condition, Optional[Negatives]]:
        """(conditional [B,...], unconditional [1,...], Perp-Neg negatives or None) for the batch's views."""
        cfg = self.config
        cond, negatives = view_conditions(
            self._cond_cache, cfg.prompt, views.azimuth, views.elevation, self._view_prompting(), cfg.perp_neg
        )
        return cond, self._cond_cache[cfg.negative_prompt], negatives

    def render_any(self, cameras: Cameras) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        if self.field is None:
            return super().render_any(cameras)
        bg = self.background()
        cfg = self.config.nerf
        rgb, alpha, depth = render_cameras(
            self.field, cameras.to(self.device), cfg.radius, cfg.samples_per_ray, bg, perturb=self.training
        )
        return rgb.clamp(0.0, 1.0), alpha, depth, bg

    def render_outputs(self, camera: Cameras) -> Dict[str, Tensor]:
        return GenerationModel.get_outputs(self, camera)

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        return super().get_metrics_dict(outputs, batch) if self.field is None else {}

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_param_groups() if self.field is None else {"nerf": list(self.field.parameters())}
        if isinstance(self.guidance, VSD):
            groups["guidance"] = self.guidance.trainable_parameters()
        return groups

    def base_losses(self, outputs, batch) -> Dict[str, Tensor]:
        """The guidance loss (SDS, or VSD and its fake score's loss) and the opacity regulariser."""
        views = OrbitViews(batch["elevation"], batch["azimuth"], batch["distance"], batch["fov"])
        cond, uncond, negatives = self.text_conditions(views)
        images = outputs["rgb_views"].permute(0, 3, 1, 2)
        if isinstance(self.guidance, VSD):
            out = self.guidance(images, cond, uncond, self.step, camera=camera_vector(views).to(self.device))
            losses = {"loss_vsd": out["loss_vsd"], "loss_vsd_fake": out["loss_vsd_fake"]}
        else:
            losses = {"loss_sds": self.guidance(images, cond, uncond, self.step, negatives=negatives)["loss_sds"]}
        if self.config.opacity_weight > 0:
            a = outputs["alpha_views"].clamp(1e-4, 1 - 1e-4)
            losses["opacity_loss"] = self.config.opacity_weight * -(a * a.log() + (1 - a) * (1 - a).log()).mean()
        return losses
