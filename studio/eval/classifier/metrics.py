"""Held-out accuracy of the attribute classifier and the Fréchet distance of its features.

:func:`accuracy_table` rows (fraction correct per head, and ``n`` views):

* ``all``: every view of a known category (``snowman``, the held-out category, is left out);
* ``snowman``: colour and material accuracy plus the categories it is taken for;
* one row per held-out caption-word combination (``purple capsule``, ``teal box``: compositional
  generalisation, no training scene has them) and per held-out caption present in the set;
* ``per_category``: category accuracy of each known category;
* ``material_confusion``: view counts ``[true, predicted]`` over the material classes (``labels``),
  all views (finishes of one kind, dielectric or metal, are much harder to tell apart than the kinds).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from studio.eval.classifier.labels import ATTRIBUTES, LabelledViews
from studio.eval.classifier.model import AttributeClassifier
from studio.scenes.toyworld import splits


def accuracy_row(pred: np.ndarray, labels: np.ndarray) -> dict:
    """{n, category, colour, material}: accuracy of each head over the views whose label is known."""
    row: dict = {"n": int(len(labels))}
    for k, a in enumerate(ATTRIBUTES):
        known = labels[:, k] >= 0
        row[a] = float(np.mean(pred[known, k] == labels[known, k])) if known.any() else None
    return row


def accuracy_table(model: AttributeClassifier, views: LabelledViews) -> dict:
    """Accuracy rows of ``model`` on ``views`` (see the module docstring)."""
    pred = model.predict_indices(views.images)
    labels = views.labels
    known = labels[:, 0] >= 0
    table = {"all": accuracy_row(pred[known], labels[known])}
    snow = ~known
    if snow.any():
        table["snowman"] = accuracy_row(pred[snow], labels[snow])
        names = Counter(model.vocabulary["category"][k] for k in pred[snow, 0])
        table["snowman"]["taken_for"] = dict(names.most_common())
    s = splits.load_splits()
    groups = {
        " ".join(c): [all(w in str(t).split() for w in c) for t in views.captions] for c in s["heldout_caption_words"]
    }
    groups.update({c: views.captions == c for c in s["heldout_captions"]})
    for name, mask in groups.items():
        mask = np.asarray(mask, bool)
        if mask.any():
            table[name] = accuracy_row(pred[mask], labels[mask])
    table["per_category"] = {
        cat: float(np.mean(pred[labels[:, 0] == k, 0] == k))
        for k, cat in enumerate(model.vocabulary["category"])
        if (labels[:, 0] == k).any()
    }
    n = len(model.vocabulary["material"])
    counts = np.bincount(labels[:, 2] * n + pred[:, 2], minlength=n * n).reshape(n, n)
    table["material_confusion"] = {"labels": list(model.vocabulary["material"]), "counts": counts.tolist()}
    return table


def fid_features_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussian fits of two feature sets ``[N_a, D]`` and ``[N_b, D]``
    (arrays or tensors, e.g. :meth:`AttributeClassifier.features`): ``|mu_a - mu_b|^2 + tr(C_a + C_b
    - 2 (C_a C_b)^(1/2))``, with ``tr (C_a C_b)^(1/2) = tr (C_a^(1/2) C_b C_a^(1/2))^(1/2)`` from
    symmetric eigendecompositions (float64; ``eps`` is added to the diagonals). Units: squared feature units."""
    a, b = (torch.as_tensor(f).detach().cpu().double().numpy() for f in (feats_a, feats_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two [N >= 2, D] feature sets of one D, got {a.shape} and {b.shape}")
    eye = np.eye(a.shape[1]) * eps
    ca, cb = np.cov(a, rowvar=False) + eye, np.cov(b, rowvar=False) + eye
    w, v = np.linalg.eigh(ca)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cb @ root_a), 0.0, None)).sum()
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb) - 2.0 * cross)
