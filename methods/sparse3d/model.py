"""Sparse-view object reconstruction by distilling a multiview-consistent prior (Sparse3D, Zou et al., AAAI 2024).

Gaussians are fitted to the 2-3 posed input views (``studio.data.sparse_views``: MSE of colour over
the render background and of the silhouette, ``studio.models.reference_losses``), while random
orbit views are distilled from the multiview-consistent prior conditioned on the inputs
(``studio.priors.epipolar``: the epipolar controller on a Zero123-style base):

* ``csds none`` (the tiny preset, chosen on validation objects): SDS (DreamFusion Eq. 3) with the
  multiview prior, classifier-free guided;
* ``csds reference``: C-SDS, SDS's sampled noise replaced by the category prior's prediction,
  ``w(t) (eps_mv(x_t; inputs) - eps(x_t; y_cat))`` (``studio.guidance.csds``);
* ``csds classifier`` (the full preset): the SDS term plus the classifier-score form
  ``w(t) (eps(x_t; y_cat) - eps(x_t; ""))`` on the category prior (Classifier Score Distillation's
  gradient).

``controller False`` sets the controller's residuals to zero: the base novel-view prior alone,
conditioned on the input view nearest to each random view (the plain-SDS baseline of
``studio eval sparse-view --method sds`` with ``csds none``). The category is ``--category`` or
the dataset's ``meta.json`` ``"category"`` (ToyWorld writes it); C-SDS without one is refused.
The paper distils with score distillation only; it does not describe pseudo-view targets, so
there are none here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Literal, Optional, Tuple, Type

import torch
from torch import Tensor

from studio.cameras.nerfstudio import cameras_to_viewmats
from studio.guidance import SDS, UniformTimesteps
from studio.guidance.csds import CSDS, category_prompt
from studio.io.errors import StudioInputError
from studio.io.inputs import Input, Kind
from studio.models.generation import GenerationModel, GenerationModelConfig
from studio.models.reference_losses import reference_losses
from studio.models.staged import Stage, StagedModel
from studio.priors import check_prior
from studio.priors.base import Condition


@dataclass
class Sparse3DModelConfig(GenerationModelConfig):
    """``sparse3d`` options; defaults are the ``full`` preset's (configs/sparse3d.yaml overrides)."""

    _target: Type = field(default_factory=lambda: Sparse3DModel)
    stage_names: ClassVar[Tuple[str, ...]] = ("distill",)
    prior: str = "zero123-epipolar"
    """Multiview-consistent prior: the embedded toy-epipolar (``studio.priors.epipolar``), or
    zero123-epipolar[:FOLDER] (a Zero123 snapshot with the controller, ``studio.priors.diffusers``)."""
    controller: bool = True
    """Use the epipolar controller (False: the base novel-view prior alone, nearest input view)."""
    csds: Literal["none", "classifier", "reference"] = "classifier"
    """Detail term: none (SDS only), classifier (SDS + classifier-score C-SDS) or reference (C-SDS
    with the category prior as SDS's reference; replaces SDS; needs both priors on one latent grid,
    so not Zero123 at 256 px with SD-2.1-base at 512 px)."""
    category: Optional[str] = None
    """Object category for C-SDS (``--category``; default: the dataset's meta.json "category")."""
    category_prior: str = "sd-2.1-base"
    """Text prior of the category prompt (shares the multiview prior's model space)."""
    guidance_scale: float = 3.0
    """CFG scale of the multiview prior (Zero-1-to-3's sampling scale)."""
    distill_weight: float = 1.0
    """Weight of the SDS term (csds none / classifier) or of C-SDS (csds reference)."""
    csds_weight: float = 1.0
    """Weight of the classifier-form C-SDS term (csds classifier)."""
    rgb_weight: float = 1000.0
    """Weight of the input views' colour MSE (DreamCraft3D's reference weight)."""
    mask_weight: float = 100.0
    """Weight of the input views' silhouette MSE."""
    t_range: Tuple[float, float] = (0.02, 0.98)
    """Timestep range (fractions of T) of the distillation terms."""
    weighting: Literal["sds", "uniform", "fantasia3d"] = "sds"
    """w(t) of the distillation gradients."""
    init_radius: float = 0.4

    def inputs(self) -> List[Input]:
        items = [Input("--pipeline.model.prior", Kind.PRIOR, self.prior, check=check_prior)]
        if self.csds != "none":
            items.append(Input("--pipeline.model.category-prior", Kind.PRIOR, self.category_prior, check=check_prior))
        return items


