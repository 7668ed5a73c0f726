"""Training of the embedded image-text model ``toy-clip`` on ToyWorld (``python -m studio.rewards.train``).

Data: the toy priors' cached training renders (:func:`studio.priors.toydata.load_or_make` with
:data:`DATA`: 2000 training seeds x 8 random views at 32x32, aa 16 / spp 64, sRGB on white; the
training split only, and loaded from the cache, never re-rendered when the file exists), each view
paired with its seed's caption.

Each step draws ``batch`` (seed, view) pairs, augments the images (:func:`augment`: horizontal flip,
zoom/shift with white fill, one gamma and one brightness factor shared by the three channels, pixel
noise; no hue or saturation change, since captions name colours; the noise stands in for the
renderers' Monte-Carlo noise at lower sample counts) and minimises the multi-positive symmetric
InfoNCE of :func:`studio.rewards.contrastive.contrastive_loss` over the batch's distinct captions,
with AdamW (linear warm-up, cosine decay to 10%: :func:`studio.priors.train.lr_at`) and gradient
clipping. With ``time_budget`` the step count is cut after a few calibration steps to what fits,
so the schedule still ends at the last step. Seeded: the same config and data give the same weights.
The result is saved as fp16 safetensors with the training record in the metadata
(:func:`studio.rewards.contrastive.save_toy_clip`, atomic). Held-out scores: ``python -m studio.eval.rewards``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from studio.priors.toydata import DataConfig, ToyData, load_or_make
from studio.priors.train import CALIBRATION_STEPS, lr_at
from studio.rewards.contrastive import ToyCLIP, contrastive_loss, save_toy_clip
from studio.rewards.registry import EMBEDDED

DATA = DataConfig(n_seeds=2000, views=8, res=32, aa=16, spp=64)
"""The toy priors' 32x32 training renders (the same cache file as ``studio prior train``)."""


@dataclass
class AugmentConfig:
    scale: tuple[float, float] = (0.85, 1.15)
    """Zoom factor range (>1 enlarges the object)."""
    shift: float = 0.08
    """Largest translation, as a fraction of the image side."""
    gamma: tuple[float, float] = (0.8, 1.25)
    """Range of the exponent applied to all three sRGB channels alike (keeps hue, white and black)."""
    brightness: tuple[float, float] = (0.9, 1.05)
    noise: float = 0.03
    """Largest standard deviation of the Gaussian pixel noise (drawn per image from [0, noise])."""


