"""DreamCraft3D (Sun et al. 2024): hierarchical image-to-3D in three stages, in one run.

1. **coarse** (Gaussians): every step the reference camera is rendered and compared with the
   input, ``lambda_rgb MSE(rgb) + lambda_mask MSE(mask) + lambda_depth_rel (1 - Pearson(depth))``
   (released ``dreamcraft3d-coarse-*.yaml``: 1000, 100, 0.05; ``studio.engine.image_to_3d``),
   and ``views_per_batch`` random views get the hybrid score distillation of Sec. 3.1,
   ``lambda_3d_sd L_SDS(novel-view prior | reference, relative pose) + lambda_sd L_SDS(text
   prior | prompt)`` (the text term only with ``--prompt``; the released code weights both 0.1,
   the paper writes a factor mu on the 3D term: we follow the code). Timesteps anneal from
   U(0.7, 0.85) to U(0.2, 0.5) over ``t_anneal_steps`` (released coarse NeRF config).
   DreamCraft3D alternates reference and guidance steps; we do both every step ("accumulate",
   its geometry-stage mode).
2. **geometry** (mesh): a mesh is extracted from the Gaussians (a level set of their opacity field,
   ``studio.export.mesh``, as DreamGaussian; the released code converts its NeRF to DMTet) and
   its vertex positions and colours are refined through the triangle rasterizer with the same
   reference and hybrid-SDS losses (t ~ U(0.2, 0.5)) plus mesh normal consistency, annealed
   ``lambda_normal_consistency`` 10 -> 1 over the stage's first half (released geometry config:
   ``[1000, 10, 1, 2000]``). The released DMTet stage also applies the 2D prior to rendered
   normal maps; the embedded text prior knows only colour renders, so we do not.
3. **texture** (mesh frozen): the refined mesh is UV-unwrapped (xatlas), its colours baked into a
   texture that is optimised with the reference L1 inside the eroded mask (x1000, released
   texture config) and Bootstrapped Score Distillation (``studio.guidance.BSD``: every
   ``bootstrap_every`` steps ``bootstrap_views`` renders are augmented and the bootstrapped copy
   of the novel-view prior is fine-tuned on them; distillation weight 0.01, its render-score
   copy's loss 0.1), or plain SDS with ``texture_guidance sds`` (the ablation). The released
   texture stage distils Stable Diffusion with the prompt; with an image as the only required
   input we bootstrap the novel-view prior (the reference image is its condition). The tiny
   preset also fine-tunes the render-score copy each round (``finetune_render_score``) and uses
   CFG 1 for augmentation and distillation; the full preset keeps the released settings.

The end of the coarse and geometry stages is saved as ``<run>/coarse.safetensors`` /
``geometry.safetensors``; ``--load-stage`` starts a run from one of them. At the end of training
the run writes ``<run>/export/gaussians.ply`` (coarse Gaussians) and ``<run>/export/mesh.glb``
(textured mesh) and prints their paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from torch import Tensor, nn
from torch.nn import Parameter

from studio.cameras.nerfstudio import cameras_to_viewmats
from studio.cameras.sampling import OrbitViews, orbit_cameras, relative_pose
from studio.engine.generation_model import GenerationModel, GenerationModelConfig
from studio.engine.image_to_3d import reference_losses
from studio.engine.stages import stage_bounds, stage_of
from studio.guidance import BSD, SDS, DreamCraft3DSchedule, UniformTimesteps, step_value
from studio.priors.base import Condition

STAGES = ("coarse", "geometry", "texture")
DEFAULT_STAGE_ITERS = (400, 200, 200)  # used only when neither the preset nor the command line sets them
MESH_GROUPS = ("mesh_verts", "mesh_colors", "texture")


@dataclass
class DreamCraft3DModelConfig(GenerationModelConfig):
    """DreamCraft3D options; fields left ``None`` come from the preset (configs/dreamcraft3d.yaml)."""

    _target: Type = field(default_factory=lambda: DreamCraft3DModel)
    prompt: Optional[str] = None
    """Optional text (``--prompt``): adds the text prior's SDS in the coarse and geometry stages."""
    nvs_prior: Optional[str] = None
    """Novel-view prior: toy-nvs (embedded), zero123 / stable-zero123 or a path (None: preset)."""
    text_prior: Optional[str] = None
    """Text prior for ``--prompt``: toy-t2i, sd-2.1-base, if-i or a path (None: preset)."""
    stage_iters: Optional[Tuple[int, int, int]] = None
    """Steps of the coarse, geometry and texture stages."""
    lambda_rgb: float = 1000.0
    lambda_mask: float = 100.0
    lambda_depth_rel: float = 0.05
    lambda_3d_sd: float = 0.1
    lambda_sd: float = 0.1
    lambda_normal_consistency: Tuple[float, float] = (10.0, 1.0)
    """Geometry stage: mesh normal consistency, annealed from the first to the second value."""
    lambda_texture_sd: float = 0.01
    """Texture stage: weight of the BSD (or SDS) term."""
    lambda_lora: float = 0.1
    """Texture stage: weight of the render-score copy's denoising loss (BSD)."""
    nvs_guidance_scale: float = 5.0
    """CFG scale of the novel-view prior (released code: 5 for stable-zero123)."""
    text_guidance_scale: Optional[float] = None
    """CFG scale of the text prior (released code: 20 for DeepFloyd IF)."""
    texture_guidance_scale: Optional[float] = None
    """CFG scale of the bootstrapped prior in the texture stage (None: preset; full: 2 as released;
    tiny: 1, the 32x32 toy-nvs's CFG direction points away from held-out ground truth)."""
    t_start: Tuple[float, float] = (0.7, 0.85)
    """Coarse timestep range (fractions of T) at step 0."""
    t_end: Tuple[float, float] = (0.2, 0.5)
    """Coarse range after ``t_anneal_steps``, and the geometry stage's range."""
    t_anneal_steps: int = 200
    texture_guidance: Literal["bsd", "sds"] = "bsd"
    """Texture-stage guidance: BSD (DreamCraft3D) or plain SDS (ablation)."""
    bootstrap_every: Optional[int] = None
    """Texture stage: steps between BSD bootstrap rounds (None: preset)."""
    bootstrap_views: int = 16
    """Renders augmented and fine-tuned on per bootstrap round."""
    augment_t_range: Tuple[float, float] = (0.05, 0.5)
    """BSD augmentation: SDEdit noise levels (fractions of T) at the view opposite the reference
    (scaled by |azimuth| / 180; released ``generate_mv_datasets.py``: 0.05-0.5)."""
    finetune_steps: Optional[int] = None
    """Fine-tuning steps of the bootstrapped prior per round (None: preset)."""
    finetune_lr: float = 1e-4
    """AdamW learning rate of the bootstrapped prior's fine-tuning."""
    augment_guidance_scale: Optional[float] = None
    """BSD augmentation: CFG scale of the SDEdit denoising (None: preset; full: 7.5 as released;
    tiny: 1, at 7.5 the 32x32 toy-nvs moves held-out views away from the ground truth)."""
    finetune_render_score: Optional[bool] = None
    """BSD: each round also fine-tunes the render-score copy on the raw renders, so that
    eps_bootstrapped - eps_lora isolates the augmentation (``studio.guidance.bsd``; None: preset;
    full: off as released; tiny: on)."""
    mesh_resolution: int = 64
    """Voxels along the longest side for the coarse-to-mesh conversion."""
    mesh_extraction: Literal["density", "tsdf"] = "density"
    """Coarse-to-mesh conversion (``studio.export.extract_mesh``): a level set of the Gaussians'
    opacity field (as DreamGaussian), or TSDF fusion of rendered depths, which drops the
    semi-transparent edges of score-distilled Gaussians (held-out mushroom: test PSNR 13.8 vs 19.8)."""
    mesh_density_level: Optional[float] = 0.1
    """Opacity-field level of the surface (None: chosen by silhouette agreement with the renders)."""
    texture_size: int = 128
    """Texture atlas resolution (texels)."""
    load_stage: Optional[Path] = None
    """Start from coarse.safetensors / geometry.safetensors of an earlier run."""
    stage_dir: Optional[Path] = None
    """The run's folder (set by the trainer): stage files and export/ go there."""

    def resolved_stage_iters(self) -> Tuple[int, ...]:
        return tuple(int(n) for n in (self.stage_iters or DEFAULT_STAGE_ITERS))

    def steps_skipped(self, load_stage: Path) -> int:
        """A coarse file replaces stage 1, a geometry file stages 1-2."""
        iters = self.resolved_stage_iters()
        return sum(iters[: STAGES.index(read_stage_name(load_stage)) + 1])


