"""Mesh extraction from a Gaussian scene: multi-view depth rendering, TSDF fusion, marching cubes.

``extract_mesh`` works on object-centred scenes:

1. Bounds (``gaussian_bounds``): per-axis 0.5 / 99.5 % quantiles (rounded outwards) of the means
   of the Gaussians with opacity >= 0.2, padded by 5 % of the largest extent plus three typical
   Gaussian sizes.
2. Views: ``n_views`` cameras on rings of equal-area latitude bands around the bounds' centre
   (``studio.cameras.paths.views_around``; views per ring proportional to the ring's circumference), far enough
   that the bounding sphere fills the field of view. Each renders colour, alpha and expected
   depth with ``studio.render.rasterize``. A pixel's confidence is ``alpha * cos^4`` (cos between
   the depth map's normal and the ray: expected depth is pulled towards the camera at grazing
   angles), and 0 where it or a 4-neighbour has alpha < 0.5.
3. TSDF: a voxel grid over the bounds (``resolution`` voxels along the longest axis). Only the
   band of voxels within the truncation distance of some confident pixel's surface point is
   fused (the rest cannot hold the zero level), with the projective signed distance
   ``depth - z`` of each view truncated to ``truncation_voxels`` voxels and weighted by the
   pixel's confidence; voxels more than the truncation distance behind the surface are skipped.
4. Marching cubes (scikit-image) at level 0; triangles in cubes with an unobserved corner are
   dropped. Connected components with less than ``min_component_fraction`` of the total
   area (floaters) are removed.
5. Vertex colours: the confidence-weighted mean of the rendered colours of the views that see
   the vertex (depth test against the rendered depth); vertices no view sees take the mean
   colour of their coloured neighbours.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from torch import Tensor

from studio.cameras.paths import views_around
from studio.export.density import opacity_field
from studio.gaussians import Gaussians, gaussian_bounds
from studio.io import StudioInputError, atomic_path
from studio.mesh.level_set import best_level, level_set_mesh
from studio.render import rasterize

MESH_FORMATS = (".glb", ".obj", ".ply")
ALPHA_MIN = 0.5  # pixels with less coverage are not surface
DENSITY_LEVELS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75)  # candidate opacity-field levels (method="density")
_BOUNDS_MIN_OPACITY = 0.2
_COS_POWER = 4  # pixel confidence alpha * cos^4: expected depth is biased outwards at grazing angles


@torch.no_grad()
def extract_mesh(
    gaussians: Gaussians,
    *,
    resolution: int = 256,
    n_views: int = 60,
    image_size: int = 256,
    fov_deg: float = 50.0,
    truncation_voxels: float = 3.0,
    min_component_fraction: float = 0.01,
    views_per_batch: int = 8,
    backend: str = "auto",
    device: Optional[str | torch.device] = None,
    method: str = "tsdf",
    density_level: Optional[float] = None,
) -> trimesh.Trimesh:
    """Extract a vertex-coloured surface mesh from a Gaussian scene (see the module docstring).

    Args:
        gaussians: the scene, world coordinates.
        resolution: voxels along the longest side of the bounds.
        n_views: number of rendered views (at least 2).
        image_size: width = height of each view, pixels.
        fov_deg: field of view of each view, degrees.
        truncation_voxels: TSDF truncation distance, voxels.
        min_component_fraction: connected components with a smaller share of the surface area
            are dropped.
        views_per_batch: views rendered per ``rasterize`` call (memory vs speed).
        backend: ``studio.render.rasterize`` backend.
        device: where rendering and fusion run; defaults to the Gaussians' device.
        method: ``tsdf`` (steps 2-4 of the module docstring: for captured scenes) or ``density``:
            the level set ``D(x) = density_level`` of the Gaussians' opacity field
            (``studio.export.density``), as DreamGaussian extracts generated objects, whose
            semi-transparent edges a depth fusion leaves out. Step 5 colours both.
        density_level: the opacity-field level of the surface (``method="density"``); None picks,
            of ``DENSITY_LEVELS``, the one whose mesh silhouettes best match the rendered views'
            (alpha >= 0.5; mean IoU): fuzzy generated Gaussians need a low level, crisp ones a higher one.
    Returns:
        ``trimesh.Trimesh`` in world coordinates with ``visual.vertex_colors`` (uint8 RGBA).
    Raises:
        StudioInputError: the scene has no opaque Gaussians or no surface was found.
    """
    if resolution < 8 or n_views < 2 or image_size < 8:
        raise ValueError("extract_mesh needs resolution >= 8, n_views >= 2 and image_size >= 8.")
    if method not in ("tsdf", "density"):
        raise ValueError(f"extract_mesh method must be 'tsdf' or 'density', not {method!r}.")
    g = gaussians.detach().to(device if device is not None else gaussians.means.device)
    lo, hi = extraction_bounds(g)
    voxel = float((hi - lo).max()) / (resolution - 1)
    dims = tuple(int(d) for d in torch.ceil((hi - lo) / voxel).long() + 1)
    trunc = truncation_voxels * voxel

    viewmats, K = views_around(lo, hi, n_views, image_size, fov_deg)
    viewmats, K = viewmats.to(g.means.device), K.to(g.means.device)
    color, depth, conf, solid = _render(g, viewmats, K, image_size, views_per_batch, backend)

    if method == "density":
        field = opacity_field(g, lo, voxel, dims)
        mask = torch.ones(dims, dtype=torch.bool, device=lo.device)
        if density_level is None:
            density_level = best_level(field, mask, lo, voxel, solid, viewmats, K, image_size, DENSITY_LEVELS)
        volume = density_level - field  # positive outside, as the TSDF
    else:
        band = _surface_band(depth, conf, viewmats, K, lo, voxel, dims, math.ceil(truncation_voxels))
        points = lo + band.to(lo.dtype) * voxel  # [M,3] voxel centres
        tsdf, weight = _fuse(points, depth, conf, viewmats, K, trunc)
        observed = weight > 0
        volume = torch.ones(dims, dtype=torch.float32, device=lo.device)
        mask = torch.zeros(dims, dtype=torch.bool, device=lo.device)
        idx = band[observed]
        volume[idx[:, 0], idx[:, 1], idx[:, 2]] = tsdf[observed]
        mask[idx[:, 0], idx[:, 1], idx[:, 2]] = True

    mesh = level_set_mesh(volume.cpu().numpy(), mask.cpu(), lo.cpu().numpy(), voxel)
    mesh = _drop_small_components(mesh, min_component_fraction)
    verts = torch.as_tensor(mesh.vertices, dtype=torch.float32, device=lo.device)
    rgb = _vertex_colors(verts, color, depth, conf, viewmats, K, trunc)
    rgb = _fill_unseen(rgb, torch.as_tensor(np.array(mesh.edges_unique), device=lo.device))
    rgba = torch.cat([rgb, torch.ones_like(rgb[:, :1])], dim=1)
    mesh.visual.vertex_colors = (rgba.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return mesh


def extraction_bounds(g: Gaussians) -> Tensor:
    """[2,3] box ``(lo, hi)`` of the opaque part of a scene (module docstring, step 1).

    Raises:
        StudioInputError: no Gaussian has opacity >= 0.2.
    """
    if not bool((g.opacities >= _BOUNDS_MIN_OPACITY).any()):
        raise StudioInputError(
            f"The scene has no Gaussians with opacity >= {_BOUNDS_MIN_OPACITY}, so there is no surface to mesh."
        )
    return gaussian_bounds(
        g.means,
        g.opacities,
        g.scales,
        min_opacity=_BOUNDS_MIN_OPACITY,
        quantile=0.005,
        outward=True,
        pad=0.05,
        scale_pad=3.0,
        margin=1e-6,
    )


def save_mesh(path: str | os.PathLike, mesh: trimesh.Trimesh) -> None:
    """Write ``mesh`` as .glb, .obj or .ply (chosen by the extension, via trimesh), atomically.

    Raises:
        StudioInputError: the extension is not one of .glb, .obj, .ply.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in MESH_FORMATS:
        raise StudioInputError(f"Cannot write mesh {path}: the extension must be one of {', '.join(MESH_FORMATS)}.")
    with atomic_path(path) as tmp:
        mesh.export(str(tmp), file_type=suffix[1:])


