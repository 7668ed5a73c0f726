"""Training of ``toy-mv``, FlashWorld and the VideoScene student on ToyWorld orbits (``python -m studio.generators.train``).

Three phases (FlashWorld, Sec. 3.2-3.3; VideoScene, Sec. 3.2), each a run of this module:

* ``--phase dual`` (**dual-mode pre-training**): per step, one forward pass of the multi-view
  denoiser on noised views at a uniform timestep gives both modes' outputs; loss =
  ``MSE(v_pred, v)`` over the generated views (MV mode; view 0 excluded when it is the given image)
  ``+ render_weight * MSE(render(G), images)`` over the V views and the scene's held-out views
  (3D mode; renders on white, model space). Conditions are dropped for classifier-free guidance
  (image kept with ``p_image``, caption with ``p_text``, independently). Writes the EMA weights:
  the prior ``toy-mv`` (``studio/priors/weights/toy-mv.safetensors``, the file also carries the
  Gaussian head as ``head.*`` tensors so the teacher can reconstruct) .
* ``--phase dmd`` (**cross-mode post-training**, distribution matching distillation, Yin et al.
  CVPR 2024, Eq. 7-8 and DMD2's backward simulation): the student is the 3D mode, initialised from
  the dual model, generating in ``k`` steps (``k`` drawn from ``student_steps``; the inputs of
  step ``i > 0`` come from running the student's earlier steps without gradient). Its renders
  ``x`` at the V cameras are noised to ``t ~ U[t_min, t_max]``; the *real* score is the frozen dual
  model's MV mode with CFG, the *fake* score a copy trained online (denoising loss on the
  student's detached renders, ``fake_updates`` steps per student step). Student gradient
  ``(x0_fake - x0_real) / mean|x - x0_real|`` through ``0.5 ||x - sg(x - grad)||^2``, plus
  ``regression_weight`` times the dual phase's rendering loss against the ground-truth views (our
  choice: it keeps the student tied to the data at this scale). Writes
  ``studio/generators/weights/flashworld-toy.safetensors``.
* ``--phase leap`` (**VideoScene's 3D-aware leap flow distillation**, :mod:`studio.generators.leap`):
  the one-step student, initialised from the interpolation teacher (a ``dual`` run with
  ``--loss.keyframes 0 -1 --arc``: first and last frame given, views in trajectory order), learns
  the teacher's flow from the noised coarse render of the feed-forward predictor. Writes
  ``studio/generators/weights/videoscene-toy.safetensors``.

Data (:mod:`studio.generators.orbits`, training split only): batches alternate between the Gaussian
predictor's multi-view arcs (object and multi-object scenes) and the toy priors' single objects
seen from all around; arc-ordered runs (``--arc``, ``leap``) read the arcs only.
Scaling out: HuggingFace Accelerate, as :mod:`studio.lift.train` (``torchrun --nproc_per_node=K -m
studio.generators.train ...``); per-process batches from generators seeded by ``(seed, step,
process)``. Checkpoints and ``time_budget`` work as there.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
import torch
from torch import Tensor

from studio.cameras.rays import plucker_raymaps
from studio.generators import videoscene
from studio.generators.flashworld import (
    DEFAULT_WEIGHTS,
    TEACHER_WEIGHTS,
    FlashWorld,
    load_flashworld,
    save_flashworld,
    step_timesteps,
)
from studio.generators.leap import freeze_all_but_denoiser, leap_step
from studio.generators.losses import ema_update, generated_mask, masked_mse
from studio.generators.orbits import OrbitBatch, OrbitSet, orbits_from_lift, orbits_from_toydata, sample_orbits
from studio.io.cache import main_process_first
from studio.io.training_state import load_training_state, save_training_state
from studio.lift.data import LiftDataConfig
from studio.lift.train import lr_at
from studio.priors.base import Condition
from studio.priors.sampling import guided_output
from studio.priors.toy_mv import build_toy_mv
from studio.priors.toydata import DataConfig


@dataclass
class FlashWorldLossConfig:
    """The losses of every phase (shared by this module, ``ns-train flashworld`` and ``ns-train videoscene``)."""

    p_image: float = 0.9
    """Probability of keeping the image condition (all given views together; else dropped for CFG)."""
    keyframes: tuple[int, ...] = (0,)
    """The views given as images (negative: from the end): ``0`` (FlashWorld, image-to-3D) or
    ``0 -1`` (first and last frame: VideoScene's interpolation teacher, with ``--arc``)."""
    p_clean: float = 0.0
    """dual: probability that an item is at t = 0 (every view clean: the 3D mode as a
    feed-forward reconstructor of given views)."""
    p_text: float = 0.7
    """Probability of keeping the caption."""
    render_weight: float = 1.0
    """dual: weight of the 3D mode's rendering loss."""
    alpha_weight: float = 1.0
    """Weight of the rendered alpha's MSE against the views' coverage inside the rendering loss."""
    student_steps: tuple[int, ...] = (1, 4)
    """dmd: step counts the student is trained for (one drawn per step)."""
    guidance_scale: float = 3.0
    """dmd: CFG of the real score (the teacher's sampling default)."""
    t_range: tuple[int, int] = (20, 980)
    """dmd: timesteps at which the student's renders are noised."""
    fake_lr: float = 2e-4
    fake_updates: int = 1
    regression_weight: float = 1.0
    """dmd: weight of the rendering loss against the ground-truth views."""
    leap_range: tuple[int, int] = (100, 800)
    """leap: timesteps the student leaps from (the policy's actions lie inside)."""
    solver_skip: int = 20
    """leap: the teacher's DDIM step (timesteps) between a trajectory's two points."""


@dataclass
class FlashWorldTrainConfig:
    phase: Literal["dual", "dmd", "leap"] = "dual"
    init: str = ""
    """Weights to start from (dual: none; dmd: the dual model, default the embedded toy-mv; leap:
    the interpolation teacher, default the embedded videoscene-teacher, also the frozen teacher)."""
    predictor: str = ""
    """leap: the coarse feed-forward predictor (default: the embedded mvsplat-toy)."""
    channels: tuple[int, ...] = (32, 64, 128)
    n_res: int = 1
    data: LiftDataConfig = field(default_factory=LiftDataConfig)
    """The multi-view arcs (object and multi-object scenes) of the Gaussian predictor."""
    object_data: DataConfig = field(default_factory=lambda: DataConfig(n_seeds=2000, views=8, aa=16, spp=64))
    """Single objects seen from all around (the toy priors' training renders); batches alternate
    between the two sources (``object_data.n_seeds = 0``: arcs only)."""
    views: int = 4
    """Generated views per scene (the rest of the scene's views are held out for the 3D mode)."""
    arc: bool = False
    """Generated views in arc order (a trajectory; needs ordered sources, so arcs only:
    ``--object-data.n-seeds 0``); default: shuffled."""
    res: int = 32
    steps: int = 3000
    batch: int = 8
    """Scenes per step and process."""
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    loss: FlashWorldLossConfig = field(default_factory=FlashWorldLossConfig)
    seed: int = 0
    time_budget: float = 0.0
    checkpoint: Optional[str] = None
    checkpoint_every: int = 500
    log_every: int = 50
    output: str = ""
    """Where the fp16 weights go (default: toy-mv for dual, flashworld-toy for dmd)."""
    device: str = "auto"
    workers: int = 2

    def signature(self) -> dict:
        keep = ("phase", "init", "channels", "n_res", "views", "res", "steps", "batch", "seed")
        data = {"data": dataclasses.asdict(self.data), "object_data": dataclasses.asdict(self.object_data)}
        data["student_steps"] = self.loss.student_steps
        return {**{k: getattr(self, k) for k in keep}, **data}

    def default_output(self) -> Path:
        defaults = {"dual": TEACHER_WEIGHTS, "dmd": DEFAULT_WEIGHTS, "leap": videoscene.STUDENT_WEIGHTS}
        return Path(self.output) if self.output else defaults[self.phase]


# ---- one step's pieces -----------------------------------------------------------------------------


@dataclass
class Dropout:
    """Which conditions a batch keeps (classifier-free guidance training): ``texts`` are the
    captions with the dropped ones replaced by "", ``keep_image`` [B] is 1 where the
    ``keyframes`` views are given."""

    texts: list[str]
    keep_image: Tensor
    keyframes: tuple[int, ...] = (0,)

    @classmethod
    def draw(
        cls, batch: OrbitBatch, rng: np.random.Generator, p_image: float, p_text: float, keyframes=(0,)
    ) -> "Dropout":
        B = len(batch.captions)
        texts = [c if keep else "" for c, keep in zip(batch.captions, rng.random(B) < p_text)]
        return cls(texts, torch.from_numpy(rng.random(B) < p_image).to(batch.images), tuple(keyframes))

    def condition(self, prior, batch: OrbitBatch) -> Condition:
        """The condition of ``prior`` (a :class:`~studio.priors.toy_mv.ToyMVPrior`) for the batch's
        normalised cameras, its ``keyframes`` views and these choices."""
        pose = plucker_raymaps(batch.viewmats, batch.Ks, prior.image_size, prior.image_size)
        keyframes = {v: batch.images[:, v] for v in self.keyframes}
        cond = prior.condition(text=self.texts, pose=pose, keyframes=keyframes)
        cond.tensors["ref_mask"] = cond.tensors["ref_mask"] * self.keep_image[:, None]
        cond.tensors["refs"] = cond.tensors["refs"] * self.keep_image[:, None, None, None, None]
        return cond


def render_loss(model: FlashWorld, gaussians, batch: OrbitBatch, alpha_weight: float = 1.0) -> tuple[Tensor, Tensor]:
    """(loss, colour term): the MSE (model space) of the Gaussians' renders at the V cameras and
    the held-out ones, plus ``alpha_weight`` x the MSE of their alpha against the views' coverage
    (white, semi-transparent Gaussians are invisible on the white background of their own view but
    occlude in others)."""
    vm = torch.cat([batch.viewmats, batch.held_viewmats], 1)
    Ks = torch.cat([batch.Ks, batch.held_Ks], 1)
    target = torch.cat([batch.images, batch.held_images], 1)
    rgba = model.render_rgba(gaussians, vm, Ks)
    rgb = 4.0 * torch.mean((rgba[:, :, :3] - target) ** 2)
    if alpha_weight <= 0:
        return rgb, rgb
    coverage = torch.cat([batch.alpha, batch.held_alpha], 1)
    return rgb + alpha_weight * torch.mean((rgba[:, :, 3:] - coverage) ** 2), rgb


def weighted_render_loss(
    net: FlashWorld, gaussians, batch: OrbitBatch, weight: float, alpha_weight: float, stats: dict
) -> Tensor:
    """``weight`` x :func:`render_loss` (0 when the weight is 0); the PSNR of its colour term goes
    to ``stats["render_psnr"]``."""
    if weight <= 0:
        return torch.zeros((), device=batch.images.device)
    loss, rgb = render_loss(net, gaussians, batch, alpha_weight)
    stats["render_psnr"] = float(-10 * torch.log10(rgb.detach() / 4.0))
    return weight * loss


def dual_loss(model, batch: OrbitBatch, rng: np.random.Generator, cfg: FlashWorldLossConfig) -> tuple[Tensor, dict]:
    """Dual-mode pre-training loss of one batch (see the module docstring)."""
    net = model.module if hasattr(model, "module") else model
    cond = Dropout.draw(batch, rng, cfg.p_image, cfg.p_text, cfg.keyframes).condition(net.prior, batch)
    x0 = batch.images * 2.0 - 1.0
    B = x0.shape[0]
    t = rng.integers(0, net.prior.num_train_timesteps, B)
    t = torch.from_numpy(np.where(rng.random(B) < cfg.p_clean, 0, t)).to(x0.device)
    eps = torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32)).to(x0)
    out, _, gaussians = model(net.prior.add_noise(x0, eps, t), t, cond, batch.viewmats, batch.Ks)
    mv = masked_mse(out, net.prior.training_target(x0, eps, t), generated_mask(cond))
    loss = mv
    stats = {"mv": float(mv.detach())}
    loss = loss + weighted_render_loss(net, gaussians, batch, cfg.render_weight, cfg.alpha_weight, stats)
    stats["loss"] = float(loss.detach())
    return loss, stats


