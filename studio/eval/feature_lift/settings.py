"""The feature-lift protocol's fixed settings: the module constants, ``METRIC_KEYS`` and
:class:`ProbeSettings` (one instance for every model that is compared)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

EVAL_RESOLUTION = 128
"""Longer image side (pixels) at which every metric is computed; pixel thresholds refer to it."""
PROBE_HIDDEN = 128
"""Channels of the dense probes: 1x1 conv D->hidden, two residual 3x3 conv units (DPT's
``ResidualConvUnit``) at the feature map's resolution, a 1x1 conv to hidden/4, bilinear upsampling
to the evaluation resolution, a 3x3 output conv (the heavy layers run at patch resolution, so the
protocol fits a CPU)."""
PROBE_STEPS = 1000
"""AdamW steps of every probe (depth, normals, segmentation)."""
PROBE_BATCH = 8
"""Train views per probe step (sampled with replacement by a seeded generator)."""
PROBE_LR = 1e-3
"""Peak learning rate: linear warm-up over the first 10% of steps, cosine decay to 0."""
PROBE_WEIGHT_DECAY = 1e-4
"""AdamW weight decay of the probes."""
PROBE_SEED = 0
"""Seed of probe initialisation, batch order and correspondence point sampling."""
DEPTH_SILOG_LAMBDA = 0.85
"""Depth probe loss: scale-invariant log loss ``mean(d^2) - lambda mean(d)^2``, d = log p - log g
per image (Eigen et al. 2014; 0.85 as in BTS/AdaBins); the probe predicts log depth."""
DEPTH_DELTA = 1.25
"""Ratio threshold of ``depth_delta1``."""
NORMAL_THRESHOLDS_DEG = (11.25, 22.5, 30.0)
"""Angular thresholds of ``normal_recall_{11,22,30}``; the normal probe minimises the mean angle."""
CORR_THRESHOLDS_PX = (5.0, 10.0, 20.0)
"""Pixel thresholds of ``corr_recall_{5,10,20}px``."""
CORR_POINTS = 1000
"""Query points per ordered test-view pair (object pixels of A visible in B, seeded sample)."""
CORR_OCCLUSION_TOL = 0.03
"""A point projected into B is visible when ``|z_B - depth_B| <= tol * z_B`` at its pixel."""
CORR_ANGLE_BINS = (0.0, 30.0, 60.0, 90.0, 180.0)
"""Edges (degrees) of the viewing-angle bins of ``corr_recall_10px_by_angle``."""
FEATURE_BATCH = 8
"""Images per feature-model forward pass."""
BACKGROUND_DEPTH = 1e6
"""Depths at or above this (Blender's background) or <= 0 (ToyWorld's) mark pixels without surface."""

METRIC_KEYS = (
    "depth_rmse",
    "depth_delta1",
    "normal_rmse_deg",
    "normal_recall_11",
    "normal_recall_22",
    "normal_recall_30",
    "corr_recall_5px",
    "corr_recall_10px",
    "corr_recall_20px",
    "seg_miou",
)
"""The headline metrics, in table order."""


@dataclass(frozen=True)
class ProbeSettings:
    """The protocol's settings (defaults: the module constants). Use one instance for every model
    that is compared; tests shrink it."""

    resolution: int = EVAL_RESOLUTION
    hidden: int = PROBE_HIDDEN
    steps: int = PROBE_STEPS
    batch: int = PROBE_BATCH
    lr: float = PROBE_LR
    weight_decay: float = PROBE_WEIGHT_DECAY
    seed: int = PROBE_SEED
    silog_lambda: float = DEPTH_SILOG_LAMBDA
    depth_delta: float = DEPTH_DELTA
    normal_thresholds_deg: tuple[float, ...] = NORMAL_THRESHOLDS_DEG
    corr_thresholds_px: tuple[float, ...] = CORR_THRESHOLDS_PX
    corr_points: int = CORR_POINTS
    corr_occlusion_tol: float = CORR_OCCLUSION_TOL
    corr_angle_bins: tuple[float, ...] = CORR_ANGLE_BINS
    feature_batch: int = FEATURE_BATCH

    def as_dict(self) -> dict:
        """JSON-able copy (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
