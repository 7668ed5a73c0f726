"""Sample quality of the embedded priors, measured on held-out ToyWorld scenes (``studio prior eval``).

``toy-t2i`` (:func:`evaluate_t2i`): ``n`` DDIM + CFG samples per caption (by default the held-out
captions of ``splits.json``, test and validation), scored by the attribute classifier
(:mod:`studio.eval.classifier`, a measuring instrument): per caption and per split, the fraction of
samples whose predicted category / colour / material is the one the caption names, and the
Fréchet distance of the classifier's 128-d features (FID-style, squared feature units, lower is
better; it shrinks with more samples, so compare runs of one ``n``) between the samples of a split
and real renders of the same captions (:func:`caption_renders`: held-out scenes with exactly that
caption, toydata's random views). The classifier's accuracy on those real renders is its ceiling.

``toy-nvs`` (:func:`evaluate_nvs`): for held-out single-object seeds, a reference view at a fixed
elevation and azimuth 0 and the true views at +azimuth (same elevation and distance), rendered by
ToyWorld (:func:`object_views`); novel views are sampled from the reference and the relative pose
and scored per azimuth against the true views: PSNR (dB, mean of per-image values), SSIM, mask IoU
(foreground: some channel below :data:`MASK_THRESHOLD`, :func:`foreground`) and the classifier's
agreement with the object's category and colour, next to the classifier on the true views (objects
of the held-out category ``snowman``, unknown to the classifier and captioned by the colour of their
small nose, are left out of these columns).

Deterministic given ``seed``: each caption's (object's) noise comes from its own generator, seeded
by ``seed`` and the caption (object seed), so it does not depend on which others are evaluated.
Images are uint8 ``[N, H, W, 3]`` on white (the prior's size, 32 x 32 unless its ``image_size`` says
otherwise) unless said otherwise. A toy-nvs prior of another size (``toy-nvs-64``) is scored at its
own size against views rendered at it, and again at 32 x 32 (:data:`COMPARE_RES`: its samples
area-resized, the views rendered at 32), the numbers comparable with a 32 x 32 prior's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import zlib
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from studio.eval.classifier.labels import (
    ATTRIBUTES,
    SEED_RANGES,
    caption_attributes,
    label_indices,
    render_heldout,
    scene_attributes,
)
from studio.eval.classifier.metrics import accuracy_row, fid_features_distance
from studio.eval.classifier.model import AttributeClassifier
from studio.metrics import psnr, ssim
from studio.priors.base import DiffusionPrior
from studio.priors.sampling import sample
from studio.priors.toy import ToyNVSPrior
from studio.priors.toydata import DataConfig, ToyData, default_cache_dir, render_views
from studio.scenes.toyworld import splits
from studio.scenes.toyworld.scene import make_scene

T2I_GUIDANCE = 1.0
"""Default CFG scale of toy-t2i, chosen on the validation captions (``studio/priors/weights/README.md``)."""
NVS_GUIDANCE = 3.0
"""Default CFG scale of toy-nvs, chosen on validation seeds 900-931 (``studio/priors/weights/README.md``)."""
MASK_THRESHOLD = 0.75
"""A pixel is foreground when one of its channels (in [0, 1]) is below this (191/255). On the true
views of 40 test objects at 32 x 32 this mask matches the renderer's alpha > 0.5 with IoU 0.94 on
average (0.80 at worst: a pale object); 0.7 / 0.8 / 0.9 give 0.93 / 0.93 / 0.88."""
NVS_RENDER = DataConfig(aa=16, spp=64)
"""Renderer settings of the reference and true views of :func:`evaluate_nvs` (32 x 32; ``res`` is
replaced by the prior's image size)."""
COMPARE_RES = 32
"""Common resolution (px) of :func:`evaluate_nvs`'s ``"azimuths_32"`` rows: a prior of another size is
also scored with its samples area-resized to it, against views rendered at it (as a 32 px prior)."""
SCAN_LIMIT = 50_000
"""Seeds :func:`caption_seeds` looks through before it gives up on a caption."""


# ---------------------------------------------------------------------------------------- shared
def heldout_captions(split: Optional[str] = None) -> dict[str, str]:
    """{caption: split} of the held-out captions of ``splits.json`` (those of ``split`` only, if given)."""
    out = {c: splits.caption_split(c) for c in splits.load_splits()["heldout_captions"]}
    return {c: s for c, s in out.items() if split in (None, s)}


def split_seeds(split: str, count: int) -> list[int]:
    """The first ``count`` seeds of a held-out seed range (``"test"``: 0-899, ``"validation"``: 900-999)."""
    lo, hi = SEED_RANGES[split]
    return list(range(lo, min(hi, lo + count)))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float ``[B, 3, H, W]`` in [0, 1] -> uint8 ``[B, H, W, 3]``."""
    return (images.detach().cpu().permute(0, 2, 3, 1).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> float ``[B, 3, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def flat_views(images: np.ndarray) -> np.ndarray:
    """``[S, V, H, W, 3]`` -> ``[S * V, H, W, 3]`` (seed-major)."""
    return images.reshape(-1, *images.shape[2:])


def draw(prior: DiffusionPrior, cond, n: int, key: str, seed: int, steps: int, guidance: float) -> np.ndarray:
    """``n`` DDIM (eta 0, x0 clamped) + CFG samples of ``cond`` as uint8 ``[n, H, W, 3]``; the noise
    comes from a generator seeded by ``seed`` and ``key`` (a caption, an object seed)."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{key}".encode()))
    return to_uint8(prior.decode(sample(prior, n, cond, None, guidance, steps, gen, clamp_x0=True)))


