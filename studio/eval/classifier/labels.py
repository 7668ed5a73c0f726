"""Attribute labels of ToyWorld objects and the labelled render sets of the attribute classifier.

The three attributes are those a caption names for its main part (``captions.MAIN_PART`` of a
composite, else the single part): the shape ``category``, the ``colour`` name (palette or metal)
and the ``material`` class, the finish word of the caption (``matte``/``satin``/``glossy`` for
dielectrics, ``polished``/``brushed`` for metals). The category vocabulary leaves out the held-out
categories of ``splits.json`` (``snowman``): they have no training scene, so their label is -1.

Render sets are single-object scenes rendered by :mod:`studio.priors.toydata` at its 32x32 default
(random elevation/azimuth/radius views, sRGB on white): the training set is the cached prior data
of the first trainable seeds (``toydata.load_or_make``); the held-out sets are the test (0-899) or
validation (900-999) seeds, rendered with ``training=False`` and cached beside it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from studio.priors.toydata import DataConfig, ToyData, default_cache_dir, load_or_make, render_views
from studio.scenes.toyworld import captions, materials, shapes, splits
from studio.scenes.toyworld.scene import make_scene

ATTRIBUTES = ("category", "colour", "material")
CATEGORIES = tuple(c for c in shapes.CATEGORIES if c not in splits.load_splits()["heldout_categories"])
COLOURS = tuple(materials.PALETTE_SRGB) + tuple(materials.METAL_SRGB)
MATERIALS = ("matte", "satin", "glossy", "polished", "brushed")
VOCABULARY = {"category": CATEGORIES, "colour": COLOURS, "material": MATERIALS}
SEED_RANGES = {"test": (0, 900), "validation": (900, 1000)}


def scene_attributes(desc: dict) -> dict[str, str]:
    """{category, colour, material} names of a single-object scene description (``make_scene``)."""
    obj = desc["objects"][0]
    main = captions.MAIN_PART.get(obj["category"])
    part = next(p for p in obj["parts"] if main is None or p["name"] == main)
    mat = part["material"]
    return {"category": obj["category"], "colour": mat["color_name"], "material": mat["finish"].split()[0]}


def caption_attributes(caption: str) -> dict[str, Optional[str]]:
    """{category, colour, material} a single-object caption names (``"a glossy red torus"``; the
    first colour of a textured one); ``None`` where it names none. The category may be a held-out one."""
    words = caption.replace(",", " ").split()

    def first(names) -> Optional[str]:
        return next((w for w in words if w in names), None)

    return {"category": first(shapes.CATEGORIES), "colour": first(COLOURS), "material": first(MATERIALS)}


def label_indices(attrs: dict[str, Optional[str]]) -> list[int]:
    """Indices of the attribute names in :data:`VOCABULARY` (-1 for a name outside it)."""
    return [VOCABULARY[a].index(attrs[a]) if attrs[a] in VOCABULARY[a] else -1 for a in ATTRIBUTES]


@dataclass
class LabelledViews:
    """Views with their labels, flattened over seeds and views."""

    images: np.ndarray  # [N, H, W, 3] uint8, on white
    labels: np.ndarray  # [N, 3] int64 indices into VOCABULARY (category, colour, material); -1: unknown
    seeds: np.ndarray  # [N] int64
    captions: np.ndarray  # [N] str

    def __len__(self) -> int:
        return int(self.images.shape[0])


def labelled(data: ToyData) -> LabelledViews:
    """Every view of ``data`` with the attribute labels of its seed's scene description."""
    per_seed = np.array([label_indices(scene_attributes(make_scene(int(s), "object"))) for s in data.seeds])
    V = data.n_views
    return LabelledViews(
        images=data.images.reshape(-1, *data.images.shape[2:]),
        labels=np.repeat(per_seed, V, axis=0).astype(np.int64),
        seeds=np.repeat(data.seeds, V),
        captions=np.repeat(data.captions, V),
    )


def training_views(cfg: DataConfig, workers: int = 1, log: Callable[[str], None] = print) -> LabelledViews:
    """The (cached) prior training data of ``cfg``, labelled."""
    return labelled(load_or_make(cfg, workers=workers, log=log))


def render_heldout(seeds, cfg: DataConfig) -> ToyData:
    """``cfg.views`` random views (toydata's distribution, another random stream) of held-out seeds."""
    out = []
    for seed in seeds:
        rng = np.random.default_rng([int(seed), 0xE7A1])
        elev = np.radians(rng.uniform(*cfg.elev_deg, cfg.views))
        azim = rng.uniform(0.0, 2 * math.pi, cfg.views)
        scale = rng.uniform(*cfg.radius_scale, cfg.views)
        out.append(render_views(seed, elev, azim, scale, cfg, rng, training=False))
    return ToyData(
        images=np.stack([r["images"] for r in out]),
        captions=np.array([r["caption"] for r in out]),
        seeds=np.array([r["seed"] for r in out], np.int64),
        elevation=np.stack([r["elevation"] for r in out]),
        azimuth=np.stack([r["azimuth"] for r in out]),
        radius=np.stack([r["radius"] for r in out]),
    )


def heldout_views(split: str, views: int = 4, res: int = 32, log: Callable[[str], None] = print) -> LabelledViews:
    """``views`` views at ``res`` x ``res`` of every seed of ``split`` (``"test"``: 0-899,
    ``"validation"``: 900-999), labelled; cached under ``toydata.default_cache_dir()``."""
    lo, hi = SEED_RANGES[split]
    n = hi - lo
    cfg = dataclasses.replace(DataConfig(), n_seeds=n, views=views, res=res, start_seed=lo)
    path = Path(default_cache_dir()) / f"heldout-{split}-{cfg.filename()}"
    if path.is_file():
        return labelled(ToyData.load(path))
    t0 = time.time()
    data = render_heldout(range(lo, lo + n), cfg)
    data.save(path)
    log(f"Rendered {n} {split} seeds x {views} views at {res}x{res} in {time.time() - t0:.0f}s -> {path}")
    return labelled(data)
