"""Progressive Radiance Distillation (Ye, Hou, Zhou 2024) as a Nerfstudio model.

Each Gaussian carries a radiance field (SH, the 3DGS colour), PBR attributes (albedo, roughness,
metallic; ``studio.gaussians.pbr``), a normal (its shortest axis, facing the camera) and a
distillation progress ``p`` (not the opacity). All of them are splatted as G-buffers in one
rasterization; the PBR image ``I_pbr`` is shaded per pixel (``studio.pbr.shading``: GGX
split-sum with a learnable cubemap light, SH irradiance, baked visibility) from the G-buffers
divided by the coverage, and the pixel colour is PRD Eq. 5 on the rendered images,

    C = p_x * I_pbr + (1 - p_x) * I_radiance

with ``p_x`` the splatted progress (premultiplied by the coverage, so 0 off the object) and
``I_radiance`` the radiance field's image over the background. (Mixing straight colours
instead, ``coverage * (p * I_pbr + (1 - p) * I_rad) + (1 - coverage) * bg``, relit worse on all
three scenes measured; benchmarks/RESULTS.md, eighth and ninth rounds.)

Stages (trainer steps; lengths ``stage_iters`` from the preset):

1. 3DGS pretraining of the radiance field (``p = 0``), with densification;
2. specular distillation: ``metallic`` fixed to 1, ``p`` starts at ``progress_init`` (0.01);
3. diffuse distillation: metallic free; loss ``L_rgb + 0.08 MSE(mask, p_x) + 0.003 L_light``
   (``L_light``: white-light prior, |L_c - mean_c L| per texel, summed over the cubemap; the MSE
   leaves out a band of up to ``mask_band`` pixels on each side of the silhouette, ours); the
   environment visibility is baked into a grid of SH first (``studio.pbr.visibility``);
4. joint refinement, the learning rate of ``p`` scaled by ``progress_lr_refine`` (0.1).

``L_rgb`` is the 3DGS loss ``0.8 L1 + 0.2 D-SSIM`` against the ground truth over a random
background (``background_color``). From stage 2 on, ``prd`` adds ``radiance_weight`` (0.5) times
``L_rgb`` of the radiance image alone (ours: the paper distils the PBR part from a pre-trained
radiance field "guidance" and lists no such term; without it the radiance field turns into the
residual of the PBR image, 4-14x worse than the composite on its own, and the PBR part then gets
the radiance's residual as its error signal. With it, relighting improves on three of four
measured scenes, albedo on all four; see benchmarks/RESULTS.md). ``normal_weight`` adds
``1 - <n, n_depth>`` between the splatted normal and the normal of the rendered depth (ours:
the paper relies on the shortest-axis normal alone; the term keeps splats flat on the surface).
Shading is linear; ``I_pbr`` is clamped to [0, 1] and encoded as sRGB (the datasets are sRGB
without tone mapping). The mask for the progress loss is the ground-truth alpha.

Ablations (``ablation``): ``prd``; ``no-progress`` (pure PBR after stage 1: ``p = 1``);
``3dgs`` (radiance only: ``p = 0`` throughout). The end of stage 1 is saved as
``<run>/stage1.safetensors``; ``load_stage`` starts a run from such a file (skipping stage 1),
so ablations can share one pretraining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from torch import Tensor, nn
from torch.nn import Parameter

from studio.cameras import camera_rays
from studio.cameras.nerfstudio import cameras_to_viewmats
from studio.engine.splat_model import SplatModel, SplatModelConfig
from studio.engine.stages import stage_bounds, stage_of
from studio.gaussians.pbr import PBR_PARAM_NAMES, activate_pbr, initial_pbr_params, shortest_axis_normals
from studio.gaussians.sh import eval_sh
from studio.pbr.cubemap import CubemapLight
from studio.pbr.shading import shade
from studio.pbr.tonemap import linear_to_srgb
from studio.pbr.visibility import VisibilityGrid, bake_visibility, object_bounds
from studio.render import rasterize
from studio.render.masks import progress_band

Ablation = Literal["prd", "no-progress", "3dgs"]
DEFAULT_STAGE_ITERS = (1500, 300, 500, 300)  # used only when neither the preset nor the command line sets them
GBUFFER_LAYOUT = (("radiance", 3), ("albedo", 3), ("roughness", 1), ("metallic", 1), ("normal", 3), ("progress", 1))


@dataclass
class PRDModelConfig(SplatModelConfig):
    """PRD options; fields left ``None`` come from the preset (configs/prd.yaml)."""

    _target: Type = field(default_factory=lambda: PRDModel)
    ablation: Ablation = "prd"
    """prd (progressive distillation), no-progress (pure PBR, p = 1) or 3dgs (radiance only, p = 0)."""
    stage_iters: Optional[Tuple[int, int, int, int]] = None
    """Steps of the four stages: pretrain, specular, diffuse, refine."""
    light_resolution: Optional[int] = None
    """Face resolution of the learnable cubemap light."""
    light_init: float = 0.5
    """Initial (uniform, linear) radiance of the light."""
    progress_init: float = 0.01
    """Progress p of every Gaussian when distillation starts (stage 2)."""
    progress_lr_refine: float = 0.1
    """Learning-rate factor of p in stage 4."""
    progress_lr_scale: Optional[float] = None
    """Factor on p's learning rate (tiny: larger, so p can converge within the short schedule)."""
    light_lr_scale: Optional[float] = None
    """Factor on the light's learning rate (tiny: larger, for the short schedule)."""
    mask_weight: float = 0.08
    """Weight of MSE(object mask, p_x) from stage 3."""
    light_weight: float = 0.003
    """Weight of the white-light prior from stage 3."""
    light_reduction: Literal["sum", "mean"] = "sum"
    """How the white-light prior reduces over cubemap texels. ``sum`` (default): the weight acts per
    texel; as a mean, 0.003 is too weak to stop the light taking the object's colour (measured on
    the ToyWorld mushroom: the light turned red and the albedo cyan/pink)."""
    background_color: Literal["white", "black", "random"] = "random"
    """Random backgrounds remove semi-transparent floaters, which the PBR part would shade in relit
    views (invisible white-on-white in a white-background fit)."""
    normal_weight: float = 0.05
    """Weight of the splatted-normal / depth-normal consistency from stage 2."""
    radiance_weight: float = 0.5
    """Weight of the radiance field's own ``L_rgb`` (its image over the same background) from
    stage 2, ``prd`` only: the guidance PBR is distilled from stays a radiance field of the
    images instead of becoming the residual of the PBR image (ours; see the module docstring)."""
    mask_band: int = 5
    """Most pixels on each side of the ground-truth silhouette that the progress loss
    MSE(mask, p_x) leaves out (ours; 0: the paper's loss on every pixel). There the G-buffers mix
    surface and background, the PBR image is at its worst, and the silhouette blurs the more p is
    raised (measured: 3dgs < prd < no-progress on four scenes); left to ``L_rgb``, p stays low in
    the band and the radiance field draws the silhouette. Tiny preset, 128x128, with
    ``mask_band_share`` and Eq. 5 as above: novel views +0.2 to +0.6 dB on four scenes,
    relighting up on two, down on two (benchmarks/RESULTS.md, ninth round)."""
    mask_band_share: float = 0.6
    """Largest share of the object's pixels (per image) the band may take: the band narrows on
    small objects, whose progress (and so their PBR fit) it would otherwise take away."""
    visibility_resolution: Optional[int] = None
    """SH visibility grid points per axis (0: no visibility)."""
    load_stage: Optional[Path] = None
    """Start from a stage-1 file (stage1.safetensors of an earlier run) and skip stage 1."""
    stage_dir: Optional[Path] = None
    """Where stage1.safetensors is written (set by the trainer: the run's folder)."""

    def resolved_stage_iters(self) -> Tuple[int, ...]:
        return tuple(int(n) for n in (self.stage_iters or DEFAULT_STAGE_ITERS))

    def steps_skipped(self, load_stage: Path) -> int:
        """A stage-1 file replaces stage 1."""
        return self.resolved_stage_iters()[0]