def agreement(classifier: AttributeClassifier, images: np.ndarray, attrs: Sequence[dict]) -> dict:
    """{n, category, colour, material}: fraction of ``images`` whose predicted attribute is the one
    of ``attrs`` (one {category, colour, material} per image, names outside the classifier's
    vocabulary left out; None where none is known), plus the ``most_often`` predicted names."""
    pred = classifier.predict_indices(images)
    row = accuracy_row(pred, np.array([label_indices(a) for a in attrs], np.int64).reshape(-1, len(ATTRIBUTES)))
    vocab = classifier.vocabulary
    row["most_often"] = {a: vocab[a][int(np.bincount(pred[:, k]).argmax())] for k, a in enumerate(ATTRIBUTES)}
    return row


def weighted_means(rows: Sequence[dict]) -> dict:
    """{captions, n, category, colour, material}: the :func:`agreement` rows' accuracies averaged
    weighted by their ``n``, over the rows that know the attribute (None where none does)."""
    out = {"captions": len(rows), "n": sum(r["n"] for r in rows)}
    for a in ATTRIBUTES:
        known = [r for r in rows if r[a] is not None]
        out[a] = sum(r[a] * r["n"] for r in known) / sum(r["n"] for r in known) if known else None
    return out


# ----------------------------------------------------------------------------------------- toy-t2i
def caption_seeds(captions: Iterable[str], per_caption: int, limit: int = SCAN_LIMIT) -> dict[str, list[int]]:
    """The first ``per_caption`` single-object seeds (from 0 up) whose caption is exactly each of
    ``captions`` and whose scene is in that caption's split (``splits.caption_split``: a validation
    caption's scenes come from the validation seeds 900-999 or the train range, where held-out
    captions are held out too). Raises ValueError for a caption no seed below ``limit`` has."""
    found: dict[str, list[int]] = {c: [] for c in captions}
    for seed in range(limit):
        if all(len(v) >= per_caption for v in found.values()):
            break
        desc = make_scene(seed, "object")
        seeds = found.get(desc["caption"])
        if seeds is not None and len(seeds) < per_caption:
            if splits.split_of(seed, desc["caption"], desc["category"]) == splits.caption_split(desc["caption"]):
                seeds.append(seed)
    missing = [c for c, v in found.items() if not v]
    if missing:
        raise ValueError(f"no ToyWorld object seed below {limit} has the caption(s) {missing}")
    return found