def dmd_gradient(
    real, fake, x: Tensor, cond_real, uncond_real, cond_fake, t: Tensor, eps: Tensor, scale: float
) -> Tensor:
    """DMD's distribution-matching gradient (Eq. 7, normalised as Eq. 8) at renders ``x`` [B,V,3,h,w]."""
    with torch.no_grad():
        x_t = real.add_noise(x, eps, t)
        x0_real = real.to_x0(x_t, t, guided_output(real, x_t, t, cond_real, uncond_real, scale))
        x0_fake = fake.to_x0(x_t, t, fake.predict(x_t, t, cond_fake))
        weight = (x - x0_real).abs().mean(dim=(1, 2, 3, 4), keepdim=True).clamp(min=1e-4)
        return (x0_fake - x0_real) / weight


# ---- the loop ------------------------------------------------------------------------------------


def read_sources(cfg: FlashWorldTrainConfig, log: Callable[[str], None]) -> list[OrbitSet]:
    """The training sources of ``cfg`` (rendered and cached on first use)."""
    from studio.lift.data import load_or_make as load_lift
    from studio.priors.toydata import load_or_make as load_objects

    sets = [orbits_from_lift(load_lift(cfg.data, workers=cfg.workers, log=log))]
    if cfg.object_data.n_seeds > 0 and not (cfg.arc or cfg.phase == "leap"):  # trajectories need arcs
        objects = load_objects(cfg.object_data, workers=cfg.workers, log=log)
        sets.append(orbits_from_toydata(objects, cfg.object_data.fov_deg))
    return sets


