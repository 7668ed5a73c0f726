"""VP3D (Chen et al. CVPR 2024): text-to-3D with a 2D visual prompt and differentiable rewards.

1. **Visual prompt.** Without ``--visual-prompt``, ``visual_prompt_candidates`` images are sampled
   from the text prior (DDIM, ``visual_prompt_steps`` steps, CFG ``visual_prompt_guidance_scale``;
   ``studio.priors.sampling.sample``) and the one whose reward-model alignment with the prompt is
   highest is kept (our choice: VP3D draws one image from its text-to-image model); with
   ``--visual-prompt img.png`` the user's image (RGBA or RGB: mask and recentring of
   ``studio.data.single_image``) is the prompt: stylised text-to-3D. The prompt is made once, at the
   first training step, stored in the checkpoint (buffer ``visual_prompt_image``) and written to
   ``<run>/visual_prompt.png``. It is taken to be seen from ``visual_prompt_view`` (elevation,
   azimuth, distance; the front view; view words and relative poses are measured from it).
2. **VP-SDS** (``studio.guidance.VPSDS``): every step renders ``views_per_batch`` random orbit views
   and distils eps_u + s_t (eps_text - eps_u) + s_v (eps_img - eps_img_u): the text prior with the
   prompt, and a novel-view prior (``image_prior``: Zero123, or the embedded ``toy-nvs``) with the
   visual prompt and each view's pose relative to the prompt's camera.
3. **Rewards** (``studio.guidance.rewards.RewardGuidance``): ``alignment_weight (1 - cos(render,
   prompt))`` with an image-text model (``reward_model``: the embedded ``toy-clip`` or a local CLIP
   folder) and ``consistency_weight (1 - cos(features(render), features(visual prompt)))`` with
   ``consistency_model`` (``toy-vit`` mean-pooled features), back-propagated through the renders.

Stages (``StagedModel``, ``stage_iters``): **geometry** (VP-SDS with t ~ U(``t_range``), Gaussians
densified) then **appearance** (VP-SDS with t ~ U(``appearance_t_range``), smaller noise levels that
refine texture, plus the rewards). The geometry stage's end is saved as
``<run>/geometry.safetensors`` (Gaussians and the visual prompt); ``--load-stage`` resumes from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from studio.cameras.sampling import OrbitViews
from studio.guidance import VPSDS, UniformTimesteps, ViewPrompting, sample, view_conditions
from studio.guidance.rewards import (
    RewardGuidance,
    best_by_alignment,
    check_consistency_model,
    check_image_text_model,
)
from studio.io.errors import StudioInputError
from studio.io.inputs import Input, Kind
from studio.models.generation import GenerationModel, GenerationModelConfig
from studio.models.staged import Stage, StagedModel
from studio.priors import check_prior
from studio.priors.base import Condition
from studio.priors.diffusers import zero123_pose


@dataclass
class VP3DModelConfig(GenerationModelConfig):
    """``vp3d`` options; defaults are the ``full`` preset's (SD 2.1-base + Zero123), configs/vp3d.yaml overrides."""

    _target: Type = field(default_factory=lambda: VP3DModel)
    stage_names: ClassVar[Tuple[str, ...]] = ("geometry", "appearance")
    prompt: str = "a matte blue capsule"
    """Text prompt (``ns-train vp3d --prompt``)."""
    negative_prompt: str = ""
    """Text of the unconditional CFG branch."""
    visual_prompt: Optional[Path] = None
    """The visual prompt image (``--visual-prompt``; RGBA or RGB); None: sampled from the text prior."""
    prior: str = "sd-2.1-base"
    """Text-to-image prior (VP-SDS's text branch and the visual prompt's sampler): toy-t2i, sd-2.1-base, a path."""
    image_prior: str = "zero123"
    """Visual-prompt prior (VP-SDS's image branch): a novel-view prior, toy-nvs, zero123, stable-zero123, a path."""
    stage_iters: Tuple[int, int] = (5000, 5000)
    """Steps of the geometry and appearance stages."""
    text_guidance_scale: float = 100.0
    """s_t: CFG scale of the text branch (DreamFusion's 100 with Stable Diffusion)."""
    visual_guidance_scale: float = 5.0
    """s_v: scale of the visual-prompt branch (0: plain SDS with the text prior)."""
    weighting: Literal["sds", "uniform", "fantasia3d"] = "sds"
    """w(t) of the gradient."""
    t_range: Tuple[float, float] = (0.02, 0.98)
    """Geometry-stage timestep range (fractions of T)."""
    appearance_t_range: Tuple[float, float] = (0.02, 0.5)
    """Appearance-stage timestep range (fractions of T): lower noise levels refine texture."""
    alignment_weight: float = 1.0
    """Weight of the text-alignment reward (appearance stage; 0: off)."""
    consistency_weight: float = 1.0
    """Weight of the visual-consistency reward (appearance stage; 0: off)."""
    reward_model: str = "toy-clip"
    """Image-text model of the alignment reward and of the visual prompt's selection: toy-clip, a
    toy-clip .safetensors file or a local CLIP folder."""
    consistency_model: str = "toy-vit"
    """Feature model of the visual-consistency reward: toy-vit, a feature-model file, a DINOv2
    folder, or an image-text model (its image embeddings)."""
    visual_prompt_candidates: int = 4
    """Images sampled from the text prior; the best aligned with the prompt is the visual prompt."""
    visual_prompt_steps: int = 50
    """DDIM steps of each candidate."""
    visual_prompt_guidance_scale: float = 7.5
    """CFG scale of the candidates' sampling."""
    visual_prompt_seed: int = 0
    """Seed of the candidates' noise."""
    visual_prompt_view: Tuple[float, float, float] = (15.0, 0.0, 1.8)
    """Camera the visual prompt is taken to be seen from: elevation, azimuth (degrees), distance
    (as dreamcraft3d's reference view)."""
    border_ratio: float = 0.2
    """Empty border around a user image's recentred object (fraction of the image)."""
    view_dependent_prompt: Optional[bool] = None
    """Append view words to the prompt by azimuth from the visual prompt's (default: on for real
    text priors, off for toy ones)."""
    load_stage: Optional[Path] = None
    """Start from geometry.safetensors of an earlier run."""
    stage_dir: Optional[Path] = None
    """The run's folder (set by the trainer): visual_prompt.png and the stage file go there."""

    def inputs(self) -> List[Input]:
        """Prompt, visual prompt image, priors and reward models, checked before the run writes anything."""
        items = [
            Input("--prompt", Kind.PROMPT, self.prompt, required=True),
            Input("--visual-prompt", Kind.IMAGE, self.visual_prompt),
            Input("--pipeline.model.prior", Kind.PRIOR, self.prior, check=check_prior),
            Input("--pipeline.model.image-prior", Kind.PRIOR, self.image_prior, check=check_prior),
        ]
        if self.alignment_weight > 0 or (self.visual_prompt is None and self.visual_prompt_candidates > 1):
            items.append(
                Input("--pipeline.model.reward-model", Kind.PRIOR, self.reward_model, check=check_image_text_model)
            )
        if self.consistency_weight > 0:
            items.append(
                Input(
                    "--pipeline.model.consistency-model",
                    Kind.PRIOR,
                    self.consistency_model,
                    check=check_consistency_model,
                )
            )
        return items