def caption_renders(
    captions: Sequence[str],
    per_caption: int = 8,
    views: int = 4,
    cfg: DataConfig = DataConfig(),
    log: Callable[[str], None] = print,
) -> dict[str, np.ndarray]:
    """Real renders of each caption: ``views`` random views (toydata's distribution and renderer,
    ``cfg``) of each of its :func:`caption_seeds` -> {caption: uint8 [seeds * views, H, W, 3]};
    cached per caption under ``toydata.default_cache_dir()``."""
    cfg = dataclasses.replace(cfg, views=views)

    def path(caption: str) -> Path:
        key = json.dumps({"caption": caption, "per_caption": per_caption, "data": cfg.key()})
        return Path(default_cache_dir()) / f"caption-{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz"

    missing = [c for c in dict.fromkeys(captions) if not path(c).is_file()]
    if missing:
        t0 = time.time()
        seeds = caption_seeds(missing, per_caption)
        for caption in missing:
            render_heldout(seeds[caption], cfg).save(path(caption))
        log(f"Rendered {per_caption} scenes x {views} views of {len(missing)} caption(s) in {time.time() - t0:.0f}s")
    return {c: flat_views(ToyData.load(path(c)).images) for c in captions}


def score_t2i(classifier: AttributeClassifier, samples: dict[str, np.ndarray], real: dict[str, np.ndarray]) -> dict:
    """Scores of images per caption (``samples``, uint8 [N, H, W, 3] each) against the captions and
    against ``real`` renders of them -> {"captions": {caption: {split, n, category, colour, material,
    most_often, real: the classifier on the real renders}}, "splits": {split: {captions, n,
    category, colour, material (sample-weighted means over the captions that name one), fid:
    Fréchet distance of the samples of the split to the real renders of its captions}}}; the split
    "all" holds every caption."""
    rows = {}
    for caption, images in samples.items():
        attrs = [caption_attributes(caption)]
        rows[caption] = {
            "split": splits.caption_split(caption),
            **agreement(classifier, images, attrs * len(images)),
            "real": agreement(classifier, real[caption], attrs * len(real[caption])),
        }
    groups = {"all": list(samples)}
    for caption, row in rows.items():
        groups.setdefault(row["split"], []).append(caption)
    with torch.no_grad():
        feats = {c: (classifier.features(samples[c]), classifier.features(real[c])) for c in samples}
    table = {}
    for name, members in groups.items():
        table[name] = weighted_means([rows[c] for c in members])
        table[name]["fid"] = fid_features_distance(
            torch.cat([feats[c][0] for c in members]), torch.cat([feats[c][1] for c in members])
        )
    return {"captions": rows, "splits": table}


def evaluate_t2i(
    prior: DiffusionPrior,
    classifier: AttributeClassifier,
    captions: Sequence[str],
    n_per_caption: int = 16,
    seed: int = 0,
    steps: int = 50,
    guidance: float = T2I_GUIDANCE,
    real_per_caption: int = 8,
    real_views: int = 4,
    log: Callable[[str], None] = print,
) -> dict:
    """Sample ``n_per_caption`` images of each caption and score them (:func:`score_t2i`) against
    ``real_per_caption`` scenes x ``real_views`` views of it (:func:`caption_renders`). Returns the
    scores plus ``settings``, ``seconds`` (sampling) and ``images`` = {caption: {"samples": uint8
    [n, H, W, 3], "real": uint8 [m, H, W, 3]}} (not JSON: pop it before writing)."""
    real = caption_renders(captions, real_per_caption, real_views, log=log)
    t0 = time.time()
    samples = {}
    for caption in captions:
        samples[caption] = draw(prior, prior.condition(text=caption), n_per_caption, caption, seed, steps, guidance)
        log(f"sampled {caption!r} ({time.time() - t0:.0f}s)")
    settings = {"n_per_caption": n_per_caption, "seed": seed, "steps": steps, "guidance": guidance}
    settings.update(real_per_caption=real_per_caption, real_views=real_views)
    return {
        **score_t2i(classifier, samples, real),
        "settings": settings,
        "seconds": round(time.time() - t0, 1),
        "images": {c: {"samples": samples[c], "real": real[c]} for c in captions},
    }


