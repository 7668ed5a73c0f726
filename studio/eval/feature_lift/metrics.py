"""Feature-lift metrics: scale-aligned depth, normal angles, mean IoU and correspondence recall
(overall and by viewing angle)."""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from studio.eval.feature_lift.settings import CORR_ANGLE_BINS, CORR_THRESHOLDS_PX, DEPTH_DELTA, NORMAL_THRESHOLDS_DEG


def align_depth_scale(pred: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """``pred`` [N,H,W] times the per-image least-squares scale ``sum(p g) / sum(p p)`` over
    ``mask`` (images without mask pixels or with zero prediction keep scale 1)."""
    m = mask.to(pred.dtype)
    num = (pred * gt * m).sum((1, 2))
    den = (pred * pred * m).sum((1, 2))
    scale = torch.where(den > 0, num / den.clamp(min=1e-12), torch.ones_like(den))
    return pred * scale[:, None, None]


def depth_metrics(pred: Tensor, gt: Tensor, mask: Tensor, delta: float = DEPTH_DELTA) -> Dict[str, float]:
    """{"rmse", "delta1"}: means over images (with mask pixels) of the per-image RMSE and
    ``max(p/g, g/p) < delta`` fraction after scale alignment; depths [N,H,W], mask [N,H,W]."""
    aligned = align_depth_scale(pred.float(), gt.float(), mask)
    rmse, d1 = [], []
    for p, g, m in zip(aligned, gt.float(), mask):
        if not m.any():
            continue
        p, g = p[m], g[m]
        rmse.append(float(torch.sqrt(torch.mean((p - g) ** 2))))
        ratio = torch.maximum(p / g.clamp(min=1e-9), g / p.clamp(min=1e-9))
        d1.append(float((ratio < delta).float().mean()))
    return {"rmse": _mean(rmse), "delta1": _mean(d1)}


def angular_error_deg(pred: Tensor, gt: Tensor) -> Tensor:
    """Angles in degrees between vectors [...,3] (both normalised here)."""
    cos = (F.normalize(pred.float(), dim=-1) * F.normalize(gt.float(), dim=-1)).sum(-1)
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


def normal_metrics(
    pred: Tensor, gt: Tensor, mask: Tensor, thresholds: Sequence[float] = NORMAL_THRESHOLDS_DEG
) -> Dict[str, float]:
    """{"rmse_deg", "recall_<t>" per threshold}: means over images of the per-image angular RMSE
    and fraction of mask pixels below each threshold; normals [N,H,W,3], mask [N,H,W]."""
    err = angular_error_deg(pred, gt)
    rows: Dict[str, List[float]] = {"rmse_deg": [], **{f"recall_{t:g}": [] for t in thresholds}}
    for e, m in zip(err, mask):
        if not m.any():
            continue
        e = e[m]
        rows["rmse_deg"].append(float(torch.sqrt(torch.mean(e**2))))
        for t in thresholds:
            rows[f"recall_{t:g}"].append(float((e < t).float().mean()))
    return {k: _mean(v) for k, v in rows.items()}


def mean_iou(pred: Tensor, gt: Tensor, n_classes: int) -> Optional[float]:
    """Mean IoU over classes ``0..n_classes-1`` with a non-empty union; ``gt`` < 0 is ignored.
    ``pred`` and ``gt`` are integer tensors of one shape. None when no class occurs."""
    keep = gt >= 0
    p, g = pred[keep], gt[keep]
    ious = []
    for c in range(n_classes):
        inter = ((p == c) & (g == c)).sum()
        union = ((p == c) | (g == c)).sum()
        if union > 0:
            ious.append(float(inter) / float(union))
    return _mean(ious)


def correspondence_metrics(
    errors: Tensor,
    angles: Tensor,
    thresholds: Sequence[float] = CORR_THRESHOLDS_PX,
    bins: Sequence[float] = CORR_ANGLE_BINS,
    binned_threshold: float = 10.0,
) -> Dict[str, object]:
    """{"recall_<t>px": fraction of ``errors`` [P] (pixels) below t, "by_angle": {bin label:
    recall at ``binned_threshold`` of the points whose ``angles`` [P] (degrees) fall in the bin}}.
    Bin labels are "a-b" and "a+" for the last one; empty bins and empty inputs give None."""
    out: Dict[str, object] = {}
    for t in thresholds:
        out[f"recall_{t:g}px"] = float((errors < t).float().mean()) if errors.numel() else None
    by_angle: Dict[str, Optional[float]] = {}
    for k, (lo, hi) in enumerate(zip(bins[:-1], bins[1:])):
        last = k == len(bins) - 2
        label = f"{lo:g}+" if last and hi >= 180 else f"{lo:g}-{hi:g}"
        inside = (angles >= lo) & ((angles <= hi) if last else (angles < hi))
        by_angle[label] = float((errors[inside] < binned_threshold).float().mean()) if inside.any() else None
    out["by_angle"] = by_angle
    return out


def _mean(values: Sequence[float]) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None
