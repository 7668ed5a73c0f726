"""``studio.mesh.render`` / ``regularizers`` / ``textured``: an icosphere rendered against the
analytic projected disc, vertex-colour and baked-texture renders, silhouette gradients and
fitting, normal consistency and Laplacian smoothing, textured .glb round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from studio.cameras import intrinsics_from_fov, look_at
from studio.mesh import (
    TexturedMesh,
    edge_face_pairs,
    laplacian_smoothing,
    normal_consistency,
    render_mesh,
    save_textured_glb,
    unwrap_with_colors,
    vertex_normals,
)

SIZE = 64
FOV = 50.0
DIST = 3.0


def icosphere(radius: float = 1.0, subdivisions: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.int64)


def cameras(eyes, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """[C,4,4] viewmats looking at the origin from ``eyes`` and [C,3,3] Ks."""
    views = []
    for eye in eyes:
        eye = torch.tensor(eye, dtype=torch.float32)
        up = (
            torch.tensor([0.0, 1.0, 0.0])
            if abs(float(eye[1])) < 0.9 * float(eye.norm())
            else torch.tensor([0.0, 0.0, 1.0])
        )
        views.append(look_at(eye, torch.zeros(3), up))
    K = intrinsics_from_fov(FOV, size, size)
    return torch.stack(views), K.expand(len(views), 3, 3).contiguous()


def disc_mask(radius: float, size: int = SIZE) -> torch.Tensor:
    """[H,W] pixels whose centre lies inside the projection of a sphere of ``radius`` at DIST."""
    focal = 0.5 * size / math.tan(0.5 * math.radians(FOV))
    r_pix = focal * math.tan(math.asin(radius / DIST))
    c = torch.arange(size) + 0.5 - size / 2
    return (c[:, None] ** 2 + c[None, :] ** 2) < r_pix**2


def test_sphere_silhouette_depth_normal():
    verts, faces = icosphere()
    viewmats, Ks = cameras([(0.0, 0.0, DIST)])
    out = render_mesh(verts, faces, viewmats, Ks, SIZE, SIZE)
    assert out["rgb"].shape == (1, SIZE, SIZE, 3) and out["alpha"].shape == (1, SIZE, SIZE, 1)
    assert out["depth"].shape == (1, SIZE, SIZE, 1) and out["normal"].shape == (1, SIZE, SIZE, 3)
    mask = out["alpha"][0, ..., 0] > 0.5
    disc = disc_mask(1.0)
    iou = float((mask & disc).sum() / (mask | disc).sum())
    assert iou > 0.95
    c = SIZE // 2
    assert abs(float(out["depth"][0, c, c, 0]) - (DIST - 1.0)) < 0.02
    assert float(out["depth"][0, 0, 0, 0]) == 0.0 and float(out["normal"][0, 0, 0].abs().sum()) == 0.0
    to_camera = torch.tensor([0.0, 0.0, 1.0])
    assert float(out["normal"][0, c, c] @ to_camera) > 0.99
    covered = out["depth"][0, ..., 0] > 0
    assert torch.allclose(out["normal"][0][covered].norm(dim=-1), torch.ones(()), atol=1e-4)


def test_vertex_normals_point_outwards():
    verts, faces = icosphere(subdivisions=2)
    n = vertex_normals(verts, faces)
    cos = (n * verts / verts.norm(dim=-1, keepdim=True)).sum(-1)
    assert torch.allclose(n.norm(dim=-1), torch.ones(()), atol=1e-5) and float(cos.min()) > 0.99


def test_vertex_colour_render_over_background():
    verts, faces = icosphere()
    viewmats, Ks = cameras([(0.0, 0.0, DIST), (DIST, 0.0, 0.0)])
    red = torch.tensor([1.0, 0.0, 0.0]).expand(len(verts), 3)
    blue = torch.tensor([0.0, 0.0, 1.0])
    out = render_mesh(verts, faces, viewmats, Ks, SIZE, SIZE, vertex_attrs={"color": red}, background=blue)
    assert out["color"].shape == (2, SIZE, SIZE, 3)
    inside, outside = disc_mask(0.9), ~disc_mask(1.1)
    for rgb in out["rgb"]:
        assert torch.allclose(rgb[inside], torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)
        assert torch.allclose(rgb[outside], blue, atol=1e-5)
    edge = ~inside & ~outside  # antialiased silhouette: a mix of the two
    assert float(out["rgb"][..., 0][:, edge].min()) < 0.9 and float(out["rgb"][..., 2][:, edge].max()) > 0.1


FIT_SIZE = 48


def _silhouette_loss(verts, faces, viewmats, Ks, target):
    alpha = render_mesh(verts, faces, viewmats, Ks, FIT_SIZE, FIT_SIZE)["alpha"]
    return (alpha - target).square().mean()


def test_silhouette_gradients_and_fitting():
    unit, faces = icosphere(subdivisions=2)
    viewmats, Ks = cameras([(0.0, 0.0, DIST), (DIST, 0.0, 0.0), (0.0, DIST, 0.0)], size=FIT_SIZE)
    with torch.no_grad():
        target = render_mesh(unit, faces, viewmats, Ks, FIT_SIZE, FIT_SIZE)["alpha"]
    verts = (0.8 * unit).requires_grad_(True)
    loss = _silhouette_loss(verts, faces, viewmats, Ks, target)
    loss.backward()
    assert torch.isfinite(verts.grad).all() and float(verts.grad.abs().sum()) > 0
    # The gradient points the silhouette vertices outwards (descent grows the sphere).
    assert float((verts.grad * unit).sum()) < 0

    opt = torch.optim.Adam([verts], lr=0.015)
    first = float(loss.detach())
    for _ in range(10):
        opt.zero_grad()
        loss = _silhouette_loss(verts, faces, viewmats, Ks, target)
        loss.backward()
        opt.step()
    final = float(_silhouette_loss(verts, faces, viewmats, Ks, target).detach())
    assert final < 0.5 * first
    assert float(verts.detach().norm(dim=-1).mean()) > 0.85


def test_baked_texture_matches_vertex_colours():
    verts, faces = icosphere()
    colors = 0.5 + 0.5 * verts / verts.norm(dim=-1, keepdim=True)  # smooth, distinct per direction
    mesh = unwrap_with_colors(verts, faces, colors, texture_size=256)
    assert isinstance(mesh, TexturedMesh) and mesh.texture.shape == (256, 256, 3)
    assert len(mesh.verts) >= len(verts) and mesh.uv.shape == (len(mesh.verts), 2) and mesh.faces.shape == faces.shape
    assert float(mesh.texture.min()) >= 0.0 and float(mesh.texture.max()) <= 1.0
    viewmats, Ks = cameras([(0.0, 0.0, DIST), (2.0, 1.5, -1.5)], size=48)
    ref = render_mesh(verts, faces, viewmats, Ks, 48, 48, vertex_attrs={"color": colors})
    tex = render_mesh(mesh.verts, mesh.faces, viewmats, Ks, 48, 48, uv=mesh.uv, texture=mesh.texture)
    covered = (ref["alpha"][..., 0] > 0.999) & (tex["alpha"][..., 0] > 0.999)
    assert int(covered.sum()) > 500
    diff = (ref["rgb"] - tex["rgb"]).abs()[covered].mean()
    assert float(diff) < 0.05
    # A texture flipped upside down (the other row convention) does not match.
    flipped = render_mesh(mesh.verts, mesh.faces, viewmats, Ks, 48, 48, uv=mesh.uv, texture=mesh.texture.flip(0))
    assert float((ref["rgb"] - flipped["rgb"]).abs()[covered].mean()) > 2 * float(diff)


def test_texture_sampling_convention():
    """Row 0 of the texture is v = 0: a quad with uv = its (x, y) shows the bottom texture row
    at its bottom (world y = 0, image bottom for a camera with world y up)."""
    verts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]) - torch.tensor(
        [0.5, 0.5, 0.0]
    )
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = verts[:, :2] + 0.5
    texture = torch.zeros(2, 2, 3)
    texture[0, :, 0] = 1.0  # row 0 (v = 0) red, row 1 green
    texture[1, :, 1] = 1.0
    viewmats, Ks = cameras([(0.0, 0.0, 1.5)], size=32)
    rgb = render_mesh(verts, faces, viewmats, Ks, 32, 32, uv=uv, texture=texture)["rgb"][0]
    assert float(rgb[26, 16, 0]) > 0.9 and float(rgb[26, 16, 1]) < 0.1  # bottom of the image: red
    assert float(rgb[6, 16, 1]) > 0.9 and float(rgb[6, 16, 0]) < 0.1


def test_normal_consistency():
    box_mesh = trimesh.creation.box()  # closed cube: folds at the 12 edges
    plane_v = torch.tensor([[x, y, 0.0] for y in range(4) for x in range(4)])
    plane_f = torch.tensor(
        [
            f
            for y in range(3)
            for x in range(3)
            for f in ([4 * y + x, 4 * y + x + 1, 4 * y + x + 5], [4 * y + x, 4 * y + x + 5, 4 * y + x + 4])
        ]
    )
    assert float(normal_consistency(plane_v, plane_f)) < 1e-6
    box = normal_consistency(torch.tensor(box_mesh.vertices, dtype=torch.float32), torch.tensor(box_mesh.faces))
    assert float(box) > 0.3
    verts, faces = icosphere(subdivisions=2)
    pairs = edge_face_pairs(faces)
    assert pairs.shape == (3 * len(faces) // 2, 2)
    clean = normal_consistency(verts, faces, pairs)
    noisy_v = verts + 0.03 * torch.randn(verts.shape, generator=torch.Generator().manual_seed(0))
    noisy = normal_consistency(noisy_v.requires_grad_(True), faces, pairs)
    assert float(clean) < 0.05 and float(noisy) > 2 * float(clean)
    noisy.backward()
    assert torch.isfinite(noisy_v.grad).all() and float(noisy_v.grad.abs().sum()) > 0


def test_edge_face_pairs_boundary_and_non_manifold():
    two = torch.tensor([[0, 1, 2], [2, 1, 3]])
    assert edge_face_pairs(two).tolist() == [[0, 1]]
    fan = torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4]])  # edge (0,1) shared by three faces
    assert sorted(map(sorted, edge_face_pairs(fan).tolist())) == [[0, 1], [0, 2], [1, 2]]


def test_laplacian_decreases_under_its_gradient():
    verts, faces = icosphere(subdivisions=2)
    noisy = (verts + 0.05 * torch.randn(verts.shape, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    opt = torch.optim.SGD([noisy], lr=0.1 * len(verts))  # the mean divides the gradient by V
    values = []
    for _ in range(10):
        opt.zero_grad()
        loss = laplacian_smoothing(noisy, faces)
        loss.backward()
        opt.step()
        values.append(float(loss.detach()))
    assert all(b < a for a, b in zip(values, values[1:])) and values[-1] < 0.5 * values[0]
    assert float(laplacian_smoothing(verts, faces)) < float(values[0])


def test_save_textured_glb_round_trip(tmp_path):
    verts, faces = icosphere(subdivisions=1)
    mesh = unwrap_with_colors(verts, faces, 0.5 + 0.5 * verts, texture_size=64)
    path = tmp_path / "out" / "mesh.glb"
    n = save_textured_glb(path, mesh)
    assert n == path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir()] == ["mesh.glb"]  # no temporary left behind
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.vertices) == len(mesh.verts)
    image = loaded.visual.material.baseColorTexture
    assert image.size == (64, 64)
    # Image row 0 is the top (v = 1): flipped back it matches the texture (row 0 = v = 0).
    expected = (mesh.texture.flip(0) * 255).round().numpy()
    assert np.abs(np.asarray(image.convert("RGB"), dtype=np.float64) - expected).max() <= 1.0
    assert np.allclose(loaded.visual.uv, mesh.uv.numpy(), atol=1e-6)


def test_render_mesh_rejects_bad_inputs():
    verts, faces = icosphere(subdivisions=1)
    viewmats, Ks = cameras([(0.0, 0.0, DIST)], size=16)
    with pytest.raises(ValueError):
        render_mesh(verts, faces, viewmats, Ks, 16, 16, vertex_attrs={"depth": verts[:, :1]})
    with pytest.raises(ValueError):
        render_mesh(verts, faces, viewmats, Ks, 16, 16, uv=verts[:, :2])