# ----------------------------------------------------------------------------------------- toy-nvs
def object_views(
    seed: int, azimuths_deg: Sequence[float], elevation_deg: float = 20.0, radius_scale: float = 1.1, res: int = 32
) -> np.ndarray:
    """The reference view (azimuth 0) and the true views at ``azimuths_deg`` of single-object scene
    ``seed``, at one elevation and distance (``radius_scale`` x the framing distance), rendered with
    :data:`NVS_RENDER` at ``res`` px -> uint8 [1 + len(azimuths_deg), res, res, 3]."""
    azimuths = np.radians([0.0, *azimuths_deg])
    cfg = dataclasses.replace(NVS_RENDER, res=res)
    out = render_views(
        seed, math.radians(elevation_deg), azimuths, radius_scale, cfg, np.random.default_rng(seed), False
    )
    return out["images"]


def resize_views(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[..., H, W, 3]`` -> uint8 ``[..., size, size, 3]`` (area average, for shrinking)."""
    flat = images.reshape(-1, *images.shape[-3:])
    small = torch.nn.functional.interpolate(to_float(flat), size=(size, size), mode="area")
    return to_uint8(small).reshape(*images.shape[:-3], size, size, 3)


def foreground(images: np.ndarray) -> np.ndarray:
    """Masks [N, H, W] (bool) of the pixels of uint8 images on white with a channel below :data:`MASK_THRESHOLD`."""
    return images.min(-1) < MASK_THRESHOLD * 255


def mask_iou(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-image IoU [N] of the :func:`foreground` masks of uint8 images (1 where both are empty)."""
    a, b = foreground(pred), foreground(true)
    inter, union = (a & b).sum((1, 2)), (a | b).sum((1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def score_views(pred: np.ndarray, true: np.ndarray) -> dict:
    """{psnr (dB), ssim, mask_iou}: means over image pairs of uint8 ``[N, H, W, 3]`` images."""
    p, t = to_float(pred), to_float(true)
    return {
        "psnr": float(np.mean([psnr(a, b).item() for a, b in zip(p, t)])),
        "ssim": float(ssim(p, t).item()),
        "mask_iou": float(mask_iou(pred, true).mean()),
    }


def score_nvs(
    classifier: AttributeClassifier,
    samples: np.ndarray,
    true: np.ndarray,
    reference: np.ndarray,
    labels: Sequence[dict],
    azimuths: Sequence[float],
) -> dict:
    """Scores of novel views ``samples`` uint8 [S, A, n, H, W, 3] (S objects, A azimuths, n samples)
    against the true views ``true`` [S, A, H, W, 3] of objects with attributes ``labels`` (S dicts)
    -> {"30": {n, psnr, ssim, mask_iou, category, colour (classifier agreement of the samples with
    the object's labels), category_true, colour_true (the classifier on the true views),
    copy_reference: {psnr, ssim, mask_iou} of the reference views [S, H, W, 3] taken as the novel
    views (the baseline a prior has to beat)}, ..., "all": the same over every azimuth}."""
    S, A, n = samples.shape[:3]

    def row(az: list[int]) -> dict:
        pred = samples[:, az].reshape(-1, *samples.shape[-3:])  # (object, azimuth, sample) order
        views = true[:, az].reshape(-1, *true.shape[-3:])  # (object, azimuth)
        attrs = [labels[k] for k in range(S) for _ in az]
        sampled = agreement(classifier, pred, [a for a in attrs for _ in range(n)])
        real = agreement(classifier, views, attrs)
        return {
            "n": len(pred),
            **score_views(pred, np.repeat(views, n, 0)),
            "category": sampled["category"],
            "colour": sampled["colour"],
            "category_true": real["category"],
            "colour_true": real["colour"],
            "copy_reference": score_views(np.repeat(reference, len(az), 0), views),
        }

    return {**{f"{a:g}": row([j]) for j, a in enumerate(azimuths)}, "all": row(list(range(A)))}


def evaluate_nvs(
    prior: ToyNVSPrior,
    classifier: AttributeClassifier,
    seeds: Sequence[int],
    azimuths: Sequence[float] = (30, 90, 180),
    n_per_view: int = 1,
    seed: int = 0,
    steps: int = 50,
    guidance: float = NVS_GUIDANCE,
    elevation: float = 20.0,
    log: Callable[[str], None] = print,
) -> dict:
    """Novel views of each single-object scene of ``seeds`` at +``azimuths`` (degrees) from its
    reference view (:func:`object_views` at ``elevation`` degrees and the prior's ``image_size``),
    ``n_per_view`` samples each, scored against the true views (:func:`score_nvs`). Returns
    {"azimuths": the scores, "settings", "seconds", "images": {"reference": uint8 [S, H, W, 3],
    "true": [S, A, H, W, 3], "samples": [S, A, n, H, W, 3]} (not JSON: pop it before writing)};
    a prior whose size is not :data:`COMPARE_RES` also gets "azimuths_32": its samples
    (:func:`resize_views`) and reference scored against views rendered at that size."""
    t0 = time.time()
    res = prior.image_size
    views = np.stack([object_views(s, azimuths, elevation, res=res) for s in seeds])  # [S, 1 + A, H, W, 3]
    log(f"rendered {len(seeds)} objects x {1 + len(azimuths)} views ({time.time() - t0:.0f}s)")
    el = math.radians(elevation)
    pose = ToyNVSPrior.relative_pose(el, 0.0, 0.0, el, torch.tensor(np.radians(azimuths)).float(), 0.0)
    pose = pose.repeat_interleave(n_per_view, 0)  # [A * n, 4]: azimuth-major
    samples = []
    for i, s in enumerate(seeds):
        cond = prior.condition(image=to_float(views[i, :1]).to(prior.device), pose=pose)
        samples.append(draw(prior, cond, len(pose), str(s), seed, steps, guidance))
        log(f"object {i + 1}/{len(seeds)} (seed {s}, {time.time() - t0:.0f}s)")
    samples = np.stack(samples).reshape(len(seeds), len(azimuths), n_per_view, *views.shape[2:])
    labels = [scene_attributes(make_scene(int(s), "object")) for s in seeds]
    labels = [a if a["category"] in classifier.vocabulary["category"] else dict.fromkeys(a) for a in labels]
    settings = {"objects": len(seeds), "seeds": [int(s) for s in seeds], "azimuths": [float(a) for a in azimuths]}
    settings.update(elevation=elevation, n_per_view=n_per_view, seed=seed, steps=steps, guidance=guidance)
    settings.update(mask_threshold=MASK_THRESHOLD, res=res)
    out = {"azimuths": score_nvs(classifier, samples, views[:, 1:], views[:, 0], labels, azimuths)}
    if res != COMPARE_RES:
        small = np.stack([object_views(s, azimuths, elevation, res=COMPARE_RES) for s in seeds])
        shrunk = resize_views(samples, COMPARE_RES)
        out[f"azimuths_{COMPARE_RES}"] = score_nvs(classifier, shrunk, small[:, 1:], small[:, 0], labels, azimuths)
    return {
        **out,
        "settings": settings,
        "seconds": round(time.time() - t0, 1),
        "images": {"reference": views[:, 0], "true": views[:, 1:], "samples": samples},
    }
