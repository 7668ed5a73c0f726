"""Meshes from volumes: the zero level set of a voxel grid (marching cubes), and the choice of a
level by silhouettes. Shared by Gaussian (``studio.export.mesh``) and NeRF (``studio.nerf.mesh``)
mesh extraction."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from skimage.measure import marching_cubes
from torch import Tensor

from studio.io.errors import StudioInputError
from studio.mesh.render import render_mesh


def level_set_mesh(volume: np.ndarray, observed: Tensor, origin: np.ndarray, voxel: float) -> trimesh.Trimesh:
    """Zero level set of ``volume`` [X,Y,Z] (voxel (i,j,k) at ``origin + voxel * (i,j,k)``, world
    units), keeping only the triangles whose cube has all eight corners ``observed`` [X,Y,Z] bool.

    The corner test is a 3D erosion (``-max_pool3d(-x)``): kornia's morphology is 2D only.

    Raises:
        StudioInputError: the volume has no sign change, or no triangle survives.
    """
    if not (volume.min() < 0.0 < volume.max()):
        raise StudioInputError("No surface found; is the scene empty or too sparse?")
    verts, faces, _, _ = marching_cubes(volume, level=0.0, gradient_direction="descent")
    cube_ok = -F.max_pool3d(-observed[None, None].float(), 2, stride=1)[0, 0] > 0  # [X-1,Y-1,Z-1]
    cube = np.floor(verts[faces].mean(axis=1)).astype(np.int64)
    cube = np.minimum(cube, np.array(cube_ok.shape) - 1)
    keep = cube_ok.numpy()[cube[:, 0], cube[:, 1], cube[:, 2]]
    if not keep.any():
        raise StudioInputError("No surface found; is the scene empty or too sparse?")
    mesh = trimesh.Trimesh(vertices=origin + voxel * verts, faces=faces[keep], process=True)
    mesh.remove_unreferenced_vertices()
    return mesh


def best_level(
    field: Tensor,
    mask: Tensor,
    lo: Tensor,
    voxel: float,
    solid: Tensor,
    viewmats: Tensor,
    K: Tensor,
    size: int,
    levels: tuple[float, ...],
) -> float:
    """The one of ``levels`` whose level set of ``field`` [X,Y,Z] (``mask``: observed voxels; grid
    origin ``lo`` [3], spacing ``voxel``) has silhouettes with the highest mean IoU with ``solid``
    [C,H,W] (the rendered views' alpha >= 0.5 pixels; cameras ``viewmats`` [C,4,4], ``K`` [C,3,3],
    ``size`` px square)."""
    best, best_iou = levels[0], -1.0
    for level in levels:
        if not float(field.min()) < level < float(field.max()):
            continue
        mesh = level_set_mesh((level - field).cpu().numpy(), mask.cpu(), lo.cpu().numpy(), voxel)
        verts = torch.as_tensor(mesh.vertices, dtype=torch.float32, device=field.device)
        faces = torch.as_tensor(mesh.faces, dtype=torch.long, device=field.device)
        alpha = render_mesh(verts, faces, viewmats, K, size, size)["alpha"][..., 0] > 0.5
        iou = float(((alpha & solid).sum((1, 2)) / (alpha | solid).sum((1, 2)).clamp_min(1)).mean())
        if iou > best_iou:
            best, best_iou = level, iou
    return best
