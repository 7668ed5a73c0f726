"""Image-to-3D evaluation: reconstruct from one posed view of a dataset, score the others.

Protocol (``studio eval image-to-3d``):
* the reference is frame ``view`` of the training split (RGBA, its own framing: no recentring);
  its camera must look at the world origin with +Z up (ToyWorld and Blender NeRF-synthetic
  scenes do), so it is an orbit view (elevation, azimuth, distance, fov) and the result lives in
  the dataset's frame;
* the method runs (``ns-train dreamcraft3d`` by default) with that reference camera;
* every test view is rendered over white and scored against the ground truth over white: PSNR,
  SSIM and mask IoU (alpha > 0.5 on both sides);
* geometry: symmetric Chamfer distance (mean nearest-neighbour distance, both directions
  averaged, world units) between ``n_points`` area-uniform samples of the exported mesh and of
  ``gt_mesh.obj``, when both exist.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from studio.io.errors import StudioInputError

METRIC_KEYS = ("psnr", "ssim", "mask_iou", "chamfer")


def orbit_of_c2w(c2w: np.ndarray, tol_deg: float = 2.0) -> Tuple[float, float, float]:
    """(elevation, azimuth in degrees, distance) of an OpenGL camera-to-world that looks at the
    origin with +Z up; a one-sentence error otherwise."""
    eye = c2w[:3, 3].astype(np.float64)
    dist = float(np.linalg.norm(eye))
    forward = -c2w[:3, 2] / max(np.linalg.norm(c2w[:3, 2]), 1e-12)
    angle = math.degrees(math.acos(float(np.clip(np.dot(forward, -eye / max(dist, 1e-12)), -1.0, 1.0))))
    if dist < 1e-6 or angle > tol_deg:
        raise StudioInputError(f"the reference camera does not look at the world origin (off by {angle:.1f} deg).")
    right = c2w[:3, 0]
    if abs(float(right[2])) > math.sin(math.radians(tol_deg)):
        raise StudioInputError("the reference camera is rolled (its x axis is not horizontal); +Z must be up.")
    return math.degrees(math.asin(eye[2] / dist)), math.degrees(math.atan2(eye[1], eye[0])), dist


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance of two point sets [N,3], [M,3] (mean of both directions)."""
    from scipy.spatial import cKDTree

    return 0.5 * float(cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def mesh_chamfer(pred_path: Path, gt_path: Path, n_points: int = 20000, seed: int = 0) -> Optional[float]:
    """Chamfer distance between area-uniform samples of two mesh files (None when one is missing)."""
    import trimesh

    if not (Path(pred_path).is_file() and Path(gt_path).is_file()):
        return None
    meshes = [trimesh.load(str(p), force="mesh") for p in (pred_path, gt_path)]
    if any(len(m.faces) == 0 for m in meshes):
        return None
    pts = [np.asarray(trimesh.sample.sample_surface(m, n_points, seed=seed)[0]) for m in meshes]
    return chamfer_distance(*pts)


def score_views(render_fn, frames, images: list, lpips=None) -> Dict[str, float]:
    """Mean PSNR, SSIM and mask IoU of ``render_fn(c2w [4,4], frames) -> (rgb [H,W,3], alpha
    [H,W])`` against RGBA ground truth ``images`` (float [H,W,4] in [0,1]); with ``lpips`` (the
    callable of :func:`studio.metrics.lpips_if_available`) also the mean LPIPS of the same renders."""
    from studio.eval.inverse import over_white
    from studio.metrics import psnr, ssim

    p, s, iou, lp = [], [], [], []
    for c2w, gt in zip(frames.camera_to_worlds, images):
        rgb, alpha = render_fn(c2w)
        target = torch.from_numpy(over_white(gt)).float()
        p.append(float(psnr(rgb, target)))
        s.append(float(ssim(rgb.permute(2, 0, 1), target.permute(2, 0, 1))))
        pred_m, gt_m = alpha > 0.5, torch.from_numpy(gt[..., 3] > 0.5)
        union = (pred_m | gt_m).sum()
        iou.append(float((pred_m & gt_m).sum() / union) if union > 0 else 1.0)
        if lpips is not None:
            lp.append(float(lpips(rgb.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None])))
    out = {"psnr": float(np.mean(p)), "ssim": float(np.mean(s)), "mask_iou": float(np.mean(iou))}
    if lpips is not None:
        out["lpips"] = float(np.mean(lp))
    return out
