"""Sampling from a ``DiffusionPrior``: classifier-free guidance and DDIM, shared by ``studio prior
sample``, BSD's augmentation (SDEdit) and its prior-preservation samples.

All tensors are in the prior's model space ([N, C, h, w]); ``prior.decode`` turns samples into
images in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

from studio.priors.base import Condition, DiffusionPrior


def guided_output(
    prior: DiffusionPrior, x_t: Tensor, t: Tensor, cond: Condition, uncond: Condition | None, guidance_scale: float
) -> Tensor:
    """The prior's output (in its ``prediction_type``) with classifier-free guidance,
    out_u + s (out_c - out_u), both branches in one batched ``predict``. Every conversion
    ``to_eps``/``to_x0`` is affine in the output with weights summing to one, so the guided output
    converts to exactly eps_u + s (eps_c - eps_u). ``uncond=None`` or s = 1: the conditional
    output alone."""
    B = x_t.shape[0]
    if uncond is None or guidance_scale == 1.0:
        return prior.predict(x_t, t, cond.expand(B))
    out = prior.predict(torch.cat([x_t, x_t]), torch.cat([t, t]), Condition.cat([cond, uncond], [B, B]))
    out_c, out_u = out.chunk(2)
    return out_u + guidance_scale * (out_c - out_u)


@torch.no_grad()
def ddim(
    prior: DiffusionPrior,
    x_t: Tensor,
    t_start: Tensor,
    cond: Condition,
    uncond: Condition | None,
    guidance_scale: float,
    num_steps: int,
    eta: float = 0.0,
    clamp_x0: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021, Eq. 12) from ``x_t`` at per-sample timesteps ``t_start`` [N] to x_0 in
    ``num_steps`` evenly spaced steps t_k = round(t_start (1 - k / num_steps)), with CFG
    (``guided_output``): x0_hat from the guided output (clamped to [-1, 1] with ``clamp_x0``), eps_hat
    consistent with it, then x_{t'} = a_{t'} x0_hat + sqrt(s_{t'}^2 - sigma^2) eps_hat + sigma z in the
    prior's ``noise_schedule`` (x_t = a_t x_0 + s_t eps), sigma = eta sqrt((1 - abar') / (1 - abar)
    (1 - abar / abar')) (``eta = 0``: deterministic). The last step returns x0_hat."""
    schedule = prior.noise_schedule
    x = x_t
    for k in range(num_steps):
        t = (t_start.float() * (1.0 - k / num_steps)).round().long()
        x0 = schedule.to_x0(x, t, guided_output(prior, x, t, cond, uncond, guidance_scale))
        if clamp_x0:
            x0 = x0.clamp(-1.0, 1.0)
        if k == num_steps - 1:
            return x0
        t_prev = (t_start.float() * (1.0 - (k + 1) / num_steps)).round().long()
        eps = schedule.x0_to_eps(x, t, x0)
        abar, abar_prev = schedule.abar(t, x), schedule.abar(t_prev, x)
        sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).clamp(min=0).sqrt()
        a_prev, s_prev = schedule.alpha_sigma(t_prev, x)
        x = a_prev * x0 + (s_prev**2 - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator).to(x)
    return x


@torch.no_grad()
def sample(
    prior: DiffusionPrior,
    n: int,
    cond: Condition,
    uncond: Condition | None = None,
    guidance_scale: float = 7.5,
    num_steps: int = 25,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    clamp_x0: bool = False,
) -> Tensor:
    """``n`` model-space samples [n,C,h,w] of ``prior`` by ``ddim`` from pure noise at t = T-1
    (``uncond`` default ``prior.unconditional(cond)`` when ``guidance_scale != 1``)."""
    device = prior.alphas_cumprod.device
    if uncond is None and guidance_scale != 1.0:
        uncond = prior.unconditional(cond)
    x = torch.randn((n, *prior.latent_shape), generator=generator).to(device)
    t = torch.full((n,), prior.num_train_timesteps - 1, dtype=torch.long, device=device)
    return ddim(prior, x, t, cond, uncond, guidance_scale, num_steps, eta, clamp_x0, generator)
