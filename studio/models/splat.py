"""The 3D Gaussian Splatting model as a Nerfstudio ``Model`` (Kerbl et al. 2023).

Loss (3DGS Eq. 7): ``(1 - lambda) * L1 + lambda * (1 - SSIM)`` with lambda = 0.2 against the
ground truth composited over the model's background. SH degree grows by one every
``sh_degree_interval`` steps up to ``sh_degree``. Adaptive density control is gsplat's 3DGS
strategy with a Gaussian cap (``studio.gaussians.strategy``). Rendering goes through
``studio.render.rasterize`` (backend ``auto``: gsplat on CUDA, our kernels on CPU).
No LPIPS download: ``get_image_metrics_and_images`` adds LPIPS only when weights are local.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from torch import Tensor
from torch.nn import Parameter

from studio.cameras.nerfstudio import cameras_to_viewmats
from studio.gaussians.init import initial_params, random_points
from studio.gaussians.strategy import CappedStrategy
from studio.gaussians.trainable import PARAM_NAMES, TrainableGaussians
from studio.metrics import lpips_if_available, psnr, ssim
from studio.render import rasterize

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


@dataclass
class SplatModelConfig(ModelConfig):
    """3DGS model options; defaults are the 3DGS paper's (the ``full`` preset), ``configs/`` overrides."""

    _target: Type = field(default_factory=lambda: SplatModel)
    sh_degree: int = 3
    """Maximum SH degree of the view-dependent colour."""
    sh_degree_interval: int = 1000
    """Steps between SH degree increases."""
    num_random: int = 100_000
    """Random initial Gaussians in the scene box when the dataset has no point cloud."""
    max_gaussians: int = 6_000_000
    """Densification stops adding Gaussians above this count."""
    refine_start_iter: int = 500
    """First step of adaptive density control."""
    refine_stop_iter: int = 15_000
    """Last step of clone/split (pruning continues with opacity resets)."""
    refine_every: int = 100
    """Steps between densification steps."""
    reset_every: int = 3000
    """Steps between opacity resets."""
    grow_grad2d: float = 0.0002
    """Screen-space gradient threshold for clone/split (3DGS tau_pos)."""
    grow_scale3d: float = 0.01
    """Clone below / split above this scale, relative to the scene extent."""
    prune_opa: float = 0.005
    """Prune Gaussians with lower opacity."""
    prune_scale3d: float = 0.1
    """Prune Gaussians larger than this, relative to the scene extent."""
    ssim_lambda: float = 0.2
    """Weight of the D-SSIM term."""
    background_color: Literal["white", "black", "random"] = "white"
    """Background composited behind renders and RGBA ground truth ('random' trains on random colours, evaluates on white)."""
    backend: Literal["auto", "torch", "studio", "gsplat"] = "auto"
    """Rasterizer backend (auto: gsplat on CUDA, studio kernels on CPU)."""