def _render(
    g: Gaussians, viewmats: Tensor, K: Tensor, size: int, per_batch: int, backend: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Render every view: colour [C,H,W,3] (un-premultiplied), expected depth [C,H,W], confidence
    [C,H,W] and silhouette (alpha >= 0.5) [C,H,W] bool.

    The confidence of a pixel is ``alpha * cos^4`` (cosine between the depth map's normal and the
    viewing ray), so grazing views, whose expected depth is pulled towards the camera by the
    Gaussians' extent along the surface, count little; it is 0 unless the pixel and its four
    neighbours have alpha > 0.5 (elsewhere ``depth_to_normal`` gives no normal).
    """
    colors, depths, confs, solids = [], [], [], []
    pix = torch.arange(size, device=g.means.device, dtype=torch.float32) + 0.5
    v, u = torch.meshgrid(pix, pix, indexing="ij")
    for start in range(0, len(viewmats), per_batch):
        vm, ks = viewmats[start : start + per_batch], K[start : start + per_batch]
        out = rasterize(
            g.means, g.quats, g.scales, g.opacities, g.sh, vm, ks, size, size, backend=backend, sh_degree=g.sh_degree
        )
        alpha = out.alpha[..., 0]
        rays = F.normalize(
            torch.stack(
                [
                    (u - ks[:, None, None, 0, 2]) / ks[:, None, None, 0, 0],
                    (v - ks[:, None, None, 1, 2]) / ks[:, None, None, 1, 1],
                    torch.ones_like(alpha),
                ],
                dim=-1,
            ),
            dim=-1,
        )
        cos = -(out.normal * rays).sum(dim=-1)
        colors.append(out.color / out.alpha.clamp_min(1e-6))
        depths.append(out.depth[..., 0])
        confs.append(alpha * cos.clamp_min(0.0) ** _COS_POWER)  # the depth normal is 0 off the interior
        solids.append(alpha >= ALPHA_MIN)
    return torch.cat(colors), torch.cat(depths), torch.cat(confs), torch.cat(solids)


def _project(points: Tensor, proj: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Project world points [M,3] with ``proj = K @ viewmat[:3]`` [3,4].

    Returns view-space z [M], flat pixel index ``row * size + col`` [M] (clamped into the
    image) and whether the point lies in front of the camera and inside the image [M].
    """
    uvw = torch.addmm(proj[:, 3], points, proj[:, :3].T)
    z = uvw[:, 2]
    u = uvw[:, 0] / z.clamp_min(1e-8)
    v = uvw[:, 1] / z.clamp_min(1e-8)
    inside = (z > 1e-8) & (u >= 0) & (u < size) & (v >= 0) & (v < size)
    col = u.clamp_(0, size - 1).long()  # floor, as the coordinates are now >= 0
    row = v.clamp_(0, size - 1).long()
    return z, row * size + col, inside


def _surface_band(
    depth: Tensor,
    conf: Tensor,
    viewmats: Tensor,
    K: Tensor,
    lo: Tensor,
    voxel: float,
    dims: tuple[int, int, int],
    radius: int,
) -> Tensor:
    """[M,3] int64 indices of the voxels within ``radius`` voxels of a back-projected pixel with ``conf > 0``."""
    size = depth.shape[-1]
    pix = torch.arange(size, device=depth.device, dtype=depth.dtype) + 0.5
    v, u = torch.meshgrid(pix, pix, indexing="ij")
    occupied = torch.zeros(dims, dtype=torch.float32, device=depth.device)
    upper = torch.tensor(dims, device=depth.device) - 1
    for view in range(len(viewmats)):
        keep = conf[view] > 0
        z = depth[view][keep]
        cam = torch.stack(
            [(u[keep] - K[view, 0, 2]) / K[view, 0, 0] * z, (v[keep] - K[view, 1, 2]) / K[view, 1, 1] * z, z], -1
        )
        world = (cam - viewmats[view, :3, 3]) @ viewmats[view, :3, :3]  # R^T (x_cam - t), row-wise
        idx = torch.round((world - lo) / voxel).long()
        idx = idx[((idx >= 0) & (idx <= upper)).all(dim=1)]
        occupied[idx[:, 0], idx[:, 1], idx[:, 2]] = 1.0
    grid = occupied[None, None]
    k = 2 * radius + 1
    for kernel in ((k, 1, 1), (1, k, 1), (1, 1, k)):  # separable 3D dilation (kornia's morphology is 2D only)
        grid = F.max_pool3d(grid, kernel, stride=1, padding=tuple(s // 2 for s in kernel))
    return torch.nonzero(grid[0, 0] > 0)


def _fuse(
    points: Tensor, depth: Tensor, conf: Tensor, viewmats: Tensor, K: Tensor, trunc: float
) -> tuple[Tensor, Tensor]:
    """Confidence-weighted mean truncated SDF (in [-1, 1], positive outside) [M] and total weight [M]."""
    size = depth.shape[-1]
    proj = K @ viewmats[:, :3]  # [C,3,4]
    table = torch.stack([depth, conf], dim=-1).reshape(len(viewmats), -1, 2)  # [C,H*W,2]
    tsdf_sum = torch.zeros(len(points), dtype=torch.float32, device=points.device)
    weight = torch.zeros_like(tsdf_sum)
    for view in range(len(viewmats)):
        z, pix, inside = _project(points, proj[view], size)
        d, c = table[view][pix].unbind(dim=1)
        sdf = d - z
        w = c * (inside & (sdf > -trunc))
        tsdf_sum += w * (sdf / trunc).clamp_(max=1.0)
        weight += w
    return tsdf_sum / weight.clamp_min(1e-12), weight


def _drop_small_components(mesh: trimesh.Trimesh, min_fraction: float) -> trimesh.Trimesh:
    """Remove the connected components holding less than ``min_fraction`` of the surface area."""
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    area = np.bincount(labels, weights=mesh.area_faces)
    keep = area[labels] >= min_fraction * area.sum()
    mesh.update_faces(keep)
    mesh.remove_unreferenced_vertices()
    return mesh


def _vertex_colors(
    verts: Tensor, color: Tensor, depth: Tensor, conf: Tensor, viewmats: Tensor, K: Tensor, tol: float
) -> Tensor:
    """[V,3] confidence-weighted mean rendered colour per vertex; NaN where no view sees the vertex.

    A view sees a vertex when it projects inside the image onto a pixel with ``conf > 0`` whose
    depth is within ``tol`` of the vertex's.
    """
    size = depth.shape[-1]
    proj = K @ viewmats[:, :3]
    table = torch.cat([depth[..., None], conf[..., None], color.float()], dim=-1).reshape(len(viewmats), -1, 5)
    total = torch.zeros(len(verts), 3, dtype=torch.float32, device=verts.device)
    weight = torch.zeros(len(verts), dtype=torch.float32, device=verts.device)
    for view in range(len(viewmats)):
        z, pix, inside = _project(verts, proj[view], size)
        sample = table[view][pix]
        w = sample[:, 1] * (inside & ((sample[:, 0] - z).abs() < tol))
        total += w[:, None] * sample[:, 2:]
        weight += w
    return torch.where(
        weight[:, None] > 0, total / weight.clamp_min(1e-12)[:, None], torch.full_like(total, float("nan"))
    )


def _fill_unseen(rgb: Tensor, edges: Tensor) -> Tensor:
    """Replace NaN colours [V,3] by the mean of coloured neighbours along ``edges`` [E,2], repeatedly;
    vertices in components no view sees get the mean colour of all seen vertices."""
    rgb = rgb.clone()
    known = ~torch.isnan(rgb[:, 0])
    if not bool(known.any()):
        return torch.full_like(rgb, 0.5)
    both = torch.cat([edges, edges.flip(1)])  # directed edges src -> dst
    while not bool(known.all()):
        src, dst = both[:, 0], both[:, 1]
        use = known[src] & ~known[dst]
        if not bool(use.any()):
            break
        acc = torch.zeros_like(rgb).index_add_(0, dst[use], rgb[src[use]])
        cnt = torch.zeros(len(rgb), device=rgb.device).index_add_(
            0, dst[use], torch.ones_like(dst[use], dtype=rgb.dtype)
        )
        new = cnt > 0
        rgb[new] = acc[new] / cnt[new, None]
        known = known | new
    rgb[~known] = rgb[known].mean(dim=0)
    return rgb
