"""DMTet (Shen et al. 2021): a signed distance on a deformable tetrahedral grid, turned into a
triangle mesh by differentiable marching tetrahedra. DreamCraft3D's geometry stage (released
``tetrahedra-sdf-grid``, ``isosurface_resolution`` 128, deformable) refines its coarse shape this way.

* The grid (:func:`tet_grid`): the vertices of a regular lattice over a box, every cube split
  into the 6 tetrahedra of the Kuhn (Freudenthal) triangulation around its main diagonal, so
  that neighbouring cubes share their face diagonals and the tet mesh is conforming. (The
  released code loads a precomputed grid of the same kind, ``load/tets/128_tets.npz``.)
* Marching tetrahedra (:func:`marching_tetrahedra`): a tet whose 4 signs differ holds one
  triangle (one vertex on the other side of the three) or a quad split into two (two and two).
  The surface crosses each sign-changing edge ``(a, b)`` at the zero of the linear
  interpolation, ``p = (x_a s_b - x_b s_a) / (s_b - s_a)`` (DMTet Sec. 3.1.2), differentiable in
  the positions (the grid plus its deformation) and in the signed distances ``s``. Crossings are
  merged per edge, so the mesh is connected across tets, and faces are wound with their normals
  pointing from the negative (inside) to the positive (outside) side.

Signed distance convention: negative inside, positive outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Tuple

import torch
from torch import Tensor

# the 6 tetrahedra of a unit cube around its diagonal 0 -> 7 (corner index = x + 2 y + 4 z): each
# follows one monotone path 0 -> 7 through the corners along +x, +y, +z in some order
_CUBE_TETS = torch.tensor([[0, 1, 3, 7], [0, 1, 5, 7], [0, 2, 3, 7], [0, 2, 6, 7], [0, 4, 5, 7], [0, 4, 6, 7]])
_CORNERS = torch.tensor([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)])  # [8,3], index x + 2y + 4z


class TetGrid(NamedTuple):
    """A tetrahedral grid: ``vertices`` [V,3], ``tets`` [T,4] long, the cube edge ``cell`` (world
    units) and the lattice points per axis ``dims`` (``vertices`` is that lattice, the last axis fastest)."""

    vertices: Tensor
    tets: Tensor
    cell: float
    dims: Tuple[int, int, int]


def tet_grid(lo: Tensor, hi: Tensor, resolution: int) -> TetGrid:
    """The Kuhn tetrahedral grid over the box ``[lo, hi]`` ([3] world units each) with
    ``resolution`` cubes along its longest side (cubic cells; the box grows to whole cells):
    vertices float32 at the lattice points ``lo + cell * (i, j, k)``, on ``lo``'s device."""
    if resolution < 1:
        raise ValueError("tet_grid needs resolution >= 1")
    cell = float((hi - lo).max()) / resolution
    cubes_per_axis = torch.clamp(torch.ceil((hi - lo).cpu() / cell).long(), min=1)
    nx, ny, nz = (int(d) + 1 for d in cubes_per_axis)  # lattice points per axis
    idx = torch.stack(torch.meshgrid(*(torch.arange(n) for n in (nx, ny, nz)), indexing="ij"), -1).reshape(-1, 3)
    vertices = lo.float().cpu() + cell * idx.float()
    cubes = torch.stack(torch.meshgrid(*(torch.arange(int(d)) for d in cubes_per_axis), indexing="ij"), -1)
    corner = cubes.reshape(-1, 1, 3) + _CORNERS[None]  # [C,8,3]
    flat = (corner[..., 0] * ny + corner[..., 1]) * nz + corner[..., 2]  # [C,8]
    tets = flat[:, _CUBE_TETS].reshape(-1, 4)  # [C*6,4]
    return TetGrid(vertices.to(lo.device), tets.to(lo.device), cell, (nx, ny, nz))


@dataclass
class TetSurface:
    """The mesh of :func:`marching_tetrahedra`: ``vertices`` [M,3], ``faces`` [F,3] long; each
    vertex lies on grid edge ``edges[m] = (a, b)`` at ``x_a + weights[m] (x_b - x_a)``."""

    vertices: Tensor
    faces: Tensor
    edges: Tensor
    weights: Tensor

    def interpolate(self, values: Tensor) -> Tensor:
        """Per-grid-vertex ``values`` [V,C] at the mesh vertices [M,C], as the positions are."""
        a, b = values.index_select(0, self.edges[:, 0]), values.index_select(0, self.edges[:, 1])
        return a + self.weights[:, None] * (b - a)


