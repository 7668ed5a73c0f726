"""``splat-distill`` model: 3D-aware distillation of a 2D feature model through feed-forward Gaussians.

Splat and Distill (Shavin & Benaim, ICLR 2026), per training step and scene:

1. the frozen Gaussian predictor (:mod:`studio.lift`, MVSplat-style) turns the two context views
   into pixel-aligned Gaussians;
2. the **teacher** (an EMA of the student, initialised from the same 2D model) computes patch
   features of the context views; they are upsampled to pixels (``mask_aware``: normalised
   convolution with the patch coverage of the object, so background patches do not bleed into
   the object's border pixels: the paper's mask-aware upsampling) and assigned one-to-one to the
   Gaussians (:func:`studio.lift.lift_features`);
3. the lifted features are rasterized at a target view between the context views, at the student's
   input size, and averaged over each patch, weighted by the rendered alpha;
4. the **student** computes patch features of the target image (``blend > 0``: the target mixes in
   the teacher's own features of that image, our reading of the paper's semantic blending); the loss is the mean cosine
   distance ``1 - cos(f_student, f_rendered)`` (``loss="mse"``: squared error of L2-normalised
   features) over patches whose rendered alpha exceeds ``alpha_threshold``;
5. ``anchor > 0`` adds ``anchor (1 - cos(f_student, f_initial))`` over every patch of the target image
   (f_initial: the frozen initial model);
6. after the optimiser step the teacher follows the student: ``theta_t <- m theta_t + (1 - m) theta_s``.

Deviation: the paper distils with a DINO-style objective (prototype heads, centring); our heads-free
cosine objective keeps the student's feature space directly comparable to the teacher's, which the
probes and the exported plain 2D model need. ``lora_rank > 0`` trains LoRA adapters (peft) on the
ViT's attention and MLP projections instead of every weight.

``lifting="fit3d"`` is the FiT3D-style baseline (Yue et al., ECCV 2024): per scene, feature
Gaussians are optimised once against the *frozen* initial model's features of the views between one
fixed context pair (``fit3d_steps`` Adam steps, same geometry from the predictor), then the student
is fine-tuned towards their renders; the teacher stays frozen (no EMA).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from torch import Tensor

from studio.features.base import FeatureModel
from studio.features.registry import check_feature_model, load_feature_model
from studio.io.inputs import Input, Kind
from studio.lift import PixelGaussians, lift_features, load_predictor, render, render_features
from studio.lift.gaussians import DEFAULT_EPS2D
from studio.lift.pca import pca_basis, pca_colors

LORA_TARGETS = ("qkv", "proj", "mlp.0", "mlp.2")
"""Linear layers of :class:`studio.features.vit.ToyViT` that get LoRA adapters."""
FROZEN_MODULES = ("predictor", "initial")
"""Submodules rebuilt from their files, kept out of checkpoints."""


@dataclass
class SplatDistillModelConfig(ModelConfig):
    """See the module docstring."""

    _target: Type = field(default_factory=lambda: SplatDistillModel)
    teacher: str = "toy-vit"
    """The 2D feature model to make 3D-aware: an embedded name, a .safetensors file or a local DINOv2
    folder; the student starts from it and the teacher is its EMA."""
    predictor: str = ""
    """Gaussian-predictor weights (.safetensors; empty: the embedded studio/lift/weights/mvsplat-toy)."""
    lifting: Literal["feedforward", "fit3d"] = "feedforward"
    """feedforward (Splat and Distill) or fit3d (per-scene optimised feature Gaussians, frozen teacher)."""
    ema_momentum: float = 0.9995
    """Teacher EMA momentum m per step (fit3d: the teacher stays frozen); chosen on the validation
    scenes among 0.99, 0.999 and 0.9995 (methods/splat_distill/README.md)."""
    mask_aware: bool = True
    """Upsample teacher features by normalised convolution with the object's patch coverage."""
    alpha_threshold: float = 0.5
    """Patches whose rendered alpha is below this are left out of the loss."""
    loss: Literal["cosine", "mse"] = "cosine"
    blend: float = 0.0
    """Weight b of the teacher's own features of the target image in the student's target
    ``(1 - b) splatted + b teacher(target)`` on covered patches (our reading of the paper's semantic
    blending, a regulariser that keeps 2D detail; 0: splatted features only)."""
    anchor: float = 0.2
    """Weight a of the anchor term ``a (1 - cos(f_student, f_initial))`` over every patch of the
    target image, f_initial the frozen initial model's features (0: off). Our substitute for the
    collapse prevention of the paper's DINO objective (centring, sharpening), which the heads-free
    cosine objective lacks; 0.2 chosen on the validation scenes among 0, 0.2, 0.5 and 1."""
    lora_rank: int = 0
    """0: fine-tune every weight of the student; r > 0: LoRA adapters of rank r only."""
    lora_alpha: float = 16.0
    fit3d_steps: int = 100
    """fit3d: Adam steps of each scene's feature optimisation."""
    fit3d_lr: float = 0.05
    eps2d: float = DEFAULT_EPS2D
    """Screen-space dilation of the feature rasterization (pixel^2), as the predictor was trained."""

    def inputs(self) -> List[Input]:
        return [
            Input("--pipeline.model.teacher", Kind.PRIOR, self.teacher, check=check_feature_model),
            Input("--pipeline.model.predictor", Kind.SAFETENSORS, self.predictor or None),
        ]


