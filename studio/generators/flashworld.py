"""FlashWorld at toy scale: one multi-view denoiser, two modes sharing its forward pass.

Li et al., "FlashWorld: High-quality 3D Scene Generation within Seconds" (2025), Sec. 3:

* **MV-oriented mode**: the network (``toy-mv``, :class:`~studio.priors.toy_mv.ToyMVPrior`)
  denoises V views of a scene jointly, conditioned on their cameras (Plücker raymaps), an image
  (view 0) and/or a caption.
* **3D-oriented mode**: a Gaussian head (:class:`~studio.generators.gaussian_head.GaussianHead`) on
  the same forward pass's decoder features predicts pixel-aligned 3D Gaussians; their renders at
  the V cameras are the mode's clean-image estimate, so it is a denoiser too, one whose outputs are
  3D-consistent by construction.
* **Inference in k steps** (:meth:`FlashWorld.generate`): x_T ~ N(0, I); at each step the 3D mode
  predicts Gaussians, their renders are re-noised to the next timestep; the last step's Gaussians
  are the result (k = 1: one forward pass).
* **Teacher** (:meth:`FlashWorld.teacher`): the MV mode sampled with DDIM and classifier-free
  guidance, then reconstructed by the 3D mode at t = 0 from the generated views.

Cameras are in the normalised scene frame (:mod:`studio.cameras.normalize`); images in [0,1] with a
white background (the ToyWorld convention); model space [-1,1].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor, nn

from studio.cameras.normalize import SceneFrame
from studio.cameras.rays import plucker_raymaps
from studio.gaussians import Gaussians, rgb_to_sh
from studio.generators.gaussian_head import GaussianHead
from studio.lift.gaussians import PixelGaussians, render
from studio.priors.base import Condition
from studio.priors.sampling import ddim
from studio.priors.toy_mv import ToyMVPrior

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "flashworld-toy.safetensors"
"""The embedded student (cross-mode post-trained)."""
TEACHER_WEIGHTS = Path(__file__).resolve().parents[1] / "priors" / "weights" / "toy-mv.safetensors"
"""The embedded dual-mode model ``toy-mv``: the frozen MV-mode teacher of the post-training."""


def step_timesteps(steps: int, T: int) -> list[int]:
    """The k timesteps of k-step generation: ``T-1`` then evenly spaced down (1: [T-1]; 4: [999, 749, 499, 249])."""
    return [round((T - 1) - i * T / steps) for i in range(steps)]


class FlashWorld(nn.Module):
    """The two-mode generator (see the module docstring): ``prior`` (the MV mode) + ``head``."""

    def __init__(self, prior: ToyMVPrior, head: Optional[GaussianHead] = None, head_config: Optional[dict] = None):
        super().__init__()
        self.prior = prior
        self.head_config = dict(head_config or {})
        self.head = head if head is not None else GaussianHead(prior.config["arch"]["channels"][0], **self.head_config)

    @property
    def res(self) -> int:
        return self.prior.image_size

    def condition(
        self, viewmats: Tensor, Ks: Tensor, image: Optional[Tensor] = None, text=None, keyframes: Optional[dict] = None
    ) -> Condition:
        """The condition of normalised-frame cameras ``viewmats`` [B,V,4,4] / ``Ks`` [B,V,3,3]
        (pixels of res x res), an optional view-0 image [B,3,H,W] in [0,1] (or given views
        ``keyframes``: view index -> [B,3,H,W], see :meth:`ToyMVPrior.condition`) and caption(s)."""
        pose = plucker_raymaps(viewmats, Ks, self.res, self.res)
        return self.prior.condition(text=text, image=image, pose=pose, keyframes=keyframes)

    def denoise(self, x_t: Tensor, t: Tensor, cond: Condition, viewmats: Tensor, Ks: Tensor):
        """One shared forward pass -> (MV-mode output [B,V,3,h,w] in the prior's prediction type,
        its clean estimate x0 [B,V,3,h,w], the 3D mode's Gaussians)."""
        out, feats = self.prior.forward_features(x_t, t, cond)
        x0 = self.clean_estimate(x_t, t, out, cond)
        return out, x0, self.head(feats, x0, cond.expand(x_t.shape[0]).tensors["pose"], viewmats, Ks)

    def clean_estimate(self, x_t: Tensor, t: Tensor, out: Tensor, cond: Condition) -> Tensor:
        """The MV mode's x0 [B,V,3,h,w] of network output ``out`` at ``x_t``, ``t``: clamped to
        [-1, 1], the views ``cond`` gives replaced by their images."""
        return self.with_given(self.prior.to_x0(x_t, t, out).clamp(-1.0, 1.0), cond)

    @staticmethod
    def with_given(x0: Tensor, cond: Condition) -> Tensor:
        """``x0`` [B,V,3,h,w] (model space) with the views ``cond`` gives replaced by their images."""
        c = cond.expand(x0.shape[0]).tensors
        given = c["ref_mask"].to(x0)[:, :, None, None, None]
        return given * c["refs"].to(x0) + (1 - given) * x0

    forward = denoise

    def render(self, gaussians: PixelGaussians, viewmats: Tensor, Ks: Tensor) -> Tensor:
        """[B,C,3,res,res] renders in [0,1] on white at cameras ``viewmats`` [B,C,4,4] / ``Ks``."""
        return self.render_rgba(gaussians, viewmats, Ks)[:, :, :3]

    def render_rgba(self, gaussians: PixelGaussians, viewmats: Tensor, Ks: Tensor) -> Tensor:
        """[B,C,4,res,res]: the renders of :meth:`render` and their alpha."""
        white = torch.ones(3, dtype=gaussians.colors.dtype, device=gaussians.colors.device)
        out = render(gaussians, viewmats, Ks, self.res, self.res, background=white)
        return torch.cat([out.color, out.alpha], -1).permute(0, 1, 4, 2, 3)

    def generate(
        self, cond: Condition, viewmats: Tensor, Ks: Tensor, steps: int = 1, generator: Optional[torch.Generator] = None
    ) -> PixelGaussians:
        """k-step 3D-mode generation (see the module docstring): Gaussians of ``cond``'s scene."""
        x = self.input_at(cond, viewmats, Ks, steps, steps - 1, generator)
        last = step_timesteps(steps, self.prior.num_train_timesteps)[-1]
        return self.denoise(x, torch.full((x.shape[0],), last, dtype=torch.long, device=x.device), cond, viewmats, Ks)[
            2
        ]

    @torch.no_grad()
    def input_at(
        self, cond: Condition, viewmats: Tensor, Ks: Tensor, steps: int, i: int, generator: Optional[torch.Generator]
    ) -> Tensor:
        """The input [B,V,3,h,w] of step ``i`` of ``steps``-step generation: noise, then ``i`` steps
        (3D-mode Gaussians, rendered at the cameras, re-noised to the next timestep), without
        gradient (also DMD2's backward simulation of a student's later steps)."""
        B = cond.batch_size
        ts = step_timesteps(steps, self.prior.num_train_timesteps)
        x = torch.randn((B, viewmats.shape[1], *self.prior.latent_shape[1:]), generator=generator).to(viewmats.device)
        for j in range(i):
            t = torch.full((B,), ts[j], dtype=torch.long, device=x.device)
            x0 = self.render(self.denoise(x, t, cond, viewmats, Ks)[2], viewmats, Ks) * 2.0 - 1.0
            t_next = torch.full((B,), ts[j + 1], dtype=torch.long, device=x.device)
            x = self.prior.add_noise(x0, torch.randn(x0.shape, generator=generator).to(x0), t_next)
        return x

    def teacher(
        self,
        cond: Condition,
        viewmats: Tensor,
        Ks: Tensor,
        steps: int = 50,
        guidance_scale: float = 3.0,
        generator: Optional[torch.Generator] = None,
    ) -> tuple[PixelGaussians, Tensor]:
        """MV mode by DDIM with CFG, then 3D-mode reconstruction at t = 0: (Gaussians, the
        generated views [B,V,3,res,res] in [0,1])."""
        B, V = viewmats.shape[:2]
        prior = self.prior
        x_T = torch.randn((B, V, *prior.latent_shape[1:]), generator=generator).to(viewmats.device)
        t_T = torch.full((B,), prior.num_train_timesteps - 1, dtype=torch.long, device=x_T.device)
        uncond = prior.unconditional(cond) if guidance_scale != 1.0 else None
        x0 = ddim(prior, x_T, t_T, cond, uncond, guidance_scale, steps, clamp_x0=True, generator=generator)
        zero = torch.zeros(B, dtype=torch.long, device=x0.device)
        _, x0_views, gaussians = self.denoise(x0, zero, cond, viewmats, Ks)
        return gaussians, prior.decode(x0_views)


def default_cameras(
    views: int = 4, res: int = 32, fov_deg: float = 40.0, elevation_deg: float = 20.0, span_deg: float = 60.0
):
    """Cameras of generation without a camera file: ``views`` views on an arc of ``span_deg``
    azimuth at ``elevation_deg`` around the origin (z up), unit distance (the normalised frame of
    the training orbits). Returns ``viewmats`` [V,4,4] (OpenCV) and ``Ks`` [V,3,3] (pixels of res x res)."""
    import math

    from studio.cameras.convert import intrinsics_from_fov
    from studio.cameras.paths import look_at

    el = math.radians(elevation_deg)
    mats = []
    for i in range(views):
        az = math.radians(span_deg * i / max(views - 1, 1))
        eye = torch.tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        mats.append(look_at(eye, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])))
    return torch.stack(mats), intrinsics_from_fov(fov_deg, res, res).expand(views, 3, 3).clone()


