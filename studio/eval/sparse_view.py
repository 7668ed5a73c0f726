"""Sparse-view evaluation: reconstruct from 2-3 posed views of a dataset, score the held-out test views.

Protocol (``studio eval sparse-view``):
* the inputs are frames ``views`` (indices into ``transforms_train.json``, 2 or 3 distinct ones:
  :func:`check_views`) of a NeRF-synthetic scene. :func:`write_subset` writes a sub-dataset with
  only those training frames and the test split (images only: the method sees no other training
  frame, no AOV and no ``gt_mesh.obj``);
* the run is ``ns-train sparse3d --data SUB`` with the variant's flags (:data:`VARIANTS`:
  ``sparse3d`` as configured, ``sds`` the plain-SDS baseline: no epipolar controller, no C-SDS)
  and the user's ``--method-args`` (:func:`train_command`);
* every test view is rendered in the dataset's own world frame (NeRF-synthetic runs keep it: identity
  dataparser transform) over white and scored against the ground truth over white
  (:func:`studio.eval.image_to_3d.score_views`): PSNR, SSIM, mask IoU (alpha > 0.5 on both sides),
  LPIPS when its weights are local;
* ``depth_mae`` (:func:`depth_mae`): per test view, the mean |rendered expected view-space z - true
  z| (world units) over the pixels with true alpha > 0.5 and a true depth (``depth_XXXX.exr``
  beside the test image: finite, > 0 and below :data:`BACKGROUND_DEPTH`; ToyWorld writes 0 and
  Blender 1e10 off the object); a pixel the render leaves empty has rendered depth 0, so a missed
  surface counts its whole depth. The mean over the test views; None (null) when a test view has
  no depth AOV;
* ``chamfer``: symmetric Chamfer distance (:func:`studio.eval.image_to_3d.mesh_chamfer`) between
  the ground-truth mesh and the mesh extracted from the run's Gaussians (``studio export mesh
  --method density``: the opacity field's level set, level chosen by silhouette agreement with the
  renders; :data:`MESH_EXTRACTION`); when no surface can be extracted, the distance between the
  centres of the Gaussians with opacity >= :data:`CENTRE_MIN_OPACITY` and samples of the
  ground-truth surface (:func:`centre_chamfer`). The JSON's ``geometry`` says which.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from studio.io.errors import StudioInputError

if TYPE_CHECKING:  # torch and numpy are imported where used: `studio eval sparse-view` validates without them
    import numpy as np
    from torch import Tensor

METHOD = "sparse3d"
"""The ns-train method every variant runs."""
VARIANTS: Dict[str, Tuple[str, ...]] = {
    "sparse3d": (),
    "sds": ("--pipeline.model.controller", "False", "--pipeline.model.csds", "none"),
}
"""``--method`` of ``studio eval sparse-view`` -> the ns-train flags of that variant of :data:`METHOD`."""
VIEW_COUNTS = (2, 3)
"""How many input views the protocol takes."""
METRIC_KEYS = ("psnr", "ssim", "mask_iou", "lpips", "depth_mae", "chamfer")
BACKGROUND_DEPTH = 1e6
"""True depths at or beyond this (and 0) are background (Blender writes 1e10 there)."""
CENTRE_MIN_OPACITY = 0.5
"""Gaussians whose centres stand for the surface when no mesh can be extracted."""
MESH_EXTRACTION = {"method": "density", "resolution": 128, "n_views": 24, "image_size": 64}
"""``studio.export.extract_mesh`` settings of the Chamfer mesh (the level is chosen by silhouettes).
Chosen on validation objects (the coarse Gaussians of dreamcraft3d runs on ToyWorld seeds 903 and
906): Chamfer 0.0876 / 0.0200 with these settings, 0.0877 / 0.0373 with 128 px silhouettes over 40
views (a higher level is picked: the mesh shrinks), 0.0927 / 0.0661 by TSDF fusion."""
SUBSET_RECORD = "subset.json"
"""The file that marks a folder as a sub-dataset written by :func:`write_subset` (source and views)."""


def check_views(views: Sequence[int], n_train: int) -> List[int]:
    """``views`` as a list after checking them against a training split of ``n_train`` frames: 2 or 3
    distinct indices in 0..n_train-1; otherwise one StudioInputError sentence naming ``--views``."""
    views = [int(v) for v in views]
    if len(views) not in VIEW_COUNTS:
        raise StudioInputError(
            f"--views {' '.join(map(str, views))}: give {' or '.join(map(str, VIEW_COUNTS))} training frames "
            f"(indices into transforms_train.json), not {len(views)}."
        )
    bad = [v for v in views if not 0 <= v < n_train]
    if bad:
        raise StudioInputError(
            f"--views {bad[0]} is not a frame of the training split (0..{n_train - 1}, {n_train} frames)."
        )
    if len(set(views)) != len(views):
        raise StudioInputError(f"--views {' '.join(map(str, views))} names a frame twice; give distinct frames.")
    return views


def _copied_frames(root: Path, split: str, indices: Optional[Sequence[int]], dest: Path) -> dict:
    """The transforms dict of ``split`` of dataset ``root`` with only frames ``indices`` (all when
    None), in that order, their images copied into ``dest/<split>/`` (file names kept) and their
    ``file_path`` pointing there; every other key as in the source file."""
    from studio.data.nerf_synthetic import read_nerf_synthetic, split_file

    meta = json.loads(split_file(root, split).read_text(encoding="utf-8"))
    images = read_nerf_synthetic(root, split).image_paths
    indices = range(len(images)) if indices is None else indices
    folder = dest / split
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for k in indices:
        image = images[k]
        if (folder / image.name).exists():
            raise StudioInputError(f"{split} frames of {root} share the image name {image.name}; cannot subset them.")
        shutil.copyfile(image, folder / image.name)
        frames.append({**meta["frames"][k], "file_path": f"./{split}/{image.name}"})
    return {**meta, "frames": frames}


def write_subset(data: Path, views: Sequence[int], dest: Path) -> Path:
    """Write the sparse-view sub-dataset of ``data`` into ``dest`` and return ``dest``.

    ``dest`` gets ``transforms_train.json`` with only training frames ``views`` (in that order),
    ``transforms_test.json`` with every test frame, their images (copied; names kept) under
    ``train/`` and ``test/``, the source's ``meta.json`` when it has one (caption, category), and
    :data:`SUBSET_RECORD` (source folder, views, frame files). No AOVs and no ``gt_mesh.obj``. The
    folder is built under a temporary name and renamed; an existing ``dest`` is replaced only when
    it is an earlier sub-dataset (it holds :data:`SUBSET_RECORD`).
    """
    data, dest = Path(data), Path(dest)
    if dest.exists() and not (dest / SUBSET_RECORD).is_file():
        raise StudioInputError(f"{dest} exists and is not a sparse-view sub-dataset; choose another --work-dir.")
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        train = _copied_frames(data, "train", views, tmp)
        test = _copied_frames(data, "test", None, tmp)
        for name, meta in (("transforms_train.json", train), ("transforms_test.json", test)):
            (tmp / name).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        if (data / "meta.json").is_file():
            shutil.copyfile(data / "meta.json", tmp / "meta.json")
        record = {
            "source": str(data.resolve()),
            "views": list(views),
            "files": [f["file_path"] for f in train["frames"]],
        }
        (tmp / SUBSET_RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def train_command(ns_train: str, variant: str, data: Path, output_dir: Path, method_args: Sequence[str]) -> List[str]:
    """``ns-train sparse3d --data data --output-dir output_dir --vis tensorboard`` + the variant's
    flags (:data:`VARIANTS`) + ``method_args`` (later flags win, so they can override the variant's)."""
    if variant not in VARIANTS:
        raise StudioInputError(f"--method {variant!r} is not one of {', '.join(VARIANTS)}.")
    cmd = [ns_train, METHOD, "--data", str(data), "--output-dir", str(output_dir), "--vis", "tensorboard"]
    return cmd + list(VARIANTS[variant]) + list(method_args)


def true_depth_mask(depth: Tensor, alpha: Tensor) -> Tensor:
    """[H,W] bool: pixels with true alpha > 0.5 and a true depth (finite, 0 < z < BACKGROUND_DEPTH)."""
    import torch

    return (alpha > 0.5) & torch.isfinite(depth) & (depth > 0) & (depth < BACKGROUND_DEPTH)


def depth_mae(pred: Tensor, true: Tensor, mask: Tensor) -> Optional[float]:
    """Mean |pred - true| over ``mask`` (all [H,W]; world units); None when the mask is empty."""
    if not bool(mask.any()):
        return None
    return float((pred[mask].double() - true[mask].double()).abs().mean())


def read_test_depths(frames) -> Optional[List[Tensor]]:
    """The true view-space depths [H,W] of the test images of ``frames`` (``depth_XXXX.exr`` beside
    each, channel 0), or None when one is missing."""
    import numpy as np
    import torch

    from studio.eval.feature_lift.data import aov_path
    from studio.pbr.envmap import read_envmap

    paths = [aov_path(p, "depth", k, ".exr") for k, p in enumerate(frames.image_paths)]
    if not all(p.is_file() for p in paths):
        return None
    depths = []
    for path in paths:
        depth = torch.from_numpy(np.asarray(read_envmap(path), np.float32)[..., 0])
        if tuple(depth.shape) != (frames.height, frames.width):
            raise StudioInputError(f"depth AOV {path} is not {frames.width}x{frames.height} like the test images.")
        depths.append(depth)
    return depths


RenderView = Callable[["np.ndarray"], Tuple["Tensor", "Tensor", "Tensor"]]
"""``render(c2w [4,4] OpenGL) -> (rgb [H,W,3] over white, alpha [H,W], depth [H,W])`` (CPU tensors)."""


def score_test_views(render: RenderView, frames, lpips=None) -> Dict[str, Optional[float]]:
    """``psnr``, ``ssim``, ``mask_iou``, ``lpips`` (None without ``lpips``) and ``depth_mae`` (None
    without depth AOVs) of ``render`` at the test views ``frames`` (module docstring)."""
    import numpy as np
    import torch

    from studio.eval.image_to_3d import score_views
    from studio.eval.inverse import read_image

    images = [read_image(p) for p in frames.image_paths]
    scores: Dict[str, Optional[float]] = {"lpips": None}
    scores.update(score_views(lambda c2w: render(c2w)[:2], frames, images, lpips=lpips))
    truths = read_test_depths(frames)
    scores["depth_mae"] = None
    if truths is not None:
        errors = []
        for c2w, image, truth in zip(frames.camera_to_worlds, images, truths):
            err = depth_mae(render(c2w)[2], truth, true_depth_mask(truth, torch.from_numpy(image[..., 3])))
            if err is not None:
                errors.append(err)
        scores["depth_mae"] = float(np.mean(errors)) if errors else None
    return scores


def centre_chamfer(
    means: Tensor, opacities: Tensor, gt_mesh: Path, n_points: int = 20000, seed: int = 0
) -> Optional[float]:
    """Chamfer distance between the centres [N,3] of the Gaussians with ``opacities`` [N] >=
    :data:`CENTRE_MIN_OPACITY` and ``n_points`` area-uniform samples of ``gt_mesh`` (None when the
    file or such Gaussians are missing)."""
    import numpy as np
    import trimesh

    from studio.eval.image_to_3d import chamfer_distance

    centres = means[opacities.reshape(-1) >= CENTRE_MIN_OPACITY].detach().cpu().double().numpy()
    if not Path(gt_mesh).is_file() or len(centres) == 0:
        return None
    mesh = trimesh.load(str(gt_mesh), force="mesh")
    return chamfer_distance(centres, np.asarray(trimesh.sample.sample_surface(mesh, n_points, seed=seed)[0]))
