"""``studio.mesh.uv``: one texture row convention (row 0 = v = 0) for ``TexturedMesh`` and
``BakedMesh``; a marked texel lands where other tools (glTF: image origin top-left) expect it."""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from studio.cameras import intrinsics_from_fov, look_at
from studio.export.bake import BakedMesh
from studio.mesh import TexturedMesh, render_mesh, save_glb, save_textured_glb
from studio.mesh.uv import texture_image, to_uint8, uv_atlas

T = 8
ROW, COL = 1, 5  # the marked texel: v = (ROW + 0.5) / T (near the bottom), u = (COL + 0.5) / T
MARK_UV = np.array([[(COL + 0.5) / T, (ROW + 0.5) / T]])


def _quad():
    """Unit square in the z = 0 plane with uv = (x, y)."""
    verts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    return verts, faces, verts[:, :2].clone()


def _marked_texture() -> torch.Tensor:
    texture = torch.zeros(T, T, 3)
    texture[ROW, COL] = torch.tensor([1.0, 0.0, 0.0])
    return texture


def _check_loaded(path, material_image) -> np.ndarray:
    """The reloaded .glb's image has the mark at row T - 1 - ROW (top-left origin), and trimesh's own
    sampler finds it at the texel's uv."""
    loaded = trimesh.load(path, force="mesh", process=False)
    image = np.asarray(material_image(loaded.visual.material).convert("RGB"))
    marked = np.argwhere(image[..., 0] > 200)
    assert marked.tolist() == [[T - 1 - ROW, COL]]
    assert np.allclose(loaded.visual.uv, _quad()[2].numpy(), atol=1e-6)  # v up again after the glTF flip
    sampled = trimesh.visual.color.uv_to_color(MARK_UV, material_image(loaded.visual.material))
    assert sampled[0, 0] > 200 and sampled[0, 1] < 50
    return image


def test_marked_texel_lands_in_the_same_place_for_both_classes(tmp_path):
    verts, faces, uv = _quad()
    texture = _marked_texture()
    textured = TexturedMesh(verts, faces, uv, texture)
    save_textured_glb(tmp_path / "textured.glb", textured)
    u8 = to_uint8(texture)
    baked = BakedMesh(verts.numpy(), faces.numpy(), uv.numpy(), u8, u8, u8[..., 0] > 0)
    save_glb(tmp_path / "baked.glb", baked.to_trimesh())
    a = _check_loaded(tmp_path / "textured.glb", lambda m: m.baseColorTexture)
    b = _check_loaded(tmp_path / "baked.glb", lambda m: m.baseColorTexture)
    _check_loaded(tmp_path / "baked.glb", lambda m: m.metallicRoughnessTexture)
    assert np.array_equal(a, b)
    assert np.array_equal(np.asarray(texture_image(u8)), a)


def test_marked_texel_renders_at_its_uv():
    """``render_mesh`` reads the same convention: the quad seen from +z with world y up shows the mark
    where the surface point (x, y) = its uv projects."""
    verts, faces, uv = _quad()
    eye = torch.tensor([0.5, 0.5, 1.2])
    viewmats = look_at(eye, torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.0, 1.0, 0.0]))[None]
    size = 64
    K = intrinsics_from_fov(60.0, size, size)
    rgb = render_mesh(verts, faces, viewmats, K[None], size, size, uv=uv, texture=_marked_texture())["rgb"][0]
    p = viewmats[0] @ torch.tensor([*MARK_UV[0], 0.0, 1.0], dtype=torch.float32)
    col, row = (K @ p[:3] / p[2])[:2].long().tolist()
    assert float(rgb[row, col, 0]) > 0.7 and float(rgb[row, col, 1]) < 0.1
    assert float(rgb[..., 0].sum()) < 0.1 * size * size  # only the one texel is red


def test_atlas_texels_interpolate_vertex_attributes():
    verts, faces, _ = _quad()
    atlas = uv_atlas(verts.numpy(), faces.numpy(), 32)
    pos = atlas.texels(verts)
    covered = atlas.covered
    assert covered.float().mean() > 0.2
    assert atlas.uv.shape == (len(atlas.vmapping), 2) and atlas.faces.shape == faces.shape
    # every covered texel is a point of the quad (z = 0, x and y in [0, 1])
    assert float(pos[covered][:, 2].abs().max()) < 1e-6
    assert float(pos[covered][:, :2].min()) >= -1e-6 and float(pos[covered][:, :2].max()) <= 1 + 1e-6