class SplatModel(Model):
    """3D Gaussian Splatting (see module docstring)."""

    config: SplatModelConfig

    def populate_modules(self) -> None:
        cfg = self.config
        seed = self.kwargs.get("seed_points")
        if seed is not None and seed[0].shape[0] > 0:
            points, rgb = seed[0].float(), seed[1].float() / 255.0
        else:
            half = self.scene_box.aabb.abs().max().item()
            points, rgb = random_points(cfg.num_random, half)
        self.gaussians = TrainableGaussians(initial_params(points, rgb, cfg.sh_degree))
        metadata = self.kwargs.get("metadata") or {}
        self.scene_extent = float(metadata.get("camera_extent", 1.0))
        self.strategy = CappedStrategy(
            prune_opa=cfg.prune_opa,
            grow_grad2d=cfg.grow_grad2d,
            grow_scale3d=cfg.grow_scale3d,
            prune_scale3d=cfg.prune_scale3d,
            refine_start_iter=cfg.refine_start_iter,
            refine_stop_iter=cfg.refine_stop_iter,
            reset_every=cfg.reset_every,
            refine_every=cfg.refine_every,
            pause_refine_after_reset=self.num_train_data + cfg.refine_every,
            max_gaussians=cfg.max_gaussians,
        )
        self.strategy_state = self.strategy.initialize_state(scene_scale=self.scene_extent)
        self.step = 0
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}
        self.info: dict = {}

    # ---- parameters and training hooks -------------------------------------------------------
    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {name: [self.gaussians.params[name]] for name in PARAM_NAMES}

    def lr_scale(self, group: str) -> float:
        """3DGS scales the position learning rate by the scene extent."""
        return self.scene_extent if group == "means" else 1.0

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        optimizers = training_callback_attributes.optimizers

        def before(step: int) -> None:
            self.step = step
            self.optimizers = optimizers.optimizers

        def after(step: int) -> None:
            self.densify(step)

        return [
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], before),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], after),
        ]

    def densify(self, step: int) -> None:
        """Adaptive density control after the optimiser step ``step`` (gsplat's 3DGS strategy)."""
        self.strategy.step_post_backward(
            params=self.gaussians.params,
            optimizers=self.optimizers,
            state=self.strategy_state,
            step=step,
            info=self.info,
            packed=False,
        )

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):  # type: ignore[override]
        self.gaussians.resize_to(state_dict, prefix="gaussians.")
        self.step = 1_000_000  # a loaded model renders with its full SH degree
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    # ---- rendering ---------------------------------------------------------------------------
    def active_sh_degree(self) -> int:
        return min(self.step // self.config.sh_degree_interval, self.config.sh_degree)

    def background(self) -> Tensor:
        if self.training and self.config.background_color == "random":
            return torch.rand(3, device=self.device)
        return torch.tensor(BACKGROUNDS.get(self.config.background_color, BACKGROUNDS["white"]), device=self.device)

    def rasterize_cameras(self, cameras: Cameras, background: Tensor):
        """``RenderOut`` of every camera in ``cameras`` (one rasterization, without normals); in
        training it also registers the screen-space statistics that densification reads."""
        viewmats, Ks, width, height = cameras_to_viewmats(cameras.to(self.device))
        g = self.gaussians.activated()
        out = rasterize(
            g.means,
            g.quats,
            g.scales,
            g.opacities,
            g.sh,
            viewmats,
            Ks,
            width,
            height,
            background=background,
            backend=self.config.backend,
            sh_degree=self.active_sh_degree(),
            with_normal=False,
        )
        if self.training:
            self.strategy.step_pre_backward(
                self.gaussians.params, self.optimizers, self.strategy_state, self.step, out.meta
            )
            self.info = out.meta
        return out

    def get_outputs(self, camera: Cameras) -> Dict[str, Tensor]:  # type: ignore[override]
        bg = self.background()
        out = self.rasterize_cameras(camera, bg)
        return {
            "rgb": out.color[0].clamp(0.0, 1.0),
            "depth": out.depth[0],
            "accumulation": out.alpha[0],
            "background": bg,
        }

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box=None) -> Dict[str, Tensor]:  # type: ignore[override]
        return self.get_outputs(camera)

    # ---- losses and metrics ------------------------------------------------------------------
    def gt_rgb(self, image: Tensor, background: Tensor) -> Tensor:
        """Ground truth [H,W,3] in [0,1], RGBA composited over ``background``."""
        image = image.to(self.device)
        if image.dtype == torch.uint8:
            image = image.float() / 255.0
        if image.shape[-1] == 4:
            image = image[..., :3] * image[..., 3:] + background * (1.0 - image[..., 3:])
        return image

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        gt = self.gt_rgb(batch["image"], outputs["background"])
        return {"psnr": psnr(outputs["rgb"], gt), "gaussian_count": torch.tensor(float(len(self.gaussians)))}

    def rgb_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        """The 3DGS image loss ``(1 - lambda) L1 + lambda D-SSIM`` of [H,W,3] images."""
        l1 = (pred - gt).abs().mean()
        d_ssim = 1.0 - ssim(pred.permute(2, 0, 1), gt.permute(2, 0, 1))
        lam = self.config.ssim_lambda
        return (1.0 - lam) * l1 + lam * d_ssim

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        gt = self.gt_rgb(batch["image"], outputs["background"])
        return {"main_loss": self.rgb_loss(outputs["rgb"], gt)}

    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        gt = self.gt_rgb(batch["image"], outputs["background"])
        pred = outputs["rgb"]
        a, b = pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None]
        metrics = {"psnr": float(psnr(pred, gt)), "ssim": float(ssim(a, b))}
        lpips = lpips_if_available()
        if lpips is not None:
            metrics["lpips"] = float(lpips(a, b))
        return metrics, {"img": torch.cat([gt, pred], dim=1)}