def world_gaussians(gaussians: PixelGaussians, frame: Optional[SceneFrame] = None, b: int = 0) -> Gaussians:
    """Batch item ``b`` as plain :class:`studio.gaussians.Gaussians` (SH degree 0), mapped from the
    normalised scene frame back to the world of ``frame`` (``p = center + scale * p_n``; scales too)."""
    means, scales = gaussians.means[b], gaussians.scales[b]
    if frame is not None:
        means = frame.center[b] + frame.scale[b] * means
        scales = frame.scale[b] * scales
    return Gaussians(
        means=means.detach(),
        quats=gaussians.quats[b].detach(),
        scales=scales.detach(),
        opacities=gaussians.opacities[b].detach(),
        sh=rgb_to_sh(gaussians.colors[b].detach())[:, None, :],
    )


def save_flashworld(
    model: FlashWorld, path: Union[str, Path], extra: Optional[dict] = None, kind: str = "flashworld"
) -> Path:
    """Write ``model`` (fp16 weights, config in the metadata) to ``path`` atomically.

    ``kind="flashworld"``: tensors ``prior.*`` and ``head.*``. ``kind="toy-mv"``: the file of the
    ``toy-mv`` prior (:func:`studio.priors.toy.load_toy_prior` reads it: the prior's own tensors and
    config), which also carries the Gaussian head as ``head.*`` for :func:`load_flashworld`."""
    from safetensors.torch import save_file

    from studio.io import atomic_path, atomic_write_text
    from studio.priors.toy import FORMAT_VERSION

    path = Path(path)
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    if kind == "toy-mv":
        cfg = {**model.prior.config, "kind": "toy-mv", "format_version": FORMAT_VERSION, "head": model.head_config}
        previous = cfg.get("training")  # a run that started from another file keeps that file's record
        cfg["training"] = {**(extra or {}), **({"previous": previous} if previous else {})}
        state = {k.removeprefix("prior."): v for k, v in state.items()}
    else:
        cfg = {"kind": "flashworld", "prior": model.prior.config, "head": model.head_config, "training": extra or {}}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"studio_config": json.dumps(cfg), "format": "pt"})
    atomic_write_text(path.with_suffix(".json"), json.dumps(cfg, indent=1) + "\n")
    return path


def load_flashworld(path: Union[str, Path, None] = None, device: Union[str, torch.device] = "cpu") -> FlashWorld:
    """A :class:`FlashWorld` from a FlashWorld or ``toy-mv`` file (default: the embedded student),
    float32, eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from studio.io.errors import StudioInputError

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise StudioInputError(f"No FlashWorld weights at {path}; train them with `python -m studio.generators.train`.")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("studio_config", "{}"))
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    if meta.get("kind") == "toy-mv":
        prior_config = {k: v for k, v in meta.items() if k != "head"}
        state = {k if k.startswith("head.") else f"prior.{k}": v for k, v in state.items()}
    elif meta.get("kind") == "flashworld":
        prior_config = meta["prior"]
    else:
        raise StudioInputError(f"{path} is neither a FlashWorld nor a toy-mv weights file.")
    if not any(k.startswith("head.") for k in state):
        raise StudioInputError(f"{path} has no Gaussian head (a toy-mv file from dual-mode training has one).")
    model = FlashWorld(ToyMVPrior(prior_config), head_config=meta.get("head"))
    model.load_state_dict(state)
    return model.to(device).eval()
