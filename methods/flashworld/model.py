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
from typing import Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.base_model import Model, ModelConfig
from torch import Tensor

from studio.generators.flashworld import TEACHER_WEIGHTS, FlashWorld, load_flashworld, world_gaussians
from studio.generators.orbits import OrbitBatch
from studio.generators.train import FlashWorldLossConfig, dmd_step, dual_loss
from studio.io.inputs import Input, Kind
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


class _Local:
    """The two methods of ``accelerate.Accelerator`` that ``dmd_step`` calls, for one process."""

    @staticmethod
    def backward(loss: Tensor) -> None:
        loss.backward()

    @staticmethod
    def unwrap_model(model):
        return model


class FlashWorldModel(Model):
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
        self.calls = 0
        self.preview: Optional[Tuple[OrbitBatch, object]] = None
        self.collider = None

    def get_param_groups(self) -> Dict[str, List[torch.nn.Parameter]]:
        return {"generator": list(self.generator.parameters())}

    def get_outputs(self, batch) -> Dict[str, Tensor]:  # type: ignore[override]
        if isinstance(batch, Cameras):
            return self.render_preview(batch)
        cfg = self.config
        self.calls += 1
        rng = np.random.default_rng([cfg.seed, self.calls])
        if cfg.phase == "dual":
            loss, stats = dual_loss(self.generator, batch, rng, cfg.loss)
        else:
            gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
            loss, stats = dmd_step(
                self.generator,
                self.generator,
                self.real,
                self.fake,
                self.fake_optimizer,
                _Local,
                batch,
                rng,
                gen,
                cfg.loss,
            )
        self.preview = (batch, None)
        return {"loss": loss, **{k: torch.tensor(v) for k, v in stats.items() if k != "loss"}}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        return {"generator_loss": outputs["loss"]}

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        return {k: v for k, v in outputs.items() if k != "loss" and v.ndim == 0}

    @torch.no_grad()
    def one_step(self, batch: OrbitBatch):
        """1-step Gaussians of the batch's first scene (its image and caption), world frame."""
        g = self.generator
        vm, Ks = batch.viewmats[:1], batch.Ks[:1]
        cond = g.condition(vm, Ks, image=batch.images[:1, 0], text=batch.captions[:1])
        return g.generate(cond, vm, Ks, steps=1, generator=torch.Generator().manual_seed(self.config.seed))

    @torch.no_grad()
    def render_preview(self, camera) -> Dict[str, Tensor]:
        """The last batch's first scene, generated in 1 step, seen from the viewer's ``camera``."""
        from studio.cameras.nerfstudio import cameras_to_viewmats
        from studio.render import rasterize

        viewmats, Ks, W, H = cameras_to_viewmats(camera.to(self.device))
        if self.preview is None:
            blank = torch.ones(H, W, 3, device=self.device)
            return {"rgb": blank, "accumulation": blank[..., :1], "depth": blank[..., :1]}
        batch, scene = self.preview
        if scene is None:
            scene = world_gaussians(self.one_step(batch), batch.frame)
            self.preview = (batch, scene)
        out = rasterize(
            scene.means, scene.quats, scene.scales, scene.opacities, scene.sh, viewmats[:1], Ks[:1], W, H,
            background=torch.ones(3, device=self.device), sh_degree=scene.sh_degree,
        )  # fmt: skip
        return {"rgb": out.color[0], "accumulation": out.alpha[0], "depth": out.depth[0]}

    @torch.no_grad()
    def get_outputs_for_camera(self, camera, obb_box=None) -> Dict[str, Tensor]:  # type: ignore[override]
        return self.render_preview(camera)

    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """PSNR of the 1-step Gaussians at the batch's first held-out view; image: ground truth | render."""
        from studio.metrics import psnr

        with torch.no_grad():
            gaussians = self.one_step(batch)
            render = self.generator.render(gaussians, batch.held_viewmats[:1, :1], batch.held_Ks[:1, :1])[0, 0]
        target = batch.held_images[0, 0]
        image = torch.cat([target, render], dim=2).permute(1, 2, 0)
        return {"psnr": float(psnr(render.permute(1, 2, 0), target.permute(1, 2, 0)))}, {"held_out_view": image}
