"""Bake the PBR attributes of Gaussians into the textures of a UV-mapped mesh.

``bake_pbr_textures``:

1. ``studio.mesh.uv.uv_atlas``: xatlas charts packed into a ``texture_size`` square atlas with a
   few texels of padding between charts (vertices on seams are duplicated), rasterized to
   per-texel triangles -> interpolated 3D positions at the texel centres.
2. ``gaussian_lookup``: each texel position takes the attributes of its ``k`` nearest Gaussian
   means (opacity >= ``min_opacity``), weighted by ``opacity * exp(-0.5 m^2)`` (m: Mahalanobis
   distance under the Gaussian's covariance, each scale widened to ``sqrt(s^2 + sigma_min^2)``
   with ``sigma_min`` ~ the mesh's edge length, as the mesh is only voxel-accurate); the weights
   are normalised as a softmax of their logs, so a texel far from every Gaussian still takes its
   nearest one rather than nothing.
3. ``studio.mesh.uv.dilate``: texels outside the UV islands take the mean of their filled
   8-neighbours, ``dilation`` times (so bilinear filtering and mipmaps do not bleed background
   into the seams); the remaining empty texels get the mean value.

Texture rows follow ``studio.mesh.uv`` (row 0 = v = 0); ``BakedMesh.to_trimesh`` flips them into
the images a .glb / .obj holds (row 0 at the top).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from torch import Tensor

from studio.gaussians.rotation import quat_to_rotmat
from studio.io.errors import StudioInputError
from studio.mesh.textured import textured_trimesh
from studio.mesh.uv import dilate, texture_image, to_uint8, uv_atlas
from studio.pbr.tonemap import linear_to_srgb


def gaussian_lookup(
    points: Tensor,
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    attributes: Tensor,
    k: int = 8,
    sigma_min: float = 0.0,
    min_opacity: float = 0.05,
    chunk: int = 65536,
) -> Tensor:
    """Attributes of the Gaussians around ``points``, falloff- and opacity-weighted.

    Args:
        points [P,3] query positions (same frame and units as ``means``).
        means [N,3], quats [N,4] (wxyz), scales [N,3] (standard deviations), opacities [N] or [N,1]
        in (0,1); attributes [N,D].
        k: nearest means considered per point; sigma_min: added in quadrature to every scale
        (same length unit); min_opacity: Gaussians below it are ignored (all are used if none
        pass).
    Returns:
        [P,D]: sum_j w_j attr_j with w = softmax_j(log opacity_j - 0.5 m_j^2) over the k nearest.
    """
    from scipy.spatial import cKDTree

    device = points.device
    op = opacities.reshape(-1).float()
    keep = op >= min_opacity
    if not bool(keep.any()):
        keep = torch.ones_like(keep)
    means, quats, scales, attributes = (
        means[keep].float(),
        quats[keep].float(),
        scales[keep].float(),
        attributes[keep].float(),
    )
    op = op[keep]
    k = max(1, min(int(k), len(means)))
    rot = quat_to_rotmat(F.normalize(quats, dim=-1))  # [N,3,3], columns = local axes
    inv_s = 1.0 / torch.sqrt(scales.square() + float(sigma_min) ** 2).clamp(min=1e-12)  # [N,3]
    log_op = torch.log(op.clamp(min=1e-8))
    tree = cKDTree(means.detach().cpu().numpy())
    out = torch.empty(len(points), attributes.shape[1], device=device)
    for start in range(0, len(points), chunk):
        p = points[start : start + chunk].float()
        _, idx = tree.query(p.detach().cpu().numpy(), k=k, workers=2)
        idx = torch.as_tensor(np.asarray(idx).reshape(len(p), k), device=device, dtype=torch.long)
        d = p[:, None, :] - means[idx]  # [P,k,3]
        local = torch.einsum("pkji,pkj->pki", rot[idx], d) * inv_s[idx]  # R^T d / s
        logw = log_op[idx] - 0.5 * local.square().sum(-1)  # [P,k]
        w = torch.softmax(logw, dim=1)
        out[start : start + chunk] = (w[..., None] * attributes[idx]).sum(1)
    return out


@dataclass
class BakedMesh:
    """UV-mapped mesh with baked PBR textures.

    ``vertices`` [V,3] float32 (world units), ``faces`` [F,3] int64, ``uv`` [V,2] float32 (v up),
    ``base_color`` [T,T,3] uint8 (sRGB-encoded albedo), ``metallic_roughness`` [T,T,3] uint8
    (R = 255, G = roughness, B = metallic; linear), ``coverage`` [T,T] bool (texels inside a UV
    island). Texture row 0 is v = 0 (``studio.mesh.uv``).
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    base_color: np.ndarray
    metallic_roughness: np.ndarray
    coverage: np.ndarray

    def to_trimesh(self) -> trimesh.Trimesh:
        """A ``trimesh.Trimesh`` with ``TextureVisuals`` and a glTF ``PBRMaterial`` (factors 1)."""
        material = trimesh.visual.material.PBRMaterial(
            name="studio_pbr",
            baseColorTexture=texture_image(self.base_color),
            metallicRoughnessTexture=texture_image(self.metallic_roughness),
            baseColorFactor=[255, 255, 255, 255],
            metallicFactor=1.0,
            roughnessFactor=1.0,
            doubleSided=False,
        )
        return textured_trimesh(self.vertices, self.faces, self.uv, material)


