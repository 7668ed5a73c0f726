"""``videoscene`` model: VideoScene's training as a Nerfstudio model.

The pipeline is :mod:`studio.generators.videoscene`; the losses are the generators' trainer's, so
``ns-train videoscene`` and ``python -m studio.generators.train`` train the same objective:

* ``phase="leap"`` (default): 3D-aware leap flow distillation (:func:`studio.generators.leap.leap_step`):
  the one-step student from ``init`` (default: the embedded interpolation teacher), the frozen
  teacher and coarse predictor, the target network an EMA of the student (``ema_decay``, updated
  after every iteration);
* ``phase="teacher"``: the interpolation teacher, ``toy-mv`` fine-tuned with the first and last
  frame given (:func:`studio.generators.train.dual_loss` with keyframes ``(0, -1)``), from ``init``
  (default: the embedded ``toy-mv``).

The policy network is trained on the frozen pipeline by ``python -m studio.generators.policy``.
The viewer shows the last batch's first arc: its inputs (first and last frame) through the one-step
pipeline at the fixed timestep, in that arc's world.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Tuple, Type

import numpy as np
import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import ModelConfig
from torch import Tensor

from studio.cameras.normalize import compose_frames
from studio.generators import flashworld, videoscene
from studio.generators.leap import freeze_all_but_denoiser, leap_step
from studio.generators.losses import ema_update
from studio.generators.orbits import OrbitBatch
from studio.generators.policy import arc_inputs
from studio.generators.train import FlashWorldLossConfig, dual_loss
from studio.io.inputs import Input, Kind
from studio.lift.model import load_predictor
from studio.models.generator_model import GeneratorModel


@dataclass
class VideoSceneModelConfig(ModelConfig):
    _target: Type = field(default_factory=lambda: VideoSceneModel)
    phase: Literal["leap", "teacher"] = "leap"
    init: str = ""
    """Weights to start from (leap: default the embedded videoscene-teacher, also the frozen
    teacher; teacher: default the embedded toy-mv)."""
    predictor: str = ""
    """The coarse feed-forward predictor (default: the embedded mvsplat-toy)."""
    timestep: int = 400
    """Leap timestep of the viewer's and eval image's one-step results."""
    ema_decay: float = 0.95
    """leap: decay of the target network (the consistency-models paper's 0.95)."""
    loss: FlashWorldLossConfig = field(default_factory=lambda: FlashWorldLossConfig(keyframes=(0, -1), p_clean=0.25))
    seed: int = 0

    def inputs(self) -> List[Input]:
        flags = ("init", "predictor")
        return [Input(f"--pipeline.model.{f}", Kind.SAFETENSORS, getattr(self, f) or None) for f in flags]


class VideoSceneModel(GeneratorModel):
    config: VideoSceneModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        default = videoscene.TEACHER_WEIGHTS if cfg.phase == "leap" else flashworld.TEACHER_WEIGHTS
        self.generator = flashworld.load_flashworld(cfg.init or default).train()
        teacher = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.pipeline = videoscene.VideoScene(load_predictor(cfg.predictor or None), self.generator, teacher)
        self.pipeline.predictor.requires_grad_(False)
        self.pipeline.timestep = cfg.timestep
        if cfg.phase == "leap":
            self.target = copy.deepcopy(self.generator).eval().requires_grad_(False)
            freeze_all_but_denoiser(self.generator)

    def get_param_groups(self) -> Dict[str, List[torch.nn.Parameter]]:
        return {"generator": [p for p in self.generator.parameters() if p.requires_grad]}

    def training_loss(self, batch: OrbitBatch, rng: np.random.Generator) -> Tuple[Tensor, dict]:
        cfg, g = self.config, self.generator
        if cfg.phase == "teacher":
            return dual_loss(g, batch, rng, cfg.loss)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        return leap_step(g, g, self.target, self.pipeline, batch, rng, gen, cfg.loss)

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        if self.config.phase != "leap":
            return []
        update = lambda step: ema_update(self.target, self.generator, self.config.ema_decay)  # noqa: E731
        return [TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], update)]

    @torch.no_grad()
    def one_step(self, batch: OrbitBatch):
        """The one-step result of the batch's first arc (its first and last views as inputs) in
        the arc's world, and its render at the arc's first held-out view."""
        inputs, _, vm, Ks = arc_inputs(self.pipeline, batch)
        out = self.pipeline.generate(inputs, self.config.timestep, torch.Generator().manual_seed(self.config.seed))
        first_held = batch.viewmats.shape[1] - 2  # after the generated views between the inputs
        render = self.pipeline.student.render(out.gaussians, vm[:, first_held, None], Ks[:, first_held, None])
        world = flashworld.world_gaussians(out.gaussians, compose_frames(batch.frame, inputs.frame))
        return world, render[0, 0]
