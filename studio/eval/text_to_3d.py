"""Text-to-3D results measured like the toy-t2i samples (``studio eval text-to-3d``).

A result (Gaussians or a mesh) is rendered on a turntable over white (:func:`caption_views`) and
every view is scored by the attribute classifier against the attributes its caption names
(:func:`score_caption`: ``priors.agreement``; a category unknown to the classifier, e.g. the
held-out ``snowman``, scores None); ``priors.weighted_means`` averages the caption rows.
"""

from __future__ import annotations

import numpy as np

from studio.eval.classifier.labels import caption_attributes
from studio.eval.classifier.model import AttributeClassifier
from studio.eval.priors import agreement
from studio.render.turntable import Scene, turntable

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
