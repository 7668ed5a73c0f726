"""The feature-lift protocol's drivers: depth/normal probes, segmentation mIoU, correspondence
errors and :func:`evaluate_feature_lift` (the whole protocol, see the package docstring)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.eval.feature_lift.data import SplitViews, check_scene_aovs, find_scenes, load_scene
from studio.eval.feature_lift.geometry import camera_normals, pixel_centres, sample_features, unproject, visible_in
from studio.eval.feature_lift.metrics import (
    _mean,
    angular_error_deg,
    correspondence_metrics,
    depth_metrics,
    mean_iou,
    normal_metrics,
)
from studio.eval.feature_lift.probes import (
    DenseProbe,
    LinearProbe,
    _predict,
    _seeded,
    angular_loss,
    extract_features,
    fit_probe,
    silog_loss,
)
from studio.eval.feature_lift.settings import METRIC_KEYS, ProbeSettings
from studio.io.errors import StudioInputError


def depth_normal_probes(
    train_feats: Tensor,
    train: SplitViews,
    test_feats: Tensor,
    test: SplitViews,
    settings: ProbeSettings,
    device: str | torch.device = "cpu",
) -> Dict[str, Optional[float]]:
    """Train the depth and normal probes on (features, ground truth) of ``train`` views and score
    them on ``test`` (splits possibly concatenated over scenes). Returns the depth_* and normal_*
    metric keys."""
    size = tuple(train.depth.shape[-2:])
    dim = train_feats.shape[1]
    depth_probe = _seeded(settings.seed, lambda: DenseProbe(dim, 1, settings.hidden, size))
    fit_probe(
        depth_probe, train_feats, train.depth, lambda p, t: silog_loss(p, t, settings.silog_lambda), settings, device
    )
    pred_depth = torch.exp(_predict(depth_probe, test_feats, settings.batch, device)[:, 0].clamp(-20, 20))
    d = depth_metrics(pred_depth, test.depth, test.valid, settings.depth_delta)

    normal_probe = _seeded(settings.seed + 1, lambda: DenseProbe(dim, 3, settings.hidden, size))
    fit_probe(normal_probe, train_feats, camera_normals(train.normals, train.c2w), angular_loss, settings, device)
    pred_normal = _predict(normal_probe, test_feats, settings.batch, device).permute(0, 2, 3, 1)
    n = normal_metrics(pred_normal, camera_normals(test.normals, test.c2w), test.valid, settings.normal_thresholds_deg)
    t11, t22, t30 = settings.normal_thresholds_deg[:3]
    return {
        "depth_rmse": d["rmse"],
        "depth_delta1": d["delta1"],
        "normal_rmse_deg": n["rmse_deg"],
        "normal_recall_11": n[f"recall_{t11:g}"],
        "normal_recall_22": n[f"recall_{t22:g}"],
        "normal_recall_30": n[f"recall_{t30:g}"],
    }


def segmentation_miou(
    train_feats: Tensor,
    train: SplitViews,
    test_feats: Tensor,
    test: SplitViews,
    settings: ProbeSettings,
    device: str | torch.device = "cpu",
) -> Optional[float]:
    """mIoU of a linear probe from features to the id classes of one scene (classes: the id values
    of its train views; test pixels of other ids ignored). None without id maps."""
    if train.ids is None or test.ids is None:
        return None
    classes = torch.unique(train.ids)
    lookup = {int(v): k for k, v in enumerate(classes)}

    def to_class(ids: Tensor) -> Tensor:
        out = torch.full_like(ids, -1)
        for value, k in lookup.items():
            out[ids == value] = k
        return out

    probe = _seeded(settings.seed + 2, lambda: LinearProbe(train_feats.shape[1], len(classes), train.ids.shape[-2:]))
    fit_probe(
        probe,
        train_feats,
        to_class(train.ids),
        lambda p, t: F.cross_entropy(p, t, ignore_index=-1),
        settings,
        device,
    )
    pred = _predict(probe, test_feats, settings.batch, device).argmax(1)
    return mean_iou(pred, to_class(test.ids), len(classes))


def correspondence_errors(
    feats: Tensor, views: SplitViews, settings: ProbeSettings, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(pixel errors [P], viewing-angle differences in degrees [P]) of nearest-neighbour matches
    over every ordered pair of ``views`` (one scene) with features ``feats`` [N,D,h,w] (see the
    module docstring, ``corr_recall_*``)."""
    N, (H, W) = len(views.depth), views.depth.shape[-2:]
    centres = [pixel_centres(views.valid[i]) for i in range(N)]
    normed = []
    for i in range(N):
        normed.append(F.normalize(sample_features(feats[i], centres[i][1], (H, W)), dim=-1))
    errors, angles = [], []
    for a in range(N):
        flat_a, uv_a = centres[a]
        if not len(flat_a):
            continue
        points = unproject(uv_a, views.depth[a].reshape(-1)[flat_a], views.K, views.c2w[a])
        for b in range(N):
            if b == a or not len(centres[b][0]):
                continue
            uv_b, vis = visible_in(points, views.depth[b], views.K, views.c2w[b], settings.corr_occlusion_tol)
            idx = torch.nonzero(vis, as_tuple=False)[:, 0]
            if len(idx) > settings.corr_points:
                idx = idx[torch.randperm(len(idx), generator=generator)[: settings.corr_points]]
            if not len(idx):
                continue
            sim = normed[a][idx] @ normed[b].T  # [P, M] cosine similarities
            best = sim.argmax(1)
            errors.append((centres[b][1][best] - uv_b[idx]).norm(dim=-1))
            ray_a = points[idx] - views.c2w[a, :3, 3]
            ray_b = points[idx] - views.c2w[b, :3, 3]
            angles.append(angular_error_deg(ray_a, ray_b))
    if not errors:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(errors), torch.cat(angles)