class DistillStage(Stage):
    """The one stage: input-view losses + distillation at random views; Gaussians densify."""

    name = "distill"

    def after_step(self, step: int) -> None:
        self.model.densify(step)


class Sparse3DModel(StagedModel, GenerationModel):
    """See module docstring."""

    config: Sparse3DModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        prior = self.load_prior(cfg.prior)
        if not hasattr(prior, "condition_views"):
            raise StudioInputError(
                f"--pipeline.model.prior {cfg.prior!r} is not a multiview-consistent (epipolar) prior."
            )
        prior.conditioning_scale = 1.0 if cfg.controller else 0.0
        schedule = UniformTimesteps(*cfg.t_range)
        common = {"weighting": cfg.weighting, "schedule": schedule}
        self.sds = self.csds = self.classifier = None
        if cfg.csds == "none" or cfg.csds == "classifier":
            self.sds = SDS(prior, guidance_scale=cfg.guidance_scale, **common)
        self.category_cond: Optional[Condition] = None
        if cfg.csds != "none":
            category = cfg.category or (self.kwargs.get("metadata") or {}).get("category")
            if category is None:
                raise StudioInputError(
                    "C-SDS needs the object's category: pass --category NAME (or --pipeline.model.csds none)."
                )
            text_prior = self.load_prior(cfg.category_prior)
            prompt = category_prompt(category)
            conds = self.embed_prompts(text_prior, [prompt, ""])
            self.category_cond, self.category_null = conds[prompt], conds[""]
            if cfg.csds == "reference":
                self.csds = CSDS(prior, text_prior, "reference", cfg.guidance_scale, **common)
            else:
                self.classifier = CSDS(text_prior, form="classifier", **common)
        self.prior = prior
        self.init_stages([DistillStage(self)])

    def render_outputs(self, camera) -> Dict[str, Tensor]:
        return {**GenerationModel.get_outputs(self, camera), "cameras": camera}

    def mv_condition(self, cameras, batch: Dict) -> Condition:
        """The multiview prior's condition for the random views ``cameras`` given the input views."""
        view_mats, view_Ks, size, _ = cameras_to_viewmats(batch["input_cameras"])
        target_mats, target_Ks, width, _ = cameras_to_viewmats(cameras.to(self.device))
        scale = torch.tensor([size / width, size / width, 1.0], device=target_Ks.device)[:, None]
        images = batch["input_rgb"].permute(0, 3, 1, 2)
        return self.prior.condition_views(images, view_mats, view_Ks, target_mats, target_Ks * scale)

    def base_losses(self, outputs, batch) -> Dict[str, Tensor]:
        cfg = self.config
        losses = self.input_view_losses(batch)
        images = outputs["rgb_views"].permute(0, 3, 1, 2)
        cond = self.mv_condition(outputs["cameras"], batch)
        if self.sds is not None:
            losses["loss_sds"] = cfg.distill_weight * self.sds(images, cond, None, self.step)["loss_sds"]
        if self.csds is not None:
            out = self.csds(images, self.step, cond_cat=self.category_cond, cond_mv=cond)
            losses["loss_csds"] = cfg.distill_weight * out["loss_csds"]
        if self.classifier is not None:
            out = self.classifier(images, self.step, cond_cat=self.category_cond, negative=self.category_null)
            losses["loss_csds"] = cfg.csds_weight * out["loss_csds"]
        return losses

    def input_view_losses(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Colour and silhouette MSE of the input views' renders (summed over the views, weighted)."""
        cfg = self.config
        rgb, alpha, depth, bg = self.render_views(batch["input_cameras"])
        rgb_loss = mask_loss = 0.0
        for k in range(rgb.shape[0]):
            target = {"ref_rgb": batch["input_rgb"][k], "ref_mask": batch["input_mask"][k]}
            terms = reference_losses(rgb[k], alpha[k], depth[k], bg, target)
            rgb_loss, mask_loss = rgb_loss + terms["rgb"], mask_loss + terms["mask"]
        return {"input_rgb": cfg.rgb_weight * rgb_loss, "input_mask": cfg.mask_weight * mask_loss}
