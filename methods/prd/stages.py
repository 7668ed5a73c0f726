"""The four stages of ``prd`` (PRD Sec. 3.3): pretrain, specular, diffuse, refine.

Each stage object holds what differs in its step range: ``pretrain`` renders plain 3DGS and
densifies, and its end is the stage file ablations start from; ``specular`` starts the progress
at ``progress_init`` and shades everything as a metal; ``diffuse`` bakes the environment
visibility and adds the progress and white-light losses; ``refine`` lowers p's learning rate.
With ``specular_stage paper``, ``specular`` also pulls p towards the view-dependence target
(``PRDModel.specular_progress_target``), so p rises where the radiance is view-dependent.
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import Tensor

from studio.models.splat import SplatModel
from studio.models.staged import Stage


class PretrainStage(Stage):
    """3DGS pretraining of the radiance field, with densification (p = 0)."""

    name = "pretrain"

    def get_outputs(self, camera):
        return SplatModel.get_outputs(self.model, camera)

    def after_step(self, step: int) -> None:
        self.model.densify(step)

    def saved_tensors(self) -> Dict[str, Tensor]:
        return dict(self.model.gaussians.params.items())

    def load_tensors(self, tensors: Dict[str, Tensor]) -> None:
        self.model.set_gaussian_params(tensors)


class SpecularStage(Stage):
    """Specular distillation: metallic fixed to 1; p starts at ``progress_init`` (prd). With
    ``specular_stage paper`` (prd), the loss adds ``specular_progress_weight * MSE(t_x, p_x)``,
    t_x the splatted per-Gaussian view-dependence target."""

    name = "specular"

    def enter(self) -> None:
        cfg = self.model.config
        if cfg.ablation == "prd":
            with torch.no_grad():
                self.model.gaussians.params["progress"].fill_(math.log(cfg.progress_init / (1 - cfg.progress_init)))

    def drives_progress(self) -> bool:
        cfg = self.model.config
        return cfg.specular_stage == "paper" and cfg.ablation == "prd" and cfg.specular_progress_weight > 0

    def get_outputs(self, camera):
        extra = {"specular_target": self.model.specular_progress_target()} if self.drives_progress() else None
        return self.model.render_gbuffers(camera, force_metal=True, extra_features=extra)

    def get_loss_dict(self, outputs, batch):
        losses = self.model.distillation_losses(outputs, batch, with_progress=False)
        if "specular_target" in outputs:  # training renders of this stage; evaluation renders carry none
            error = self.model.progress_error(
                outputs["progress"], batch, outputs["accumulation"], target=outputs["specular_target"]
            )
            losses["specular_progress_loss"] = self.model.config.specular_progress_weight * error
        return losses


class DiffuseStage(Stage):
    """Diffuse distillation: metallic free, visibility baked, progress and white-light losses."""

    name = "diffuse"

    def enter(self) -> None:
        cfg = self.model.config
        if cfg.ablation != "3dgs" and cfg.visibility_resolution > 0:
            self.model.bake_visibility()

    def get_loss_dict(self, outputs, batch):
        return self.model.distillation_losses(outputs, batch, with_progress=True)


class RefineStage(DiffuseStage):
    """Joint refinement: p's learning rate scaled by ``progress_lr_refine``."""

    name = "refine"

    def enter(self) -> None:
        optimizer = self.model.optimizers.get("progress")
        if optimizer is not None:
            for group in optimizer.param_groups:
                group["lr"] *= self.model.config.progress_lr_refine


def prd_stages(model) -> List[Stage]:
    return [PretrainStage(model), SpecularStage(model), DiffuseStage(model), RefineStage(model)]