def train_flashworld(
    cfg: FlashWorldTrainConfig,
    data: Optional[list[OrbitSet]] = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> tuple[FlashWorld, dict]:
    """Run one phase (see the module docstring); returns the EMA model (eval mode) and run info."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(cpu=cfg.device == "cpu" or not torch.cuda.is_available())
    say = log if accelerator.is_main_process else (lambda _m: None)
    sets = data
    if sets is None:
        read = functools.partial(read_sources, cfg)
        sets = main_process_first(read, accelerator.is_main_process, accelerator.wait_for_everyone, say)
    set_seed(cfg.seed)
    if cfg.phase == "dual":
        arch = {"channels": list(cfg.channels), "n_res": cfg.n_res, "views": cfg.views, "res": cfg.res}
        model = load_flashworld(cfg.init) if cfg.init else FlashWorld(build_toy_mv({"arch": arch}))
    elif cfg.phase == "leap":
        model = load_flashworld(cfg.init or videoscene.TEACHER_WEIGHTS)
    else:
        model = load_flashworld(cfg.init or TEACHER_WEIGHTS)
    model.train()
    pipeline = None
    if cfg.phase == "leap":
        from studio.lift.model import load_predictor

        teacher = copy.deepcopy(model).eval().requires_grad_(False)
        pipeline = videoscene.VideoScene(load_predictor(cfg.predictor or None), teacher, teacher)
        freeze_all_but_denoiser(model)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    real = fake = fake_opt = None
    if cfg.phase == "dmd":
        real = copy.deepcopy(model.prior).eval().requires_grad_(False)
        fake = model.prior.clone_trainable().train()
        fake_opt = torch.optim.AdamW([p for p in fake.parameters() if p.requires_grad], lr=cfg.loss.fake_lr)
    step = 0
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
    if resume and ckpt is not None and ckpt.is_file():
        state = load_training_state(ckpt, cfg.signature())
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        if fake is not None:
            fake.load_state_dict(state["fake"])
            fake_opt.load_state_dict(state["fake_optimizer"])
        step = int(state["step"])
        say(f"Resumed from {ckpt} at step {step}")
    model, opt = accelerator.prepare(model, opt)
    if fake is not None:
        fake, fake_opt = accelerator.prepare(fake, fake_opt)
        real = real.to(accelerator.device)
    ema = ema.to(accelerator.device)
    if pipeline is not None:
        pipeline = pipeline.to(accelerator.device)
    net = accelerator.unwrap_model(model)

    def checkpoint() -> None:
        if ckpt is None:
            return
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"model": net.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(), "step": step}
            if fake is not None:
                state["fake"] = accelerator.unwrap_model(fake).state_dict()
                state["fake_optimizer"] = fake_opt.state_dict()
            save_training_state(ckpt, state, cfg.signature())
        accelerator.wait_for_everyone()

    t0, start, stats, finished = time.time(), step, {}, True
    while step < cfg.steps:
        rng = np.random.default_rng([cfg.seed, step, accelerator.process_index])
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        source = sets[step % len(sets)]
        scenes = rng.integers(0, source.n_scenes, cfg.batch)
        leap = cfg.phase == "leap"
        batch = sample_orbits(source, scenes, cfg.views, cfg.res, rng, arc=cfg.arc or leap, source=leap)
        batch = batch.to(accelerator.device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        if cfg.phase == "dual":
            loss, stats = dual_loss(model, batch, rng, cfg.loss)
        elif cfg.phase == "leap":
            loss, stats = leap_step(model, net, ema, pipeline, batch, rng, gen, cfg.loss)
        else:
            loss, stats = dmd_step(model, net, real, fake, fake_opt, accelerator, batch, rng, gen, cfg.loss)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if cfg.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(ema, net, cfg.ema_decay)
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate = (time.time() - t0) / max(step - start, 1)
            say(
                f"step {step}/{cfg.steps} "
                + " ".join(f"{k} {v:.4f}" for k, v in stats.items())
                + f" ({rate:.2f} s/step)"
            )
        if ckpt is not None and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            checkpoint()
        if cfg.time_budget > 0 and time.time() - t0 > cfg.time_budget and step < cfg.steps:
            say(f"Time budget of {cfg.time_budget:.0f}s spent at step {step}; stopping (resume to continue)")
            finished = False
            break
    checkpoint()
    seconds = time.time() - t0
    if accelerator.is_main_process:
        extra = {
            "phase": cfg.phase,
            "init": cfg.init,
            "steps": step,
            "finished": finished,
            "seconds": round(seconds),
            "processes": accelerator.num_processes,
            "batch": cfg.batch,
            "lr": cfg.lr,
            "seed": cfg.seed,
            "loss": dataclasses.asdict(cfg.loss),
            "data": dataclasses.asdict(cfg.data),
            "object_data": dataclasses.asdict(cfg.object_data),
        }
        save_flashworld(ema, cfg.default_output(), extra, kind="toy-mv" if cfg.phase == "dual" else "flashworld")
        say(f"Saved {cfg.default_output()}")
    accelerator.wait_for_everyone()
    info = {
        "step": step,
        "finished": finished,
        "seconds": seconds,
        "last": stats,
        "processes": accelerator.num_processes,
    }
    return ema.float().eval(), info


def dmd_step(
    model, net: FlashWorld, real, fake, fake_opt, accelerator, batch: OrbitBatch, rng, gen, cfg
) -> tuple[Tensor, dict]:
    """One cross-mode post-training step: updates the fake score, returns the student's loss."""
    fake_net = accelerator.unwrap_model(fake)
    dropout = Dropout.draw(batch, rng, cfg.p_image, cfg.p_text, cfg.keyframes)
    cond = dropout.condition(net.prior, batch)
    k = int(rng.choice(cfg.student_steps))
    i = int(rng.integers(k))
    x_in = net.input_at(cond, batch.viewmats, batch.Ks, k, i, gen)  # backward simulation (DMD2 Sec. 4.5)
    B, V = batch.images.shape[:2]
    t_i = torch.full((B,), step_timesteps(k, net.prior.num_train_timesteps)[i], dtype=torch.long, device=x_in.device)
    _, _, gaussians = model(x_in, t_i, cond, batch.viewmats, batch.Ks)
    x = net.render(gaussians, batch.viewmats, batch.Ks) * 2.0 - 1.0
    mask = generated_mask(cond)
    cond_real, cond_fake = dropout.condition(real, batch), dropout.condition(fake_net, batch)
    uncond_real = real.unconditional(cond_real)
    t = torch.from_numpy(rng.integers(cfg.t_range[0], cfg.t_range[1], B)).to(x.device)
    eps = torch.randn(x.shape, generator=gen).to(x)
    grad = dmd_gradient(real, fake_net, x.detach(), cond_real, uncond_real, cond_fake, t, eps, cfg.guidance_scale)
    dmd = 0.5 * masked_mse(x, (x - grad).detach(), mask)
    loss = dmd
    stats = {"dmd": float(dmd.detach())}
    loss = loss + weighted_render_loss(net, gaussians, batch, cfg.regression_weight, cfg.alpha_weight, stats)
    for _ in range(cfg.fake_updates):
        tf = torch.from_numpy(rng.integers(0, net.prior.num_train_timesteps, B)).to(x.device)
        ef = torch.randn(x.shape, generator=gen).to(x)
        xf = x.detach()
        out = fake(fake_net.add_noise(xf, ef, tf), tf, cond_fake)
        fl = masked_mse(out, fake_net.training_target(xf, ef, tf), mask)
        fake_opt.zero_grad(set_to_none=True)
        accelerator.backward(fl)
        fake_opt.step()
    stats["fake"] = float(fl.detach())
    stats["loss"] = float(loss.detach())
    return loss, stats


def main() -> None:
    import tyro

    cfg = tyro.cli(FlashWorldTrainConfig, description=__doc__.split("\n\n")[0])
    train_flashworld(cfg, resume=cfg.checkpoint is not None)


if __name__ == "__main__":
    main()
