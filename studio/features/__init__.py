"""2D feature models: one interface (``FeatureModel``: images [B,3,H,W] in [0,1] -> patch features
[B,D,H/p,W/p]), the embedded ``toy-vit`` (a small ViT trained by DINO self-distillation on ToyWorld,
:mod:`studio.features.dino`), transformers DINOv2/DINOv3 adapters from local folders, and the
loader (``load_feature_model``). Training code is imported from its module.
"""

from studio.features.base import FeatureModel
from studio.features.registry import (
    available_feature_models,
    check_feature_model,
    load_feature_model,
    save_feature_model,
)

__all__ = [
    "FeatureModel",
    "available_feature_models",
    "check_feature_model",
    "load_feature_model",
    "save_feature_model",
]
