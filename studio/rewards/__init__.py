"""Differentiable rewards of VP3D (Chen et al. CVPR 2024): image-text alignment and visual consistency.

* ``ImageTextModel``: images [B,3,H,W] in [0,1] and texts -> L2-normalised embeddings;
  ``alignment(images, texts)`` -> [B] cosine similarities, differentiable w.r.t. the images.
* ``load_image_text_model(name_or_path, device)``: the embedded ``toy-clip`` (a CLIP-style dual
  encoder trained on ToyWorld by :mod:`studio.rewards.train`), a toy-clip file, or a local
  transformers CLIP folder (:mod:`studio.rewards.clip`).
* ``VisualConsistency(model, device)``: cosine similarity of renders' features with the visual
  prompt's (a 2D feature model such as ``toy-vit``, or an image-text model's image tower).
Training code is imported from its module.
"""

from studio.rewards.base import ImageTextModel
from studio.rewards.consistency import VisualConsistency
from studio.rewards.registry import available_image_text_models, is_image_text_model, load_image_text_model

__all__ = [
    "ImageTextModel",
    "VisualConsistency",
    "available_image_text_models",
    "is_image_text_model",
    "load_image_text_model",
]
