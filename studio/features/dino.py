"""DINO self-distillation (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
Transformers") of the embedded ``toy-vit`` on ToyWorld images.

A student ``g_s`` and a teacher ``g_t`` share one architecture: the ViT (:class:`~studio.features.vit.ToyViT`)
and a projection head (:class:`DinoHead`: 3-layer MLP, L2-normalised bottleneck, weight-normalised
last layer with K prototypes). Each network's output over the K prototypes becomes a distribution
by a softmax with temperature (Eq. 1): ``P(x)_i = exp(g(x)_i / tau) / sum_k exp(g(x)_k / tau)``.
The student learns to match the teacher across views (Eq. 3, multi-crop):

    min_{theta_s}  sum_{x in {x1g, x2g}}  sum_{x' in V, x' != x}  H(P_t(x), P_s(x')),   H(a, b) = -a . log b

with V two global crops and a few local crops; the teacher sees only the global crops. Algorithm 1
of the paper, as implemented by :class:`DinoTrainer` and :class:`DinoLoss`::

    for x in loader:
        x1, x2 = augment(x), augment(x)              # here: 2 global + n local crops (MultiCrop)
        s1, s2 = gs(x1), gs(x2); t1, t2 = gt(x1), gt(x2)
        loss = H(t1, s2) / 2 + H(t2, s1) / 2         # here: mean over all (teacher global, other crop) pairs
        loss.backward(); update(gs)                  # AdamW, per-parameter gradient clipping
        gt.params = l * gt.params + (1 - l) * gs.params    # EMA teacher, l: cosine 0.996 -> 1
        C = m * C + (1 - m) * cat([t1, t2]).mean(dim=0)    # centring, m = 0.9
    def H(t, s):
        t = t.detach()                               # no gradient through the teacher
        s = softmax(s / tps, dim=1)                  # student temperature 0.1
        t = softmax((t - C) / tpt, dim=1)            # centring + sharpening, tpt: 0.04 -> 0.07 warm-up
        return -(t * log(s)).sum(dim=1).mean()

Schedules (Sec. 3.1 and Appendix of the paper): learning rate ``base_lr * batch / 256`` after a
linear warm-up, cosine decay to ``min_lr``; weight decay cosine 0.04 -> 0.4 (biases and norms
excluded); the last head layer is frozen for the first steps. Augmentations (BYOL's, as DINO's):
random resized crops (global scale 0.4-1, local 0.05-0.4), horizontal flips, colour jitter,
grayscale, Gaussian blur (p = 1 / 0.1 / 0.5 for global 1 / global 2 / local), solarisation
(global 2), with kornia. Deviation: the blur sigma is scaled to 32-pixel images (0.1-1 px).

Data: the caller passes the images, e.g. ``studio.priors.toydata.load_or_make(DataConfig(aa=16,
spp=64)).images`` (ToyWorld training-split seeds only; uint8 ``[S,V,32,32,3]``): this package sits
beside the priors and does not import them. :func:`train_dino` returns the teacher's backbone (DINO
evaluates the teacher), ready for :func:`studio.features.registry.save_feature_model`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.features.vit import ToyViT

CALIBRATION_STEPS = 20
"""Steps timed before a ``time_budget`` cuts the step count."""


@dataclass
class DinoConfig:
    """DINO training settings (defaults: the paper's, scaled to a 32x32 ToyWorld ViT on CPU)."""

    arch: dict = field(default_factory=dict)
    """ToyViT arch overrides (``studio.features.vit.DEFAULT_ARCH``); ``image_size`` is the global crop side."""
    out_dim: int = 4096
    """K, prototypes of the head's last layer."""
    head_hidden: int = 1024
    head_bottleneck: int = 256
    steps: int = 10000
    batch: int = 64
    base_lr: float = 5e-4
    """Learning rate at batch 256; the peak is ``base_lr * batch / 256`` (linear scaling rule)."""
    min_lr: float = 1e-6
    warmup_steps: int = 500
    weight_decay: tuple[float, float] = (0.04, 0.4)
    """Cosine schedule start -> end."""
    momentum: tuple[float, float] = (0.996, 1.0)
    """Teacher EMA momentum, cosine schedule start -> end."""
    teacher_temp: tuple[float, float] = (0.04, 0.07)
    """Teacher temperature, linear warm-up start -> end over ``teacher_temp_warmup`` steps."""
    teacher_temp_warmup: int = 1500
    student_temp: float = 0.1
    center_momentum: float = 0.9
    global_scale: tuple[float, float] = (0.4, 1.0)
    """Area fraction of the image that a global crop covers."""
    local_crops: int = 4
    local_size: int = 16
    """Local crop side in pixels (a multiple of the patch size)."""
    local_scale: tuple[float, float] = (0.05, 0.4)
    blur_sigma: tuple[float, float] = (0.1, 1.0)
    """Gaussian blur sigma range in pixels."""
    grad_clip: float = 3.0
    """Per-parameter gradient norm limit (0: none)."""
    freeze_last_layer_steps: int = 200
    """Steps during which the head's last layer gets no updates."""
    seed: int = 0
    time_budget: float = 0.0
    """Wall-clock seconds (0: none). After ``CALIBRATION_STEPS`` steps the step count is cut to what
    fits at the measured speed; the schedules (warm-ups included) shrink with it."""


def cosine(start: float, end: float, t: float) -> float:
    """Cosine schedule from ``start`` (t = 0) to ``end`` (t >= 1)."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


class DinoHead(nn.Module):
    """Projection head: MLP dim -> hidden -> hidden -> bottleneck (GELU), L2 normalisation, then a
    weight-normalised linear layer to K prototypes with its norm fixed to 1. [B,dim] -> [B,K] logits."""

    def __init__(self, dim: int, out_dim: int, hidden: int = 1024, bottleneck: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        norm = self.last_layer.parametrizations.weight.original0
        norm.data.fill_(1.0)
        norm.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class DinoNet(nn.Module):
    """Backbone + head applied to a list of crops: consecutive crops of one size run as one batch;
    crops [B,3,h,w] in [0,1] -> list of logits [B,K], one per crop."""

    def __init__(self, backbone: ToyViT, head: DinoHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[Tensor]) -> list[Tensor]:
        out, i = [], 0
        while i < len(crops):
            j = i + 1
            while j < len(crops) and crops[j].shape[-2:] == crops[i].shape[-2:]:
                j += 1
            cls = self.backbone.tokens(torch.cat(crops[i:j]))[0]
            out.extend(self.head(cls).chunk(j - i))
            i = j
        return out


class DinoLoss(nn.Module):
    """Eq. 3 with centring and sharpening: the mean over (teacher global crop i, student crop v != i)
    of ``H(softmax((t_i - C) / tau_t), softmax(s_v / tau_s))``; updates the centre C [1,K] as the EMA
    of the teacher's batch mean (Algorithm 1)."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: list[Tensor], teacher: list[Tensor], teacher_temp: float) -> Tensor:
        """student: logits [B,K] per crop (global crops first); teacher: logits [B,K] per global crop."""
        targets = [F.softmax((t.detach() - self.center) / teacher_temp, dim=-1) for t in teacher]
        log_probs = [F.log_softmax(s / self.student_temp, dim=-1) for s in student]
        terms = [-(t * s).sum(-1).mean() for i, t in enumerate(targets) for v, s in enumerate(log_probs) if v != i]
        self.update_center(torch.cat(teacher))
        return torch.stack(terms).mean()

    @torch.no_grad()
    def update_center(self, teacher: Tensor) -> None:
        """C <- m C + (1 - m) mean(teacher logits [N,K])."""
        self.center.lerp_(teacher.detach().mean(0, keepdim=True), 1.0 - self.center_momentum)


class MultiCrop(nn.Module):
    """DINO's multi-crop augmentation: images [B,3,H,W] in [0,1] -> [global 1, global 2, local 1..n]
    crops ([B,3,G,G] and [B,3,L,L], in [0,1])."""

    def __init__(self, cfg: DinoConfig, global_size: int):
        super().__init__()
        self.global1 = self._pipeline(global_size, cfg.global_scale, cfg.blur_sigma, blur=1.0)
        self.global2 = self._pipeline(global_size, cfg.global_scale, cfg.blur_sigma, blur=0.1, solarize=0.2)
        self.local = self._pipeline(cfg.local_size, cfg.local_scale, cfg.blur_sigma, blur=0.5)
        self.local_crops = cfg.local_crops

    @staticmethod
    def _pipeline(size: int, scale, sigma, blur: float, solarize: float = 0.0) -> nn.Sequential:
        import kornia.augmentation as K

        ops = [
            K.RandomResizedCrop((size, size), scale=tuple(scale)),
            K.RandomHorizontalFlip(),
            K.ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8),
            K.RandomGrayscale(p=0.2),
            K.RandomGaussianBlur(2 * math.ceil(2 * sigma[1]) + 1, tuple(sigma), p=blur),
        ]
        if solarize:
            ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=solarize))
        return nn.Sequential(*ops)

    @torch.no_grad()
    def forward(self, images: Tensor) -> list[Tensor]:
        crops = [self.global1(images), self.global2(images)]
        return crops + [self.local(images) for _ in range(self.local_crops)]


