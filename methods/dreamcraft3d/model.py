"""DreamCraft3D (Sun et al. 2024): hierarchical image-to-3D in three stages, in one run
(stage objects in ``methods.dreamcraft3d.stages``).

1. **coarse** (Gaussians): every step the reference camera is rendered and compared with the
   input, ``rgb_weight MSE(rgb) + mask_weight MSE(mask) + depth_rel_weight (1 - Pearson(depth))``
   (released ``dreamcraft3d-coarse-*.yaml``: 1000, 100, 0.05; ``studio.models.reference_losses``),
   and ``views_per_batch`` random views get the hybrid score distillation of Sec. 3.1,
   ``nvs_sds_weight L_SDS(novel-view prior | reference, relative pose) + text_sds_weight
   L_SDS(text prior | prompt)`` (the text term only with ``--prompt``; the released code weights both 0.1,
   the paper writes a factor mu on the 3D term: we follow the code). Timesteps anneal from
   U(0.7, 0.85) to U(0.2, 0.5) over ``t_anneal_steps`` (released coarse NeRF config).
   DreamCraft3D alternates reference and guidance steps; we do both every step ("accumulate",
   its geometry-stage mode).
2. **geometry** (mesh): a mesh is extracted from the Gaussians (a level set of their opacity field,
   ``studio.export.mesh``, as DreamGaussian; the released code converts its NeRF to DMTet) and
   its vertex positions and colours are refined through the triangle rasterizer with the same
   reference and hybrid-SDS losses (t ~ ``geometry_t_range``, U(0.2, 0.5): the coarse stage's final
   range; the released geometry config samples U(0.02, 0.5)) plus mesh normal consistency, annealed
   ``normal_consistency_weight`` 10 -> 1 over the stage's first half (released geometry config:
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
from typing import TYPE_CHECKING, Callable, ClassVar, Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor, nn

from studio.cameras.sampling import OrbitViews, orbit_cameras, relative_pose
from studio.guidance import BSD, SDS, DreamCraft3DSchedule, Negatives, UniformTimesteps, ViewPrompting, view_conditions
from studio.io.errors import StudioInputError
from studio.io.inputs import Input, Kind
from studio.methods.dreamcraft3d.stages import DMTET_GROUPS, MESH_GROUPS, dreamcraft3d_stages
from studio.models.generation import GenerationModel, GenerationModelConfig
from studio.models.staged import StagedModel
from studio.priors import check_prior
from studio.priors.base import Condition, DiffusionPrior

if TYPE_CHECKING:
    from studio.mesh.dmtet import TetGrid


@dataclass
class DreamCraft3DModelConfig(GenerationModelConfig):
    """DreamCraft3D options; defaults are the released configs' (the ``full`` preset), configs/dreamcraft3d.yaml overrides."""

    _target: Type = field(default_factory=lambda: DreamCraft3DModel)
    stage_names: ClassVar[Tuple[str, ...]] = ("coarse", "geometry", "texture")
    prompt: Optional[str] = None
    """Optional text (``--prompt``): adds the text prior's SDS in the coarse and geometry stages."""
    nvs_prior: str = "zero123"
    """Novel-view prior: toy-nvs (embedded), zero123 / stable-zero123 or a path."""
    text_prior: str = "if-i"
    """Text prior for ``--prompt``: toy-t2i, sd-2.1-base, if-i or a path."""
    stage_iters: Tuple[int, int, int] = (5000, 5000, 5000)
    """Steps of the coarse, geometry and texture stages."""
    rgb_weight: float = 1000.0
    mask_weight: float = 100.0
    depth_rel_weight: float = 0.05
    nvs_sds_weight: float = 0.1
    """Weight of the novel-view prior's SDS (coarse and geometry stages)."""
    text_sds_weight: float = 0.1
    """Weight of the text prior's SDS (with ``--prompt``)."""
    normal_consistency_weight: Tuple[float, float] = (10.0, 1.0)
    """Geometry stage: mesh normal consistency, annealed from the first to the second value."""
    texture_guidance_weight: float = 0.01
    """Texture stage: weight of the BSD (or SDS) term."""
    render_score_weight: float = 0.1
    """Texture stage: weight of the render-score copy's denoising loss (BSD)."""
    nvs_guidance_scale: float = 5.0
    """CFG scale of the novel-view prior (released code: 5 for stable-zero123)."""
    text_guidance_scale: float = 20.0
    """CFG scale of the text prior (released code: 20 for DeepFloyd IF)."""
    perp_neg: bool = True
    """Perp-Neg for the text prior's SDS (``studio.guidance.perp_neg``): the prompt interpolated
    between view prompts, the other views as perpendicular negatives weighted by azimuth (released:
    ``prompt_processor.use_perp_neg: true`` with IF). Pretrained text priors only (they have view words)."""
    texture_guidance_scale: float = 2.0
    """CFG scale of the bootstrapped prior in the texture stage (released: 2)."""
    t_start: Tuple[float, float] = (0.7, 0.85)
    """Coarse timestep range (fractions of T) at step 0."""
    t_end: Tuple[float, float] = (0.2, 0.5)
    """Coarse range after ``t_anneal_steps``."""
    t_anneal_steps: int = 200
    geometry_t_range: Tuple[float, float] = (0.2, 0.5)
    """Geometry-stage timestep range (the coarse stage's final range; released config: 0.02-0.5)."""
    texture_prior: Literal["auto", "novel-view", "text"] = "auto"
    """Prior the texture stage distils: ``text``: ``texture_text_prior`` with the prompt and view words
    (released texture config: SD-2.1-base, front/back thresholds 30); ``novel-view``: the novel-view
    prior bootstrapped from the reference image; ``auto``: text when ``--prompt`` is given, else novel-view."""
    texture_text_prior: str = "sd-2.1-base"
    """Text prior of the texture stage (``texture_prior text``; released: SD-2.1-base)."""
    texture_guidance: Literal["bsd", "sds"] = "bsd"
    """Texture-stage guidance: BSD (DreamCraft3D) or plain SDS (ablation)."""
    bootstrap_every: int = 1000
    """Texture stage: steps between BSD bootstrap rounds."""
    bootstrap_views: int = 16
    """Renders augmented and fine-tuned on per bootstrap round."""
    augment_t_range: Tuple[float, float] = (0.05, 0.5)
    """BSD augmentation: SDEdit noise levels (fractions of T) at the view opposite the reference
    (scaled by |azimuth| / 180; released ``generate_mv_datasets.py``: 0.05-0.5)."""
    finetune_steps: int = 200
    """Fine-tuning steps of the bootstrapped prior per round."""
    finetune_lr: float = 1e-4
    """AdamW learning rate of the bootstrapped prior's fine-tuning."""
    augment_guidance_scale: float = 7.5
    """BSD augmentation: CFG scale of the SDEdit denoising (released: 7.5)."""
    finetune_render_score: bool = False
    """BSD: each round also fine-tunes the render-score copy on the raw renders, so that
    eps_bootstrapped - eps_lora isolates the augmentation (``studio.guidance.bsd``; released: off)."""
    geometry_representation: Literal["dmtet", "vertices"] = "dmtet"
    """Geometry stage: a DMTet re-meshed every step (released), or the vertices of one mesh of the
    coarse result moved directly."""
    mesh_resolution: int = 64
    """Cubes (DMTet) or voxels (the vertex mesh) along the longest side of the coarse result's bounds."""
    mesh_extraction: Literal["density", "tsdf"] = "density"
    """Coarse-to-mesh conversion (``studio.export.extract_mesh``): a level set of the Gaussians'
    opacity field (as DreamGaussian), or TSDF fusion of rendered depths."""
    mesh_density_level: Optional[float] = 0.1
    """Opacity-field level of the surface (None: chosen by silhouette agreement with the renders)."""
    texture_size: int = 128
    """Texture atlas resolution (texels)."""
    load_stage: Optional[Path] = None
    """Start from coarse.safetensors / geometry.safetensors of an earlier run."""
    stage_dir: Optional[Path] = None
    """The run's folder (set by the trainer): stage files and export/ go there."""

    def inputs(self) -> List[Input]:
        """The novel-view prior, and with ``--prompt`` the prompt and the text prior."""
        items = [Input("--pipeline.model.nvs-prior", Kind.PRIOR, self.nvs_prior, check=check_prior)]
        if self.prompt is not None:
            items += [
                Input("--prompt", Kind.PROMPT, self.prompt),
                Input("--pipeline.model.text-prior", Kind.PRIOR, self.text_prior, check=check_prior),
            ]
            if self.texture_prior != "novel-view":
                items.append(
                    Input("--pipeline.model.texture-text-prior", Kind.PRIOR, self.texture_text_prior, check=check_prior)
                )
        return items


