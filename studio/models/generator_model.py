"""Shared base of the one-step generators' Nerfstudio models (``flashworld``, ``videoscene``).

A subclass trains on :class:`~studio.generators.orbits.OrbitBatch` batches
(:mod:`studio.models.orbit_data`) and provides ``training_loss(batch, rng) -> (loss, stats)`` and
``one_step(batch) -> (the first scene's one-step Gaussians in its world, their render at its
first held-out view [3,h,w])``. This base turns them into Nerfstudio's interface: the loss dict, scalar metrics, the
viewer (the last batch's first scene, generated in one step, in that scene's world) and the eval
image (ground truth | one-step render at a held-out view, with its PSNR).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.base_model import Model
from torch import Tensor

from studio.generators.orbits import OrbitBatch


class LocalAccelerator:
    """The two methods of ``accelerate.Accelerator`` the generators' training steps call, for one process."""

    @staticmethod
    def backward(loss: Tensor) -> None:
        loss.backward()

    @staticmethod
    def unwrap_model(model):
        return model


class GeneratorModel(Model):
    """See the module docstring; subclasses set up ``self.generator`` in ``populate_modules``."""

    def populate_modules(self) -> None:
        super().populate_modules()
        self.calls = 0
        self.preview: Optional[Tuple[OrbitBatch, object]] = None
        self.collider = None

    def training_loss(self, batch: OrbitBatch, rng: np.random.Generator) -> tuple[Tensor, dict]:
        raise NotImplementedError

    def one_step(self, batch: OrbitBatch):
        raise NotImplementedError

    def get_outputs(self, batch) -> Dict[str, Tensor]:  # type: ignore[override]
        if isinstance(batch, Cameras):
            return self.render_preview(batch)
        self.calls += 1
        loss, stats = self.training_loss(batch, np.random.default_rng([self.config.seed, self.calls]))
        self.preview = (batch, None)
        return {"loss": loss, **{k: torch.tensor(v) for k, v in stats.items() if k != "loss"}}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        return {"generator_loss": outputs["loss"]}

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        return {k: v for k, v in outputs.items() if k != "loss" and v.ndim == 0}

    @torch.no_grad()
    def render_preview(self, camera) -> Dict[str, Tensor]:
        """The last batch's first scene, generated in one step, seen from the viewer's ``camera``."""
        from studio.cameras.nerfstudio import cameras_to_viewmats
        from studio.render import rasterize

        viewmats, Ks, W, H = cameras_to_viewmats(camera.to(self.device))
        if self.preview is None:
            blank = torch.ones(H, W, 3, device=self.device)
            return {"rgb": blank, "accumulation": blank[..., :1], "depth": blank[..., :1]}
        batch, scene = self.preview
        if scene is None:
            scene = self.one_step(batch)[0]
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
        """PSNR of the one-step Gaussians at the batch's first held-out view; image: ground truth | render."""
        from studio.metrics import psnr

        with torch.no_grad():
            render = self.one_step(batch)[1]
        target = batch.held_images[0, 0]
        image = torch.cat([target, render], dim=2).permute(1, 2, 0)
        return {"psnr": float(psnr(render.permute(1, 2, 0), target.permute(1, 2, 0)))}, {"held_out_view": image}
