"""Held-out scores of the image-text reward models (``python -m studio.eval.rewards``).

Caption retrieval on held-out ToyWorld views (:func:`studio.eval.classifier.labels.heldout_views`:
the validation seeds 900-999 or the test seeds 0-899, 4 random views each at 32x32, rendered with
``training=False`` and cached): every view is scored against every distinct caption of the split
(``alignment``, cosine similarity) and its top-1 caption taken. Reported per row of views:

* ``top1``: fraction of views whose top-1 caption is their own (``chance`` = 1 / captions);
* ``category`` / ``colour`` / ``material``: fraction whose top-1 caption names the view's
  attribute (:func:`~studio.eval.classifier.labels.caption_attributes` of the retrieved caption
  against the scene's labels; views of a held-out category are left out of ``category``).

Rows: ``all``; ``train_captions`` (captions that the training split also has, held-out category
excluded); ``heldout_captions`` (captions of ``splits.json``'s held-out list or word pairs: never
seen in training); ``heldout_category`` (``snowman``, whose word the model never saw with an image).

Visual consistency (:func:`consistency_scores`, ``--consistency MODEL``): each held-out view is the
visual prompt of the others; the reward is scored on every pair. ``view_top1``: fraction of views
whose highest-scoring other view shows the same object (another view of its seed; chance about
3 / (4 * seeds - 1)); ``same`` / ``different``: mean reward over pairs of views of one object /
of different objects.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import torch

from studio.eval.classifier.labels import LabelledViews, caption_attributes, heldout_views, label_indices
from studio.eval.classifier.metrics import accuracy_row
from studio.rewards.base import ImageTextModel
from studio.rewards.consistency import VisualConsistency
from studio.scenes.toyworld import splits


@torch.no_grad()
def retrieve(model: ImageTextModel, images: np.ndarray, candidates: Sequence[str], batch: int = 512) -> np.ndarray:
    """Index into ``candidates`` of the best-aligned caption of each uint8 image ``[N,H,W,3]``."""
    text = model.embed_texts(list(candidates))  # [C, D]
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).permute(0, 3, 1, 2).float() / 255.0
        out.append((model.embed_images(x) @ text.t()).argmax(1).cpu())
    return torch.cat(out).numpy()


def retrieval_scores(model: ImageTextModel, views: LabelledViews) -> dict:
    """Rows of top-1 caption retrieval and attribute agreement (see the module docstring)."""
    captions = views.captions.astype(str)
    candidates = sorted(set(captions))
    pred = np.array(candidates)[retrieve(model, views.images, candidates)]
    pred_labels = np.array([label_indices(caption_attributes(c)) for c in pred], np.int64)
    held_category = views.labels[:, 0] < 0
    held_caption = np.array([splits.caption_split(c) != "train" for c in captions])
    rows = {
        "all": np.ones(len(views), bool),
        "train_captions": ~held_caption & ~held_category,
        "heldout_captions": held_caption & ~held_category,
        "heldout_category": held_category,
    }
    table = {"captions": len(candidates), "chance": 1.0 / len(candidates)}
    for name, mask in rows.items():
        if mask.any():
            row = accuracy_row(pred_labels[mask], views.labels[mask])
            table[name] = {"top1": float(np.mean(pred[mask] == captions[mask])), **row}
    return table


@torch.no_grad()
def consistency_scores(reward: VisualConsistency, views: LabelledViews, batch: int = 512) -> dict:
    """{view_top1, same, different} of ``reward`` on the views (see the module docstring)."""
    x = torch.from_numpy(np.ascontiguousarray(views.images)).permute(0, 3, 1, 2).float() / 255.0
    f = torch.cat([reward.features(x[i : i + batch]).flatten(1).cpu() for i in range(0, len(x), batch)])
    sim = f @ f.t() / (f[0].square().sum())  # unit features per patch: a patch map's squared norm is its patch count
    seeds = torch.from_numpy(views.seeds)
    same = seeds[:, None] == seeds[None, :]
    eye = torch.eye(len(x), dtype=torch.bool)
    best = sim.masked_fill(eye, -float("inf")).argmax(1)
    return {
        "view_top1": float((seeds[best] == seeds).float().mean()),
        "same": float(sim[same & ~eye].mean()),
        "different": float(sim[~same].mean()),
    }


def evaluate_image_text(model: ImageTextModel, split_names: Sequence[str] = ("validation", "test")) -> dict:
    """{split: :func:`retrieval_scores`} on the held-out views of each split."""
    return {s: retrieval_scores(model, heldout_views(s)) for s in split_names}


def main() -> None:
    import argparse

    from studio.rewards import load_image_text_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="toy-clip", help="toy-clip, a toy-clip file or a local CLIP folder")
    parser.add_argument("--split", nargs="+", default=["validation", "test"], choices=["validation", "test"])
    parser.add_argument("--consistency", help="score VisualConsistency(MODEL) instead (toy-vit, toy-clip, ...)")
    parser.add_argument("--pooling", default="mean", choices=["mean", "patch"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.consistency:
        reward = VisualConsistency(args.consistency, pooling=args.pooling)
        out = {s: consistency_scores(reward, heldout_views(s)) for s in args.split}
    else:
        out = evaluate_image_text(load_image_text_model(args.model), args.split)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
