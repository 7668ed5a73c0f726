"""studio.export.mesh: TSDF mesh extraction from Gaussians, mesh files, ``studio export mesh``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from studio.cli.main import entrypoint
from studio.export import extract_mesh, save_gaussians_ply, save_mesh
from studio.export.mesh import _drop_small_components
from studio.gaussians import Gaussians, rgb_to_sh
from studio.io import StudioInputError

COLOR = torch.tensor([0.8, 0.3, 0.2])
SMALL = dict(resolution=48, n_views=16, image_size=64, backend="torch")  # ~15 s on 2 cores


def sphere_shell(n: int = 2000, radius: float = 0.5) -> Gaussians:
    """Isotropic Gaussians evenly spread (Fibonacci) over a sphere, about 0.7 spacings wide."""
    i = torch.arange(n, dtype=torch.float32) + 0.5
    z = 1.0 - 2.0 * i / n
    r = torch.sqrt(1.0 - z * z)
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    dirs = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)
    spacing = math.sqrt(4.0 * math.pi * radius**2 / n)
    return Gaussians(
        means=radius * dirs,
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        scales=torch.full((n, 3), 0.7 * spacing),
        opacities=torch.full((n,), 0.9),
        sh=rgb_to_sh(COLOR)[None, None].repeat(n, 1, 1),
    )


@pytest.fixture(scope="module")
def sphere_mesh() -> trimesh.Trimesh:
    return extract_mesh(sphere_shell(), **SMALL)


def test_sphere_surface_is_recovered(sphere_mesh):
    radii = np.linalg.norm(sphere_mesh.vertices, axis=1)
    assert np.abs(radii - 0.5).mean() < 0.03
    assert np.abs(radii - 0.5).max() < 0.08
    # outward-facing, closed, about the sphere's volume
    assert sphere_mesh.is_watertight
    assert (np.sum(sphere_mesh.vertex_normals * sphere_mesh.vertices, axis=1) > 0).mean() > 0.99
    assert sphere_mesh.volume == pytest.approx(4 / 3 * math.pi * 0.5**3, rel=0.25)


@pytest.mark.parametrize("level", [None, 0.3])
def test_density_level_set_recovers_a_fuzzy_sphere(level):
    # a faint shell (opacity 0.25, as score-distilled Gaussians often are): the opacity field's
    # level set finds the surface and the renders colour it
    faint = sphere_shell()
    faint.opacities = torch.full_like(faint.opacities, 0.25)
    mesh = extract_mesh(faint, method="density", density_level=level, **SMALL)
    radii = np.linalg.norm(mesh.vertices, axis=1)
    # (a level set of a shell's field has an outer and an inner sheet, each about 1.4 std from the shell)
    assert np.abs(radii - 0.5).mean() < 0.07 and np.abs(radii - 0.5).max() < 0.1
    assert np.abs(mesh.visual.vertex_colors[:, :3] / 255.0 - COLOR.numpy()).mean() < 0.1
    with pytest.raises(StudioInputError):
        extract_mesh(faint, method="density", density_level=50.0, **SMALL)  # above the field everywhere


def test_opacity_field_of_one_gaussian():
    from studio.export.density import opacity_field

    g = Gaussians(
        means=torch.zeros(1, 3),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        scales=torch.tensor([[0.1, 0.2, 0.3]]),
        opacities=torch.tensor([0.8]),
        sh=torch.zeros(1, 1, 3),
    )
    lo, voxel = torch.full((3,), -1.0), 0.05
    field = opacity_field(g, lo, voxel, (41, 41, 41))
    assert float(field[20, 20, 20]) == pytest.approx(0.8, rel=1e-5)  # the centre voxel
    x = -1.0 + voxel * np.arange(41)
    expected = 0.8 * np.exp(-0.5 * (x / 0.2) ** 2)  # along y through the centre
    inside = np.abs(x) < 3 * 0.2 - 1e-6  # evaluated within 3 standard deviations (Mahalanobis)
    assert np.allclose(field[20, :, 20].numpy()[inside], expected[inside], atol=1e-6)


def test_sphere_vertex_colours(sphere_mesh):
    rgba = sphere_mesh.visual.vertex_colors
    assert rgba.shape == (len(sphere_mesh.vertices), 4) and np.all(rgba[:, 3] == 255)
    assert np.abs(rgba[:, :3] / 255.0 - COLOR.numpy()).mean() < 0.03


def test_small_components_are_dropped():
    big = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    floater = trimesh.creation.icosphere(subdivisions=1, radius=0.05).apply_translation([3.0, 0.0, 0.0])
    kept = _drop_small_components(trimesh.util.concatenate([big, floater]), 0.01)
    assert len(kept.faces) == len(big.faces) and len(kept.vertices) == len(big.vertices)
    assert np.linalg.norm(kept.vertices, axis=1).max() < 1.001
    both = _drop_small_components(trimesh.util.concatenate([big, floater]), 0.001)
    assert len(both.faces) == len(big.faces) + len(floater.faces)


def test_scene_without_opaque_gaussians_is_an_input_error():
    g = sphere_shell(n=50)
    g.opacities = torch.full((50,), 0.05)
    with pytest.raises(StudioInputError, match="no Gaussians with opacity"):
        extract_mesh(g, **SMALL)


@pytest.mark.parametrize("suffix", [".glb", ".obj", ".ply"])
def test_save_mesh_formats_keep_colours(tmp_path, suffix):
    mesh = trimesh.creation.icosphere(subdivisions=2)
    mesh.visual.vertex_colors = np.tile([[200, 80, 40, 255]], (len(mesh.vertices), 1)).astype(np.uint8)
    path = tmp_path / f"m{suffix}"
    save_mesh(path, mesh)
    loaded = trimesh.load(str(path), force="mesh", process=False)
    assert len(loaded.faces) == len(mesh.faces)
    assert np.allclose(loaded.visual.vertex_colors[:, :3].mean(axis=0), [200, 80, 40], atol=1)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_save_mesh_rejects_unknown_extension(tmp_path):
    with pytest.raises(StudioInputError, match="must be one of .glb, .obj, .ply"):
        save_mesh(tmp_path / "m.stl", trimesh.creation.box())
    assert list(tmp_path.iterdir()) == []


def test_failed_mesh_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_export(self, file_obj=None, file_type=None, **kwargs):
        with open(file_obj, "wb") as f:
            f.write(b"glTF partial")
        raise OSError("disk full")

    monkeypatch.setattr(trimesh.Trimesh, "export", broken_export)
    with pytest.raises(OSError, match="disk full"):
        save_mesh(tmp_path / "m.glb", trimesh.creation.box())
    assert list(tmp_path.iterdir()) == []


def test_cli_export_mesh_from_gaussian_ply(tmp_path, capsys):
    scene = tmp_path / "scene.ply"
    save_gaussians_ply(scene, sphere_shell(n=800))
    out = tmp_path / "mesh.obj"
    entrypoint(
        [
            "export",
            "mesh",
            "--input",
            str(scene),
            "--output",
            str(out),
            "--resolution",
            "32",
            "--n-views",
            "8",
            "--image-size",
            "48",
            "--backend",
            "torch",
            "--device",
            "cpu",
        ]
    )
    mesh = trimesh.load(str(out), force="mesh")
    assert len(mesh.faces) > 100
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.5).mean() < 0.05
    printed = capsys.readouterr().out
    assert str(out) in printed and f"{len(mesh.faces):,} faces" in printed


def test_cli_export_mesh_needs_exactly_one_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        entrypoint(["export", "mesh", "--output", str(tmp_path / "m.glb")])
    assert exc.value.code == 2
    assert "exactly one of --load-config" in " ".join(capsys.readouterr().err.split())