def marching_tetrahedra(vertices: Tensor, sdf: Tensor, tets: Tensor) -> TetSurface:
    """The zero level set of ``sdf`` [V] (negative inside) on the tet mesh ``vertices`` [V,3] /
    ``tets`` [T,4] (see the module docstring); differentiable in ``vertices`` and ``sdf``.
    An empty surface has 0 vertices and faces."""
    device = vertices.device
    with torch.no_grad():
        inside = sdf[tets] < 0  # [T,4]
        count = inside.sum(1)
        tets = tets[(count > 0) & (count < 4)]
        inside, count = inside[(count > 0) & (count < 4)], count[(count > 0) & (count < 4)]
        # order each tet's corners: the lone corner first (count 1: the inside one, count 3: the
        # outside one), for count 2 the two inside corners first
        key = torch.where((count == 3)[:, None], ~inside, inside).long()
        order = torch.argsort(key, dim=1, descending=True, stable=True)
        t, inside = torch.gather(tets, 1, order), torch.gather(inside, 1, order)  # [T',4]
        single = count != 2
        # crossing edges per face, as pairs of corners of t
        tri_edges = torch.stack([t[single][:, [0, 1]], t[single][:, [0, 2]], t[single][:, [0, 3]]], 1)  # [A,3,2]
        q = t[~single]  # a, b inside; c, d outside: the cycle a-c, a-d, b-d, b-c
        quad = torch.stack([q[:, [0, 2]], q[:, [0, 3]], q[:, [1, 3]], q[:, [1, 2]]], 1)  # [B,4,2]
        face_edges = torch.cat([tri_edges, quad[:, [0, 1, 2]], quad[:, [0, 2, 3]]], 0)  # [F,3,2]
        face_edges = torch.sort(face_edges, dim=-1).values
        # the tet's inside/outside centroids orient each face
        tet_of_face = torch.cat([t[single], t[~single], t[~single]], 0)
        inside_of_face = torch.cat([inside[single], inside[~single], inside[~single]], 0)
        edges, inverse = torch.unique(face_edges.reshape(-1, 2), dim=0, return_inverse=True)
        faces = inverse.reshape(-1, 3)
    if edges.numel() == 0:
        empty = vertices.new_zeros(0, 3)
        return TetSurface(empty, torch.zeros(0, 3, dtype=torch.long, device=device), edges.reshape(0, 2), empty[:, 0])
    sa, sb = sdf.index_select(0, edges[:, 0]), sdf.index_select(0, edges[:, 1])
    weights = sa / (sa - sb)  # where the linear interpolation crosses 0, in [0, 1]
    surface = TetSurface(vertices.new_zeros(0, 3), faces, edges, weights)
    points = surface.interpolate(vertices)
    with torch.no_grad():
        p = points.detach()
        normal = torch.cross(p[faces[:, 1]] - p[faces[:, 0]], p[faces[:, 2]] - p[faces[:, 0]], dim=-1)
        w_in = inside_of_face.float()
        corners = vertices.detach()[tet_of_face]  # [F,4,3]
        c_in = (corners * w_in[..., None]).sum(1) / w_in.sum(1, keepdim=True)
        c_out = (corners * (1 - w_in)[..., None]).sum(1) / (1 - w_in).sum(1, keepdim=True)
        flip = (normal * (c_out - c_in)).sum(-1) < 0
        faces = torch.where(flip[:, None], faces[:, [0, 2, 1]], faces)
    return TetSurface(points, faces, edges, weights)


def deformable_surface(grid: TetGrid, sdf: Tensor, deform: Tensor, color: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """A deformable DMTet's mesh: the ``grid``'s vertices each moved by at most half a cube,
    ``0.5 * cell * tanh(deform)`` (``deform`` [V,3]), marched at ``sdf`` [V]; ``color`` [V,C]
    interpolated like the positions. Returns vertices [M,3], faces [F,3], colours [M,C]."""
    surface = marching_tetrahedra(grid.vertices + 0.5 * grid.cell * torch.tanh(deform), sdf, grid.tets)
    return surface.vertices, surface.faces, surface.interpolate(color)
