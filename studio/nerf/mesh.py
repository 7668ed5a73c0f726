"""A NeRF's surface as a mesh: marching cubes of the field's density on a grid over its bounds,
vertex colours from the field's colour at the vertices (threestudio's isosurface export).

The density level (threestudio: a fixed 25) defaults to the one of ``NERF_LEVELS`` whose mesh
silhouettes best match the volume renders' (alpha >= 0.5) from views around the bounds, as the
Gaussians' opacity level in ``studio.export.mesh``: a fixed density does not say where a volume
render looks opaque, which also depends on how far the density extends along each ray.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import trimesh

from studio.cameras import camera_rays, views_around
from studio.mesh.level_set import best_level, level_set_mesh
from studio.nerf.field import HashGridField
from studio.nerf.volume import render_rays

NERF_LEVELS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # candidate densities (per unit length)


@torch.no_grad()
def field_mesh(
    field: HashGridField,
    resolution: int = 128,
    level: Optional[float] = None,
    n_views: int = 12,
    image_size: int = 64,
    chunk: int = 1 << 18,
) -> trimesh.Trimesh:
    """The ``level`` set of ``field``'s density (default: chosen among ``NERF_LEVELS`` by
    silhouettes of ``n_views`` renders at ``image_size`` px) sampled at ``resolution``^3 points over
    [-radius, radius]^3, with vertex colours (uint8 RGBA) from the field."""
    r = field.config.radius
    device = next(field.parameters()).device
    axis = torch.linspace(-r, r, resolution, device=device)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    density = torch.cat([field(points[k : k + chunk])[0][:, 0] for k in range(0, len(points), chunk)])
    density = density.reshape(resolution, resolution, resolution)
    observed = torch.ones(density.shape, dtype=torch.bool, device=device)
    lo, voxel = torch.full((3,), -r, device=device), 2 * r / (resolution - 1)
    if level is None:
        viewmats, K = views_around(lo, -lo, n_views, image_size, 50.0)
        solid = torch.stack(
            [
                render_rays(
                    field,
                    *(x.to(device) for x in camera_rays(vm, k, image_size, image_size)),
                    r,
                    field.config.samples_per_ray,
                    torch.zeros(3, device=device),
                )[1].reshape(image_size, image_size)
                >= 0.5
                for vm, k in zip(viewmats, K)
            ]
        )
        level = best_level(
            density, observed, lo, voxel, solid, viewmats.to(device), K.to(device), image_size, NERF_LEVELS
        )
    mesh = level_set_mesh((float(level) - density).cpu().numpy(), observed.cpu(), lo.cpu().numpy(), voxel)
    verts = torch.as_tensor(mesh.vertices, dtype=torch.float32, device=device)
    rgb = torch.cat([field(verts[k : k + chunk])[1] for k in range(0, len(verts), chunk)]).cpu().numpy()
    mesh.visual.vertex_colors = np.concatenate(
        [(rgb * 255 + 0.5).astype(np.uint8), np.full((len(rgb), 1), 255, np.uint8)], 1
    )
    return mesh
