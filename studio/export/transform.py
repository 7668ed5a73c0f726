"""Similarity transforms of Gaussian scenes, with the SH bands rotated along.

A scene moved by ``x -> s R x + t`` keeps its look only if each Gaussian's view-dependent colour
turns with it: the new colour seen along direction ``d`` is the old one seen along ``R^T d``.
For SH coefficients ``c_l`` of band l that means ``c'_l = D_l^T c_l`` where ``D_l`` is the
band's rotation matrix, ``Y_l(R^T d) = D_l Y_l(d)``. ``sh_rotation_matrices`` finds ``D_l``
numerically for the project's SH basis (``studio.gaussians.sh``), so the result matches that basis'
sign conventions by construction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from studio.gaussians import Gaussians
from studio.gaussians.rotation import quat_multiply, rotmat_to_quat
from studio.gaussians.sh import sh_basis

_ROTATION_TOL = 1e-3  # max |R^T R - I| and |det R - 1| accepted as a rotation (then re-orthonormalised)


def sh_rotation_matrices(rotation: Tensor, degree: int) -> list[Tensor]:
    """Per-band SH rotation matrices for ``rotation``.

    Args:
        rotation: [3,3] rotation matrix R.
        degree: highest band, 0..3.
    Returns:
        ``[D_1, ..., D_degree]`` float64 on ``rotation``'s device, ``D_l`` [2l+1, 2l+1] with
        ``Y_l(R^T d) = D_l Y_l(d)`` for every unit direction d. Each is the least-squares fit over
        a Fibonacci sphere of directions (exact up to rounding: the band is closed under rotation).
    """
    rot = rotation.to(torch.float64)
    dirs = _fibonacci_sphere(128, rot.device)  # [M,3], far more than the 7 unknowns per row of band 3
    basis = sh_basis(degree, dirs)  # [M,K]
    rotated = sh_basis(degree, dirs @ rot)  # Y(R^T d) for each row d: (R^T d)^T = d^T R
    mats = []
    for band in range(1, degree + 1):
        cols = slice(band * band, (band + 1) * (band + 1))
        d_transposed = torch.linalg.lstsq(basis[:, cols], rotated[:, cols]).solution  # Y(d)^T X = Y(R^T d)^T
        mats.append(d_transposed.T)
    return mats


def rotate_sh(sh: Tensor, rotation: Tensor) -> Tensor:
    """SH coefficients of the rotated radiance ``f'(d) = f(R^T d)``.

    Args:
        sh: [N,K,3] coefficients (any degree 0..3), band 0 first.
        rotation: [3,3] rotation matrix R.
    Returns:
        [N,K,3] coefficients, same dtype; band 0 is unchanged.
    """
    degree = math.isqrt(sh.shape[1]) - 1
    out = sh.clone()
    for band, mat in enumerate(sh_rotation_matrices(rotation.to(sh.device), degree), start=1):
        cols = slice(band * band, (band + 1) * (band + 1))
        out[:, cols, :] = torch.einsum("ji,njc->nic", mat, sh[:, cols, :].double()).to(sh.dtype)  # D^T c
    return out


def transform_gaussians(g: Gaussians, rotation: Tensor, translation: Tensor, scale: float = 1.0) -> Gaussians:
    """Apply the similarity ``x -> scale * R x + t`` to a scene.

    Means are mapped, orientations composed with R (``q' = q_R * q``), scales multiplied by
    ``scale``, SH bands rotated (``rotate_sh``); opacities are unchanged. Computed in float64 and
    returned in the input dtype and device.

    Args:
        g: the scene.
        rotation: [3,3] rotation matrix (orthonormal, det +1 within 1e-3; re-orthonormalised).
        translation: [3] world units (of the output frame).
        scale: > 0, uniform scale factor.
    Raises:
        ValueError: ``rotation`` is not a rotation or ``scale`` is not positive.
    """
    if not scale > 0:
        raise ValueError(f"transform_gaussians needs a positive scale, got {scale}.")
    device, dtype = g.means.device, g.means.dtype
    rot = _as_rotation(torch.as_tensor(rotation, dtype=torch.float64, device=device))
    trans = torch.as_tensor(translation, dtype=torch.float64, device=device).reshape(3)
    means = scale * g.means.double() @ rot.T + trans
    quats = quat_multiply(rotmat_to_quat(rot).expand_as(g.quats), g.quats.double())
    return Gaussians(
        means=means.to(dtype),
        quats=quats.to(g.quats.dtype),
        scales=(g.scales.double() * scale).to(g.scales.dtype),
        opacities=g.opacities.clone(),
        sh=rotate_sh(g.sh, rot),
    )


def _dataparser_inverse(dataparser_transform: Tensor, dataparser_scale: float) -> tuple[Tensor, Tensor, float]:
    """(rotation [3,3], translation [3], scale) float64 of the map from Nerfstudio's dataparser
    frame back to the input world: ``x' = s (A x + b)`` (``[A | b]`` = the [3,4] transform, A a
    rotation) is undone by ``x = (1/s) A^T x' - A^T b``."""
    mat = torch.as_tensor(dataparser_transform, dtype=torch.float64)
    if tuple(mat.shape) not in ((3, 4), (4, 4)):
        raise ValueError(f"dataparser_transform must be [3,4] (or [4,4]), got {tuple(mat.shape)}.")
    rot, trans = mat[:3, :3], mat[:3, 3]
    return rot.T, -rot.T @ trans, 1.0 / float(dataparser_scale)


def dataparser_to_world(g: Gaussians, dataparser_transform: Tensor, dataparser_scale: float) -> Gaussians:
    """Undo a Nerfstudio dataparser transform: Gaussians in the dataparser frame -> input world
    (``_dataparser_inverse``), applied with ``transform_gaussians`` (SH included)."""
    rot, trans, scale = _dataparser_inverse(dataparser_transform, dataparser_scale)
    return transform_gaussians(g, rot, trans, scale)


def dataparser_points_to_world(points: Tensor, dataparser_transform: Tensor, dataparser_scale: float) -> Tensor:
    """Points [N,3] in the dataparser frame -> input world (``_dataparser_inverse``), float64."""
    rot, trans, scale = _dataparser_inverse(dataparser_transform, dataparser_scale)
    return scale * torch.as_tensor(points, dtype=torch.float64) @ rot.T + trans


def _as_rotation(mat: Tensor) -> Tensor:
    """Check that [3,3] ``mat`` is a rotation and return the nearest exact one (SVD projection)."""
    if tuple(mat.shape) != (3, 3):
        raise ValueError(f"rotation must be [3,3], got {tuple(mat.shape)}.")
    eye = torch.eye(3, dtype=mat.dtype, device=mat.device)
    if (mat.T @ mat - eye).abs().max() > _ROTATION_TOL or abs(float(torch.linalg.det(mat)) - 1.0) > _ROTATION_TOL:
        raise ValueError("rotation must be orthonormal with determinant +1 (a proper rotation).")
    u, _, vh = torch.linalg.svd(mat)
    return u @ vh


def _fibonacci_sphere(n: int, device: torch.device) -> Tensor:
    """[n,3] float64 unit directions spread evenly over the sphere."""
    i = torch.arange(n, dtype=torch.float64, device=device) + 0.5
    z = 1.0 - 2.0 * i / n
    r = torch.sqrt(1.0 - z * z)
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)
