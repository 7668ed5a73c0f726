"""Training of the attribute classifier on ToyWorld training-split renders.

Batches of labelled views (:mod:`studio.eval.classifier.labels`) are augmented towards what
generators produce: random zoom (object scale ``U(scale)``) and shift (``U(-shift, shift)`` of the
image width) on the white background, horizontal flips, Gaussian blur (sigma ``U(0, blur)`` pixels
on half the images) and pixel noise (std ``U(0, noise)``). The loss is the sum of the three heads'
cross-entropies; AdamW with the priors' warm-up + cosine schedule (``studio.priors.train.lr_at``).
Seeded: the same config and data give the same weights on one device.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from studio.eval.classifier.labels import ATTRIBUTES, LabelledViews
from studio.eval.classifier.model import DEFAULT_ARCH, AttributeClassifier, prepare
from studio.priors.toydata import DataConfig
from studio.priors.train import lr_at


@dataclass
class ClassifierTrainConfig:
    steps: int = 3000
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    seed: int = 0
    scale: tuple = (0.7, 1.2)
    """Zoom range (object size factor)."""
    shift: float = 0.1
    """Largest shift, as a fraction of the image width."""
    blur: float = 1.0
    """Largest blur sigma (pixels at 32x32)."""
    noise: float = 0.04
    """Largest noise std (image values in [0, 1])."""
    arch: dict = field(default_factory=lambda: dict(DEFAULT_ARCH))
    data: DataConfig = field(default_factory=lambda: DataConfig(n_seeds=3000, views=6))


def _blur(x: Tensor, sigma: Tensor, radius: int = 2) -> Tensor:
    """Separable Gaussian blur of ``x`` [B, C, H, W] with a per-image ``sigma`` [B] (pixels)."""
    B, C, H, W = x.shape
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma.clamp_min(1e-3)[:, None]) ** 2)
    k = (k / k.sum(-1, keepdim=True)).repeat_interleave(C, 0)  # [B*C, 2r+1]
    y = F.pad(x.reshape(1, B * C, H, W), (radius,) * 4, mode="replicate")
    y = F.conv2d(y, k[:, None, None, :], groups=B * C)
    return F.conv2d(y, k[:, None, :, None], groups=B * C).reshape(B, C, H, W)


def augment(x: Tensor, cfg: ClassifierTrainConfig, gen: torch.Generator) -> Tensor:
    """Randomly zoomed, shifted, flipped, blurred and noisy copies of ``x`` [B, 3, H, W] in [0, 1] on white."""
    B = x.shape[0]

    def uniform(lo: float, hi: float, n: int = B) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    zoom = torch.exp(uniform(math.log(cfg.scale[0]), math.log(cfg.scale[1])))
    flip = torch.where(torch.rand(B, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = flip / zoom, 1.0 / zoom
    theta[:, :, 2] = uniform(-2 * cfg.shift, 2 * cfg.shift, 2 * B).reshape(B, 2)  # grid units: 2 = image width
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = 1.0 - F.grid_sample(1.0 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sigma = uniform(0.0, cfg.blur) * (torch.rand(B, generator=gen) < 0.5)
    x = _blur(x, sigma)
    x = x + uniform(0.0, cfg.noise)[:, None, None, None] * torch.randn(x.shape, generator=gen)
    return x.clamp(0.0, 1.0)


def classifier_loss(model: AttributeClassifier, x: Tensor, labels: Tensor) -> Tensor:
    """Sum over heads of the cross-entropy (labels [B, 3]; -1 is ignored)."""
    logits = model(x)
    return sum(F.cross_entropy(logits[a], labels[:, k], ignore_index=-1) for k, a in enumerate(ATTRIBUTES))


def train_classifier(
    views: LabelledViews,
    cfg: ClassifierTrainConfig,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    log_every: int = 200,
) -> tuple[AttributeClassifier, dict]:
    """Train a classifier on ``views`` -> (model in eval mode, record: steps, seconds, losses
    (the mean loss of each ``log_every`` steps), config)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    model = AttributeClassifier({"arch": dict(cfg.arch)}).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    images = torch.from_numpy(np.ascontiguousarray(views.images))  # [N, H, W, 3] uint8
    labels = torch.from_numpy(views.labels)
    losses, window, t0 = [], [], time.time()
    for step in range(cfg.steps):
        idx = torch.randint(0, len(views), (cfg.batch,), generator=gen)
        x = augment(prepare(images[idx]), cfg, gen).to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = classifier_loss(model, x, labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            losses.append(float(np.mean(window)))
            window = []
            log(f"step {step + 1}/{cfg.steps}  loss {losses[-1]:.4f}  {time.time() - t0:.0f}s")
    record = {
        "steps": cfg.steps,
        "seconds": round(time.time() - t0, 1),
        "device": str(device),
        "losses": [round(v, 4) for v in losses],
        "config": dataclasses.asdict(cfg),
    }
    return model.eval(), record
