"""Variational Score Distillation (ProlificDreamer, Wang et al. 2023; the one-step generator
distillation of SwiftBrush, Nguyen & Tran 2024, uses the same gradient).

The rendered images are treated as samples of a distribution q; VSD (ProlificDreamer Eq. 9)
follows

    grad_theta L_VSD = E_{t, eps, c}[ w(t) (eps_pretrained(x_t; y, t) - eps_phi(x_t; y, t, c)) dx/dtheta ],

where eps_pretrained is the frozen prior with classifier-free guidance and eps_phi, the "fake
score", is a copy of the prior (LoRA in the paper; ``prior.clone_trainable()`` here) conditioned
on the camera c and trained on the current renders with the ordinary denoising loss (Eq. 8):

    min_phi E_{t, eps}[ || out_phi(alpha_t x + sigma_t eps; y, t, c) - target(x, eps, t) ||^2 ],

with t ~ U over the whole range and the camera dropped (zeroed) 10% of the time so the fake score
also models the camera-free distribution (ProlificDreamer's released code, threestudio's
``lora_cfg_training``). The fake score is evaluated at guidance 1 on its own condition
(``fake_cond``: the released code gives it the view-independent prompt).

The camera is a ``"camera"`` tensor [B, 16] (e.g. a flattened camera-to-world matrix) added to the
fake score's condition; priors without a camera input ignore it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from studio.guidance.schedules import StepValue, TimestepSchedule, UniformTimesteps
from studio.guidance.sds import Weighting, clip_gradient, model_latents, sds_weight, surrogate_loss
from studio.priors.base import Condition, DiffusionPrior, freeze
from studio.priors.sampling import guided_output


def with_camera(cond: Condition, batch: int, camera: Tensor | None) -> Condition:
    """``cond`` expanded to ``batch`` with the field ``"camera"`` [B, P] set (when given)."""
    out = cond.expand(batch)
    if camera is None:
        return out
    return Condition({**out.tensors, "camera": camera.reshape(batch, -1)})


def sample_timesteps(T: int, batch: int, t_range: Sequence[float], generator: torch.Generator | None, device) -> Tensor:
    """t ~ U{int(T lo), ..., int(T hi) - 1} (hi = 1 gives the whole range [0, T-1])."""
    lo, hi = int(T * t_range[0]), max(int(T * t_range[1]), int(T * t_range[0]) + 1)
    return torch.randint(lo, min(hi, T), (batch,), generator=generator).to(device)


def denoising_loss(
    model: DiffusionPrior, x0: Tensor, cond: Condition, t: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """The diffusion training loss mean || model(x_t) - training_target ||^2 at timesteps ``t``
    (DDPM Eq. 14 in ``model.prediction_type``): what fine-tuned copies (VSD's fake score, BSD's
    bootstrapped prior) are trained with. ``x0`` [B,C,h,w] in model space, ``cond`` of batch 1/B."""
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = model.add_noise(x0, eps, t)
    out = model.predict(x_t, t, cond.expand(x0.shape[0]))
    return ((out - model.training_target(x0, eps, t)) ** 2).mean()


def drop_camera(camera: Tensor | None, p: float, generator: torch.Generator | None = None) -> Tensor | None:
    """``camera`` [B, P] with each row zeroed with probability ``p`` (the fake score's CFG training)."""
    if camera is None or p <= 0.0:
        return camera
    keep = torch.rand(camera.shape[0], generator=generator).to(camera.device) >= p
    return camera * keep[:, None].to(camera.dtype)


def fake_score_loss(
    fake: DiffusionPrior,
    x0: Tensor,
    cond: Condition,
    camera: Tensor | None = None,
    t_range: Sequence[float] = (0.0, 1.0),
    camera_dropout: float = 0.1,
    timestep_samples: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Denoising loss of a fake (render-distribution) score on ``x0`` [B,C,h,w] (detached), each
    image at ``timestep_samples`` timesteps t ~ U over ``t_range`` (fractions of T), the camera
    [B, P] dropped per row with probability ``camera_dropout``."""
    n, B0 = timestep_samples, x0.shape[0]
    x0 = x0.detach().repeat(n, *([1] * (x0.dim() - 1)))
    c = cond.expand(B0)
    c = Condition({k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in c.tensors.items()})
    camera = drop_camera(camera.repeat(n, 1) if camera is not None else None, camera_dropout, generator)
    t = sample_timesteps(fake.num_train_timesteps, n * B0, t_range, generator, x0.device)
    return denoising_loss(fake, x0, with_camera(c, n * B0, camera), t, generator)


@torch.no_grad()
def variational_score(
    target: DiffusionPrior,
    fake: DiffusionPrior,
    x: Tensor,
    t: Tensor,
    eps: Tensor,
    cond: Condition,
    uncond: Condition | None,
    fake_cond: Condition,
    guidance_scale: float,
    weighting: Weighting,
) -> Tensor:
    """w(t) (eps_target_cfg(x_t) - eps_fake(x_t)) [B,C,h,w] with x_t = ``target.add_noise(x, eps, t)``
    (ProlificDreamer Eq. 9; BSD's Eq. 6 with the bootstrapped prior as ``target``). Both outputs go
    through their own model's ``to_eps``, so a v-prediction fake works with an eps target."""
    x_t = target.add_noise(x, eps, t)
    eps_target = target.to_eps(x_t, t, guided_output(target, x_t, t, cond, uncond, guidance_scale))
    eps_fake = fake.to_eps(x_t, t, fake.predict(x_t, t, fake_cond))
    w = sds_weight(target.noise_schedule.abar(t, x), weighting)
    return w * (eps_target - eps_fake)


def distill_step(
    target: DiffusionPrior,
    fake: DiffusionPrior,
    images: Tensor,
    cond: Condition,
    uncond: Condition | None,
    step: int,
    schedule: TimestepSchedule,
    guidance_scale: float,
    weighting: Weighting,
    grad_clip: StepValue | None,
    fake_loss: Callable[[Tensor, Condition], Tensor],
    camera: Tensor | None = None,
    fake_cond: Condition | None = None,
    generator: torch.Generator | None = None,
    as_latents: bool = False,
    encoder: DiffusionPrior | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step of a two-score distillation (VSD, and BSD with the bootstrapped prior as
    ``target``): renders -> model space (through ``encoder``, default ``target``), t from
    ``schedule``, gradient ``w(t) (eps_target_cfg - eps_fake)``. Returns (surrogate loss, the fake
    score's denoising loss ``fake_loss(x, fake_cond)``, mean t, mean per-image gradient norm)."""
    x = model_latents(encoder if encoder is not None else target, images, as_latents)
    if uncond is None and guidance_scale != 1.0:
        uncond = target.unconditional(cond)
    B = x.shape[0]
    t = schedule.sample(step, B, generator, target.num_train_timesteps, x.device)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    fc = fake_cond if fake_cond is not None else cond
    grad = variational_score(
        target, fake, x.detach(), t, eps, cond, uncond, with_camera(fc, B, camera), guidance_scale, weighting
    )
    grad = clip_gradient(grad, grad_clip, step)
    return surrogate_loss(x, grad), fake_loss(x, fc), t.float().mean(), grad.flatten(1).norm(dim=1).mean()


class VSD(nn.Module):
    """ProlificDreamer's VSD with a frozen prior and a trainable fake score.

    Args:
        prior: the pretrained prior (frozen here).
        guidance_scale: CFG scale of the pretrained branch (ProlificDreamer: 7.5).
        weighting: w(t), see ``sds.sds_weight`` (ProlificDreamer: 1 - abar).
        schedule: timestep schedule of the distillation gradient (default U(0.02, 0.98)).
        fake: the fake-score model; default ``prior.clone_trainable()``. Its parameters are
            ``trainable_parameters()``: the caller's optimizer steps them on ``loss_vsd_fake``.
        fake_t_range: fractions of T the fake score's denoising loss samples t from.
        camera_dropout: probability of zeroing the camera in the fake score's loss.
        fake_timestep_samples: timesteps per image in the fake score's loss (threestudio's
            ``lora_n_timestamp_samples``).
        grad_clip: optional elementwise clamp of the gradient.
    """

    def __init__(
        self,
        prior: DiffusionPrior,
        guidance_scale: float = 7.5,
        weighting: Weighting = "sds",
        schedule: TimestepSchedule | None = None,
        fake: DiffusionPrior | None = None,
        fake_t_range: tuple[float, float] = (0.0, 1.0),
        camera_dropout: float = 0.1,
        fake_timestep_samples: int = 1,
        grad_clip: StepValue | None = None,
    ):
        super().__init__()
        sds_weight(torch.zeros(1), weighting)  # validate
        self.prior = freeze(prior)
        self.fake = fake if fake is not None else prior.clone_trainable()
        self.guidance_scale = guidance_scale
        self.weighting = weighting
        self.schedule = schedule if schedule is not None else UniformTimesteps(0.02, 0.98)
        self.fake_t_range = fake_t_range
        self.camera_dropout = camera_dropout
        self.fake_timestep_samples = fake_timestep_samples
        self.grad_clip = grad_clip

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The fake score's parameters (build the caller's optimizer from these)."""
        return [p for p in self.fake.trainable_parameters() if p.requires_grad]

    def fake_loss(
        self,
        x0: Tensor,
        cond: Condition,
        camera: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The fake score's denoising loss (ProlificDreamer Eq. 8) on model-space samples ``x0``
        [B,C,h,w] (detached here) with condition ``cond`` and optional ``camera`` [B, 16]."""
        return fake_score_loss(
            self.fake, x0, cond, camera, self.fake_t_range, self.camera_dropout, self.fake_timestep_samples, generator
        )

    def forward(
        self,
        images: Tensor,
        cond: Condition,
        uncond: Condition | None,
        step: int,
        camera: Tensor | None = None,
        fake_cond: Condition | None = None,
        generator: torch.Generator | None = None,
        as_latents: bool = False,
    ) -> dict[str, Tensor]:
        """``images`` [B,3,H,W] in [0,1] (or latents with ``as_latents``); ``camera`` [B,16] or None;
        ``fake_cond``: the fake score's condition (default ``cond``).

        Returns {"loss_vsd" (surrogate loss of the renders), "loss_vsd_fake" (the fake score's
        denoising loss; only the fake's parameters get its gradient), "vsd_t", "vsd_grad_norm"}."""
        loss, fake, t, norm = distill_step(
            self.prior,
            self.fake,
            images,
            cond,
            uncond,
            step,
            self.schedule,
            self.guidance_scale,
            self.weighting,
            self.grad_clip,
            lambda x, c: self.fake_loss(x, c, camera, generator),
            camera,
            fake_cond,
            generator,
            as_latents,
        )
        return {"loss_vsd": loss, "loss_vsd_fake": fake, "vsd_t": t, "vsd_grad_norm": norm}
