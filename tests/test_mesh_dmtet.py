"""DMTet: the Kuhn tet grid and differentiable marching tetrahedra (``studio.mesh.dmtet``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from studio.mesh.dmtet import marching_tetrahedra, tet_grid

BOX = (torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([1.0, 1.0, 1.0]))


def test_tet_grid_fills_the_box_and_is_conforming():
    """Positive tets that exactly fill the box; every interior triangle is shared by two tets."""
    vertices, tets, _, dims = tet_grid(*BOX, 4)
    assert dims == (5, 5, 5) and vertices.shape == (125, 3) and tets.shape == (4**3 * 6, 4)
    corners = vertices[tets]
    volume = torch.det(torch.stack([corners[:, k] - corners[:, 0] for k in (1, 2, 3)], -1)).abs() / 6
    assert volume.min() > 0 and volume.sum().item() == pytest.approx(8.0, rel=1e-5)
    faces = torch.cat([tets[:, [0, 1, 2]], tets[:, [0, 1, 3]], tets[:, [0, 2, 3]], tets[:, [1, 2, 3]]])
    _, counts = torch.unique(torch.sort(faces, dim=1).values, dim=0, return_counts=True)
    boundary = 6 * 4 * 4 * 2  # 6 box faces, 16 squares each, 2 triangles per square
    assert counts.max() == 2 and int((counts == 1).sum()) == boundary


def test_sphere_is_watertight_outward_and_on_the_surface():
    vertices, tets, _, _ = tet_grid(*BOX, 24)
    surface = marching_tetrahedra(vertices, vertices.norm(dim=-1) - 0.6, tets)
    mesh = trimesh.Trimesh(surface.vertices.numpy(), surface.faces.numpy(), process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * 0.6**3, rel=0.02)  # positive: normals point out
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert radius.max() <= 0.6 + 1e-5 and radius.min() > 0.6 - 0.01  # chords of a convex surface lie inside


def test_gradients_move_the_surface():
    """Lowering the signed distance everywhere by d grows a sphere's radius by d (for a true
    distance), and the mesh follows a grid deformation."""
    vertices, tets, _, _ = tet_grid(*BOX, 16)
    sdf = (vertices.norm(dim=-1) - 0.5).requires_grad_()
    offset = torch.zeros_like(vertices, requires_grad=True)
    surface = marching_tetrahedra(vertices + offset, sdf, tets)
    radius = surface.vertices.norm(dim=-1).mean()
    radius.backward()
    assert sdf.grad.sum().item() == pytest.approx(-1.0, abs=0.05)  # d mean radius / d (uniform sdf shift)
    moved = marching_tetrahedra(vertices + torch.tensor([0.01, 0.0, 0.0]), sdf.detach(), tets)
    assert torch.allclose(moved.vertices, surface.vertices.detach() + torch.tensor([0.01, 0.0, 0.0]), atol=1e-5)
    colours = surface.interpolate(vertices[:, :1].clone())  # the x coordinate, interpolated like the positions
    assert torch.allclose(colours[:, 0], surface.vertices.detach()[:, 0], atol=1e-5)


def test_empty_and_full_fields_have_no_surface():
    vertices, tets, _, _ = tet_grid(*BOX, 4)
    for sdf in (torch.ones(len(vertices)), -torch.ones(len(vertices))):
        surface = marching_tetrahedra(vertices, sdf, tets)
        assert surface.vertices.shape == (0, 3) and surface.faces.shape == (0, 3)