def read_stage_name(path: Path) -> str:
    from safetensors import safe_open

    from studio.io.errors import StudioInputError

    try:
        with safe_open(str(path), framework="pt") as f:
            name = (f.metadata() or {}).get("stage", "")
    except Exception:  # safetensors raises its own error types for non-safetensors files
        raise StudioInputError(f"--load-stage {path} is not a safetensors stage file.") from None
    if name not in STAGES[:2]:
        raise StudioInputError(f"--load-stage {path} is not a dreamcraft3d coarse or geometry stage file.")
    return name


class DreamCraft3DModel(GenerationModel):
    """See module docstring."""

    config: DreamCraft3DModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        from studio.priors import load_prior

        cfg = self.config
        n = cfg.t_anneal_steps
        coarse = UniformTimesteps([0, cfg.t_start[0], cfg.t_end[0], n], [0, cfg.t_start[1], cfg.t_end[1], n])
        # priors load on the CPU; the pipeline moves the model (and them) to its device
        nvs_prior = load_prior(cfg.nvs_prior or "toy-nvs", device="cpu")
        self.nvs_guidance = SDS(nvs_prior, cfg.nvs_guidance_scale, "sds", coarse)
        self.text_guidance: Optional[SDS] = None
        if cfg.prompt:
            prior = load_prior(cfg.text_prior or "toy-t2i", device="cpu")
            self.text_guidance = SDS(prior, float(cfg.text_guidance_scale or 7.5), "sds", coarse)
        texture_schedule = DreamCraft3DSchedule("texture", anneal_steps=cfg.resolved_stage_iters()[2])
        if cfg.texture_guidance == "bsd":
            self.texture_guidance = BSD(
                nvs_prior, 2.0 if cfg.texture_guidance_scale is None else cfg.texture_guidance_scale,
                schedule=texture_schedule, bootstrap_every=int(cfg.bootstrap_every or 100),
                finetune_steps=int(cfg.finetune_steps or 50), finetune_lr=cfg.finetune_lr,
                prior_preservation_weight=1.0, num_class_images=8, augment_t_range=tuple(cfg.augment_t_range),
                augment_guidance_scale=7.5 if cfg.augment_guidance_scale is None else cfg.augment_guidance_scale,
                finetune_render_score=bool(cfg.finetune_render_score),
            )
        else:
            self.texture_guidance = SDS(nvs_prior, cfg.nvs_guidance_scale, "sds", texture_schedule)
        self.mesh = nn.ParameterDict({name: nn.Parameter(torch.zeros(0, 3)) for name in MESH_GROUPS})
        self.register_buffer("mesh_faces", torch.zeros(0, 3, dtype=torch.long))
        self.register_buffer("mesh_uv", torch.zeros(0, 2))
        self._text_cond: Optional[Tuple[Condition, Condition]] = None
        self.step_offset = 0
        self.stage_name = "coarse"
        self._callback_attrs: Optional[TrainingCallbackAttributes] = None
        if cfg.load_stage is not None and Path(cfg.load_stage).is_file():
            self._load_stage_file(Path(cfg.load_stage))

    # ---- stages ------------------------------------------------------------------------------
    def stage(self, step: Optional[int] = None) -> str:
        return STAGES[stage_of(self.step if step is None else step, self.config.resolved_stage_iters()) - 1]

    def stage_start(self, name: str) -> int:
        return ([0] + stage_bounds(self.config.resolved_stage_iters()))[STAGES.index(name)]

    def _save_stage_file(self, name: str) -> None:
        from safetensors.torch import save_file

        from studio.io.atomic import atomic_path

        if self.config.stage_dir is None:
            return
        tensors = {f"gaussians.{k}": v.detach().cpu().contiguous() for k, v in self.gaussians.params.items()}
        if name == "geometry":
            tensors.update({"mesh_verts": self.mesh["mesh_verts"].detach().cpu(), "mesh_colors": self.mesh["mesh_colors"].detach().cpu(),
                            "mesh_faces": self.mesh_faces.cpu()})
        path = Path(self.config.stage_dir) / f"{name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"stage": name})

    def _load_stage_file(self, path: Path) -> None:
        from safetensors.torch import load_file

        name = read_stage_name(path)
        state = load_file(str(path))
        for k in list(self.gaussians.params.keys()):
            self.gaussians.params[k] = nn.Parameter(state[f"gaussians.{k}"].clone())
        if name == "geometry":
            self.mesh_faces = state["mesh_faces"].long()
            self.mesh["mesh_verts"] = nn.Parameter(state["mesh_verts"].clone())
            self.mesh["mesh_colors"] = nn.Parameter(state["mesh_colors"].clone())
        self.step_offset = self.stage_start(STAGES[STAGES.index(name) + 1])

    def _replace_param(self, group: str, value: Tensor) -> None:
        """Install a new tensor as ``self.mesh[group]`` and in its optimizer (state reset)."""
        param = nn.Parameter(value.detach().to(self.device).contiguous())
        self.mesh[group] = param
        attrs = self._callback_attrs
        if attrs is not None and group in attrs.optimizers.optimizers:
            opt = attrs.optimizers.optimizers[group]
            opt.state.clear()
            opt.param_groups[0]["params"] = [param]
            attrs.optimizers.parameters[group] = [param]

    @torch.no_grad()
    def _enter_geometry(self) -> None:
        from studio.export.mesh import extract_mesh

        self._save_stage_file("coarse")
        if self.mesh["mesh_verts"].shape[0] == 0:  # not loaded from a geometry file
            mesh = extract_mesh(self.gaussians.activated().detach(), resolution=self.config.mesh_resolution, n_views=24,
                                method=self.config.mesh_extraction, density_level=self.config.mesh_density_level,
                                image_size=128, views_per_batch=4, backend=self.config.backend)
            self.mesh_faces = torch.as_tensor(mesh.faces, dtype=torch.long, device=self.device)
            colors = torch.as_tensor(mesh.visual.vertex_colors[:, :3], dtype=torch.float32) / 255.0
            self._replace_param("mesh_colors", colors)
            self._replace_param("mesh_verts", torch.as_tensor(mesh.vertices, dtype=torch.float32))
        else:
            for group in ("mesh_verts", "mesh_colors"):
                self._replace_param(group, self.mesh[group])

    @torch.no_grad()
    def _enter_texture(self) -> None:
        from studio.mesh.textured import unwrap_with_colors

        self._save_stage_file("geometry")
        tm = unwrap_with_colors(self.mesh["mesh_verts"].detach().cpu(), self.mesh_faces.cpu(),
                                self.mesh["mesh_colors"].detach().clamp(0, 1).cpu(), self.config.texture_size)
        self.mesh_faces = torch.as_tensor(tm.faces, dtype=torch.long, device=self.device)
        self.mesh_uv = torch.as_tensor(tm.uv, dtype=torch.float32, device=self.device)
        self._replace_param("mesh_verts", torch.as_tensor(tm.verts, dtype=torch.float32))
        self.mesh["mesh_verts"].requires_grad_(False)  # geometry frozen
        self._replace_param("texture", torch.as_tensor(tm.texture, dtype=torch.float32))

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_param_groups()
        for name in MESH_GROUPS:
            groups[name] = [self.mesh[name]]
        if isinstance(self.texture_guidance, BSD):
            groups["guidance"] = self.texture_guidance.trainable_parameters()
        return groups

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        self._callback_attrs = attrs
        optimizers = attrs.optimizers
        # a run from a stage file starts in the stage before its first one, so that stage is entered
        state = {"stage": STAGES[STAGES.index(self.stage(self.step_offset)) - 1] if self.step_offset else "coarse"}
        total = sum(self.config.resolved_stage_iters())

        def before(step: int) -> None:
            self.step = step + self.step_offset
            self.optimizers = optimizers.optimizers
            target = self.stage()
            while state["stage"] != target:
                state["stage"] = STAGES[STAGES.index(state["stage"]) + 1]
                (self._enter_geometry if state["stage"] == "geometry" else self._enter_texture)()
            self.stage_name = target

        def after(step: int) -> None:
            gstep = step + self.step_offset
            if self.stage(gstep) == "coarse":
                self.strategy.step_post_backward(
                    params=self.gaussians.params, optimizers=self.optimizers, state=self.strategy_state,
                    step=gstep, info=self.info, packed=False,
                )
            if gstep == total - 1:
                self.export()

        return [
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], before),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], after),
        ]

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):  # type: ignore[override]
        for name in MESH_GROUPS:
            key = f"mesh.{name}"
            if key in state_dict:
                self.mesh[name] = nn.Parameter(torch.zeros_like(state_dict[key]))
        for name in ("mesh_faces", "mesh_uv"):
            if name in state_dict:
                setattr(self, name, torch.zeros_like(state_dict[name]))
        out = super().load_state_dict(state_dict, strict=strict, **kwargs)
        self.stage_name = "texture" if self.mesh["texture"].shape[0] else ("geometry" if self.mesh_faces.shape[0] else "coarse")
        return out

    # ---- rendering ---------------------------------------------------------------------------
    def render_any(self, cameras: Cameras) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """rgb [C,H,W,3], alpha and depth [C,H,W,1], background [3] of the current stage's scene."""
        if self.stage_name == "coarse":
            return self.render_views(cameras)
        from studio.mesh.render import render_mesh

        viewmats, Ks, width, height = cameras_to_viewmats(cameras.to(self.device))
        bg = self.background()
        textured = self.stage_name == "texture"
        out = render_mesh(
            self.mesh["mesh_verts"], self.mesh_faces, viewmats, Ks, width, height,
            vertex_attrs={} if textured else {"color": self.mesh["mesh_colors"].clamp(0, 1)},
            uv=self.mesh_uv if textured else None, texture=self.mesh["texture"].clamp(0, 1) if textured else None,
            background=bg,
        )
        return out["rgb"], out["alpha"], out["depth"], bg

    def render_reference(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        views = OrbitViews(batch["ref_elevation"], batch["ref_azimuth"], batch["ref_distance"], batch["ref_fov"])
        rgb, alpha, depth, bg = self.render_any(orbit_cameras(views, batch["ref_rgb"].shape[0]))
        return {"rgb": rgb[0], "alpha": alpha[0], "depth": depth[0], "background": bg}

    # ---- losses ------------------------------------------------------------------------------
    def nvs_conditions(self, batch: Dict[str, Tensor], views: OrbitViews) -> Tuple[Condition, Condition]:
        """(condition, null condition) of the novel-view prior for ``views`` [N]: the batch's
        reference image and each view's camera relative to the reference camera."""
        prior = self.nvs_guidance.prior
        ref_views = OrbitViews(batch["ref_elevation"], batch["ref_azimuth"], batch["ref_distance"], batch["ref_fov"])
        with torch.no_grad():
            cond = prior.condition(image=batch["ref_rgb"].permute(2, 0, 1)[None], pose=relative_pose(ref_views, views).to(self.device))
        return cond, prior.unconditional(cond)

    def _text_conditions(self) -> Tuple[Condition, Condition]:
        if self._text_cond is None:
            prior = self.text_guidance.prior
            with torch.no_grad():
                self._text_cond = (prior.condition(text=self.config.prompt), prior.condition(text=""))
        return self._text_cond

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        cfg = self.config
        stage = self.stage_name
        ref = self.render_reference(batch)
        images = outputs["rgb_views"].permute(0, 3, 1, 2)
        views = OrbitViews(batch["elevation"], batch["azimuth"], batch["distance"], batch["fov"])
        cond, uncond = self.nvs_conditions(batch, views)
        if stage == "texture":
            return self._texture_losses(ref, batch, images, views, cond, uncond)
        terms = reference_losses(ref["rgb"], ref["alpha"], ref["depth"], ref["background"], batch)
        weights = {"rgb": cfg.lambda_rgb, "mask": cfg.lambda_mask, "depth_rel": cfg.lambda_depth_rel}
        losses = {f"ref_{k}": weights[k] * v for k, v in terms.items() if weights.get(k, 0) > 0}
        step = self.step if stage == "coarse" else 10**9  # geometry: the annealed (final) range
        if cfg.lambda_3d_sd > 0:
            losses["sd_3d"] = cfg.lambda_3d_sd * self.nvs_guidance(images, cond, uncond, step)["loss_sds"]
        if self.text_guidance is not None and cfg.lambda_sd > 0:
            tc, tu = self._text_conditions()
            losses["sd_2d"] = cfg.lambda_sd * self.text_guidance(images, tc, tu, step)["loss_sds"]
        if stage == "geometry":
            from studio.mesh.regularizers import normal_consistency

            half = max(1, cfg.resolved_stage_iters()[1] // 2)
            w = step_value([0, cfg.lambda_normal_consistency[0], cfg.lambda_normal_consistency[1], half], self.step - self.stage_start("geometry"))
            losses["normal_consistency"] = w * normal_consistency(self.mesh["mesh_verts"], self.mesh_faces)
        return losses

    def _texture_losses(self, ref, batch, images, views, cond, uncond) -> Dict[str, Tensor]:
        cfg = self.config
        mask = batch["ref_mask"]
        eroded = 1.0 - torch.nn.functional.max_pool2d((1.0 - mask).permute(2, 0, 1)[None], 9, 1, 4)[0].permute(1, 2, 0)
        losses = {"ref_rgb": cfg.lambda_rgb * ((ref["rgb"] - batch["ref_rgb"]).abs() * eroded).mean()}
        tstep = self.step - self.stage_start("texture")
        guidance = self.texture_guidance
        if isinstance(guidance, BSD):
            if guidance.should_bootstrap(tstep):
                self._bootstrap(batch)
            out = guidance(images, cond, uncond, tstep)
            losses["bsd"] = cfg.lambda_texture_sd * out["loss_bsd"]
            losses["bsd_lora"] = cfg.lambda_lora * out["loss_bsd_lora"]
        else:
            losses["sds"] = cfg.lambda_texture_sd * guidance(images, cond, uncond, tstep)["loss_sds"]
        return losses

    def bootstrap_orbit(self, batch: Dict[str, Tensor]) -> Tuple[OrbitViews, Tensor]:
        """The ``bootstrap_views`` views of a BSD round (CPU), evenly spaced in azimuth from the
        reference view at its elevation, distance and field of view, and their azimuths relative to
        the reference [N] (degrees)."""
        n = self.config.bootstrap_views
        offsets = torch.arange(n) * 360.0 / n
        elevation, azimuth, distance, fov = (batch[f"ref_{k}"].cpu() for k in ("elevation", "azimuth", "distance", "fov"))
        return OrbitViews(elevation.expand(n), azimuth + offsets, distance.expand(n), fov.expand(n)), offsets

    def _bootstrap(self, batch: Dict[str, Tensor]) -> None:
        """One BSD round on the ``bootstrap_orbit`` views."""
        views, offsets = self.bootstrap_orbit(batch)
        cond, uncond = self.nvs_conditions(batch, OrbitViews(*(v.to(self.device) for v in views)))
        size = self.nvs_guidance.prior.image_size
        # BSD renders under no_grad itself; its fine-tuning needs gradients
        self.texture_guidance.bootstrap(lambda cams: self.render_any(cams)[0].permute(0, 3, 1, 2), orbit_cameras(views, size),
                                        cond, uncond, azimuth_deg=offsets)

    # ---- export ------------------------------------------------------------------------------
    @torch.no_grad()
    def export(self) -> None:
        """``<run>/export/gaussians.ply`` and, after the texture stage, ``<run>/export/mesh.glb``."""
        from nerfstudio.utils.rich_utils import CONSOLE

        from studio.export.ply import save_gaussians_ply
        from studio.mesh.textured import TexturedMesh, save_textured_glb

        if self.config.stage_dir is None:
            return
        out = Path(self.config.stage_dir) / "export"
        out.mkdir(parents=True, exist_ok=True)
        save_gaussians_ply(out / "gaussians.ply", self.gaussians.activated().detach().to("cpu"))
        CONSOLE.print(f"Wrote {out / 'gaussians.ply'}")
        if self.stage_name == "texture":
            tm = TexturedMesh(self.mesh["mesh_verts"].detach().cpu(), self.mesh_faces.cpu(), self.mesh_uv.cpu(),
                              self.mesh["texture"].detach().clamp(0, 1).cpu())
            save_textured_glb(out / "mesh.glb", tm)
            CONSOLE.print(f"Wrote {out / 'mesh.glb'}")
