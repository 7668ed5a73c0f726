"""The fixed ToyWorld train / held-out split (``splits.json`` beside this file; see README.md).

Priors may train only on scenes whose :func:`split_of` is ``"train"``; evaluations use held-out
scenes. :func:`assert_trainable` is the guard training code calls per scene.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SPLITS_FILE = Path(__file__).with_name("splits.json")


class HeldOutSceneError(ValueError):
    """A held-out ToyWorld scene was requested for training."""


@lru_cache(maxsize=1)
def load_splits() -> dict:
    return json.loads(SPLITS_FILE.read_text(encoding="utf-8"))


def _in(seed: int, ranges) -> bool:
    return any(lo <= seed < hi for lo, hi in ranges)


def split_of(seed: int, caption: str | None = None, category: str | None = None) -> str:
    """``"heldout"`` if the seed, category or caption is held out by ``splits.json``, else ``"train"``."""
    s = load_splits()
    if _in(seed, s["heldout_seed_ranges"]) or not _in(seed, s["train_seed_ranges"]):
        return "heldout"
    if category is not None and category in s["heldout_categories"]:
        return "heldout"
    if caption is not None:
        if caption in s["heldout_captions"]:
            return "heldout"
        words = set(caption.replace(",", " ").split())
        if any(all(w in words for w in combo) for combo in s["heldout_caption_words"]):
            return "heldout"
        # multi-object captions: a held-out object caption anywhere in the scene caption
        if any(c in caption for c in s["heldout_captions"]):
            return "heldout"
    return "train"


def scene_split(seed: int, kind: str = "object") -> str:
    """Split of the scene ``make_scene(seed, kind)`` (builds its description: cheap)."""
    from studio.scenes.toyworld.scene import make_scene

    d = make_scene(seed, kind)
    cats = {o["category"] for o in d["objects"]}
    held_cat = any(split_of(seed, None, c) == "heldout" for c in cats)
    return "heldout" if held_cat else split_of(seed, d["caption"], d["category"])


def assert_trainable(seed: int, kind: str = "object") -> None:
    """Raise :class:`HeldOutSceneError` if scene ``(seed, kind)`` is held out."""
    if scene_split(seed, kind) != "train":
        raise HeldOutSceneError(f"ToyWorld scene seed={seed} kind={kind} is held out by splits.json; not for training")


def training_seeds(n: int, kind: str = "object", start: int | None = None) -> list[int]:
    """The first ``n`` trainable seeds (held-out ones skipped), from the first train range."""
    seed = load_splits()["train_seed_ranges"][0][0] if start is None else start
    out = []
    while len(out) < n:
        if scene_split(seed, kind) == "train":
            out.append(seed)
        seed += 1
    return out


def heldout_seeds(n: int, kind: str = "object") -> list[int]:
    """The first ``n`` seeds of the held-out seed range (evaluation scenes)."""
    lo, hi = load_splits()["heldout_seed_ranges"][0]
    return list(range(lo, min(hi, lo + n)))
