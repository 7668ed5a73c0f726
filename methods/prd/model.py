"""Progressive Radiance Distillation (Ye, Hou, Zhou 2024) as a Nerfstudio model.

Each Gaussian carries a radiance field (SH, the 3DGS colour), PBR attributes (albedo, roughness,
metallic; ``studio.gaussians.pbr``), a normal (its shortest axis, facing the camera) and a
distillation progress ``p`` (not the opacity). All of them are splatted as G-buffers in one
rasterization; the PBR image ``I_pbr`` is shaded per pixel (``studio.pbr.shading``: GGX
split-sum with a learnable cubemap light, SH irradiance, baked visibility) from the G-buffers
divided by the coverage, and the pixel colour is PRD Eq. 5 on the rendered images,

    C = p_x * I_pbr + (1 - p_x) * I_radiance

with ``p_x`` the splatted progress (premultiplied by the coverage, so 0 off the object) and
``I_radiance`` the radiance field's image over the background (mixing straight colours before
compositing relit worse; methods/prd/README.md).

Stages (``methods.prd.stages``; trainer steps, lengths ``stage_iters``):

1. ``pretrain``: 3DGS pretraining of the radiance field (``p = 0``), with densification;
2. ``specular``: ``metallic`` fixed to 1, ``p`` starts at ``progress_init`` (0.01); with
   ``specular_stage paper``, a progress loss ``MSE(t_x, p_x)`` raises p where the radiance field
   is view-dependent (``specular_progress_target``; the target is ours, see below);
3. ``diffuse``: metallic free; loss ``L_rgb + 0.08 MSE(mask, p_x) + 0.003 L_light``
   (``L_light``: white-light prior, |L_c - mean_c L| per texel, summed over the cubemap; the MSE
   leaves out a band of up to ``mask_band`` pixels on each side of the silhouette, ours); the
   environment visibility is baked into a grid of SH first (``studio.pbr.visibility``);
4. ``refine``: joint refinement, the learning rate of ``p`` scaled by ``progress_lr_refine`` (0.1).

``L_rgb`` is the 3DGS loss ``0.8 L1 + 0.2 D-SSIM`` against the ground truth over a random
background (``background_color``). From stage 2 on, ``prd`` adds ``radiance_weight`` (0.5) times
``L_rgb`` of the radiance image alone (ours: the paper distils the PBR part from a pre-trained
radiance field "guidance" and lists no such term; without it the radiance field turns into the
residual of the PBR image, and the PBR part gets that residual as its error signal). ``normal_weight`` adds
``1 - <n, n_depth>`` between the splatted normal and the normal of the rendered depth (ours:
the paper relies on the shortest-axis normal alone; the term keeps splats flat on the surface).
Shading is linear; ``I_pbr`` is clamped to [0, 1] and encoded as sRGB (the datasets are sRGB
without tone mapping). The mask for the progress loss is the ground-truth alpha.

Stage 2 as the paper has it (``specular_stage paper``): the paper distils the specular part first,
with every surface shaded as a metal, and lets p rise as the physical model takes over; it gives no
per-pixel rule for where. Ours: each Gaussian's target is ``progress_init + (1 - progress_init) w``
with ``w`` its view dependence, the std of its radiance colour over viewing directions
(``studio.gaussians.sh.sh_direction_std``, RMS over RGB, from the detached SH of the current
radiance field; ``view_dependence_directions``: the directions from the training cameras to the
scene centre, or the whole sphere, where SH are unconstrained away from the views) mapped
linearly from ``view_dependence_std[0]`` (w = 0) to ``[1]`` (w = 1); the
target is splatted with the G-buffers (``t_x``, premultiplied by coverage as ``p_x``) and the loss
is ``specular_progress_weight * MSE(t_x, p_x)`` outside the silhouette band, the form of the
stage-3 mask loss. ``legacy`` (the default, the schedule of the measured results) has no progress
loss in stage 2: p moves only through ``L_rgb``.

Light transport (ours, options; ``methods.prd.transport``): ``visibility rays`` adds shadow rays
through the Gaussians towards the brightest light texels to the baked SH grid (sharp sun shadows);
``indirect volume`` / ``gaussian-sh`` add indirect light from the radiance field (an SH volume
after GS-IR, per-Gaussian SH after Relightable 3D Gaussians). The defaults (``sh-grid``, ``none``)
are PRD's environment-only lighting.

Ablations (``ablation``): ``prd``; ``no-progress`` (pure PBR after stage 1: ``p = 1``);
``3dgs`` (radiance only: ``p = 0`` throughout). The end of stage 1 is saved as
``<run>/pretrain.safetensors``; ``--load-stage`` starts a run from such a file (skipping stage 1),
so ablations can share one pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor, nn
from torch.nn import Parameter

from studio.cameras import camera_rays
from studio.cameras.nerfstudio import cameras_to_viewmats
from studio.gaussians.pbr import PBR_PARAM_NAMES, activate_pbr, initial_pbr_params, shortest_axis_normals
from studio.gaussians.sh import eval_sh, sh_direction_std
from studio.methods.prd import transport
from studio.methods.prd.stages import prd_stages
from studio.models.splat import SplatModel, SplatModelConfig
from studio.models.staged import StagedModel
from studio.pbr.cubemap import CubemapLight
from studio.pbr.gaussian_density import DensityGrid
from studio.pbr.indirect import IndirectVolume
from studio.pbr.tonemap import linear_to_srgb
from studio.pbr.transport import shade_transport
from studio.pbr.visibility import VisibilityGrid, bake_visibility, object_bounds
from studio.render import rasterize
from studio.render.masks import progress_band

Ablation = Literal["prd", "no-progress", "3dgs"]
GBUFFER_LAYOUT = (("radiance", 3), ("albedo", 3), ("roughness", 1), ("metallic", 1), ("normal", 3), ("progress", 1))


@dataclass
class PRDModelConfig(SplatModelConfig):
    """PRD options; defaults are the paper's schedule (the ``full`` preset), configs/prd.yaml overrides."""

    _target: Type = field(default_factory=lambda: PRDModel)
    stage_names: ClassVar[Tuple[str, ...]] = ("pretrain", "specular", "diffuse", "refine")
    ablation: Ablation = "prd"
    """prd (progressive distillation), no-progress (pure PBR, p = 1) or 3dgs (radiance only, p = 0)."""
    stage_iters: Tuple[int, int, int, int] = (30000, 5000, 10000, 5000)
    """Steps of the four stages: pretrain, specular, diffuse, refine."""
    max_gaussians: int = 3_000_000
    light_resolution: int = 64
    """Face resolution of the learnable cubemap light."""
    light_init: float = 0.5
    """Initial (uniform, linear) radiance of the light."""
    progress_init: float = 0.01
    """Progress p of every Gaussian when distillation starts (stage 2)."""
    specular_stage: Literal["legacy", "paper"] = "legacy"
    """Stage 2 (specular distillation): ``legacy``, p moved by ``L_rgb`` alone; ``paper``, plus a
    progress loss that raises p where the radiance field is view-dependent (module docstring)."""
    specular_progress_weight: float = 0.08
    """Weight of MSE(t_x, p_x) in stage 2 with ``specular_stage paper`` (t_x: the splatted
    view-dependence target; the weight and silhouette band of the stage-3 mask loss)."""
    view_dependence_std: Tuple[float, float] = (0.025, 0.05)
    """Std of a Gaussian's radiance colour over viewing directions (RMS over RGB, colour units) at
    which its view-dependence weight leaves 0 and reaches 1 (linear between); ``specular_stage paper``."""
    view_dependence_directions: Literal["train-views", "sphere"] = "train-views"
    """Directions that std is taken over: from the training cameras to the scene centre, or the
    whole sphere (uniform)."""
    progress_lr_refine: float = 0.1
    """Learning-rate factor of p in stage 4."""
    progress_lr_scale: float = 1.0
    """Factor on p's learning rate (tiny: larger, so p can converge within the short schedule)."""
    light_lr_scale: float = 1.0
    """Factor on the light's learning rate (tiny: larger, for the short schedule)."""
    mask_weight: float = 0.08
    """Weight of MSE(object mask, p_x) from stage 3."""
    light_weight: float = 0.003
    """Weight of the white-light prior from stage 3."""
    light_reduction: Literal["sum", "mean"] = "sum"
    """How the white-light prior reduces over cubemap texels: ``sum`` (the weight acts per texel;
    as a mean, 0.003 is too weak to stop the light taking the object's colour)."""
    background_color: Literal["white", "black", "random"] = "random"
    """Random backgrounds remove semi-transparent floaters, which the PBR part would shade in relit
    views (invisible white-on-white in a white-background fit)."""
    normal_weight: float = 0.05
    """Weight of the splatted-normal / depth-normal consistency from stage 2."""
    radiance_weight: float = 0.5
    """Weight of the radiance field's own ``L_rgb`` (its image over the same background) from
    stage 2, ``prd`` only (ours; see the module docstring)."""
    mask_band: int = 5
    """Most pixels on each side of the ground-truth silhouette that the progress loss
    MSE(mask, p_x) leaves out (ours; 0: the paper's loss on every pixel). There the G-buffers mix
    surface and background and the PBR image is at its worst; left to ``L_rgb``, p stays low in
    the band and the radiance field draws the silhouette."""
    mask_band_share: float = 0.6
    """Largest share of the object's pixels (per image) the band may take: the band narrows on
    small objects, whose progress (and so their PBR fit) it would otherwise take away."""
    visibility_resolution: int = 32
    """SH visibility grid points per axis (0: no visibility, no shadow rays, no indirect light)."""
    visibility: Literal["sh-grid", "rays"] = "sh-grid"
    """Visibility of the environment from stage 3: ``sh-grid`` (PRD: the baked degree-2 SH grid,
    soft; it cannot hold a small sun's shadow) or ``rays`` (the grid for the light less its
    ``shadow_lights`` brightest texels, which get shadow rays through the Gaussians' density:
    sharp shadows; ``methods.prd.transport``)."""
    shadow_lights: int = 4
    """Brightest light texels shaded with shadow rays (``visibility rays``)."""
    shadow_min_share: float = 0.01
    """Least share of the light's power (luminance x solid angle) a texel needs to get shadow rays:
    a light without a dominant source (e.g. the uniform initial light) casts none (``visibility rays``)."""
    shadow_resolution: int = 128
    """Cells per axis of the density grid the shadow rays march through (``visibility rays``)."""
    indirect: Literal["none", "volume", "gaussian-sh"] = "none"
    """Indirect light of the PBR part from stage 3: ``none`` (PRD: environment only); ``volume``
    (an SH volume baked from the radiance field, after GS-IR); ``gaussian-sh`` (learned degree-1 SH
    per Gaussian, after Relightable 3D Gaussians, tied to that volume by ``indirect_weight``)."""
    indirect_weight: float = 0.1
    """Weight of |E_splat - E_volume| (linear irradiance) with ``indirect gaussian-sh``."""
    indirect_relight: Literal["scale", "drop"] = "scale"
    """The indirect light under another light (relighting): scaled by the ratio of the lights' mean
    radiance per channel, or dropped."""
    load_stage: Optional[Path] = None
    """Start from a pretrain stage file (pretrain.safetensors of an earlier run) and skip stage 1."""
    stage_dir: Optional[Path] = None
    """Where the stage file is written (set by the trainer: the run's folder)."""