def evaluate_feature_lift(
    model: nn.Module,
    data: Sequence[Path],
    settings: ProbeSettings = ProbeSettings(),
    device: str | torch.device = "cpu",
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, object]:
    """The whole protocol (module docstring) for one frozen feature ``model`` over the scene folders
    of ``data`` (see :func:`find_scenes`). Depth/normal probes are trained once on the train views
    of all scenes (which must share one evaluation size); segmentation probes per scene.

    Returns ``METRIC_KEYS`` + ``corr_recall_10px_by_angle``, ``n_scenes``, ``n_test_views``,
    ``settings``. ``progress`` receives a line per phase and, at the end, the wall seconds of each."""
    say = progress or (lambda _msg: None)
    roots = find_scenes(data)
    for root in roots:
        check_scene_aovs(root)
    t0 = time.perf_counter()
    seconds: Dict[str, float] = {}
    scenes = []
    for root in roots:
        say(f"loading {root}")
        scenes.append(load_scene(root, settings.resolution))
    sizes = {tuple(s.train.depth.shape[-2:]) for s in scenes} | {tuple(s.test.depth.shape[-2:]) for s in scenes}
    if len(sizes) != 1:
        raise StudioInputError(
            f"the scenes of --data have different image aspect ratios ({sorted(sizes)} at the evaluation size); "
            "evaluate them separately."
        )
    seconds["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("extracting features")
    train_feats = [extract_features(model, s.train.images, settings.feature_batch) for s in scenes]
    test_feats = [extract_features(model, s.test.images, settings.feature_batch) for s in scenes]
    seconds["features"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("training depth and normal probes")
    metrics: Dict[str, object] = depth_normal_probes(
        torch.cat(train_feats),
        _concat([s.train for s in scenes]),
        torch.cat(test_feats),
        _concat([s.test for s in scenes]),
        settings,
        device,
    )
    seconds["depth_normal_probes"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("correspondence")
    gen = torch.Generator().manual_seed(settings.seed)
    errs, angs = zip(*(correspondence_errors(f, s.test, settings, gen) for f, s in zip(test_feats, scenes)))
    corr = correspondence_metrics(
        torch.cat(errs), torch.cat(angs), settings.corr_thresholds_px, settings.corr_angle_bins
    )
    t5, t10, t20 = settings.corr_thresholds_px[:3]
    metrics.update(
        corr_recall_5px=corr[f"recall_{t5:g}px"],
        corr_recall_10px=corr[f"recall_{t10:g}px"],
        corr_recall_20px=corr[f"recall_{t20:g}px"],
    )
    by_angle = correspondence_metrics(
        torch.cat(errs), torch.cat(angs), (), settings.corr_angle_bins, binned_threshold=t10
    )["by_angle"]
    seconds["correspondence"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("segmentation probes")
    mious = [
        segmentation_miou(tr, s.train, te, s.test, settings, device)
        for tr, te, s in zip(train_feats, test_feats, scenes)
    ]
    metrics["seg_miou"] = _mean([m for m in mious if m is not None])
    seconds["segmentation"] = time.perf_counter() - t0

    out: Dict[str, object] = {key: metrics[key] for key in METRIC_KEYS}
    out["corr_recall_10px_by_angle"] = by_angle
    out["n_scenes"] = len(scenes)
    out["n_test_views"] = int(sum(len(s.test.depth) for s in scenes))
    out["settings"] = settings.as_dict()
    say("done (seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()) + ")")
    return out


def _concat(splits: Sequence[SplitViews]) -> SplitViews:
    """Views of several splits as one (ids dropped unless every split has them; K of the first)."""
    ids = [s.ids for s in splits]
    return SplitViews(
        images=torch.cat([s.images for s in splits]),
        depth=torch.cat([s.depth for s in splits]),
        normals=torch.cat([s.normals for s in splits]),
        ids=torch.cat(ids) if all(i is not None for i in ids) else None,
        c2w=torch.cat([s.c2w for s in splits]),
        K=splits[0].K,
    )
