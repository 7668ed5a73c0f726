"""Text-to-3D results measured like the toy-t2i samples (``studio eval text-to-3d``).

A result (Gaussians or a mesh) is rendered on a turntable over white (:func:`caption_views`) and
every view is scored by the attribute classifier against the attributes its caption names
(:func:`score_caption`: ``priors.agreement``; a category unknown to the classifier, e.g. the
held-out ``snowman``, scores None); ``priors.weighted_means`` averages the caption rows.

:func:`embedding_scores` adds two scores from an image-text model (``studio.rewards``: the embedded
``toy-clip``, or a local CLIP): ``alignment``, the cosine similarity between each view's image
embedding and the caption's, averaged over the views (CLIP score without CLIP's x100), and
``consistency``, the cosine similarity between the image embeddings of adjacent turntable views
(cyclic: view V-1 next to view 0), averaged: 1 when every view embeds alike, lower when the look
changes from view to view (the multi-face, colour-drift failures of score distillation). A
method that optimises the same model's alignment (``vp3d``'s reward) is partly graded by its own
objective; the classifier columns and a ``--clip`` model it never saw are the independent checks.
"""

from __future__ import annotations

import numpy as np
import torch

from studio.eval.classifier.labels import caption_attributes
from studio.eval.classifier.model import AttributeClassifier
from studio.eval.priors import agreement
from studio.render.turntable import Scene, turntable
from studio.rewards import ImageTextModel

IMAGE_TEXT_MODEL = "toy-clip"
"""The image-text model of the ``alignment`` and ``consistency`` columns (``embedding_scores``)."""

FOV_DEG = 40.0
"""Field of view of the turntable views (that of the generation methods' orbit cameras)."""


def caption_views(scene: Scene, views: int = 8, size: int = 64, elevation: float = 20.0) -> np.ndarray:
    """``views`` turntable renders (+Z up, from azimuth 0) of ``scene`` at ``size`` x ``size``,
    ``elevation`` degrees, on white -> uint8 [views, size, size, 3]."""
    return turntable(scene, views, size, elevation, FOV_DEG, up=(0.0, 0.0, 1.0), background=(1.0, 1.0, 1.0))


def score_caption(classifier: AttributeClassifier, frames: np.ndarray, caption: str) -> dict:
    """{n, category, colour, material, most_often}: the fraction of ``frames`` (uint8 [V, H, W, 3])
    whose predicted attribute is the one ``caption`` names (None where it names none the classifier knows)."""
    return agreement(classifier, frames, [caption_attributes(caption)] * len(frames))


@torch.no_grad()
def embedding_scores(model: ImageTextModel, frames: np.ndarray, caption: str) -> dict:
    """{alignment, consistency} of turntable ``frames`` (uint8 [V, H, W, 3], in turntable order) and
    ``caption`` under ``model`` (see the module docstring; consistency is None for one view)."""
    images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    emb = model.embed_images(images)
    alignment = (emb * model.embed_texts(caption)).sum(-1).mean()
    consistency = (emb * emb.roll(-1, dims=0)).sum(-1).mean() if len(frames) > 1 else None
    return {"alignment": float(alignment), "consistency": None if consistency is None else float(consistency)}
