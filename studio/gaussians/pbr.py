"""Per-Gaussian PBR attributes (inverse rendering): raw storage, activation and normals.

Raw parameters live next to the 3DGS ones in ``TrainableGaussians.params`` (so densification
clones, splits and prunes them too): ``albedo`` [N,3], ``roughness`` [N,1], ``metallic`` [N,1]
and ``progress`` [N,1] (PRD's distillation progress), all logits (sigmoid activation).

Normals are the Gaussian's shortest axis (the flat direction of a splat that has converged to a
surface; GaussianShader / PRD Sec. 3.1), with the sign chosen per camera so the normal faces it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from studio.gaussians.rotation import quat_to_rotmat

PBR_PARAM_NAMES = ("albedo", "roughness", "metallic", "progress")


def initial_pbr_params(
    n: int, albedo: float = 0.5, roughness: float = 0.5, metallic: float = 0.1, progress: float = 0.0
) -> dict[str, Tensor]:
    """Raw (logit) PBR parameters of n Gaussians, all set to the given activated values.

    ``progress = 0`` is stored as a very negative logit (sigmoid ~ 1e-6), PRD's stage-1 state.
    """

    def logit(value: float, width: int) -> Tensor:
        v = min(max(float(value), 1e-6), 1.0 - 1e-6)
        return torch.logit(torch.full((n, width), v))

    return {
        "albedo": logit(albedo, 3),
        "roughness": logit(roughness, 1),
        "metallic": logit(metallic, 1),
        "progress": logit(progress, 1),
    }


def activate_pbr(params) -> dict[str, Tensor]:
    """Activated attributes from a parameter dict: albedo [N,3], roughness, metallic, progress [N,1] in (0,1)."""
    return {name: torch.sigmoid(params[name]) for name in PBR_PARAM_NAMES}


def shortest_axis_normals(means: Tensor, quats: Tensor, scales: Tensor, camera_center: Tensor) -> Tensor:
    """Unit world normals [N,3]: each Gaussian's shortest axis, flipped to face ``camera_center`` [3].

    Differentiable in ``quats`` (the axis choice, an argmin over ``scales``, is not).
    """
    rot = quat_to_rotmat(quats)  # [N,3,3]
    axis = scales.detach().argmin(dim=-1)  # [N]
    normal = torch.gather(rot, 2, axis[:, None, None].expand(-1, 3, 1))[..., 0]  # column `axis`
    to_cam = camera_center[None, :] - means.detach()
    sign = torch.where((normal * to_cam).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    return normal * sign
