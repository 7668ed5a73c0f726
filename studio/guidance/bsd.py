"""Bootstrapped Score Distillation (DreamCraft3D, Sun et al. 2024, Sec. 3.3).

BSD boosts texture with a prior that learns the scene being optimised. It alternates:

1. **Augment** (``augment_views``): render many views, noise each render to a timestep t' and
   denoise it back with the (bootstrapped) prior and CFG, SDEdit-style. The renders' defects are
   washed out while the content stays. The paper makes the noise level view dependent (the
   reference view is trusted most); the released ``generate_mv_datasets.py`` scales the t range
   by azimuth / 360 over [0, 360). ``view_dependent_t_range`` uses the symmetric angular
   distance from the reference view, |azimuth| / 180.
2. **Fine-tune** (``finetune``): DreamBooth (Ruiz et al. 2023) on the augmented renders: the
   denoising loss on them plus lambda times the same loss on samples of the frozen prior ("prior
   preservation", DreamBooth Eq. 2), with the condition dropped 10% of the time so CFG keeps
   working (the released ``train_pretrain``). The released code fine-tunes the whole UNet
   (``train_unet``); here it is ``prior.clone_trainable()``, whatever the prior makes trainable.
3. **Distil** (``BSD.forward``): the gradient of DreamCraft3D Eq. 6,

       w(t) (eps_DreamBooth_cfg(x_t; y, t) - eps_lora(x_t; y, t, c)),

   i.e. VSD (Eq. 5) with the bootstrapped prior as the target score. ``eps_lora`` is a second
   trainable copy (``lora``) that learns the distribution of the current renders with its own
   denoising loss, returned as ``loss_bsd_lora`` for the caller's optimizer, exactly VSD's fake
   score. Released code: w = 1 - abar, guidance 2.0 on the bootstrapped branch, 1.0 on the lora
   branch with the view-independent prompt, t ~ U(0.05, t_max) with t_max annealed 0.5 -> 0.2
   (``schedules.DreamCraft3DSchedule("texture")``), the defaults here.

Render-score fine-tuning (``finetune_render_score``, ours; off by default, on in the tiny preset):
each round also fine-tunes ``lora`` with the same recipe (steps, learning rate, prior
preservation) on the raw renders of the same views. The two copies then differ only by what the
augmentation changed, so eps_bootstrapped - eps_lora approximates the score of the augmented
views minus that of the renders, and distillation moves the renders toward their augmentations.
Without it the bootstrapped copy has learned the renders and ``lora`` (a few VSD steps) has not:
the difference then pushes each render further along its own deviation from the prior
(``benchmarks/bsd_directions.py`` measures the direction; methods/dreamcraft3d/README.md).
The released code gets by with VSD's per-step estimator loss alone over 4000 estimator steps; a
short run (tiny: 200 steps) does not.

Where the paper and the released code differ we follow: the paper's alternation (fine-tune in
rounds, ``bootstrap`` every ``bootstrap_every`` steps; the released guidance interleaves
fine-tuning steps in the first fifth of every 1000 steps, on a cache of img2img samples); the
paper's view-dependent augmentation (above); the augmentation done by the bootstrapped prior
(the released ``compute_grad_du`` uses the fine-tuned UNet; in the first round it equals the
frozen prior). Not done: the released foreground mask blending during augmentation.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from studio.guidance.schedules import DreamCraft3DSchedule, StepValue, TimestepSchedule
from studio.guidance.sds import Weighting, model_latents, sds_weight
from studio.guidance.vsd import denoising_loss, distill_step, fake_score_loss, sample_timesteps
from studio.priors.base import Condition, DiffusionPrior, freeze
from studio.priors.sampling import ddim, sample

TRange = Union[Tuple[float, float], Tensor]


def view_dependent_t_range(azimuth_deg: Tensor, t_min: float, t_max: float) -> Tensor:
    """Per-view augmentation ranges [N, 2] = f (t_min, t_max) with f = |azimuth| / 180 (azimuth in
    degrees, 0 = the reference view, wrapped to (-180, 180]): no noise at the reference view."""
    az = torch.remainder(torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1) + 180.0, 360.0) - 180.0
    f = az.abs() / 180.0
    return torch.stack([f * t_min, f * t_max], dim=1)


@torch.no_grad()
def augment_views(
    prior: DiffusionPrior,
    images: Tensor,
    cond: Condition,
    t_range: TRange = (0.05, 0.5),
    uncond: Optional[Condition] = None,
    guidance_scale: float = 7.5,
    num_steps: int = 20,
    generator: Optional[torch.Generator] = None,
    as_latents: bool = False,
) -> Tensor:
    """SDEdit-style augmentation: each of the ``images`` [N,3,H,W] in [0,1] is noised to a t' drawn
    uniformly from ``t_range`` (fractions of T; a pair, or per view [N, 2]) and denoised back by
    ``studio.priors.sampling.ddim`` with CFG on ``cond`` (batch 1 or N; ``uncond`` default
    ``prior.unconditional(cond)``). Returns [N,3,S,S] in [0,1] at the prior's resolution S, or
    model-space latents in and out with ``as_latents``."""
    x = model_latents(prior, images, as_latents)
    N, T = x.shape[0], prior.num_train_timesteps
    rng = torch.as_tensor(t_range, dtype=torch.float32).reshape(-1, 2).expand(N, 2)
    u = torch.rand(N, generator=generator)
    t_start = ((rng[:, 0] + u * (rng[:, 1] - rng[:, 0])) * T).long().clamp(0, T - 1).to(x.device)
    if uncond is None and guidance_scale != 1.0:
        uncond = prior.unconditional(cond)
    eps = torch.randn(x.shape, generator=generator).to(x)
    out = ddim(prior, prior.add_noise(x, eps, t_start), t_start, cond, uncond, guidance_scale, num_steps)
    return out if as_latents else prior.decode(out)


def _drop_condition(cond: Condition, uncond: Condition, p: float, generator: Optional[torch.Generator]) -> Condition:
    """``cond`` (batch B) with each row replaced by the null condition with probability ``p``."""
    B = cond.batch_size
    drop = torch.rand(B, generator=generator) < p
    u = uncond.expand(B)
    out = {}
    for k, v in cond.tensors.items():
        m = drop.to(v.device).view(-1, *([1] * (v.dim() - 1)))
        out[k] = torch.where(m, u.tensors[k].to(v), v)
    return Condition(out)


def finetune(
    bootstrapped: DiffusionPrior,
    images: Tensor,
    cond: Condition,
    steps: int = 200,
    lr: float = 1e-5,
    prior_preservation_weight: float = 1.0,
    class_images: Optional[Tensor] = None,
    class_cond: Optional[Condition] = None,
    uncond: Optional[Condition] = None,
    batch_size: int = 4,
    cond_dropout: float = 0.1,
    generator: Optional[torch.Generator] = None,
    as_latents: bool = False,
) -> Dict[str, float]:
    """DreamBooth fine-tuning of ``bootstrapped`` (a ``clone_trainable()`` copy) in place.

    Each of ``steps`` AdamW steps (learning rate ``lr``) takes ``batch_size`` of the ``images``
    [N,3,H,W] in [0,1] (conditions ``cond``, batch 1 or N) and, with weight
    ``prior_preservation_weight``, as many ``class_images`` [M,3,H,W] (samples of the frozen prior,
    conditions ``class_cond``, default ``cond``); loss = denoising loss (``vsd.denoising_loss``,
    t ~ U[0, T)) on each. ``as_latents``: images and class images are model-space latents.
    Returns the mean losses {"loss_instance", "loss_prior"}."""
    x = model_latents(bootstrapped, images, as_latents).detach()
    N, dev = x.shape[0], x.device
    cond = cond.expand(N)
    uncond = uncond if uncond is not None else bootstrapped.unconditional(cond)
    use_prior = prior_preservation_weight > 0.0
    if use_prior:
        if class_images is None:
            raise ValueError(
                "prior preservation needs class_images (e.g. studio.priors.sampling.sample of the frozen prior)"
            )
        xc = model_latents(bootstrapped, class_images, as_latents).detach()
        class_cond = (class_cond if class_cond is not None else cond.index(slice(0, 1))).expand(xc.shape[0])
    params = [p for p in bootstrapped.trainable_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    T = bootstrapped.num_train_timesteps
    sums = {"loss_instance": 0.0, "loss_prior": 0.0}
    for _ in range(steps):
        idx = torch.randint(0, N, (batch_size,), generator=generator).to(dev)
        u = uncond.index(idx) if uncond.batch_size == N > 1 else uncond  # per-view null conditions
        c = _drop_condition(cond.index(idx), u, cond_dropout, generator)
        t = sample_timesteps(T, batch_size, (0.0, 1.0), generator, dev)
        loss = loss_inst = denoising_loss(bootstrapped, x[idx], c, t, generator)
        sums["loss_instance"] += loss_inst.item()
        if use_prior:
            jdx = torch.randint(0, xc.shape[0], (batch_size,), generator=generator).to(dev)
            t = sample_timesteps(T, batch_size, (0.0, 1.0), generator, dev)
            loss_prior = denoising_loss(bootstrapped, xc[jdx], class_cond.index(jdx), t, generator)
            loss = loss + prior_preservation_weight * loss_prior
            sums["loss_prior"] += loss_prior.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {k: v / max(steps, 1) for k, v in sums.items()}


class BSD(nn.Module):
    """DreamCraft3D's Bootstrapped Score Distillation (see the module docstring).

    Three priors: ``teacher`` (the given prior, frozen: encodes renders, makes the
    prior-preservation samples), ``bootstrapped`` (DreamBooth copy, fine-tuned by ``bootstrap``,
    the target score) and ``lora`` (the renders' score, trained by the caller's optimizer on
    ``loss_bsd_lora``; its parameters are ``trainable_parameters()``).

    Args:
        prior: the pretrained prior.
        guidance_scale: CFG scale of the bootstrapped branch (released texture config: 2.0).
        weighting, schedule, grad_clip: as in ``SDS`` (default schedule: DreamCraft3D texture).
        lora: the render-score model (default ``prior.clone_trainable()``).
        camera_dropout: as ``VSD.camera_dropout``.
        bootstrap_every: steps between ``bootstrap`` rounds (``should_bootstrap``).
        augment_t_range, augment_steps, augment_guidance_scale: ``augment_views`` settings.
        finetune_steps, finetune_lr, finetune_batch: ``finetune`` settings.
        prior_preservation_weight: DreamBooth's lambda; ``num_class_images`` frozen-prior samples
            (made once, with ``augment_guidance_scale``) are its data.
        finetune_render_score: each round also fine-tune ``lora`` on the raw renders (see the
            module docstring).
    """

    def __init__(
        self,
        prior: DiffusionPrior,
        guidance_scale: float = 2.0,
        weighting: Weighting = "sds",
        schedule: Optional[TimestepSchedule] = None,
        lora: Optional[DiffusionPrior] = None,
        camera_dropout: float = 0.1,
        grad_clip: Optional[StepValue] = None,
        bootstrap_every: int = 1000,
        augment_t_range: Tuple[float, float] = (0.05, 0.5),
        augment_steps: int = 20,
        augment_guidance_scale: float = 7.5,
        finetune_steps: int = 200,
        finetune_lr: float = 1e-5,
        finetune_batch: int = 4,
        prior_preservation_weight: float = 1.0,
        num_class_images: int = 16,
        finetune_render_score: bool = False,
    ):
        super().__init__()
        sds_weight(torch.zeros(1), weighting)  # validate
        self.teacher = freeze(prior)
        self.bootstrapped = prior.clone_trainable()
        self.lora = lora if lora is not None else prior.clone_trainable()
        self.guidance_scale = guidance_scale
        self.weighting = weighting
        self.schedule = schedule if schedule is not None else DreamCraft3DSchedule("texture")
        self.camera_dropout = camera_dropout
        self.grad_clip = grad_clip
        self.bootstrap_every = bootstrap_every
        self.augment_t_range = augment_t_range
        self.augment_steps = augment_steps
        self.augment_guidance_scale = augment_guidance_scale
        self.finetune_steps = finetune_steps
        self.finetune_lr = finetune_lr
        self.finetune_batch = finetune_batch
        self.prior_preservation_weight = prior_preservation_weight
        self.num_class_images = num_class_images
        self.finetune_render_score = finetune_render_score
        self.class_latents: Optional[Tensor] = None

    def trainable_parameters(self) -> List[nn.Parameter]:
        """The lora (render-score) parameters, for the caller's optimizer."""
        return [p for p in self.lora.trainable_parameters() if p.requires_grad]

    def should_bootstrap(self, step: int) -> bool:
        return step % self.bootstrap_every == 0

    def bootstrap(
        self,
        render_fn: Callable[[object], Tensor],
        cameras: object,
        cond: Condition,
        uncond: Optional[Condition] = None,
        azimuth_deg: Optional[Tensor] = None,
        class_cond: Optional[Condition] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Dict[str, object]:
        """One round: ``render_fn(cameras)`` -> renders [N,3,H,W] in [0,1] -> ``augment_views``
        (view-dependent t' when ``azimuth_deg`` [N] is given) -> ``finetune`` of ``bootstrapped``
        (and, with ``finetune_render_score``, of ``lora`` on the renders themselves).
        ``cond`` (batch 1 or N): the views' conditions; ``class_cond`` (batch 1, default the first
        view's): the condition of the prior-preservation samples. Returns the fine-tuning losses
        (``render_score_*`` for ``lora``) and the augmented model-space latents under "augmented"."""
        with torch.no_grad():
            x = model_latents(self.teacher, render_fn(cameras))
        uncond = uncond if uncond is not None else self.teacher.unconditional(cond)
        class_cond = class_cond if class_cond is not None else cond.index(slice(0, 1))
        if self.prior_preservation_weight > 0.0 and self.class_latents is None:
            self.class_latents = sample(
                self.teacher,
                self.num_class_images,
                class_cond,
                self.teacher.unconditional(class_cond),
                self.augment_guidance_scale,
                self.augment_steps,
                generator,
            )
        lo, hi = self.augment_t_range
        t_range = view_dependent_t_range(azimuth_deg, lo, hi) if azimuth_deg is not None else (lo, hi)
        aug = augment_views(
            self.bootstrapped,
            x,
            cond,
            t_range,
            uncond,
            self.augment_guidance_scale,
            self.augment_steps,
            generator,
            as_latents=True,
        )

        def tune(model: DiffusionPrior, data: Tensor) -> Dict[str, float]:
            return finetune(
                model,
                data,
                cond,
                self.finetune_steps,
                self.finetune_lr,
                self.prior_preservation_weight,
                self.class_latents,
                class_cond,
                uncond,
                self.finetune_batch,
                generator=generator,
                as_latents=True,
            )

        stats = tune(self.bootstrapped, aug)
        if self.finetune_render_score:
            stats.update({f"render_score_{k}": v for k, v in tune(self.lora, x).items()})
        return {**stats, "augmented": aug}

    def forward(
        self,
        images: Tensor,
        cond: Condition,
        uncond: Optional[Condition],
        step: int,
        camera: Optional[Tensor] = None,
        lora_cond: Optional[Condition] = None,
        generator: Optional[torch.Generator] = None,
        as_latents: bool = False,
    ) -> Dict[str, Tensor]:
        """``images`` [B,3,H,W] in [0,1] (or latents); ``camera`` [B,16] or None; ``lora_cond``:
        the lora's condition (default ``cond``; the released code uses the view-independent prompt).

        Returns {"loss_bsd", "loss_bsd_lora", "bsd_t", "bsd_grad_norm"}: the gradient of DreamCraft3D
        Eq. 6, w(t) (eps_bootstrapped_cfg - eps_lora), and the lora copy's denoising loss."""
        loss, lora, t, norm = distill_step(
            self.bootstrapped,
            self.lora,
            images,
            cond,
            uncond,
            step,
            self.schedule,
            self.guidance_scale,
            self.weighting,
            self.grad_clip,
            lambda x, c: fake_score_loss(self.lora, x, c, camera, (0.0, 1.0), self.camera_dropout, generator=generator),
            camera,
            lora_cond,
            generator,
            as_latents,
            encoder=self.teacher,
        )
        return {"loss_bsd": loss, "loss_bsd_lora": lora, "bsd_t": t, "bsd_grad_norm": norm}