class GeometryStage(Stage):
    """VP-SDS with t ~ U(``t_range``); Gaussians densified."""

    name = "geometry"

    def get_loss_dict(self, outputs, batch) -> Dict[str, Tensor]:
        model = self.model
        model.vp_sds.schedule = model.schedules[self.name]
        images = outputs["rgb_views"].permute(0, 3, 1, 2)
        cond, uncond, image_cond, image_uncond = model.conditions(batch)
        out = model.vp_sds(images, cond, uncond, image_cond, image_uncond, model.step)
        return {"loss_vpsds": out["loss_vpsds"]}

    def after_step(self, step: int) -> None:
        self.model.densify(step)

    def saved_tensors(self) -> Dict[str, Tensor]:
        model = self.model
        return {
            **{f"gaussians.{k}": v for k, v in model.gaussians.params.items()},
            "visual_prompt_image": model.visual_prompt(),
        }

    def load_tensors(self, tensors: Dict[str, Tensor]) -> None:
        model = self.model
        for k in list(model.gaussians.params.keys()):
            model.gaussians.params[k] = torch.nn.Parameter(tensors[f"gaussians.{k}"].clone())
        model.set_visual_prompt(tensors["visual_prompt_image"])


class AppearanceStage(GeometryStage):
    """VP-SDS at lower noise levels plus the differentiable rewards."""

    name = "appearance"

    def get_loss_dict(self, outputs, batch) -> Dict[str, Tensor]:
        losses = super().get_loss_dict(outputs, batch)
        model = self.model
        images = outputs["rgb_views"].permute(0, 3, 1, 2)
        rewards = model.rewards(images, model.config.prompt, model.visual_prompt())
        return {**losses, **{k: v for k, v in rewards.items() if k.startswith("loss_")}}

    def saved_tensors(self) -> None:
        return None