def pool_patches(features: Tensor, alpha: Tensor, patch: int) -> Tuple[Tensor, Tensor]:
    """Rendered [M,H,W,D] features and [M,H,W,1] alpha -> alpha-weighted patch means [M,D,H/p,W/p]
    and patch alpha [M,1,H/p,W/p] (features rendered on a zero background, so the weighted mean
    is ``sum f / sum alpha``)."""
    f = F.avg_pool2d(features.permute(0, 3, 1, 2), patch)
    a = F.avg_pool2d(alpha.permute(0, 3, 1, 2), patch)
    return f / a.clamp(min=1e-6), a


def upsample_masked(features: Tensor, alpha: Tensor, patch: int) -> Tensor:
    """Mask-aware upsampling: [M,D,h,w] patch features and [M,1,H,W] pixel coverage -> [M,D,H,W],
    ``up(f * c) / up(c)`` with ``c`` the object coverage of each patch, on object pixels (plain
    bilinear where a pixel's neighbourhood holds no object)."""
    H, W = alpha.shape[-2:]
    cover = F.avg_pool2d(alpha, patch)
    up = lambda t: F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)  # noqa: E731
    num, den = up(features * cover), up(cover)
    plain = up(features)
    return torch.where((den > 1e-3) & (alpha > 0.5), num / den.clamp(min=1e-3), plain)