class DinoTrainer:
    """Student, EMA teacher, loss, optimiser and schedules; :meth:`train_step` is one iteration of
    Algorithm 1. ``total_steps`` (default ``cfg.steps``) sets the schedules' length."""

    def __init__(self, cfg: DinoConfig, device: str | torch.device = "cpu"):
        torch.manual_seed(cfg.seed)
        self.cfg, self.device, self.step, self.total_steps = cfg, torch.device(device), 0, cfg.steps
        backbone = ToyViT(cfg.arch)
        head = DinoHead(backbone.dim, cfg.out_dim, cfg.head_hidden, cfg.head_bottleneck)
        self.student = DinoNet(backbone, head).to(self.device).train()
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.loss = DinoLoss(cfg.out_dim, cfg.student_temp, cfg.center_momentum).to(self.device)
        self.crops = MultiCrop(cfg, backbone.image_size)
        named = [(n, p) for n, p in self.student.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        decay = [p for n, p in named if p.ndim > 1 and not n.endswith(".bias")]
        no_decay = [p for n, p in named if not (p.ndim > 1 and not n.endswith(".bias"))]
        self.opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=0.0)

    def schedules(self) -> dict[str, float]:
        """lr, weight decay, teacher momentum and teacher temperature at the current step."""
        cfg, total = self.cfg, max(1, self.total_steps)
        shrink = total / max(1, cfg.steps)
        warmup, temp_warmup = cfg.warmup_steps * shrink, cfg.teacher_temp_warmup * shrink
        peak = cfg.base_lr * cfg.batch / 256
        if self.step < warmup:
            lr = peak * (self.step + 1) / warmup
        else:
            lr = cosine(peak, cfg.min_lr, (self.step - warmup) / max(1.0, total - warmup))
        t0, t1 = cfg.teacher_temp
        return {
            "lr": lr,
            "weight_decay": cosine(*cfg.weight_decay, self.step / total),
            "momentum": cosine(*cfg.momentum, self.step / total),
            "teacher_temp": t1 if self.step >= temp_warmup else t0 + (t1 - t0) * self.step / temp_warmup,
        }

    def train_step(self, images: Tensor) -> float:
        """One iteration on images [B,3,H,W] in [0,1] (on the trainer's device); returns the loss."""
        s = self.schedules()
        crops = self.crops(images)
        with torch.no_grad():
            teacher_out = self.teacher(crops[:2])
        loss = self.loss(self.student(crops), teacher_out, s["teacher_temp"])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            for p in self.params:
                if p.grad is not None:
                    nn.utils.clip_grad_norm_(p, self.cfg.grad_clip)
        if self.step < self.cfg.freeze_last_layer_steps:
            for p in self.student.head.last_layer.parameters():
                p.grad = None
        self.opt.param_groups[0]["weight_decay"] = s["weight_decay"]
        for group in self.opt.param_groups:
            group["lr"] = s["lr"]
        self.opt.step()
        with torch.no_grad():
            for p_t, p_s in zip(self.teacher.parameters(), self.student.parameters()):
                p_t.lerp_(p_s, 1.0 - s["momentum"])
        self.step += 1
        return float(loss.detach())