class DreamCraft3DModel(StagedModel, GenerationModel):
    """See module docstring."""

    config: DreamCraft3DModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        n = cfg.t_anneal_steps
        self.coarse_schedule = UniformTimesteps(
            [0, cfg.t_start[0], cfg.t_end[0], n], [0, cfg.t_start[1], cfg.t_end[1], n]
        )
        self.geometry_schedule = UniformTimesteps(*cfg.geometry_t_range)
        nvs_prior = self.load_prior(cfg.nvs_prior)
        self.nvs_guidance = SDS(nvs_prior, cfg.nvs_guidance_scale, "sds", self.coarse_schedule)
        self.text_guidance: Optional[SDS] = None
        # view words for pretrained text priors (ToyWorld captions have none), relative to the reference view
        self.text_prompting: Optional[ViewPrompting] = None
        self._text_priors: Dict[str, Tuple[DiffusionPrior, Dict[str, Condition]]] = {}
        self._text_conds: Dict[str, Condition] = {}
        if cfg.prompt:
            prior, self._text_conds = self.prompt_prior(cfg.text_prior)
            if not str(cfg.text_prior).startswith("toy-"):
                self.text_prompting = ViewPrompting()
            self.text_guidance = SDS(prior, cfg.text_guidance_scale, "sds", self.coarse_schedule)
        # the texture stage: the novel-view prior, or a text prior with the released texture stage's view words
        self.texture_prompting: Optional[ViewPrompting] = None
        self._texture_conds: Dict[str, Condition] = {}  # non-empty: the texture stage distils a text prior
        texture_base = nvs_prior
        if cfg.texture_prior == "text" and not cfg.prompt:
            raise StudioInputError("--pipeline.model.texture-prior text needs --prompt.")
        if cfg.texture_prior == "text" or (cfg.texture_prior == "auto" and cfg.prompt):
            texture_base, self._texture_conds = self.prompt_prior(cfg.texture_text_prior)
            if not str(cfg.texture_text_prior).startswith("toy-"):
                self.texture_prompting = ViewPrompting(front_threshold=30.0, back_threshold=30.0)
        self.texture_image_size = int(texture_base.image_size)
        texture_schedule = DreamCraft3DSchedule("texture", anneal_steps=cfg.stage_iters[2])
        if cfg.texture_guidance == "bsd":
            self.texture_guidance = BSD(
                texture_base,
                cfg.texture_guidance_scale,
                schedule=texture_schedule,
                bootstrap_every=cfg.bootstrap_every,
                finetune_steps=cfg.finetune_steps,
                finetune_lr=cfg.finetune_lr,
                prior_preservation_weight=1.0,
                num_class_images=8,
                augment_t_range=tuple(cfg.augment_t_range),
                augment_guidance_scale=cfg.augment_guidance_scale,
                finetune_render_score=cfg.finetune_render_score,
            )
        else:
            scale = cfg.text_guidance_scale if self._texture_conds else cfg.nvs_guidance_scale
            self.texture_guidance = SDS(texture_base, scale, "sds", texture_schedule)
        self.mesh = nn.ParameterDict({name: nn.Parameter(torch.zeros(0, 3)) for name in MESH_GROUPS})
        self.dmtet = nn.ParameterDict({name: nn.Parameter(torch.zeros(0, 3)) for name in DMTET_GROUPS})
        self.register_buffer("dmtet_box", torch.zeros(2, 3))
        self.register_buffer("dmtet_resolution", torch.tensor(cfg.mesh_resolution))  # for readers of checkpoints
        self._dmtet_grid: Optional[tuple] = None  # (key, TetGrid): the grid follows the box
        self._dmtet_surface: Optional[tuple] = None  # (key, surface) of the current parameters
        self.register_buffer("mesh_faces", torch.zeros(0, 3, dtype=torch.long))
        self.register_buffer("mesh_uv", torch.zeros(0, 2))
        self.init_stages(dreamcraft3d_stages(self))

    def prompt_prior(self, name: str) -> Tuple[DiffusionPrior, Dict[str, Condition]]:
        """The text prior ``name`` (loaded once per name) and the conditions of the prompt with each
        view word and of "", embedded before any guidance clones it; its text encoder is then freed."""
        if name not in self._text_priors:
            prior = self.load_prior(name)
            prompt = self.config.prompt
            self._text_priors[name] = (
                prior,
                self.embed_prompts(prior, [*ViewPrompting().all_prompts(prompt), prompt, ""]),
            )
        return self._text_priors[name]

    def get_param_groups(self):
        groups = super().get_param_groups()
        for name in MESH_GROUPS:
            groups[name] = [self.mesh[name]]
        for name in DMTET_GROUPS:
            groups[name] = [self.dmtet[name]]
        if isinstance(self.texture_guidance, BSD):
            groups["guidance"] = self.texture_guidance.trainable_parameters()
        return groups

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):  # type: ignore[override]
        state_dict = dict(state_dict)
        for prefix, names in (("mesh", MESH_GROUPS), ("dmtet", DMTET_GROUPS)):
            for name in names:
                key = f"{prefix}.{name}"
                if key in state_dict:
                    getattr(self, prefix)[name] = nn.Parameter(torch.zeros_like(state_dict[key]))
        for name in ("mesh_faces", "mesh_uv"):
            if name in state_dict:
                setattr(self, name, torch.zeros_like(state_dict[name]))
        if "stage_index" not in state_dict:  # checkpoints of earlier versions: the stage its tensors show
            has_texture, has_mesh = (
                state_dict.get("mesh.texture", torch.zeros(0)).shape[0],
                state_dict.get("mesh_faces", torch.zeros(0)).shape[0],
            )
            state_dict["stage_index"] = torch.tensor(2 if has_texture else (1 if has_mesh else 0))
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    # ---- rendering ---------------------------------------------------------------------------
    def render_any(self, cameras: Cameras) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """rgb [C,H,W,3], alpha and depth [C,H,W,1], background [3] of the current stage's scene."""
        return self.stage.render(cameras)

    def render_outputs(self, camera: Cameras) -> Dict[str, Tensor]:
        return GenerationModel.get_outputs(self, camera)

    def render_reference(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        views = OrbitViews(batch["ref_elevation"], batch["ref_azimuth"], batch["ref_distance"], batch["ref_fov"])
        rgb, alpha, depth, bg = self.render_any(orbit_cameras(views, batch["ref_rgb"].shape[0]))
        return {"rgb": rgb[0], "alpha": alpha[0], "depth": depth[0], "background": bg}

    # ---- DMTet geometry ------------------------------------------------------------------------
    def dmtet_grid(self) -> "TetGrid":
        """The Kuhn tet grid of ``mesh_resolution`` cubes over ``dmtet_box`` (rebuilt when the box
        changes, never saved: a checkpoint holds the box)."""
        key = (tuple(self.dmtet_box.flatten().tolist()), self.config.mesh_resolution, str(self.dmtet_box.device))
        if self._dmtet_grid is None or self._dmtet_grid[0] != key:
            from studio.mesh.dmtet import tet_grid

            self._dmtet_grid = (key, tet_grid(*self.dmtet_box, self.config.mesh_resolution))
        return self._dmtet_grid[1]

    def dmtet_surface(self) -> Tuple[Tensor, Tensor, Tensor]:
        """Marching tetrahedra of the DMTet: vertices [M,3], faces [F,3], colours [M,3]; computed
        once per parameter update (renders and losses of a step share it)."""
        from studio.mesh.dmtet import deformable_surface

        params = [self.dmtet[name] for name in DMTET_GROUPS]
        key = (tuple(p._version for p in params), tuple(id(p) for p in params), torch.is_grad_enabled())
        if self._dmtet_surface is None or self._dmtet_surface[0] != key:
            sdf, deform, color = params
            self._dmtet_surface = (key, deformable_surface(self.dmtet_grid(), sdf, deform, color.clamp(0, 1)))
        return self._dmtet_surface[1]

    # ---- conditions and losses ---------------------------------------------------------------
    def nvs_conditions(self, batch: Dict[str, Tensor], views: OrbitViews) -> Tuple[Condition, Condition]:
        """(condition, null condition) of the novel-view prior for ``views`` [N]: the batch's
        reference image and each view's camera relative to the reference camera."""
        prior = self.nvs_guidance.prior
        ref_views = OrbitViews(batch["ref_elevation"], batch["ref_azimuth"], batch["ref_distance"], batch["ref_fov"])
        variant = getattr(prior, "pose_variant", "zero123")
        if variant == "zero123":
            pose = relative_pose(ref_views, views)
        else:  # Stable Zero123 takes the reference polar angle as its fourth entry
            from studio.priors.diffusers import zero123_pose

            pose = zero123_pose(
                views.elevation,
                views.azimuth,
                views.distance,
                ref_views.elevation,
                ref_views.azimuth,
                ref_views.distance,
                variant=variant,
            )
        with torch.no_grad():
            cond = prior.condition(image=batch["ref_rgb"].permute(2, 0, 1)[None], pose=pose.to(self.device))
        return cond, prior.unconditional(cond)

    def text_conditions(self, batch: Dict[str, Tensor]) -> Tuple[Condition, Condition, Optional[Negatives]]:
        """(condition [B,...], null condition [1,...], Perp-Neg negatives or None) of the text prior
        for the batch's random views (``studio.guidance.view_conditions``): for pretrained priors
        the prompt with a view word from each view's azimuth relative to the reference view (the
        front; DreamFusion Sec. 3.2, the released configs' ``use_view_dependent_prompt``) or, with
        ``perp_neg``, Perp-Neg's interpolated positive and its negatives."""
        relative = batch["azimuth"] - batch["ref_azimuth"]
        cond, negatives = view_conditions(
            self._text_conds,
            self.config.prompt,
            relative,
            batch["elevation"],
            self.text_prompting,
            self.config.perp_neg,
        )
        return cond, self._text_conds[""], negatives

    def texture_conditions(self, batch: Dict[str, Tensor], views: OrbitViews) -> Tuple[Condition, Condition]:
        """(condition [N,...], null condition) of the texture stage's prior for ``views`` [N]: the
        novel-view prior's (``nvs_conditions``), or the prompt with view words by azimuth from the
        reference view (texture thresholds 30 / 30) and the empty prompt."""
        if not self._texture_conds:
            return self.nvs_conditions(batch, views)
        relative = views.azimuth - batch["ref_azimuth"].to(views.azimuth.device)
        cond, _ = view_conditions(
            self._texture_conds, self.config.prompt, relative, views.elevation, self.texture_prompting
        )
        return cond, self._texture_conds[""]

    def guidance_inputs(
        self, outputs, batch, conditions: Optional[Callable] = None
    ) -> Tuple[Dict[str, Tensor], Tensor, Condition, Condition]:
        """What every stage's losses start from: the reference render, the random views' renders
        [B,3,H,W] and the (condition, null condition) for them of ``conditions(batch, views)``
        (default ``nvs_conditions``; the texture stage's: ``texture_conditions``)."""
        ref = self.render_reference(batch)
        images = outputs["rgb_views"].permute(0, 3, 1, 2)
        views = OrbitViews(batch["elevation"], batch["azimuth"], batch["distance"], batch["fov"])
        cond, uncond = (conditions or self.nvs_conditions)(batch, views)
        return ref, images, cond, uncond

    def bootstrap_orbit(self, batch: Dict[str, Tensor]) -> Tuple[OrbitViews, Tensor]:
        """The ``bootstrap_views`` views of a BSD round (CPU), evenly spaced in azimuth from the
        reference view at its elevation, distance and field of view, and their azimuths relative to
        the reference [N] (degrees)."""
        n = self.config.bootstrap_views
        offsets = torch.arange(n) * 360.0 / n
        elevation, azimuth, distance, fov = (
            batch[f"ref_{k}"].cpu() for k in ("elevation", "azimuth", "distance", "fov")
        )
        return OrbitViews(elevation.expand(n), azimuth + offsets, distance.expand(n), fov.expand(n)), offsets

    # ---- export ------------------------------------------------------------------------------
    def on_train_end(self) -> None:
        self.export()

    @torch.no_grad()
    def export(self) -> None:
        """``<run>/export/gaussians.ply`` and, from the geometry stage on, the final mesh
        ``<run>/export/mesh.glb`` (textured after the texture stage), written as ``studio export
        mesh --load-config`` writes it (``studio.export.result_mesh``)."""
        from nerfstudio.utils.rich_utils import CONSOLE

        from studio.export.ply import save_gaussians_ply
        from studio.export.result_mesh import save_result_mesh, state_mesh

        if self.config.stage_dir is None:
            return
        out = Path(self.config.stage_dir) / "export"
        out.mkdir(parents=True, exist_ok=True)
        save_gaussians_ply(out / "gaussians.ply", self.gaussians.activated().detach().to("cpu"))
        CONSOLE.print(f"Wrote {out / 'gaussians.ply'}")
        mesh = state_mesh(self.state_dict())
        if mesh is not None:
            save_result_mesh(out / "mesh.glb", mesh)
            CONSOLE.print(f"Wrote {out / 'mesh.glb'}")