class SplatDistillModel(Model):
    """See the module docstring. ``get_outputs`` takes a batch of
    :class:`~studio.methods.splat_distill.datamanager.SceneSetDataManager`, or a Nerfstudio camera
    (the viewer): then the lifted Gaussians of the last batch's first scene, PCA-coloured."""

    config: SplatDistillModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        self.predictor = load_predictor(cfg.predictor or None).requires_grad_(False)
        self.student: FeatureModel = load_feature_model(cfg.teacher)
        if cfg.lora_rank > 0:
            from peft import LoraConfig, inject_adapter_in_model

            self.student.requires_grad_(False)
            lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=list(LORA_TARGETS))
            self.student = inject_adapter_in_model(lora, self.student)
        self.teacher: FeatureModel = copy.deepcopy(self.student).requires_grad_(False).eval()
        if cfg.anchor > 0:
            self.initial: FeatureModel = load_feature_model(cfg.teacher).requires_grad_(False).eval()
        self.fit3d_cache: Dict[int, Tensor] = {}
        """Scene index -> FiT3D-style optimised features [1,N,D]."""
        self.preview: Optional[Tuple[PixelGaussians, Tensor]] = None
        """First scene of the last batch: Gaussians (B = 1) and their lifted features [1,N,D]."""
        self._preview_colors: Optional[Tensor] = None
        self.collider = None

    # ---- parameters, EMA ------------------------------------------------------------------------
    def get_param_groups(self) -> Dict[str, List[torch.nn.Parameter]]:
        return {"student": [p for p in self.student.parameters() if p.requires_grad]}

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):  # type: ignore[override]
        """The student and the teacher; the frozen predictor and initial model stay out (rebuilt from their files)."""
        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        for key in [k for k in state if k.startswith(tuple(f"{prefix}{name}." for name in FROZEN_MODULES))]:
            state.pop(key)
        return state

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):  # type: ignore[override]
        state_dict = dict(state_dict)
        for name in FROZEN_MODULES:
            if hasattr(self, name):
                for key, value in getattr(self, name).state_dict().items():
                    state_dict.setdefault(f"{name}.{key}", value)
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    @torch.no_grad()
    def update_teacher(self) -> None:
        """``theta_t <- m theta_t + (1 - m) theta_s`` over the trainable parameters."""
        m = self.config.ema_momentum
        t_params = dict(self.teacher.named_parameters())
        for name, p in self.student.named_parameters():
            if p.requires_grad:
                t_params[name].mul_(m).add_(p.detach(), alpha=1.0 - m)

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        if self.config.lifting == "fit3d":
            return []
        return [TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], lambda step: self.update_teacher())]

    def plain_model(self, which: Literal["student", "teacher"] = "student") -> FeatureModel:
        """The student (or the EMA teacher) as a plain 2D feature model: LoRA adapters merged into
        the weights (``W + B A * alpha / r``), in eval mode on the CPU."""
        net = self.student if which == "student" else self.teacher
        plain = load_feature_model(self.config.teacher)
        state = {k: v.detach().float().cpu() for k, v in net.state_dict().items()}
        merged = {}
        for key in plain.state_dict():
            stem, _, leaf = key.rpartition(".")
            base = f"{stem}.base_layer.{leaf}"
            if base not in state:
                merged[key] = state[key]
                continue
            value = state[base]
            if leaf == "weight" and f"{stem}.lora_A.default.weight" in state:
                a, b = state[f"{stem}.lora_A.default.weight"], state[f"{stem}.lora_B.default.weight"]
                value = value + (b @ a) * (self.config.lora_alpha / self.config.lora_rank)
            merged[key] = value
        plain.load_state_dict(merged)
        return plain.eval()

    # ---- lifting --------------------------------------------------------------------------------
    def features(self, model: FeatureModel, images: Tensor) -> Tensor:
        """[M,3,H,W] in [0,1] -> [M,D,h,w] patch features at the model's input size."""
        return model(model.prepare(images))

    def input_size(self) -> int:
        """Side of the square images the student sees (its ``prepare`` size)."""
        return int(self.student.image_size)

    def scaled_Ks(self, Ks: Tensor, from_size: int) -> Tensor:
        s = self.input_size() / from_size
        return torch.cat([Ks[..., :2, :] * s, Ks[..., 2:, :]], dim=-2)

    @torch.no_grad()
    def lift(self, images: Tensor, alpha: Tensor, gaussians: PixelGaussians) -> Tensor:
        """Teacher features of ``images`` [B,V,3,H,W] (coverage ``alpha`` [B,V,1,H,W]) on the
        pixel-aligned ``gaussians`` -> [B,N,D]."""
        B, V, _, H, W = images.shape
        f = self.features(self.teacher, images.flatten(0, 1))  # [BV,D,h,w]
        if self.config.mask_aware:
            f = upsample_masked(f, alpha.flatten(0, 1), H // f.shape[-1])
        else:
            f = F.interpolate(f, size=(H, W), mode="bilinear", align_corners=False)
        return lift_features(f.reshape(B, V, *f.shape[1:]), gaussians)

    @torch.no_grad()
    def gaussians(self, batch: Dict[str, Tensor]) -> PixelGaussians:
        """The frozen predictor's Gaussians of the batch's context views."""
        return self.predictor(
            batch["context_images"], batch["context_viewmats"], batch["context_Ks"], batch["near"], batch["far"]
        )

    def render_targets(self, gaussians: PixelGaussians, lifted: Tensor, viewmats: Tensor, Ks: Tensor, size: int):
        """Lifted features at the target cameras [B,T,4,4] / [B,T,3,3] (at ``size`` pixels) ->
        patch means [B*T,D,h,w] and patch alpha [B*T,1,h,w] at the student's input size."""
        r = self.input_size()
        out = render_features(gaussians, lifted, viewmats, self.scaled_Ks(Ks, size), r, r, eps2d=self.config.eps2d)
        return pool_patches(out.color.flatten(0, 1), out.alpha.flatten(0, 1), self.student.patch_size)

    def fit3d_features(self, batch: Dict[str, Tensor], b: int, gaussians: PixelGaussians) -> Tensor:
        """FiT3D-style per-scene features [1,N,D] of scene item ``b`` (cached by scene index): the lifted
        teacher features optimised so their renders match the frozen teacher on the ``fit_*`` views."""
        key = int(batch["scene"][b])
        if key in self.fit3d_cache:
            return self.fit3d_cache[key]
        g = gaussians.map(lambda t: t[b : b + 1])
        item = {k: v[b : b + 1] for k, v in batch.items()}
        size = item["fit_images"].shape[-1]
        with torch.no_grad():
            target = self.features(self.teacher, item["fit_images"].flatten(0, 1))  # [F,D,h,w]
        with torch.enable_grad():
            feats = self.lift(item["context_images"], item["context_alpha"], g).clone().requires_grad_(True)
            opt = torch.optim.Adam([feats], lr=self.config.fit3d_lr)
            for _ in range(self.config.fit3d_steps):
                pred, a = self.render_targets(g, feats, item["fit_viewmats"], item["fit_Ks"], size)
                loss = self.distill_loss(pred, target, a)
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.fit3d_cache[key] = feats.detach()
        return self.fit3d_cache[key]

    # ---- Nerfstudio interface -------------------------------------------------------------------
    def get_outputs(self, batch) -> Dict[str, Tensor]:  # type: ignore[override]
        if isinstance(batch, Cameras):
            return self.render_preview(batch)
        gaussians, lifted = self.set_preview(batch)
        size = batch["target_images"].shape[-1]
        target, alpha = self.render_targets(gaussians, lifted, batch["target_viewmats"], batch["target_Ks"], size)
        if self.config.blend > 0:
            with torch.no_grad():
                own = self.features(self.teacher, batch["target_images"].flatten(0, 1))
            target = (1.0 - self.config.blend) * target + self.config.blend * own
        student = self.features(self.student, batch["target_images"].flatten(0, 1))
        outputs = {"student": student, "target": target.detach(), "target_alpha": alpha.detach()}
        if self.config.anchor > 0:
            with torch.no_grad():
                outputs["initial"] = self.features(self.initial, batch["target_images"].flatten(0, 1))
        return outputs

    def set_preview(self, batch: Dict[str, Tensor]) -> Tuple[PixelGaussians, Tensor]:
        """Gaussians and lifted teacher features [B,N,D] of a batch; the first scene's become the
        viewer's preview (:meth:`render_preview`)."""
        gaussians = self.gaussians(batch)
        if self.config.lifting == "fit3d":
            lifted = torch.cat([self.fit3d_features(batch, b, gaussians) for b in range(gaussians.batch_size)])
        else:
            lifted = self.lift(batch["context_images"], batch["context_alpha"], gaussians)
        self.preview = (gaussians.map(lambda t: t[:1].detach()), lifted[:1].detach())
        self._preview_colors = None  # PCA colours are computed when the preview is first rendered
        return gaussians, lifted

    def preview_colors(self) -> Tensor:
        """PCA colours [1,N,3] of the preview's lifted features (computed once per preview)."""
        if self._preview_colors is None:
            feats = self.preview[1][0]
            self._preview_colors = pca_colors(feats, pca_basis(feats))[None]
        return self._preview_colors

    def distill_loss(self, student: Tensor, target: Tensor, alpha: Tensor) -> Tensor:
        """Masked distance of [M,D,h,w] feature maps over patches with ``alpha`` [M,1,h,w] above the threshold."""
        mask = (alpha[:, 0] > self.config.alpha_threshold).float()
        if self.config.loss == "cosine":
            dist = 1.0 - F.cosine_similarity(student, target, dim=1)
        else:
            dist = (F.normalize(student, dim=1) - F.normalize(target, dim=1)).pow(2).sum(1)
        return (dist * mask).sum() / mask.sum().clamp(min=1.0)

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        losses = {"distill_loss": self.distill_loss(outputs["student"], outputs["target"], outputs["target_alpha"])}
        if "initial" in outputs:
            distance = 1.0 - F.cosine_similarity(outputs["student"], outputs["initial"], dim=1)
            losses["anchor_loss"] = self.config.anchor * distance.mean()
        return losses

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        mask = outputs["target_alpha"][:, 0] > self.config.alpha_threshold
        cos = F.cosine_similarity(outputs["student"].detach(), outputs["target"], dim=1)
        return {
            "cosine": cos[mask].mean() if mask.any() else cos.new_zeros(()),
            "mask_fraction": mask.float().mean(),
        }

    @torch.no_grad()
    def get_outputs_for_camera(self, camera, obb_box=None) -> Dict[str, Tensor]:  # type: ignore[override]
        return self.get_outputs(camera)

    @torch.no_grad()
    def render_preview(self, camera: Cameras) -> Dict[str, Tensor]:
        """The last batch's first scene seen from ``camera``: ``rgb`` = the Gaussians' colours,
        ``features_pca`` = their lifted teacher features in PCA colours, ``accumulation``, ``depth``."""
        from studio.cameras.nerfstudio import cameras_to_viewmats

        viewmats, Ks, W, H = cameras_to_viewmats(camera.to(self.device))
        if self.preview is None:
            blank = torch.ones(H, W, 3, device=self.device)
            return {"rgb": blank, "features_pca": blank, "accumulation": blank[..., :1], "depth": blank[..., :1]}
        g = self.preview[0]
        colors = torch.cat([g.colors, self.preview_colors()], -1)  # [1,N,6]
        white = torch.ones(6, device=self.device)
        out = render(
            g, viewmats[None, :1], Ks[None, :1], W, H, colors=colors, background=white, eps2d=self.config.eps2d
        )
        color = out.color[0, 0]
        return {
            "rgb": color[..., :3],
            "features_pca": color[..., 3:],
            "accumulation": out.alpha[0, 0],
            "depth": out.depth[0, 0],
        }

    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """``outputs``: :meth:`render_preview` of the batch's first target camera. Returns the masked
        cosine between student and splatted teacher features, and an image: the target view, the
        lifted Gaussians rendered there in PCA colours, then the splatted teacher and the student
        patch features (PCA, one basis), all at the view's size."""
        with torch.no_grad():
            out = self.get_outputs(batch)  # also makes the batch's first scene the preview
            view = self.render_preview_batch(batch)
        target, student = out["target"][0], out["student"][0]  # [D,h,w]
        basis = pca_basis(torch.cat([target.flatten(1), student.flatten(1)], 1).T)
        size = batch["target_images"].shape[-2:]
        maps = [pca_colors(x.permute(1, 2, 0), basis).permute(2, 0, 1)[None] for x in (target, student)]
        maps = [F.interpolate(m, size=size, mode="nearest")[0].permute(1, 2, 0) for m in maps]
        image = torch.cat([batch["target_images"][0, 0].permute(1, 2, 0), view, *maps], dim=1)
        return {"cosine": float(self.get_metrics_dict(out, batch)["cosine"])}, {"features": image}

    def render_preview_batch(self, batch: Dict[str, Tensor]) -> Tensor:
        """The preview's PCA colours at the batch's first target camera, [H,W,3] at its size."""
        pca = self.preview_colors()
        H, W = batch["target_images"].shape[-2:]
        vm, K = batch["target_viewmats"][:1, :1], batch["target_Ks"][:1, :1]
        white = torch.ones(3, device=pca.device)
        return render(self.preview[0], vm, K, W, H, colors=pca, background=white, eps2d=self.config.eps2d).color[0, 0]
