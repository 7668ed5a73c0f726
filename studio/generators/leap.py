"""VideoScene's 3D-aware leap flow distillation (Wang et al. CVPR 2025, Sec. 3.2): one training step.

Consistency distillation (Song et al., ICML 2023, Alg. 2; as LCM, Luo et al. 2023, for a guided
teacher) whose trajectories start where inference starts: at the coarse 3D render.

* ``x`` = the coarse Gaussians' video along the trajectory (:class:`~studio.generators.videoscene.VideoScene`
  steps 1-2), model space; the first and last frame are given (the inputs).
* ``t_{n+k}`` is drawn on the solver grid (multiples of ``solver_skip``) inside ``leap_range``,
  ``x_{t_{n+k}} = a x + s eps``: the noised coarse render ("leaping" over the early, structure-
  forming part of the teacher's flow, which the coarse 3D already supplies).
* The frozen multi-step teacher takes one DDIM step with classifier-free guidance (its PF-ODE
  solver) to ``t_n = t_{n+k} - solver_skip``: ``x_hat_{t_n}``.
* Loss: ``|| f_theta(x_{t_{n+k}}, t_{n+k}) - f_theta-(x_hat_{t_n}, t_n) ||^2`` over the generated
  frames, with ``f`` the clean-frame estimate (:meth:`FlashWorld.clean_estimate`: v-prediction ->
  x0, given frames replaced; at
  ``t_n = 0`` the target is the teacher's x0 itself, the boundary condition) and ``theta-`` the
  EMA of the student (the trainer's EMA, decay ``--ema-decay``; the consistency-models paper uses 0.95).

Both student and target see the first/last-frame condition (no dropout: the student is only ever
run conditioned); only the student's denoiser learns (:func:`freeze_all_but_denoiser`: 3D comes from
the teacher's 3D mode, the caption is always empty).
"""

from __future__ import annotations

import numpy as np
import torch

from studio.generators.flashworld import FlashWorld
from studio.generators.losses import generated_mask, masked_mse
from studio.generators.orbits import OrbitBatch
from studio.priors.sampling import guided_output


def freeze_all_but_denoiser(model: FlashWorld) -> None:
    """Let only the video model's denoiser (``prior.trainable_parameters()``: UNet and pooled-text
    MLP) take gradients; the Gaussian head and the text encoder stay as they are."""
    model.requires_grad_(False)
    for p in model.prior.trainable_parameters():
        p.requires_grad_(True)


def leap_timesteps(leap_range: tuple[int, int], skip: int) -> np.ndarray:
    """The solver grid's timesteps ``t_{n+k}`` within ``leap_range`` (multiples of ``skip``, > 0)."""
    lo = max(skip, -(-leap_range[0] // skip) * skip)
    return np.arange(lo, leap_range[1] + 1, skip)


def leap_step(model, net: FlashWorld, target: FlashWorld, pipeline, batch: OrbitBatch, rng, gen, cfg) -> tuple:
    """One leap-flow distillation step (module docstring): ``model`` is the (possibly DDP-wrapped)
    student ``net``, ``target`` its EMA, ``pipeline`` a :class:`VideoScene` whose teacher and
    predictor are frozen; ``cfg`` the trainer's loss config (``leap_range``, ``solver_skip``,
    ``guidance_scale``). Returns (loss, stats)."""
    teacher = pipeline.teacher
    prior_t, schedule = teacher.prior, teacher.prior.noise_schedule
    with torch.no_grad():
        inputs = pipeline.prepare_arc(batch)
        x = pipeline.coarse_video(pipeline.coarse(inputs), inputs) * 2.0 - 1.0
        cond_t = pipeline.condition(teacher, inputs)
        cond_s = pipeline.condition(net, inputs)
        B = x.shape[0]
        t_plus = torch.from_numpy(rng.choice(leap_timesteps(cfg.leap_range, cfg.solver_skip), B)).to(x.device)
        t_minus = t_plus - cfg.solver_skip
        x_plus = prior_t.add_noise(x, torch.randn(x.shape, generator=gen).to(x), t_plus)
        out_t = guided_output(prior_t, x_plus, t_plus, cond_t, prior_t.unconditional(cond_t), cfg.guidance_scale)
        x0_teacher = teacher.clean_estimate(x_plus, t_plus, out_t, cond_t)
        a, s = schedule.alpha_sigma(t_minus, x)
        x_minus = a * x0_teacher + s * schedule.x0_to_eps(x_plus, t_plus, x0_teacher)
        goal = target.clean_estimate(x_minus, t_minus, target.prior.predict(x_minus, t_minus, cond_s), cond_s)
        goal = torch.where((t_minus == 0).view(-1, 1, 1, 1, 1), x0_teacher, goal)
    out, _, _ = model(x_plus, t_plus, cond_s, inputs.viewmats, inputs.Ks)
    loss = masked_mse(net.clean_estimate(x_plus, t_plus, out, cond_s), goal, generated_mask(cond_s))
    return loss, {"leap": float(loss.detach()), "loss": float(loss.detach())}
