"""``flashworld`` model: FlashWorld's two training phases as a Nerfstudio model.

The network, its two modes and generation are :mod:`studio.generators.flashworld`; the losses are
:mod:`studio.generators.train`'s (``dual_loss``, ``dmd_step``), so ``ns-train flashworld`` and
``python -m studio.generators.train`` train the same objective:

* ``phase="dual"``: dual-mode pre-training (MV-mode denoising + 3D-mode rendering loss in one
  forward pass), from scratch or from ``init``;
* ``phase="dmd"``: cross-mode post-training by distribution matching: the student (3D mode) from
  ``init`` (default: the embedded ``toy-mv`` dual model), the frozen MV-mode teacher as real score
  and an online fake score with its own Adam optimiser (stepped inside the training step).

``ns-train`` keeps no EMA (the module's recipe for the embedded weights does). The viewer shows the
last batch's first scene: its 1-step Gaussians rendered at the viewer's camera, in that scene's
world; the eval image is a held-out view, ground truth beside the 1-step render.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Tuple, Type

import numpy as np
import torch
from nerfstudio.models.base_model import ModelConfig
from torch import Tensor

from studio.generators.flashworld import TEACHER_WEIGHTS, FlashWorld, load_flashworld, world_gaussians
from studio.generators.orbits import OrbitBatch
from studio.generators.train import FlashWorldLossConfig, dmd_step, dual_loss
from studio.io.inputs import Input, Kind
from studio.models.generator_model import GeneratorModel, LocalAccelerator
from studio.priors.toy_mv import build_toy_mv


@dataclass
class FlashWorldModelConfig(ModelConfig):
    _target: Type = field(default_factory=lambda: FlashWorldModel)
    phase: Literal["dual", "dmd"] = "dmd"
    init: str = ""
    """Weights to start from (.safetensors of FlashWorld or toy-mv; empty: dual from scratch, dmd
    from the embedded toy-mv)."""
    channels: Tuple[int, ...] = (32, 64, 128)
    """UNet widths of a network trained from scratch (dual without init)."""
    n_res: int = 1
    loss: FlashWorldLossConfig = field(default_factory=FlashWorldLossConfig)
    seed: int = 0

    def inputs(self) -> List[Input]:
        return [Input("--pipeline.model.init", Kind.SAFETENSORS, self.init or None)]


class FlashWorldModel(GeneratorModel):
    config: FlashWorldModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        if cfg.init:
            self.generator = load_flashworld(cfg.init)
        elif cfg.phase == "dmd":
            self.generator = load_flashworld(TEACHER_WEIGHTS)
        else:
            self.generator = FlashWorld(build_toy_mv({"arch": {"channels": list(cfg.channels), "n_res": cfg.n_res}}))
        self.generator.train()
        if cfg.phase == "dmd":
            self.real = copy.deepcopy(self.generator.prior).eval().requires_grad_(False)
            self.fake = self.generator.prior.clone_trainable().train()
            self.fake_optimizer = torch.optim.AdamW(
                [p for p in self.fake.parameters() if p.requires_grad], lr=cfg.loss.fake_lr
            )

    def get_param_groups(self) -> Dict[str, List[torch.nn.Parameter]]:
        return {"generator": list(self.generator.parameters())}

    def training_loss(self, batch: OrbitBatch, rng: np.random.Generator) -> Tuple[Tensor, dict]:
        cfg, g = self.config, self.generator
        if cfg.phase == "dual":
            return dual_loss(g, batch, rng, cfg.loss)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        return dmd_step(g, g, self.real, self.fake, self.fake_optimizer, LocalAccelerator, batch, rng, gen, cfg.loss)

    @torch.no_grad()
    def one_step(self, batch: OrbitBatch):
        """1-step Gaussians of the batch's first scene (its image and caption) in its world, and
        their render at its first held-out view."""
        g = self.generator
        vm, Ks = batch.viewmats[:1], batch.Ks[:1]
        cond = g.condition(vm, Ks, image=batch.images[:1, 0], text=batch.captions[:1])
        gaussians = g.generate(cond, vm, Ks, steps=1, generator=torch.Generator().manual_seed(self.config.seed))
        render = g.render(gaussians, batch.held_viewmats[:1, :1], batch.held_Ks[:1, :1])[0, 0]
        return world_gaussians(gaussians, batch.frame), render
