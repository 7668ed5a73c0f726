"""Sample quality of a multiview-consistent prior (``toy-epipolar``) on held-out ToyWorld objects.

For each single-object seed, ``input_azimuths`` views (one elevation, distance 1.1 x the framing
distance; ToyWorld's Monte-Carlo renderer at the prior's size) are the posed inputs and the true
views at ``target_azimuths`` the targets. Novel views are DDIM samples of the prior with the
controller on (``conditioning_scale`` 1) and off (0: the base novel-view prior conditioned on the
nearest input view), from the same noise, scored against the true views by
``studio.eval.priors.score_views`` (PSNR dB, SSIM, mask IoU); ``copy_nearest`` scores the nearest
input view taken as the target (the baseline any prior has to beat).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Sequence

import numpy as np
import torch

from studio.cameras.convert import intrinsics_from_fov
from studio.cameras.sampling import orbit_viewmats
from studio.eval.priors import NVS_RENDER, draw, score_views, to_float
from studio.priors.epipolar import EpipolarNVSPrior, nearest_view
from studio.priors.toydata import render_views


def posed_views(
    seed: int, azimuths_deg: Sequence[float], elevation_deg: float, res: int
) -> tuple[np.ndarray, torch.Tensor]:
    """Views of held-out object ``seed`` at ``azimuths_deg`` (uint8 [A,res,res,3] on white) and their
    world-to-camera matrices [A,4,4] (the object's centre at the origin)."""
    cfg = dataclasses.replace(NVS_RENDER, res=res)
    az = np.radians(np.asarray(azimuths_deg, np.float64))
    out = render_views(seed, math.radians(elevation_deg), az, 1.1, cfg, np.random.default_rng(seed), False)
    mats = orbit_viewmats(
        torch.full((len(az),), float(elevation_deg)),
        torch.tensor(np.degrees(az)).float(),
        torch.from_numpy(out["radius"]),
    )
    return out["images"], mats


def evaluate_sparse_nvs(
    prior: EpipolarNVSPrior,
    seeds: Sequence[int],
    input_azimuths: Sequence[float] = (0.0, 120.0, 240.0),
    target_azimuths: Sequence[float] = (60.0, 180.0, 300.0),
    elevation: float = 20.0,
    steps: int = 25,
    guidance: float = 3.0,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Scores {"controller", "base", "copy_nearest"} (each {psnr, ssim, mask_iou} over all targets),
    "settings", "seconds" and "images" {"inputs" [S,K,H,W,3], "true" [S,A,H,W,3], "controller",
    "base" [S,A,H,W,3]} (not JSON: pop it before writing)."""
    t0 = time.time()
    res = prior.image_size
    K = intrinsics_from_fov(NVS_RENDER.fov_deg, res, res)
    inputs, truth, samples = [], [], {"controller": [], "base": []}
    copies = []
    for i, s in enumerate(seeds):
        images, mats = posed_views(int(s), [*input_azimuths, *target_azimuths], elevation, res)
        k = len(input_azimuths)
        views, targets = to_float(images[:k]).to(prior.device), mats[k:].to(prior.device)
        cond = prior.condition_views(views, mats[:k].to(prior.device), K, targets, K)
        for name, scale in (("controller", 1.0), ("base", 0.0)):
            prior.conditioning_scale = scale
            samples[name].append(draw(prior, cond, len(targets), str(s), seed, steps, guidance))
        prior.conditioning_scale = 1.0
        nearest = nearest_view(mats[None, :k].expand(len(targets), k, 4, 4), mats[k:]).numpy()
        inputs.append(images[:k])
        truth.append(images[k:])
        copies.append(images[:k][nearest])
        log(f"object {i + 1}/{len(seeds)} (seed {s}, {time.time() - t0:.0f}s)")
    truth_all = np.concatenate(truth)
    scores = {name: score_views(np.concatenate(v), truth_all) for name, v in samples.items()}
    scores["copy_nearest"] = score_views(np.concatenate(copies), truth_all)
    settings = {"seeds": [int(s) for s in seeds], "input_azimuths": list(input_azimuths)}
    settings.update(target_azimuths=list(target_azimuths), elevation=elevation, steps=steps, guidance=guidance)
    settings.update(seed=seed, res=res)
    return {
        **scores,
        "settings": settings,
        "seconds": round(time.time() - t0, 1),
        "images": {
            "inputs": np.stack(inputs),
            "true": np.stack(truth),
            **{name: np.stack(v) for name, v in samples.items()},
        },
    }
