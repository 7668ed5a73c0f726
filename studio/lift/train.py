"""Training of the Gaussian predictor on ToyWorld multi-view scenes (``python -m studio.lift.train``).

Each step draws, per process, ``batch`` training scenes with two context views and ``n_targets``
target views between them (:mod:`studio.lift.data`), predicts pixel-aligned Gaussians from the
context views, renders them at the target cameras on the white background and minimises the
rendering loss ``MSE + ssim_weight * (1 - SSIM)`` (MVSplat Sec. 3.3 uses MSE + LPIPS; LPIPS needs
downloaded weights, so the SSIM term stands in) with AdamW (linear warm-up, cosine decay to 10%),
gradient clipping. Only photometric supervision: the depth is learnt through the cost volume.

Scaling out uses an existing engine, HuggingFace Accelerate (``accelerate.Accelerator``): the same
code runs on one CPU (``python -m studio.lift.train``) and as multi-process DDP
(``accelerate launch -m studio.lift.train ...`` or ``torchrun --nproc_per_node=K -m studio.lift.train``).
Each process draws its own scenes from a generator seeded by ``(seed, step, process_index)``, so a
run is reproducible for a given number of processes and a resumed run continues the same stream.

Checkpoints (``checkpoint``): the whole state (weights, optimiser, step) is written atomically by
the main process every ``checkpoint_every`` steps and at the end (``torch.save`` of tensors and
Python primitives only, read back with ``weights_only=True``); ``resume=True`` continues from it.
The result is saved as fp16 safetensors with the model and training config in the metadata
(:func:`studio.lift.model.save_predictor`, atomic).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from studio.io.cache import main_process_first
from studio.io.training_state import load_training_state, save_training_state
from studio.lift.data import LiftData, LiftDataConfig
from studio.lift.gaussians import DEFAULT_EPS2D, render
from studio.lift.model import DEFAULT_WEIGHTS, GaussianPredictor, PredictorConfig, save_predictor


@dataclass
class LiftTrainConfig:
    model: PredictorConfig = field(default_factory=PredictorConfig)
    data: LiftDataConfig = field(default_factory=LiftDataConfig)
    steps: int = 20000
    batch: int = 4
    """Scenes per step and process."""
    n_targets: int = 2
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 200
    grad_clip: float = 1.0
    ssim_weight: float = 0.0
    """Weight of the (1 - SSIM) term (0: plain MSE)."""
    eps2d: float = DEFAULT_EPS2D
    """Screen-space dilation of the rasterizer (pixel^2); later renders of the Gaussians (and feature
    lifting) use the same value (``studio.lift.gaussians.DEFAULT_EPS2D``)."""
    seed: int = 0
    time_budget: float = 0.0
    """Wall-clock seconds for this sitting (0: none); when spent, the state is checkpointed and the
    loop stops early (resume later with ``resume=True``)."""
    checkpoint: Optional[str] = None
    checkpoint_every: int = 500
    log_every: int = 50
    output: str = str(DEFAULT_WEIGHTS)
    """Where the fp16 safetensors weights go ("" to skip)."""
    device: str = "auto"
    """``auto`` (Accelerate's choice: the process's GPU if any, else CPU) or ``cpu``."""
    workers: int = 2
    """Processes for rendering the data set on first use."""

    def signature(self) -> dict:
        """What a resumed run must share with the run that wrote the checkpoint."""
        return {
            "model": dataclasses.asdict(self.model),
            "data": dataclasses.asdict(self.data),
            "batch": self.batch,
            "n_targets": self.n_targets,
            "seed": self.seed,
            "steps": self.steps,
        }


def lr_at(step: int, cfg: LiftTrainConfig) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10% of ``lr`` at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * t)))


def rendering_loss(
    model: torch.nn.Module, batch: dict[str, Tensor], ssim_weight: float = 0.0, eps2d: float = DEFAULT_EPS2D
) -> tuple[Tensor, dict[str, float]]:
    """Predict Gaussians from the context views, render the target views on white, compare.

    Returns the loss and a dict of floats (``mse``, ``psnr``, ``ssim`` when weighted).
    """
    g = model(batch["context_images"], batch["context_viewmats"], batch["context_Ks"], batch["near"], batch["far"])
    H, W = batch["target_images"].shape[-2:]
    white = torch.ones(3, dtype=g.colors.dtype, device=g.colors.device)
    out = render(g, batch["target_viewmats"], batch["target_Ks"], W, H, background=white, eps2d=eps2d)
    pred = out.color.permute(0, 1, 4, 2, 3)  # [B,T,3,H,W]
    target = batch["target_images"]
    mse = torch.mean((pred - target) ** 2)
    loss = mse
    stats = {"mse": float(mse.detach()), "psnr": float(-10.0 * torch.log10(mse.detach().clamp(min=1e-10)))}
    if ssim_weight > 0:
        from studio.metrics import ssim

        s = ssim(pred.flatten(0, 1).clamp(0, 1), target.flatten(0, 1))
        loss = loss + ssim_weight * (1.0 - s)
        stats["ssim"] = float(s.detach())
    stats["loss"] = float(loss.detach())
    return loss, stats


def train_lift(
    cfg: LiftTrainConfig,
    data: Optional[LiftData] = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> tuple[GaussianPredictor, dict]:
    """Train a :class:`GaussianPredictor` (see the module docstring).

    Args:
        cfg: settings; ``cfg.output`` receives the fp16 weights unless empty.
        data: the training scenes (default: ``load_or_make(cfg.data)``, rendered on first use).
        resume: continue from ``cfg.checkpoint`` if that file exists.
        log: progress lines (main process only).
    Returns:
        ``(model, info)`` with the unwrapped model (float32, eval mode) and ``info`` =
        ``{"step", "finished", "seconds", "seconds_per_step", "last": stats, "processes"}``.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    # Accelerate sets up multi-process CPU training (gloo) only when told to use the CPU
    accelerator = Accelerator(cpu=cfg.device == "cpu" or not torch.cuda.is_available())
    say = log if accelerator.is_main_process else (lambda _msg: None)
    if data is None:
        from studio.lift.data import load_or_make

        read = functools.partial(load_or_make, cfg.data, workers=cfg.workers)
        data = main_process_first(read, accelerator.is_main_process, accelerator.wait_for_everyone, say)
    set_seed(cfg.seed)  # same initial weights on every process (DDP also broadcasts them)
    model = GaussianPredictor(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
    if resume and ckpt is not None and ckpt.is_file():
        state = load_training_state(ckpt, cfg.signature())
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        say(f"Resumed from {ckpt} at step {step}")
    model, opt = accelerator.prepare(model, opt)
    model.train()
    device = accelerator.device

    def checkpoint() -> None:
        if ckpt is None:
            return
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {
                "model": accelerator.unwrap_model(model).state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
            }
            save_training_state(ckpt, state, cfg.signature())
        accelerator.wait_for_everyone()

    t0 = time.time()
    start_step = step
    stats: dict = {}
    finished = True
    while step < cfg.steps:
        rng = np.random.default_rng([cfg.seed, step, accelerator.process_index])
        scenes = rng.integers(0, data.n_scenes, cfg.batch)
        batch = {k: v.to(device) for k, v in data.sample(scenes, rng, cfg.n_targets).items()}
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss, stats = rendering_loss(model, batch, cfg.ssim_weight, cfg.eps2d)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if cfg.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate = (time.time() - t0) / max(step - start_step, 1)
            say(f"step {step}/{cfg.steps} loss {stats['loss']:.5f} psnr {stats['psnr']:.2f} dB ({rate:.2f} s/step)")
        if ckpt is not None and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            checkpoint()
        if cfg.time_budget > 0 and time.time() - t0 > cfg.time_budget and step < cfg.steps:
            say(f"Time budget of {cfg.time_budget:.0f}s spent at step {step}; stopping (resume to continue)")
            finished = False
            break
    checkpoint()
    seconds = time.time() - t0
    net = accelerator.unwrap_model(model)
    if cfg.output and accelerator.is_main_process:
        extra = {
            "data": dataclasses.asdict(cfg.data),
            "steps": step,
            "finished": finished,
            "batch": cfg.batch,
            "processes": accelerator.num_processes,
            "lr": cfg.lr,
            "ssim_weight": cfg.ssim_weight,
            "eps2d": cfg.eps2d,
            "seed": cfg.seed,
        }
        save_predictor(net, cfg.output, extra)
        say(f"Saved {cfg.output}")
    accelerator.wait_for_everyone()
    info = {
        "step": step,
        "finished": finished,
        "seconds": seconds,
        "seconds_per_step": seconds / max(step - start_step, 1),
        "last": stats,
        "processes": accelerator.num_processes,
    }
    return net.float().eval(), info


def main() -> None:
    import tyro

    cfg = tyro.cli(LiftTrainConfig, description=__doc__.split("\n\n")[0])
    train_lift(cfg, resume=cfg.checkpoint is not None)


if __name__ == "__main__":
    main()
