"""Score Distillation Sampling (DreamFusion, Poole et al. 2023) and the pieces every distillation
guidance shares.

SDS (DreamFusion Eq. 3) moves a differentiable image x = g(theta) along

    grad_theta L_SDS = E_{t, eps}[ w(t) (eps_hat(x_t; y, t) - eps) dx/dtheta ],
    x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps,

with eps_hat the classifier-free-guided noise prediction in diffusers' convention,
eps_u + s (eps_c - eps_u). The gradient is applied through the reparameterised ("surrogate") loss
0.5 ||x - sg(x - g)||^2 / B, whose derivative in x is g / B (``surrogate_loss``): the batch mean of the per-image
gradients, which makes the loss scale independent of the batch size (threestudio's convention).

With ``negatives`` (Perp-Neg, ``studio.guidance.perp_neg``), eps_hat is Perp-Neg's guided noise,
eps_u + s [(eps_c - eps_u) - sum_k w_k perp(eps_neg_k - eps_u, eps_c - eps_u)], instead of CFG.

Everything the prior sees runs under ``torch.no_grad``; only the final loss (and ``encode``, for
latent priors) carries the graph back to the renders.

Loss dicts: keys starting with ``loss_`` are losses to add; the other keys are detached
diagnostics to log (they must not be summed into the objective).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.guidance.perp_neg import Negatives, perp_neg_eps
from studio.guidance.schedules import StepValue, TimestepSchedule, UniformTimesteps, step_value
from studio.priors.base import Condition, DiffusionPrior, freeze
from studio.priors.sampling import guided_output

Weighting = Literal["sds", "uniform", "fantasia3d"]


def sds_weight(abar: Tensor, weighting: Weighting = "sds") -> Tensor:
    """w(t), elementwise in abar_t (e.g. [B,1,1,1] from ``prior.noise_schedule.abar``):

    * ``"sds"``: 1 - abar_t = sigma_t^2 (DreamFusion, Sec. 3 / App. A.4);
    * ``"uniform"``: 1;
    * ``"fantasia3d"``: sqrt(abar_t) (1 - abar_t), the weighting threestudio implements for
      Fantasia3D (Chen et al. 2023), which down-weights the noisiest timesteps.
    """
    if weighting == "sds":
        return 1.0 - abar
    if weighting == "uniform":
        return torch.ones_like(abar)
    if weighting == "fantasia3d":
        return abar.sqrt() * (1.0 - abar)
    raise ValueError(f"unknown weighting {weighting!r}")


def model_latents(prior: DiffusionPrior, images: Tensor, as_latents: bool = False) -> Tensor:
    """Renders [B,3,H,W] in [0,1] -> the prior's model space [B,C,h,w], differentiably: resized to
    ``prior.image_size`` (bilinear, antialiased) when they differ, then ``prior.encode``.
    ``as_latents``: ``images`` already are model-space tensors (returned unchanged)."""
    if as_latents:
        return images
    size = prior.image_size
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, (size, size), mode="bilinear", align_corners=False, antialias=True)
    return prior.encode(images)


def surrogate_loss(x: Tensor, grad: Tensor) -> Tensor:
    """The value of 0.5 ||x - sg(x - grad)||^2 / B (= 0.5 ||grad||^2 / B) with gradient in ``x``
    exactly ``grad / B``: written as (0.5 ||g||^2 + <x - sg(x), g>) / B, whose second term is zero
    but carries the gradient without the rounding of x - (x - g)."""
    g = grad.detach()
    return (0.5 * (g**2).sum() + ((x - x.detach()) * g).sum()) / x.shape[0]


def clip_gradient(grad: Tensor, clip: StepValue | None, step: int) -> Tensor:
    """NaNs zeroed, then clamped elementwise to +-clip if given (Hong et al. 2023, "Debiasing
    Scores and Prompts of 2D Diffusion for Robust Text-to-3D Generation"; a step value allowed)."""
    grad = torch.nan_to_num(grad)
    if clip is None:
        return grad
    c = step_value(clip, step)
    return grad.clamp(-c, c)


class SDS(nn.Module):
    """DreamFusion's score distillation with a frozen prior.

    Args:
        prior: the teacher (frozen here with ``freeze``).
        guidance_scale: CFG scale s (DreamFusion uses 100).
        weighting: w(t), see ``sds_weight``.
        schedule: timestep schedule (default U(0.02, 0.98)).
        grad_clip: optional elementwise clamp of the gradient (number or step value).
    """

    def __init__(
        self,
        prior: DiffusionPrior,
        guidance_scale: float = 100.0,
        weighting: Weighting = "sds",
        schedule: TimestepSchedule | None = None,
        grad_clip: StepValue | None = None,
    ):
        super().__init__()
        sds_weight(torch.zeros(1), weighting)  # validate
        self.prior = freeze(prior)
        self.guidance_scale = guidance_scale
        self.weighting = weighting
        self.schedule = schedule if schedule is not None else UniformTimesteps(0.02, 0.98)
        self.grad_clip = grad_clip

    @torch.no_grad()
    def gradient(
        self,
        x: Tensor,
        cond: Condition,
        uncond: Condition | None,
        step: int,
        generator: torch.Generator | None = None,
        negatives: Negatives | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(w(t) (eps_hat(x_t) - eps) [B,C,h,w], t [B]) for model-space ``x`` [B,C,h,w]; eps_hat
        is CFG's, or Perp-Neg's with ``negatives`` (then ``uncond`` is required)."""
        B = x.shape[0]
        prior = self.prior
        t = self.schedule.sample(step, B, generator, prior.num_train_timesteps, x.device)
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_t = prior.add_noise(x, eps, t)
        if negatives is None:
            eps_hat = prior.to_eps(x_t, t, guided_output(prior, x_t, t, cond, uncond, self.guidance_scale))
        else:
            eps_hat = perp_neg_eps(prior, x_t, t, cond, uncond, negatives, self.guidance_scale)
        w = sds_weight(prior.noise_schedule.abar(t, x), self.weighting)
        return clip_gradient(w * (eps_hat - eps), self.grad_clip, step), t

    def forward(
        self,
        images: Tensor,
        cond: Condition,
        uncond: Condition | None,
        step: int,
        generator: torch.Generator | None = None,
        as_latents: bool = False,
        negatives: Negatives | None = None,
    ) -> dict[str, Tensor]:
        """``images`` [B,3,H,W] in [0,1] (or model-space latents with ``as_latents``); ``cond`` and
        ``uncond`` of batch 1 or B (``uncond=None``: ``prior.unconditional(cond)``); ``negatives``:
        Perp-Neg's negative conditions [B*K] and weights [B,K] (``PerpNeg.conditions``; then
        ``cond`` is the positive), None for CFG.

        Returns {"loss_sds", "sds_t" (mean t), "sds_grad_norm" (mean per-image L2 norm)}."""
        x = model_latents(self.prior, images, as_latents)
        if uncond is None and (self.guidance_scale != 1.0 or negatives is not None):
            uncond = self.prior.unconditional(cond)
        grad, t = self.gradient(x, cond, uncond, step, generator, negatives)
        return {
            "loss_sds": surrogate_loss(x, grad),
            "sds_t": t.float().mean(),
            "sds_grad_norm": grad.flatten(1).norm(dim=1).mean(),
        }