def as_images(images) -> Tensor:
    """Images as a tensor [N,3,H,W] (uint8, or float in [0,1]) from ToyData-like uint8 arrays
    [..., H, W, 3] (numpy or torch) or a tensor [N,3,H,W]."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if x.shape[-1] == 3 and x.dim() >= 4:
        return x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2)
    if x.dim() == 4 and x.shape[1] == 3:
        return x
    raise ValueError(f"images must be [..., H, W, 3] or [N, 3, H, W], got {list(x.shape)}")


def train_dino(
    cfg: DinoConfig,
    images,
    device: str | torch.device = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> tuple[ToyViT, dict]:
    """Train ``toy-vit`` by DINO on ``images`` (see :func:`as_images`); ``progress(step, loss)`` after
    each step. Returns (the teacher's backbone in eval mode, stats: steps, seconds, images,
    first/last losses and the config, JSON-able for the saved file's training record)."""
    images = as_images(images)
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    trainer = DinoTrainer(cfg, device)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    losses, start = [], time.time()
    while trainer.step < trainer.total_steps:
        batch = images[torch.randint(0, images.shape[0], (cfg.batch,), generator=gen)].to(device)
        batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
        losses.append(trainer.train_step(batch))
        if progress:
            progress(trainer.step, losses[-1])
        if cfg.time_budget > 0 and trainer.step == CALIBRATION_STEPS:
            per_step = (time.time() - start) / CALIBRATION_STEPS
            trainer.total_steps = max(CALIBRATION_STEPS, min(cfg.steps, int(cfg.time_budget / per_step)))
    tail = max(1, len(losses) // 10)
    stats = {
        "steps": trainer.step,
        "seconds": round(time.time() - start, 1),
        "images": int(images.shape[0]),
        "loss_first": float(np.mean(losses[:tail])),
        "loss_last": float(np.mean(losses[-tail:])),
        "config": dataclasses.asdict(cfg),
    }
    return trainer.teacher.backbone.requires_grad_(True).eval(), stats
