"""Conversions between camera conventions (see ``studio.cameras``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def opengl_c2w_to_viewmat(c2w: Tensor) -> Tensor:
    """[...,4,4] or [...,3,4] camera-to-world (OpenGL axes) -> [...,4,4] world-to-camera (OpenCV)."""
    if c2w.shape[-2] == 3:
        bottom = torch.zeros(c2w.shape[:-2] + (1, 4), dtype=c2w.dtype, device=c2w.device)
        bottom[..., 0, 3] = 1.0
        c2w = torch.cat([c2w, bottom], dim=-2)
    c2w_cv = c2w @ _GL_TO_CV.to(c2w)
    return torch.linalg.inv(c2w_cv)


def viewmat_to_opengl_c2w(viewmat: Tensor) -> Tensor:
    """Inverse of ``opengl_c2w_to_viewmat``: [...,4,4] -> [...,4,4]."""
    return torch.linalg.inv(viewmat) @ _GL_TO_CV.to(viewmat)


def intrinsics_from_fov(fov_x_deg: float, width: int, height: int) -> Tensor:
    """[3,3] pinhole K with square pixels, principal point at the image centre."""
    focal = 0.5 * width / math.tan(0.5 * math.radians(fov_x_deg))
    return torch.tensor([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