@dataclass
class ClipTrainConfig:
    steps: int = 4000
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 200
    grad_clip: float = 1.0
    seed: int = 0
    time_budget: float = 0.0
    """Wall-clock seconds for the loop (0: none): ``steps`` is cut to what fits after the calibration steps."""
    threads: int = 1
    """torch CPU threads."""
    log_every: int = 50
    arch: dict = field(default_factory=dict)
    """Overrides of :data:`studio.rewards.contrastive.DEFAULT_ARCH`."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = DATA
    output: Path = EMBEDDED["toy-clip"]


def _uniform(lo_hi: tuple[float, float], n: int, gen: torch.Generator) -> Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def augment(images: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """Hue-preserving augmentation of images ``[B,3,H,W]`` in [0,1] on white (see the module docstring)."""
    B = images.shape[0]
    x = torch.where((torch.rand(B, generator=gen) < 0.5)[:, None, None, None], images.flip(-1), images)
    inv = 1.0 / _uniform(cfg.scale, B, gen)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = inv
    theta[:, :, 2] = (torch.rand(B, 2, generator=gen) * 2 - 1) * 2 * cfg.shift  # normalised coords span 2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = 1.0 - F.grid_sample(1.0 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = x.clamp(0.0, 1.0) ** _uniform(cfg.gamma, B, gen)[:, None, None, None]
    x = x * _uniform(cfg.brightness, B, gen)[:, None, None, None]
    sigma = cfg.noise * torch.rand(B, 1, 1, 1, generator=gen)
    return (x + sigma * torch.randn(x.shape, generator=gen)).clamp(0.0, 1.0)


def train_toy_clip(cfg: ClipTrainConfig, data: ToyData, say: Callable[[str], None] = print) -> tuple[ToyCLIP, dict]:
    """Train a toy-clip model on ``data``; returns (model in eval mode, training record)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    model = ToyCLIP({"arch": dict(cfg.arch)}).train()
    if data.images.shape[2] != model.image_size:
        raise ValueError(f"toy-clip is {model.image_size}x{model.image_size}, the data {data.images.shape[2]} px")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "pos" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "pos" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    images = torch.from_numpy(np.ascontiguousarray(data.images))  # [S,V,H,W,3] uint8
    captions, labels = np.unique(data.captions.astype(str), return_inverse=True)
    labels = torch.from_numpy(labels.reshape(-1)).long()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    say(
        f"toy-clip: {sum(p.numel() for p in model.parameters()):,} parameters; {data.n_seeds} seeds x {data.n_views} "
        f"views, {len(captions)} distinct captions"
    )
    losses, accs, step, t0 = [], [], 0, time.time()
    while step < cfg.steps:
        if cfg.time_budget > 0 and step == CALIBRATION_STEPS:
            per_step = (time.time() - t0) / step
            cfg.steps = max(step + 1, min(cfg.steps, int(cfg.time_budget / per_step)))
            say(f"{per_step:.2f} s/step: {cfg.steps} steps fit the time budget of {cfg.time_budget:.0f}s")
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        s = torch.randint(0, data.n_seeds, (cfg.batch,), generator=gen)
        v = torch.randint(0, data.n_views, (cfg.batch,), generator=gen)
        x = augment(images[s, v].permute(0, 3, 1, 2).float() / 255.0, cfg.augment, gen)
        batch_captions, target = torch.unique(labels[s], return_inverse=True)
        image_emb = F.normalize(model.encode_images(x), dim=-1)
        text_emb = F.normalize(model.encode_texts([captions[i] for i in batch_captions.tolist()]), dim=-1)
        loss = contrastive_loss(image_emb, text_emb, target, model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        losses.append(loss.item())
        accs.append((image_emb @ text_emb.t()).argmax(1).eq(target).float().mean().item())
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate = (time.time() - t0) / step
            say(
                f"step {step}/{cfg.steps} loss {np.mean(losses[-cfg.log_every :]):.4f} "
                f"batch image->caption accuracy {np.mean(accs[-cfg.log_every :]):.3f} "
                f"scale {model.logit_scale.item():.1f} ({rate:.2f} s/step, {rate * (cfg.steps - step) / 60:.1f} min left)"
            )
    seconds = time.time() - t0
    record = {
        "steps": step,
        "batch": cfg.batch,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "warmup": cfg.warmup,
        "seed": cfg.seed,
        "threads": cfg.threads,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(step, 1), 3),
        "final_loss": round(float(np.mean(losses[-100:])), 4),
        "final_batch_accuracy": round(float(np.mean(accs[-100:])), 4),
        "logit_scale": round(model.logit_scale.item(), 2),
        "device": "cpu",
        "torch": torch.__version__,
        "augment": dataclasses.asdict(cfg.augment),
        "data": {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg.data).items()},
            "n_images": int(data.n_seeds * data.n_views),
            "n_captions": int(len(captions)),
            "first_seed": int(data.seeds[0]),
            "last_seed": int(data.seeds[-1]),
            "split": "train (splits.json)",
        },
    }
    return model.eval(), record


def main() -> None:
    import tyro

    cfg = tyro.cli(ClipTrainConfig, description=__doc__.split("\n\n")[0])
    data = load_or_make(cfg.data, workers=1)
    model, record = train_toy_clip(cfg, data)
    save_toy_clip(model, cfg.output, record)
    print(f"Saved {cfg.output} ({Path(cfg.output).stat().st_size / 1e6:.2f} MB)", flush=True)


if __name__ == "__main__":
    main()
