"""Feed-forward Gaussians and feature lifting (``studio.lift``).

* :class:`GaussianPredictor` (:mod:`studio.lift.model`): MVSplat-style predictor, V >= 2 posed
  context views -> :class:`PixelGaussians` (one Gaussian per pixel, pixel order ``v*H*W + y*W + x``).
* :func:`render` (:mod:`studio.lift.gaussians`): batched rasterization of pixel Gaussians with RGB or
  any [B,N,D] features; :func:`gaussians_from_depth` builds them from a known depth map.
* :func:`lift_features` / :func:`render_features` (:mod:`studio.lift.lifting`): teacher features on
  the context views -> upsampled to pixels -> one per Gaussian -> rendered at target views.
* :mod:`studio.lift.data` (ToyWorld multi-view training data, training split only) and
  :mod:`studio.lift.train` (training with HuggingFace Accelerate: one CPU or multi-process DDP).

Layering: imports ``studio.render``, ``studio.cameras``, ``studio.gaussians``, ``studio.io``,
``studio.metrics`` and ``studio.scenes``; never priors, guidance or models.
"""

from studio.lift.gaussians import LiftRender, PixelGaussians, gaussians_from_depth, render, unproject_depth
from studio.lift.lifting import assign_features, lift_features, render_features, upsample_features
from studio.lift.model import GaussianPredictor, PredictorConfig, load_predictor, save_predictor

__all__ = [
    "GaussianPredictor",
    "LiftRender",
    "PixelGaussians",
    "PredictorConfig",
    "assign_features",
    "gaussians_from_depth",
    "lift_features",
    "load_predictor",
    "render",
    "render_features",
    "save_predictor",
    "unproject_depth",
    "upsample_features",
]
