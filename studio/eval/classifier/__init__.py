"""ToyWorld attribute classifier: shape category, colour name and material class of an image.

A measuring instrument for generated images and renders of 3D results (never a training signal of
a prior or method): trained on training-split renders only (:mod:`.train`), measured on held-out
renders (:mod:`.metrics`), committed as ``studio/eval/weights/toy-attributes.safetensors``
(:func:`load_attribute_classifier`). See ``studio/eval/README.md``.
"""

from studio.eval.classifier.labels import (
    ATTRIBUTES,
    VOCABULARY,
    LabelledViews,
    caption_attributes,
    heldout_views,
    scene_attributes,
    training_views,
)
from studio.eval.classifier.metrics import accuracy_table, fid_features_distance
from studio.eval.classifier.model import (
    DEFAULT_WEIGHTS,
    AttributeClassifier,
    load_attribute_classifier,
    prepare,
    save_attribute_classifier,
)
from studio.eval.classifier.train import ClassifierTrainConfig, augment, train_classifier

__all__ = [
    "ATTRIBUTES",
    "VOCABULARY",
    "DEFAULT_WEIGHTS",
    "AttributeClassifier",
    "ClassifierTrainConfig",
    "LabelledViews",
    "accuracy_table",
    "augment",
    "caption_attributes",
    "fid_features_distance",
    "heldout_views",
    "load_attribute_classifier",
    "prepare",
    "save_attribute_classifier",
    "scene_attributes",
    "train_classifier",
    "training_views",
]