@torch.no_grad()
def bake_pbr_textures(
    vertices: np.ndarray,
    faces: np.ndarray,
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    albedo: Tensor,
    roughness: Tensor,
    metallic: Tensor,
    *,
    texture_size: int = 1024,
    k: int = 8,
    sigma_min: Optional[float] = None,
    min_opacity: float = 0.05,
    padding: int = 2,
    dilation: int = 8,
) -> BakedMesh:
    """UV-unwrap a mesh and bake Gaussian PBR attributes into textures (module docstring).

    Args:
        vertices [V,3], faces [F,3]: the mesh, same frame as ``means``.
        means [N,3], quats [N,4], scales [N,3], opacities [N]: activated Gaussians;
        albedo [N,3] linear in [0,1], roughness [N,1], metallic [N,1] in [0,1].
        texture_size: T (square textures); k, min_opacity: see ``gaussian_lookup``;
        sigma_min: scale floor (length units; default: the mean edge length of the mesh);
        padding: texels between UV charts; dilation: texels grown past the charts.
    Returns:
        ``BakedMesh``.
    """
    vertices = np.asarray(vertices, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        raise StudioInputError("the extracted mesh is empty: nothing to bake.")
    if sigma_min is None:
        edges = vertices[faces[:, [1, 2, 0]]] - vertices[faces]
        sigma_min = float(np.linalg.norm(edges, axis=-1).mean())
    device = means.device
    atlas = uv_atlas(vertices, faces, texture_size, padding, device)
    covered = atlas.covered
    attrs = torch.cat([albedo, roughness.reshape(-1, 1), metallic.reshape(-1, 1)], dim=1).float()
    values = torch.zeros(texture_size, texture_size, 5, device=device)
    if bool(covered.any()):
        pos = atlas.texels(torch.as_tensor(vertices, device=device))[covered]
        values[covered] = gaussian_lookup(
            pos, means, quats, scales, opacities, attrs, k=k, sigma_min=sigma_min, min_opacity=min_opacity
        )
    values = dilate(values, covered, dilation).clamp(0.0, 1.0)
    mr = torch.stack([torch.ones_like(values[..., 3]), values[..., 3], values[..., 4]], dim=-1)
    return BakedMesh(
        vertices=vertices[atlas.vmapping.cpu().numpy()],
        faces=atlas.faces.cpu().numpy(),
        uv=atlas.uv.cpu().numpy(),
        base_color=to_uint8(linear_to_srgb(values[..., :3])),
        metallic_roughness=to_uint8(mr),
        coverage=covered.cpu().numpy(),
    )
