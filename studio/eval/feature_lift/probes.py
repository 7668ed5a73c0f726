"""Feature-lift probes: frozen feature extraction, the dense and linear probe networks, their
losses (scale-invariant log depth, angular) and :func:`fit_probe`."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.eval.feature_lift.settings import DEPTH_SILOG_LAMBDA, FEATURE_BATCH, ProbeSettings


# ---------------------------------------------------------------------------------- features
@torch.no_grad()
def extract_features(model: nn.Module, images: Tensor, batch: int = FEATURE_BATCH) -> Tensor:
    """Frozen features [N,D,h,w] (float32, CPU) of ``images`` [N,3,H,W] in [0,1]: ``model.prepare``
    then ``model(...)`` in batches, on the model's device."""
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    model.eval()
    out = []
    for start in range(0, len(images), batch):
        x = model.prepare(images[start : start + batch].to(device))
        f = model(x)
        if f.dim() != 4 or f.shape[0] != x.shape[0] or f.shape[1] != model.dim:
            raise ValueError(
                f"feature model {getattr(model, 'name', '?')} returned {list(f.shape)}, expected [B,{model.dim},h,w]."
            )
        out.append(f.detach().float().cpu())
    return torch.cat(out)


# ------------------------------------------------------------------------------------ probes
class ResidualConvUnit(nn.Module):
    """DPT's residual unit: x + conv3x3(relu(conv3x3(relu(x))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class DenseProbe(nn.Module):
    """Features [B,D,h,w] -> per-pixel outputs [B,C,H,W] (see ``PROBE_HIDDEN``)."""

    def __init__(self, dim: int, out_channels: int, hidden: int, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)
        self.inp = nn.Conv2d(dim, hidden, 1)
        self.blocks = nn.Sequential(ResidualConvUnit(hidden), ResidualConvUnit(hidden))
        self.reduce = nn.Conv2d(hidden, max(1, hidden // 4), 1)
        self.out = nn.Conv2d(max(1, hidden // 4), out_channels, 3, padding=1)

    def forward(self, features: Tensor) -> Tensor:
        x = self.reduce(F.relu(self.blocks(self.inp(features))))
        x = F.interpolate(F.relu(x), size=self.size, mode="bilinear", align_corners=False)
        return self.out(x)


class LinearProbe(nn.Module):
    """Features [B,D,h,w] -> logits [B,C,H,W]: a 1x1 conv, bilinearly upsampled."""

    def __init__(self, dim: int, out_channels: int, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)
        self.conv = nn.Conv2d(dim, out_channels, 1)

    def forward(self, features: Tensor) -> Tensor:
        return F.interpolate(self.conv(features), size=self.size, mode="bilinear", align_corners=False)


def silog_loss(pred_log: Tensor, depth: Tensor, lam: float = DEPTH_SILOG_LAMBDA) -> Tensor:
    """Scale-invariant log loss of predicted log depth [B,1,H,W] against depth [B,H,W] (0 = no
    surface): per image ``mean(d^2) - lam mean(d)^2`` over its surface pixels, mean over images."""
    m = (depth > 0).float()
    d = (pred_log[:, 0] - torch.log(depth.clamp(min=1e-6))) * m
    n = m.sum((1, 2)).clamp(min=1)
    per = (d**2).sum((1, 2)) / n - lam * (d.sum((1, 2)) / n) ** 2
    return per[m.sum((1, 2)) > 0].mean() if (m.sum((1, 2)) > 0).any() else pred_log.sum() * 0


def angular_loss(pred: Tensor, normals: Tensor) -> Tensor:
    """Mean angle (radians) between predicted [B,3,H,W] and true normals [B,H,W,3] (zero = none)."""
    m = normals.norm(dim=-1) > 0.5
    if not m.any():
        return pred.sum() * 0
    cos = (F.normalize(pred.permute(0, 2, 3, 1), dim=-1) * normals).sum(-1)[m]
    return torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6)).mean()


def fit_probe(
    probe: nn.Module,
    features: Tensor,
    targets: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    settings: ProbeSettings,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Train ``probe`` on frozen ``features`` [N,D,h,w] against ``targets`` [N,...] with AdamW
    (``settings``: steps, batch, lr with warm-up + cosine, weight decay, seed). Returns it in eval mode."""
    probe.to(device).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warm = max(1, settings.steps // 10)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, settings.steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(settings.seed)
    for _ in range(settings.steps):
        idx = torch.randint(len(features), (min(settings.batch, len(features)),), generator=gen)
        loss = loss_fn(probe(features[idx].to(device)), targets[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return probe.eval()


@torch.no_grad()
def _predict(probe: nn.Module, features: Tensor, batch: int, device) -> Tensor:
    return torch.cat([probe(features[i : i + batch].to(device)).float().cpu() for i in range(0, len(features), batch)])


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
