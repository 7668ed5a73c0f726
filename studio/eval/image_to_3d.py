"""Image-to-3D evaluation: reconstruct from one posed view of a dataset, score the others.

Protocol (``studio eval image-to-3d``):
* the reference is frame ``view`` of the training split; its camera must look at the world
  origin with +Z up (ToyWorld and Blender NeRF-synthetic scenes do), so it is an orbit view
  (elevation, azimuth, distance, fov);
* ``--camera gt``: the method runs with that reference camera and the image's own framing (no
  recentring), so the result lives in the dataset's frame. Favourable: the released
  preprocessing knows nothing of the camera;
* ``--camera default``: the method runs as released (DreamCraft3D's threestudio image data
  module): the object recentred in the image (``studio.data.single_image``) and its default
  reference camera; the result is brought into the dataset's frame by the similarity of
  :func:`default_camera_alignment`;
* every test view is rendered over white and scored against the ground truth over white: PSNR,
  SSIM and mask IoU (alpha > 0.5 on both sides);
* geometry: symmetric Chamfer distance (mean nearest-neighbour distance, both directions
  averaged, world units) between ``n_points`` area-uniform samples of the exported mesh (mapped
  into the dataset's frame) and of ``gt_mesh.obj``, when both exist.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from studio.data.single_image import Recentring
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


def mesh_chamfer(
    pred_path: Path, gt_path: Path, n_points: int = 20000, seed: int = 0, pred_to_gt: Optional[np.ndarray] = None
) -> Optional[float]:
    """Chamfer distance between area-uniform samples of two mesh files (None when one is missing);
    ``pred_to_gt`` [4,4] (a :meth:`Similarity.matrix`) first maps the predicted mesh into the
    ground truth's frame."""
    import trimesh

    if not (Path(pred_path).is_file() and Path(gt_path).is_file()):
        return None
    meshes = [trimesh.load(str(p), force="mesh") for p in (pred_path, gt_path)]
    if any(len(m.faces) == 0 for m in meshes):
        return None
    if pred_to_gt is not None:
        meshes[0].apply_transform(np.asarray(pred_to_gt, dtype=np.float64))
    pts = [np.asarray(trimesh.sample.sample_surface(m, n_points, seed=seed)[0]) for m in meshes]
    return chamfer_distance(*pts)


class Similarity(NamedTuple):
    """``x_dataset = scale * rotation @ x_method + translation``: the method's world (the frame
    its reference camera assumes) into the dataset's world (units of each)."""

    scale: float
    rotation: np.ndarray  # [3,3]
    translation: np.ndarray  # [3]

    def matrix(self) -> np.ndarray:
        """[4,4] homogeneous form (method -> dataset)."""
        out = np.eye(4)
        out[:3, :3], out[:3, 3] = self.scale * self.rotation, self.translation
        return out

    def points(self, x: np.ndarray) -> np.ndarray:
        """Method-world points [N,3] -> dataset-world points [N,3]."""
        return self.scale * np.asarray(x, dtype=np.float64) @ self.rotation.T + self.translation

    def camera_in_method(self, c2w: np.ndarray) -> np.ndarray:
        """A dataset camera (OpenGL camera-to-world [3,4] or [4,4]) as the same camera in the
        method's world ([4,4]: inverse similarity; the image is unchanged for the same intrinsics,
        perspective projection being invariant under similarities)."""
        out = np.eye(4)
        out[:3, :3] = self.rotation.T @ c2w[:3, :3]
        out[:3, 3] = self.rotation.T @ (c2w[:3, 3] - self.translation) / self.scale
        return out