class PRDModel(StagedModel, SplatModel):
    """PRD inverse rendering (see module docstring)."""

    config: PRDModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        for name, value in initial_pbr_params(len(self.gaussians)).items():
            self.gaussians.params[name] = nn.Parameter(value)
        self.light = CubemapLight(self.config.light_resolution, init_radiance=self.config.light_init)
        self.visibility: Optional[VisibilityGrid] = None
        self.shadow_density: Optional[DensityGrid] = None
        self.indirect_volume: Optional[IndirectVolume] = None
        if self.config.indirect == "gaussian-sh":
            self.gaussians.params[transport.INDIRECT_PARAM] = nn.Parameter(
                transport.initial_indirect(len(self.gaussians))
            )
        centers = (self.kwargs.get("metadata") or {}).get("camera_centers")
        self.view_directions: Optional[Tensor] = None  # [C,3] training cameras -> scene centre
        if centers is not None:
            self.view_directions = self.scene_box.aabb.mean(0).to(centers) - centers
        self.init_stages(prd_stages(self))

    def set_gaussian_params(self, tensors: Dict[str, Tensor]) -> None:
        """Gaussians from a pretrain stage file; PBR attributes it lacks start at their initial values."""
        for name in list(self.gaussians.params.keys()):
            if name in tensors:
                self.gaussians.params[name] = nn.Parameter(tensors[name].clone())
        for name, value in initial_pbr_params(len(self.gaussians)).items():
            if name not in tensors:
                self.gaussians.params[name] = nn.Parameter(value)
        if transport.INDIRECT_PARAM in self.gaussians.params and transport.INDIRECT_PARAM not in tensors:
            value = transport.initial_indirect(len(self.gaussians)).to(self.gaussians.params["means"])
            self.gaussians.params[transport.INDIRECT_PARAM] = nn.Parameter(value)

    @torch.no_grad()
    def bake_visibility(self) -> None:
        g = self.gaussians.activated()
        aabb = object_bounds(g.means, g.opacities)
        box = self.scene_box.aabb.to(aabb)
        aabb = torch.stack([torch.maximum(aabb[0], box[0]), torch.minimum(aabb[1], box[1])])
        self.visibility = bake_visibility(g.means, g.scales, g.opacities, aabb, self.config.visibility_resolution)
        transport.bake(self, g, aabb)

    # ---- parameters and state ----------------------------------------------------------------
    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_param_groups()
        for name in PBR_PARAM_NAMES:
            groups[name] = [self.gaussians.params[name]]
        groups["light"] = list(self.light.parameters())
        if transport.INDIRECT_PARAM in self.gaussians.params:
            groups["indirect"] = [self.gaussians.params[transport.INDIRECT_PARAM]]
        return groups

    def lr_scale(self, group: str) -> float:
        if group == "progress":
            return self.config.progress_lr_scale
        if group == "light":
            return self.config.light_lr_scale
        return super().lr_scale(group)

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):  # type: ignore[override]
        state_dict = dict(state_dict)
        coeffs = state_dict.pop("visibility_coeffs", None)
        aabb = state_dict.pop("visibility_aabb", None)
        if coeffs is not None and aabb is not None:
            self.visibility = VisibilityGrid(coeffs.to(self.device), aabb.to(self.device))
        transport.load_state(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # checkpoints carry the baked visibility
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.visibility is not None:
            destination[prefix + "visibility_coeffs"] = self.visibility.coeffs
            destination[prefix + "visibility_aabb"] = self.visibility.aabb
        transport.save_state(self, destination, prefix)

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
        force_metal: bool = False,
        extra_features: Optional[Dict[str, Tensor]] = None,
    ) -> Dict[str, Tensor]:
        """Render one camera: G-buffers, the PBR and radiance images and their PRD composite.

        Returns [H,W,C] tensors: ``rgb`` (the composite over the background), ``radiance``,
        ``pbr`` (sRGB, straight colour), ``albedo``, ``roughness``, ``metallic``, ``normal``
        (world, unit), ``progress`` (p_x, premultiplied by coverage), ``accumulation``,
        ``depth``, ``depth_normal`` (world normals of the depth map), ``background``.
        ``light`` replaces the learned light (relighting); ``albedo_scale`` [3] multiplies every
        Gaussian's albedo (clamped to [0, 1]) before splatting (scale-aligned evaluation);
        ``force_metal`` shades everything as a metal (specular distillation);
        ``extra_features`` ({name: [N,C]} per Gaussian) are splatted along and returned under their
        names, [H,W,C] premultiplied by the coverage.
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
        extra = {**(extra_features or {}), **transport.gaussian_features(self, normals)}
        layout = GBUFFER_LAYOUT + tuple((name, value.shape[-1]) for name, value in extra.items())
        feats = torch.cat(
            [radiance, attrs["albedo"], attrs["roughness"], attrs["metallic"], normals, attrs["progress"]]
            + list(extra.values()),
            -1,
        )
        bg = self.background() if background is None else background
        out = rasterize(
            g.means, g.quats, g.scales, g.opacities, feats, viewmats, Ks, width, height, backend=self.config.backend
        )
        if self.training:
            self.strategy.step_pre_backward(
                self.gaussians.params, self.optimizers, self.strategy_state, self.step, out.meta
            )
            self.info = out.meta
        acc = out.alpha[0]
        buf = dict(zip([n for n, _ in layout], out.color[0].split([c for _, c in layout], dim=-1)))
        straight = {k: v / acc.clamp(min=1e-6) for k, v in buf.items()}
        metallic = straight["metallic"].clamp(0, 1)
        if force_metal:
            metallic = torch.ones_like(metallic)
        normal = torch.nn.functional.normalize(straight["normal"], dim=-1)
        # per-pixel world rays: view direction and surface point (expected depth)
        d_world = dirs.reshape(height, width, 3)
        points = center + d_world * out.depth[0]
        view = -torch.nn.functional.normalize(d_world, dim=-1)
        sh_light = self.light if light is None else light
        indirect, indirect_target = transport.indirect_irradiance(
            self, straight.get(transport.INDIRECT_GBUFFER), points, normal, sh_light
        )
        shaded = shade_transport(
            straight["albedo"].clamp(0, 1),
            straight["roughness"].clamp(0, 1),
            metallic,
            normal,
            view,
            points,
            sh_light,
            transport.light_transport(self),
            indirect=indirect,
            trace=acc > 1e-3,
        )
        pbr = linear_to_srgb((shaded.diffuse + shaded.specular).clamp(0.0, 1.0))
        if self.config.ablation == "3dgs":
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
            "rgb": rgb.clamp(0.0, 1.0),
            "radiance": straight["radiance"],
            "pbr": pbr,
            "albedo": straight["albedo"],
            "roughness": straight["roughness"],
            "metallic": metallic,
            "normal": normal,
            "progress": p,
            "accumulation": acc,
            "depth": out.depth[0],
            "depth_normal": depth_normal,
            "background": bg,
            **{name: buf[name] for name in extra},
            **({} if indirect is None else {"indirect": indirect}),
            **({} if indirect_target is None else {"indirect_target": indirect_target}),
        }

    def specular_progress_target(self) -> Tensor:
        """Per-Gaussian stage-2 progress target [N,1] (``specular_stage paper``; module docstring):
        ``progress_init`` where the radiance colour does not change with the view direction, 1 where
        its std over directions reaches ``view_dependence_std[1]``. No gradient."""
        cfg = self.config
        dirs = None
        if cfg.view_dependence_directions == "train-views":
            if self.view_directions is None:
                raise ValueError("view_dependence_directions train-views needs the training cameras' centres.")
            dirs = self.view_directions.to(self.device)
        lo, hi = cfg.view_dependence_std
        sh = self.gaussians.sh.detach()
        std = sh_direction_std(self.active_sh_degree(), sh, dirs).square().mean(-1, keepdim=True).sqrt()
        weight = ((std - lo) / max(hi - lo, 1e-8)).clamp(0.0, 1.0)
        return cfg.progress_init + (1.0 - cfg.progress_init) * weight

    def render_outputs(self, camera: Cameras) -> Dict[str, Tensor]:
        """The PRD render (G-buffers and composite) of one camera."""
        return self.render_gbuffers(camera)

    @torch.no_grad()
    def render_relit(self, camera: Cameras, light: CubemapLight, albedo_scale: Optional[Tensor] = None) -> Tensor:
        """PBR-only image [H,W,3] (sRGB, over white) under ``light``; the residual radiance of
        PRD cannot be relit. ``albedo_scale`` [3] rescales the albedo (scale-aligned evaluation)."""
        out = self.render_gbuffers(
            camera, light=light, background=torch.ones(3, device=self.device), albedo_scale=albedo_scale
        )
        acc = out["accumulation"]
        return (out["pbr"] * acc + (1.0 - acc)).clamp(0.0, 1.0)

    # ---- losses ------------------------------------------------------------------------------
    def base_losses(self, outputs, batch) -> Dict[str, Tensor]:
        """``L_rgb`` of the composite (3DGS loss)."""
        return SplatModel.get_loss_dict(self, outputs, batch)

    def distillation_losses(self, outputs, batch, with_progress: bool) -> Dict[str, Tensor]:
        """Losses from stage 2 on: ``L_rgb``, the radiance field's own ``L_rgb`` (prd), the normal
        consistency and, with ``with_progress`` (stages 3-4), the progress and white-light terms."""
        losses = self.base_losses(outputs, batch)
        if self.config.ablation == "3dgs":
            return losses
        cfg = self.config
        acc = outputs["accumulation"]
        if cfg.radiance_weight > 0 and cfg.ablation == "prd":
            radiance = outputs["radiance"] * acc + (1.0 - acc) * outputs["background"]
            gt = self.gt_rgb(batch["image"], outputs["background"])
            losses["radiance_loss"] = cfg.radiance_weight * self.rgb_loss(radiance, gt)
        if cfg.normal_weight > 0:
            valid = (outputs["depth_normal"].abs().sum(-1, keepdim=True) > 0).float()  # see depth_to_normal
            cos = (outputs["normal"] * outputs["depth_normal"].detach()).sum(-1, keepdim=True)
            losses["normal_loss"] = cfg.normal_weight * ((1.0 - cos) * valid).sum() / valid.sum().clamp(min=1.0)
        if with_progress:
            if cfg.ablation == "prd":
                losses["progress_loss"] = cfg.mask_weight * self.progress_error(outputs["progress"], batch, acc)
            radiance = self.light.radiance()
            deviation = (radiance - radiance.mean(-1, keepdim=True)).abs().mean(-1)  # per texel
            reduce = deviation.sum() if cfg.light_reduction == "sum" else deviation.mean()
            losses["light_loss"] = cfg.light_weight * reduce
            indirect = transport.indirect_loss(self, outputs)
            if indirect is not None:
                losses["indirect_loss"] = indirect
        return losses

    def progress_error(self, progress: Tensor, batch, acc: Tensor, target: Optional[Tensor] = None) -> Tensor:
        """Mean of ``(target - p_x)^2`` outside the silhouette band (``mask_band``); the target is
        the mask unless given ([H,W,1], e.g. the splatted stage-2 target). The mask is the
        ground-truth alpha (the rendered coverage when the images have none); the band is the mask's."""
        image = batch["image"].to(self.device)
        if image.shape[-1] == 4:
            mask = image[..., 3:].float() / (255.0 if image.dtype == torch.uint8 else 1.0)
        else:
            mask = acc.detach()
        keep = torch.ones_like(mask)
        if self.config.mask_band > 0:
            keep[progress_band(mask[..., 0], self.config.mask_band, self.config.mask_band_share)] = 0.0
        target = mask if target is None else target
        return (keep * (target - progress) ** 2).mean()

    def get_image_metrics_and_images(self, outputs, batch):
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        if "pbr" in outputs:
            images["pbr"] = torch.cat([outputs["pbr"], outputs["albedo"], outputs["progress"].expand(-1, -1, 3)], dim=1)
        return metrics, images
