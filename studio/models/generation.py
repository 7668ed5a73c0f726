"""Gaussians optimised by a guidance loss instead of ground-truth images (the base of ``sds`` and
the image-to-3D methods).

The Gaussians start in a ball of radius ``init_radius`` around the origin (DreamGaussian,
Tang et al. 2024, Sec. 4: random points in a sphere, grey, low opacity). A training step renders
every camera of the batch in one rasterization: ``get_outputs`` returns ``rgb_views``
[C,H,W,3], ``alpha_views`` [C,H,W,1] and ``depth_views`` [C,H,W,1] beside the usual
single-view ``rgb``/``depth``/``accumulation`` of camera 0 (viewer, evaluation). Subclasses add
their losses in ``get_loss_dict``; the densification of ``SplatModel`` applies unchanged.

Priors are submodules (they move with the model) and load once, straight onto the run's device
in ``prior_dtype`` (:meth:`GenerationModel.load_prior`: float16 on CUDA by default, so IF-I-XL
never passes through the CPU in float32); their frozen weights stay out of checkpoints: only trainable prior parameters (VSD's fake score, BSD's copies, LoRA) are saved;
loading fills the frozen ones from the priors the model was built with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, Sequence, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from studio.gaussians.init import initial_params
from studio.gaussians.trainable import TrainableGaussians
from studio.models.splat import SplatModel, SplatModelConfig
from studio.priors.base import Condition, DiffusionPrior


def random_ball(n: int, radius: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """[n,3] points uniform in the ball of ``radius`` around the origin."""
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
    r = radius * torch.rand(n, 1, generator=generator) ** (1.0 / 3.0)
    return direction * r


@dataclass
class GenerationModelConfig(SplatModelConfig):
    """Gaussians for generation (see module docstring); densification defaults are DreamGaussian's."""

    _target: Type = field(default_factory=lambda: GenerationModel)
    sh_degree: int = 0
    """Generation uses view-independent colour (DreamGaussian)."""
    num_random: int = 5000
    max_gaussians: int = 500_000
    refine_start_iter: int = 100
    refine_stop_iter: int = 3000
    reset_every: int = 100_000
    init_radius: float = 0.5
    """Radius of the ball the initial Gaussians fill (world units; cameras orbit at ~1.8)."""
    init_opacity: float = 0.1
    """Initial opacity of every Gaussian."""
    seed: int = 0
    """Seed of the initial Gaussians."""
    prior_dtype: Optional[Literal["fp16", "bf16", "fp32"]] = None
    """Precision of pretrained priors (default: fp16 on CUDA, fp32 on the CPU; embedded priors: fp32)."""


class GenerationModel(SplatModel):
    """See module docstring."""

    config: GenerationModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        gen = torch.Generator().manual_seed(int(self.config.seed))
        n = self.config.num_random
        points = random_ball(n, self.config.init_radius, gen)
        rgb = torch.full((n, 3), 0.5)
        self.gaussians = TrainableGaussians(
            initial_params(points, rgb, self.config.sh_degree, opacity=self.config.init_opacity)
        )
        self.scene_extent = max(self.scene_extent, 2.0 * self.config.init_radius)
        self.strategy_state = self.strategy.initialize_state(scene_scale=self.scene_extent)

    def load_prior(self, name_or_path: str) -> DiffusionPrior:
        """The prior ``name_or_path`` (``studio.priors.load_prior``) on the device the pipeline
        built this model for, in ``prior_dtype``."""
        from studio.priors import load_prior

        return load_prior(name_or_path, device=str(self.kwargs.get("device", "cpu")), dtype=self.config.prior_dtype)

    @staticmethod
    def embed_prompts(prior: DiffusionPrior, prompts: Sequence[str]) -> Dict[str, Condition]:
        """Each prompt's condition, then the prior's text encoder released (every prompt the run
        uses must be in ``prompts``; a T5-XXL is ~9.5 GB that training never needs again)."""
        with torch.no_grad():
            out = {p: prior.condition(text=p) for p in dict.fromkeys(prompts)}
        prior.release_text_encoder()
        return out

    def frozen_prior_state(self, prefix: str = "") -> Dict[str, Tensor]:
        """State entries (``prefix`` + name -> tensor) of frozen prior weights and prior buffers."""
        out: Dict[str, Tensor] = {}
        # every name of a shared prior (BSD's teacher is also the novel-view guidance's prior)
        for name, module in self.named_modules(remove_duplicate=False):
            if isinstance(module, DiffusionPrior):
                for pname, param in module.named_parameters():
                    if not param.requires_grad:
                        out[f"{prefix}{name}.{pname}"] = param
                for bname, buf in module.named_buffers():
                    out[f"{prefix}{name}.{bname}"] = buf
        return out

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):  # type: ignore[override]
        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        for key in self.frozen_prior_state(prefix):
            state.pop(key, None)
        return state

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):  # type: ignore[override]
        state_dict = dict(state_dict)
        for key, value in self.frozen_prior_state().items():
            state_dict.setdefault(key, value)
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    def render_views(
        self, cameras: Cameras, background: Optional[Tensor] = None
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """All cameras of ``cameras`` in one rasterization: rgb [C,H,W,3], alpha and depth
        [C,H,W,1] and the background [3] used. Registers the densification statistics in training."""
        bg = self.background() if background is None else background
        out = self.rasterize_cameras(cameras, bg)
        return out.color.clamp(0.0, 1.0), out.alpha, out.depth, bg

    def render_any(self, cameras: Cameras) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """The model's current scene (subclasses with other representations override this)."""
        return self.render_views(cameras)

    def get_outputs(self, camera: Cameras) -> Dict[str, Tensor]:  # type: ignore[override]
        rgb, alpha, depth, bg = self.render_any(camera)
        return {
            "rgb": rgb[0],
            "depth": depth[0],
            "accumulation": alpha[0],
            "background": bg,
            "rgb_views": rgb,
            "alpha_views": alpha,
            "depth_views": depth,
        }

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        return {"gaussian_count": torch.tensor(float(len(self.gaussians)))}

    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """No ground truth: the render and its alpha, side by side."""
        return {}, {"img": torch.cat([outputs["rgb"], outputs["accumulation"].expand_as(outputs["rgb"])], dim=1)}
