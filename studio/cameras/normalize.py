"""A scene frame shared by sets of cameras that look at one thing: origin at the point the optical
axes pass closest to, unit mean camera distance (the normalisation multi-view generators read
their cameras in)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class SceneFrame(NamedTuple):
    """``p_normalised = (p_world - center) / scale`` for world points ``p``."""

    center: Tensor  # [B,3] world units
    scale: Tensor  # [B] world units per normalised unit


def focus_point(viewmats: Tensor) -> Tensor:
    """[B,3] least-squares point nearest to the optical axes of cameras ``viewmats`` [B,V,4,4]
    (world-to-camera, OpenCV: the axis is camera +z). Axes that are (nearly) parallel leave the
    system ill-conditioned; a small pull towards the cameras' mean position keeps it solvable."""
    c2w = torch.linalg.inv(viewmats)
    origins, axes = c2w[..., :3, 3], torch.nn.functional.normalize(c2w[..., :3, 2], dim=-1)
    eye = torch.eye(3, dtype=viewmats.dtype, device=viewmats.device)
    proj = eye - axes[..., :, None] * axes[..., None, :]  # [B,V,3,3] projector orthogonal to each axis
    A = proj.sum(1) + 1e-4 * eye
    b = torch.einsum("bvij,bvj->bi", proj, origins) + 1e-4 * origins.mean(1)
    return torch.linalg.solve(A, b)


def scene_frame(viewmats: Tensor) -> SceneFrame:
    """The frame of :func:`focus_point` with the mean camera distance to it as the unit."""
    center = focus_point(viewmats)
    origins = torch.linalg.inv(viewmats)[..., :3, 3]
    return SceneFrame(center, (origins - center[:, None]).norm(dim=-1).mean(1))


def to_frame(viewmats: Tensor, frame: SceneFrame) -> Tensor:
    """[B,V,4,4] world-to-camera matrices of the same cameras in ``frame`` (camera space scaled too):
    ``[R | (R c + t) / s]``."""
    out = viewmats.clone()
    R, t = viewmats[..., :3, :3], viewmats[..., :3, 3]
    out[..., :3, 3] = (torch.einsum("bvij,bj->bvi", R, frame.center) + t) / frame.scale[:, None, None]
    return out


def from_frame(viewmats: Tensor, frame: SceneFrame) -> Tensor:
    """Inverse of :func:`to_frame`: [B,V,4,4] normalised-frame cameras back in the world."""
    out = viewmats.clone()
    R, t = viewmats[..., :3, :3], viewmats[..., :3, 3]
    out[..., :3, 3] = t * frame.scale[:, None, None] - torch.einsum("bvij,bj->bvi", R, frame.center)
    return out


def compose_frames(outer: SceneFrame, inner: SceneFrame) -> SceneFrame:
    """The frame of ``inner`` (given in ``outer``'s normalised coordinates) in ``outer``'s world:
    ``p_world = outer.center + outer.scale * (inner.center + inner.scale * p)``."""
    return SceneFrame(outer.center + outer.scale[:, None] * inner.center, outer.scale * inner.scale)