def default_camera_alignment(
    c2w_gt: np.ndarray,
    focal_gt: float,
    principal_gt: Tuple[float, float],
    c2w_method: np.ndarray,
    focal_method: float,
    recentring: Recentring,
) -> Similarity:
    """The similarity from the world a method reconstructed in (from the recentred reference
    image, with its own default reference camera) into the dataset's world: a first-order
    (weak-perspective) alignment.

    Args:
        c2w_gt: [3,4] or [4,4] OpenGL camera-to-world of the dataset's reference camera C_gt
            (looks at the origin: :func:`orbit_of_c2w`); ``focal_gt`` its focal length and
            ``principal_gt`` its principal point (cx, cy), pixels of the dataset's image.
        c2w_method: the method's reference camera C_m (also looking at the origin, e.g. its
            default orbit), ``focal_method`` its focal length in pixels of the recentred image
            (``recentring.size`` square, principal point at its centre).
        recentring: how the reference image's pixels were moved (``load_reference(...).recentring``).

    Derivation. Write R_gt, R_m for the cameras' rotations (columns: right, up, back), d_gt, d_m
    for their distances to the look-at point (the origin in both worlds). A dataset point X has
    camera coordinates R_gt^T X + (0, 0, -d_gt): p = R_gt^T X is its offset from the look-at point
    in C_gt's axes. Near the look-at point the projection is weak-perspective:
    u = cx + (f_gt/d_gt) p_x, v = cy - (f_gt/d_gt) p_y (depth ~ d_gt; error of order |p_z|/d_gt).
    Recentring is a zoom k (output per input pixel; the geometric mean of its x and y zooms, equal
    up to rounding) and a shift: u' = u'_c + k (u - cx), v' = v'_c + k (v - cy), where
    (u'_c, v'_c) is where the principal point lands. The method explains the recentred pixels with
    C_m: u' = S/2 + (f_m/d_m) p'_x, v' = S/2 - (f_m/d_m) p'_y for p' = R_m^T X' (X' in its world).
    Equating: p' = s p + t, with

        s = k (f_gt/d_gt) / (f_m/d_m)      (image zoom and the ratio of apparent sizes f/d),
        t = (d_m/f_m) (u'_c - S/2, S/2 - v'_c, 0)
            (the image shift as a translation perpendicular to the view axis at the look-at
            depth; along the axis the depth offset scales with s: p'_z = s p_z).

    Hence X' = R_m p' = s R_m R_gt^T X + R_m t (the rotation R_m R_gt^T takes C_gt's camera frame
    to C_m's about the look-at point), and inverting,
    X = (1/s) R_gt R_m^T X' - (1/s) R_gt t: ``scale = 1/s``, ``rotation = R_gt R_m^T``,
    ``translation = -(1/s) R_gt t``. C_m mapped by it looks along C_gt's axis with the same
    magnification f/d; what remains is the weak-perspective error (the two cameras' perspective
    differs when f_gt/k != f_m or d_gt != d_m / s).
    """
    _, _, d_gt = orbit_of_c2w(np.asarray(c2w_gt))
    _, _, d_m = orbit_of_c2w(np.asarray(c2w_method))
    zx, zy = recentring.zoom()
    k = math.sqrt(zx * zy)
    s = k * (focal_gt / d_gt) * (d_m / focal_method)
    u_c, v_c = recentring.apply(np.asarray(principal_gt, dtype=np.float64))
    half = 0.5 * recentring.size
    t = (d_m / focal_method) * np.array([u_c - half, half - v_c, 0.0])
    R_gt = np.asarray(c2w_gt, dtype=np.float64)[:3, :3]
    R_m = np.asarray(c2w_method, dtype=np.float64)[:3, :3]
    return Similarity(1.0 / s, R_gt @ R_m.T, -(R_gt @ t) / s)


def reference_alignment(train, view: int, c2w_method: np.ndarray, focal_method: float, recentring: Recentring):
    """:func:`default_camera_alignment` of a result reconstructed from training frame ``view`` of
    ``train`` (a :class:`studio.data.nerf_synthetic.FrameSet`), recentred by ``recentring``, with
    the method's reference camera ``c2w_method`` ([3,4] or [4,4] OpenGL; focal length
    ``focal_method`` in pixels of the recentred image)."""
    return default_camera_alignment(
        train.camera_to_worlds[view], train.fx, (train.cx, train.cy), c2w_method, focal_method, recentring
    )


def protocol_record(camera: str, similarity: Optional[Similarity]) -> dict:
    """The metrics JSON's record of the camera protocol: ``camera`` ("gt" or "default") and
    ``alignment``: None for gt, else the similarity's ``scale`` and its [4,4] ``matrix``
    (method world -> dataset world)."""
    if similarity is None:
        return {"camera": camera, "alignment": None}
    return {"camera": camera, "alignment": {"scale": similarity.scale, "matrix": similarity.matrix().tolist()}}


def frame_camera(frames, c2w: np.ndarray):
    """Nerfstudio ``Cameras`` (one camera) of an OpenGL camera-to-world ``c2w`` ([3,4] or [4,4])
    with the intrinsics and size of ``frames`` (a :class:`studio.data.nerf_synthetic.FrameSet`)."""
    from nerfstudio.cameras.cameras import Cameras

    return Cameras(
        camera_to_worlds=torch.from_numpy(np.asarray(c2w[None, :3])).float(),
        fx=frames.fx,
        fy=frames.fy,
        cx=frames.cx,
        cy=frames.cy,
        width=frames.width,
        height=frames.height,
    )


def mask_iou(pred_alpha: Tensor, gt_alpha: Tensor, threshold: float = 0.5) -> float:
    """IoU of the masks ``alpha > threshold`` of two alpha maps [H,W] (1 when both are empty)."""
    pred_m, gt_m = pred_alpha > threshold, gt_alpha > threshold
    union = (pred_m | gt_m).sum()
    return float((pred_m & gt_m).sum() / union) if union > 0 else 1.0


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
        iou.append(mask_iou(alpha, torch.from_numpy(gt[..., 3])))
        if lpips is not None:
            lp.append(float(lpips(rgb.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None])))
    out = {"psnr": float(np.mean(p)), "ssim": float(np.mean(s)), "mask_iou": float(np.mean(iou))}
    if lpips is not None:
        out["lpips"] = float(np.mean(lp))
    return out