class VP3DModel(StagedModel, GenerationModel):
    """See module docstring."""

    config: VP3DModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        device = str(self.kwargs.get("device", "cpu"))
        text_prior = self.load_prior(cfg.prior)
        self.prompting = self._prompting(str(cfg.prior))
        prompts = self.prompting.all_prompts(cfg.prompt) if self.prompting is not None else [cfg.prompt]
        self._cond_cache: Dict[str, Condition] = self.embed_prompts(text_prior, prompts + [cfg.negative_prompt, ""])
        self.vp_sds = VPSDS(
            text_prior,
            self.load_prior(cfg.image_prior),
            text_scale=cfg.text_guidance_scale,
            visual_scale=cfg.visual_guidance_scale,
            weighting=cfg.weighting,
        )
        self.schedules = {
            "geometry": UniformTimesteps(*cfg.t_range),
            "appearance": UniformTimesteps(*cfg.appearance_t_range),
        }
        self.rewards = self._load_rewards(device)
        size = int(text_prior.image_size)
        self.register_buffer("visual_prompt_image", torch.ones(1, 3, size, size))
        self.register_buffer("visual_prompt_ready", torch.tensor(False))
        self._visual_prompt_written = False
        if cfg.visual_prompt is not None:
            self.set_visual_prompt(self._load_user_image(Path(cfg.visual_prompt), size))
        self.init_stages([GeometryStage(self), AppearanceStage(self)])

    def _prompting(self, prior: str) -> Optional[ViewPrompting]:
        vdp = self.config.view_dependent_prompt
        return ViewPrompting() if (vdp if vdp is not None else not prior.startswith("toy-")) else None

    def _load_rewards(self, device: str) -> RewardGuidance:
        """The reward models the run uses (none with both weights 0 and a given visual prompt)."""
        from studio.rewards import VisualConsistency, load_image_text_model

        cfg = self.config
        sampling = cfg.visual_prompt is None and cfg.visual_prompt_candidates > 1
        alignment = load_image_text_model(cfg.reward_model, device) if cfg.alignment_weight > 0 or sampling else None
        consistency = VisualConsistency(cfg.consistency_model, device) if cfg.consistency_weight > 0 else None
        return RewardGuidance(alignment, consistency, cfg.alignment_weight, cfg.consistency_weight)

    def _load_user_image(self, path: Path, size: int) -> Tensor:
        """The user's image, segmented and recentred on white (``load_reference``) -> [1,3,S,S]."""
        from studio.data.single_image import load_reference

        try:
            ref = load_reference(path, size, self.config.border_ratio)
        except StudioInputError as err:
            raise StudioInputError(f"--visual-prompt {path}: {err}") from None
        return torch.from_numpy(ref.rgb).float().permute(2, 0, 1)[None]

    # ---- the visual prompt -------------------------------------------------------------------
    def set_visual_prompt(self, image: Tensor) -> None:
        """Install ``image`` [1,3,S,S] in [0,1] as the visual prompt."""
        self.visual_prompt_image.copy_(image.to(self.visual_prompt_image))
        self.visual_prompt_ready.fill_(True)

    def visual_prompt(self) -> Tensor:
        """The visual prompt [1,3,S,S] in [0,1]; sampled at the first call of a run without one, and
        written to ``<run>/visual_prompt.png`` once per training process."""
        if not bool(self.visual_prompt_ready):
            self.set_visual_prompt(self.sample_visual_prompt())
        if not self._visual_prompt_written and self.config.stage_dir is not None:
            self.write_visual_prompt(Path(self.config.stage_dir) / "visual_prompt.png")
            self._visual_prompt_written = True
        return self.visual_prompt_image

    @torch.no_grad()
    def sample_visual_prompt(self) -> Tensor:
        """``visual_prompt_candidates`` DDIM samples of the text prior with the prompt; the one the
        reward model aligns best with the prompt, [1,3,S,S]."""
        from nerfstudio.utils.rich_utils import CONSOLE

        cfg, prior = self.config, self.vp_sds.text_prior
        generator = torch.Generator().manual_seed(int(cfg.visual_prompt_seed))
        n = max(1, int(cfg.visual_prompt_candidates))
        cond, uncond = self._cond_cache[cfg.prompt], self._cond_cache[cfg.negative_prompt]
        latents = sample(prior, n, cond, uncond, cfg.visual_prompt_guidance_scale, cfg.visual_prompt_steps, generator)
        images = prior.decode(latents).float().clamp(0.0, 1.0)
        best, scores = best_by_alignment(images, cfg.prompt, self.rewards.alignment_model)
        CONSOLE.print(f"Visual prompt: candidate {best} of {n} (alignment {[round(float(s), 3) for s in scores]})")
        return images[best : best + 1]

    def write_visual_prompt(self, path: Path) -> None:
        from PIL import Image

        from studio.io.atomic import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        img = (self.visual_prompt_image[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        with atomic_path(path) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")

    # ---- conditions --------------------------------------------------------------------------
    def conditions(self, batch: Dict[str, Tensor]) -> Tuple[Condition, Condition, Condition, Condition]:
        """(text condition [B,...], text null condition, image condition [B,...], image null
        condition) for the batch's views: the prompt (with view words by azimuth from the visual
        prompt's view, when on), and the visual prompt with each view's pose relative to its camera."""
        cfg = self.config
        views = OrbitViews(batch["elevation"], batch["azimuth"], batch["distance"], batch["fov"])
        elevation, azimuth, distance = cfg.visual_prompt_view
        cond, _ = view_conditions(
            self._cond_cache, cfg.prompt, views.azimuth - azimuth, views.elevation, self.prompting
        )
        prior = self.vp_sds.image_prior
        pose = zero123_pose(
            views.elevation,
            views.azimuth,
            views.distance,
            elevation,
            azimuth,
            distance,
            variant=getattr(prior, "pose_variant", "zero123"),
        )
        with torch.no_grad():
            image_cond = prior.condition(image=self.visual_prompt(), pose=pose.to(self.device))
        return cond, self._cond_cache[cfg.negative_prompt], image_cond, prior.unconditional(image_cond)

    # ---- rendering ---------------------------------------------------------------------------
    def render_outputs(self, camera: Cameras) -> Dict[str, Tensor]:
        return GenerationModel.get_outputs(self, camera)
