"""The fixed ToyWorld train / validation / test split (``splits.json`` beside this file; see README.md).

Priors may train only on scenes whose :func:`split_of` is ``"train"``; defaults are chosen on
``"validation"`` scenes and captions, and reported tables use ``"test"`` ones. Validation and test
together are the held-out part (:data:`HELDOUT`), which no prior sees. :func:`assert_trainable`
is the guard training code calls per scene.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SPLITS_FILE = Path(__file__).with_name("splits.json")
SPLITS = ("train", "validation", "test")
HELDOUT = ("validation", "test")


class HeldOutSceneError(ValueError):
    """A held-out (validation or test) ToyWorld scene was requested for training."""


@lru_cache(maxsize=1)
def load_splits() -> dict:
    return json.loads(SPLITS_FILE.read_text(encoding="utf-8"))


def _in(seed: int, ranges) -> bool:
    return any(lo <= seed < hi for lo, hi in ranges)


def is_heldout(split: str) -> bool:
    """True for ``"validation"`` and ``"test"``."""
    return split in HELDOUT


def caption_split(caption: str) -> str:
    """Split of a caption (or text prompt) alone: ``"validation"`` if it holds a validation caption
    and nothing of the test part, ``"test"`` if it is otherwise held out, else ``"train"``."""
    s = load_splits()
    validation = [c for c in s["heldout_captions"] if c in s["validation_captions"]]
    test = [c for c in s["heldout_captions"] if c not in validation]
    words = set(caption.replace(",", " ").split())
    # multi-object captions join object captions: a held-out caption anywhere in the text counts
    if any(c in caption for c in test) or any(all(w in words for w in combo) for combo in s["heldout_caption_words"]):
        return "test"
    if any(c in caption for c in validation):
        return "validation"
    return "train"


def split_of(seed: int, caption: str | None = None, category: str | None = None) -> str:
    """``"train"``, ``"validation"`` or ``"test"`` of a scene. A held-out seed decides alone (the
    validation seed range, else test); for a train-range seed a held-out category makes the scene
    test and a held-out caption makes it that caption's split (:func:`caption_split`)."""
    s = load_splits()
    if _in(seed, s["validation_seed_ranges"]):
        return "validation"
    if _in(seed, s["heldout_seed_ranges"]) or not _in(seed, s["train_seed_ranges"]):
        return "test"
    if category is not None and category in s["heldout_categories"]:
        return "test"
    return "train" if caption is None else caption_split(caption)


def scene_split(seed: int, kind: str = "object") -> str:
    """Split of the scene ``make_scene(seed, kind)`` (builds its description: cheap)."""
    from studio.scenes.toyworld.scene import make_scene

    d = make_scene(seed, kind)
    split = split_of(seed, d["caption"], d["category"])
    if split == "train" and any(o["category"] in load_splits()["heldout_categories"] for o in d["objects"]):
        return "test"
    return split


def dataset_split(data: str | Path | None) -> str | None:
    """The ``split`` a dataset folder's ``meta.json`` records (``None`` without one)."""
    meta = Path(data or "") / "meta.json"
    if data is None or not meta.is_file():
        return None
    try:
        split = json.loads(meta.read_text(encoding="utf-8")).get("split")
    except (ValueError, AttributeError):
        return None
    return split if isinstance(split, str) else None


def assert_trainable(seed: int, kind: str = "object") -> None:
    """Raise :class:`HeldOutSceneError` if scene ``(seed, kind)`` is held out (validation or test)."""
    split = scene_split(seed, kind)
    if split != "train":
        raise HeldOutSceneError(
            f"ToyWorld scene seed={seed} kind={kind} is held out by splits.json ({split}); not for training"
        )


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
    """The first ``n`` seeds of the held-out seed range (test seeds while ``n`` <= 900)."""
    lo, hi = load_splits()["heldout_seed_ranges"][0]
    return list(range(lo, min(hi, lo + n)))


def validation_seeds(n: int) -> list[int]:
    """The first ``n`` seeds of the validation seed range (for choosing defaults)."""
    lo, hi = load_splits()["validation_seed_ranges"][0]
    return list(range(lo, min(hi, lo + n)))