class PRDModel(SplatModel):
    """PRD inverse rendering (see module docstring)."""

    config: PRDModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        for name, value in initial_pbr_params(len(self.gaussians)).items():
            self.gaussians.params[name] = nn.Parameter(value)
        self.light = CubemapLight(int(self.config.light_resolution or 16), init_radiance=self.config.light_init)
        self.visibility: Optional[VisibilityGrid] = None
        self.step_offset = 0
        if self.config.load_stage is not None and Path(self.config.load_stage).is_file():
            # training from a stage-1 file (the trainer checked it exists); a run loaded later for
            # evaluation takes everything from its checkpoint, with or without the file
            self._load_stage1(Path(self.config.load_stage))

    # ---- stages ------------------------------------------------------------------------------
    def stage_bounds(self) -> List[int]:
        """Cumulative end steps of the four stages."""
        return stage_bounds(self.config.resolved_stage_iters())

    def stage(self, step: Optional[int] = None) -> int:
        """Stage (1-4) of global step ``step`` (default: the current one)."""
        return stage_of(self.step if step is None else step, self.config.resolved_stage_iters())

    def _load_stage1(self, path: Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(path))
        for name in list(self.gaussians.params.keys()):
            if name in state:
                self.gaussians.params[name] = nn.Parameter(state[name].clone())
        n = len(self.gaussians)
        for name, value in initial_pbr_params(n).items():
            if name not in state:
                self.gaussians.params[name] = nn.Parameter(value)
        self.step_offset = self.stage_bounds()[0]

    def _save_stage1(self) -> None:
        from safetensors.torch import save_file

        from studio.io.atomic import atomic_path

        if self.config.stage_dir is None:
            return
        path = Path(self.config.stage_dir) / "stage1.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.gaussians.params.items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))

    def _enter_stage(self, stage: int) -> None:
        """One-time state changes when a stage begins."""
        params = self.gaussians.params
        if stage == 2 and self.config.ablation == "prd":
            with torch.no_grad():
                params["progress"].fill_(math.log(self.config.progress_init / (1 - self.config.progress_init)))
        if stage == 3 and self.config.ablation != "3dgs" and int(self.config.visibility_resolution or 0) > 0:
            self.bake_visibility()
        if stage == 4 and "progress" in self.optimizers:
            for group in self.optimizers["progress"].param_groups:
                group["lr"] *= self.config.progress_lr_refine

    @torch.no_grad()
    def bake_visibility(self) -> None:
        g = self.gaussians.activated()
        aabb = object_bounds(g.means, g.opacities)
        box = self.scene_box.aabb.to(aabb)
        aabb = torch.stack([torch.maximum(aabb[0], box[0]), torch.minimum(aabb[1], box[1])])
        self.visibility = bake_visibility(g.means, g.scales, g.opacities, aabb, int(self.config.visibility_resolution or 16))

    # ---- parameters and hooks ----------------------------------------------------------------
    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_param_groups()
        for name in PBR_PARAM_NAMES:
            groups[name] = [self.gaussians.params[name]]
        groups["light"] = list(self.light.parameters())
        return groups

    def lr_scale(self, group: str) -> float:
        if group == "progress":
            return float(self.config.progress_lr_scale or 1.0)
        if group == "light":
            return float(self.config.light_lr_scale or 1.0)
        return super().lr_scale(group)

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        optimizers = attrs.optimizers
        state = {"stage": self.stage(self.step_offset) - 1 if self.step_offset else 0}

        def before(step: int) -> None:
            self.step = step + self.step_offset
            self.optimizers = optimizers.optimizers
            stage = self.stage()
            while state["stage"] < stage:
                state["stage"] += 1
                if state["stage"] > 1:
                    self._enter_stage(state["stage"])

        def after(step: int) -> None:
            gstep = step + self.step_offset
            if self.stage(gstep) == 1:
                self.strategy.step_post_backward(
                    params=self.gaussians.params, optimizers=self.optimizers, state=self.strategy_state,
                    step=gstep, info=self.info, packed=False,
                )
            if gstep == self.stage_bounds()[0] - 1:
                self._save_stage1()

        return [
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], before),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], after),
        ]

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):  # type: ignore[override]
        coeffs = state_dict.pop("visibility_coeffs", None)
        aabb = state_dict.pop("visibility_aabb", None)
        if coeffs is not None and aabb is not None:
            self.visibility = VisibilityGrid(coeffs.to(self.device), aabb.to(self.device))
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # checkpoints carry the baked visibility
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.visibility is not None:
            destination[prefix + "visibility_coeffs"] = self.visibility.coeffs
            destination[prefix + "visibility_aabb"] = self.visibility.aabb

    # ---- rendering ---------------------------------------------------------------------------
    def pbr_attributes(self) -> Dict[str, Tensor]:
        """Activated per-Gaussian albedo [N,3], roughness, metallic, progress [N,1]."""
        return activate_pbr(self.gaussians.params)

    def render_gbuffers(
        self,
        camera: Cameras,
        light: Optional[CubemapLight] = None,
        background: Optional[Tensor] = None,
        albedo_scale: Optional[Tensor] = None,
    ) -> Dict[str, Tensor]:
        """Render one camera: G-buffers, the PBR and radiance images and their PRD composite.

        Returns [H,W,C] tensors: ``rgb`` (the composite over the background), ``radiance``,
        ``pbr`` (sRGB, straight colour), ``albedo``, ``roughness``, ``metallic``, ``normal``
        (world, unit), ``progress`` (p_x, premultiplied by coverage), ``accumulation``,
        ``depth``, ``depth_normal`` (world normals of the depth map), ``background``.
        ``light`` replaces the learned light (relighting); ``albedo_scale`` [3] multiplies every
        Gaussian's albedo (clamped to [0, 1]) before splatting (scale-aligned evaluation).
        """
        viewmats, Ks, width, height = cameras_to_viewmats(camera.to(self.device))
        g = self.gaussians.activated()
        origins, dirs = camera_rays(viewmats[0], Ks[0], width, height)  # dirs: world offset per unit view depth
        center = origins[0]
        degree = self.active_sh_degree()
        radiance = (eval_sh(degree, g.sh, g.means - center) + 0.5).clamp(min=0.0)
        attrs = self.pbr_attributes()
        if albedo_scale is not None:
            attrs["albedo"] = (attrs["albedo"] * albedo_scale.to(attrs["albedo"])).clamp(0.0, 1.0)
        normals = shortest_axis_normals(g.means, g.quats, g.scales, center)
        feats = torch.cat([radiance, attrs["albedo"], attrs["roughness"], attrs["metallic"], normals, attrs["progress"]], -1)
        bg = self.background() if background is None else background
        out = rasterize(g.means, g.quats, g.scales, g.opacities, feats, viewmats, Ks, width, height, backend=self.config.backend)
        if self.training:
            self.strategy.step_pre_backward(self.gaussians.params, self.optimizers, self.strategy_state, self.step, out.meta)
            self.info = out.meta
        acc = out.alpha[0]
        buf = dict(zip([n for n, _ in GBUFFER_LAYOUT], out.color[0].split([c for _, c in GBUFFER_LAYOUT], dim=-1)))
        straight = {k: v / acc.clamp(min=1e-6) for k, v in buf.items()}
        metallic = straight["metallic"].clamp(0, 1)
        if self.stage() == 2 and self.training:
            metallic = torch.ones_like(metallic)  # specular distillation: everything is a metal
        normal = torch.nn.functional.normalize(straight["normal"], dim=-1)
        # per-pixel world rays: view direction and surface point (expected depth)
        d_world = dirs.reshape(height, width, 3)
        points = center + d_world * out.depth[0]
        view = -torch.nn.functional.normalize(d_world, dim=-1)
        sh_light = self.light if light is None else light
        shaded = shade(straight["albedo"].clamp(0, 1), straight["roughness"].clamp(0, 1), metallic, normal, view, sh_light)
        diffuse, specular = shaded.diffuse, shaded.specular
        if self.visibility is not None:
            diffuse = diffuse * self.visibility.ambient_occlusion(points, normal)
            reflect = 2.0 * (normal * view).sum(-1, keepdim=True) * normal - view
            specular = specular * self.visibility.visibility(points, torch.nn.functional.normalize(reflect, dim=-1), normal)
        pbr = linear_to_srgb((diffuse + specular).clamp(0.0, 1.0))
        if self.config.ablation == "3dgs" or (self.stage() == 1 and self.training):
            p = torch.zeros_like(acc)
        elif self.config.ablation == "no-progress":
            p = acc
        else:
            p = buf["progress"]
        if self.config.ablation == "no-progress":
            rgb = acc * pbr + (1.0 - acc) * bg  # pure PBR over the background
        else:
            rgb = p * pbr + (1.0 - p) * (buf["radiance"] + (1.0 - acc) * bg)  # Eq. 5
        depth_normal = out.normal[0] @ viewmats[0, :3, :3]  # camera -> world (rotation transpose)
        return {
            "rgb": rgb.clamp(0.0, 1.0), "radiance": straight["radiance"], "pbr": pbr, "albedo": straight["albedo"],
            "roughness": straight["roughness"], "metallic": metallic, "normal": normal, "progress": p,
            "accumulation": acc, "depth": out.depth[0], "depth_normal": depth_normal, "background": bg,
        }

    def get_outputs(self, camera: Cameras) -> Dict[str, Tensor]:  # type: ignore[override]
        if self.training and self.stage() == 1:
            return super().get_outputs(camera)  # plain 3DGS pretraining
        return self.render_gbuffers(camera)

    @torch.no_grad()
    def render_relit(self, camera: Cameras, light: CubemapLight, albedo_scale: Optional[Tensor] = None) -> Tensor:
        """PBR-only image [H,W,3] (sRGB, over white) under ``light``; the residual radiance of
        PRD cannot be relit. ``albedo_scale`` [3] rescales the albedo (scale-aligned evaluation)."""
        out = self.render_gbuffers(camera, light=light, background=torch.ones(3, device=self.device), albedo_scale=albedo_scale)
        acc = out["accumulation"]
        return (out["pbr"] * acc + (1.0 - acc)).clamp(0.0, 1.0)

    # ---- losses ------------------------------------------------------------------------------
    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        losses = super().get_loss_dict(outputs, batch, metrics_dict)  # L_rgb on outputs["rgb"]
        stage = self.stage()
        if stage == 1 or self.config.ablation == "3dgs":
            return losses
        acc = outputs["accumulation"]
        if self.config.radiance_weight > 0 and self.config.ablation == "prd":
            radiance = outputs["radiance"] * acc + (1.0 - acc) * outputs["background"]
            gt = self.gt_rgb(batch["image"], outputs["background"])
            losses["radiance_loss"] = self.config.radiance_weight * self.rgb_loss(radiance, gt)
        if self.config.normal_weight > 0:
            valid = (outputs["depth_normal"].abs().sum(-1, keepdim=True) > 0).float()  # see depth_to_normal
            cos = (outputs["normal"] * outputs["depth_normal"].detach()).sum(-1, keepdim=True)
            losses["normal_loss"] = self.config.normal_weight * ((1.0 - cos) * valid).sum() / valid.sum().clamp(min=1.0)
        if stage >= 3:
            if self.config.ablation == "prd":
                image = batch["image"].to(self.device)
                mask = image[..., 3:].float() / (255.0 if image.dtype == torch.uint8 else 1.0) if image.shape[-1] == 4 else acc.detach()
                keep = torch.ones_like(mask)
                if self.config.mask_band > 0:
                    band = progress_band(mask[..., 0], self.config.mask_band, self.config.mask_band_share)
                    keep[band] = 0.0
                losses["progress_loss"] = self.config.mask_weight * (keep * (mask - outputs["progress"]) ** 2).mean()
            radiance = self.light.radiance()
            deviation = (radiance - radiance.mean(-1, keepdim=True)).abs().mean(-1)  # per texel
            reduce = deviation.sum() if self.config.light_reduction == "sum" else deviation.mean()
            losses["light_loss"] = self.config.light_weight * reduce
        return losses

    def get_image_metrics_and_images(self, outputs, batch):
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        if "pbr" in outputs:
            images["pbr"] = torch.cat([outputs["pbr"], outputs["albedo"], outputs["progress"].expand(-1, -1, 3)], dim=1)
        return metrics, images

