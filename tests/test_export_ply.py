"""studio.export.ply: the standard 3DGS PLY layout, round trips, other tools' files, bad input."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
import trimesh
import yaml
from plyfile import PlyData, PlyElement

from studio.cli.main import entrypoint
from studio.export import is_gaussian_ply, load_gaussians_ply, save_gaussians_ply
from studio.export.ply import PROPERTY_NAMES
from studio.gaussians import Gaussians
from studio.io import StudioInputError
from studio.models.registry import registered_config


def random_gaussians(n: int = 50, degree: int = 3, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=gen),
        quats=torch.randn(n, 4, generator=gen),
        scales=torch.rand(n, 3, generator=gen) * 0.1 + 1e-3,
        opacities=torch.rand(n, generator=gen) * 0.98 + 0.01,
        sh=torch.randn(n, (degree + 1) ** 2, 3, generator=gen),
    )


def write_vertex_ply(path, columns: dict[str, np.ndarray], text: bool = False, faces: bool = False) -> None:
    """A PLY written the way another tool might (any property set, optional faces, ascii or binary)."""
    n = len(next(iter(columns.values())))
    vertex = np.empty(n, dtype=[(k, v.dtype.str) for k, v in columns.items()])
    for k, v in columns.items():
        vertex[k] = v
    elements = [PlyElement.describe(vertex, "vertex")]
    if faces:
        face = np.empty(1, dtype=[("vertex_indices", "i4", (3,))])
        face["vertex_indices"] = [[0, 1, 2]]
        elements.append(PlyElement.describe(face, "face"))
    PlyData(elements, text=text).write(str(path))


def gaussian_columns(n: int, degree: int, dtype=np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    cols = {name: rng.normal(size=n).astype(dtype) for name in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2")}
    for i in range(3 * ((degree + 1) ** 2 - 1)):
        cols[f"f_rest_{i}"] = rng.normal(size=n).astype(dtype)
    cols["opacity"] = rng.normal(size=n).astype(dtype)
    for i in range(3):
        cols[f"scale_{i}"] = rng.normal(size=n).astype(dtype) - 3
    for i in range(4):
        cols[f"rot_{i}"] = rng.normal(size=n).astype(dtype)
    return cols


def test_layout_matches_the_3dgs_convention(tmp_path):
    g = random_gaussians(n=7, degree=2)
    path = tmp_path / "scene.ply"
    save_gaussians_ply(path, g)

    ply = PlyData.read(str(path))
    assert ply.header.splitlines()[1] == "format binary_little_endian 1.0"
    assert [e.name for e in ply.elements] == ["vertex"]
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == PROPERTY_NAMES
    assert len(PROPERTY_NAMES) == 62 and all(vertex.data.dtype[name] == np.dtype("<f4") for name in PROPERTY_NAMES)

    data = {name: torch.from_numpy(vertex.data[name].astype(np.float64)) for name in PROPERTY_NAMES}
    torch.testing.assert_close(torch.stack([data[k] for k in "xyz"], 1), g.means.double())
    for name in ("nx", "ny", "nz"):
        assert torch.all(data[name] == 0)
    for c in range(3):
        torch.testing.assert_close(data[f"f_dc_{c}"], g.sh[:, 0, c].double())
        # channel-major: f_rest_{15c + k} is coefficient k + 1 of channel c; degree 2 fills k < 8
        for k in range(15):
            expected = g.sh[:, k + 1, c].double() if k < 8 else torch.zeros(7, dtype=torch.float64)
            torch.testing.assert_close(data[f"f_rest_{15 * c + k}"], expected)
    torch.testing.assert_close(torch.sigmoid(data["opacity"]), g.opacities.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        torch.stack([data[f"scale_{i}"] for i in range(3)], 1).exp(), g.scales.double(), rtol=1e-5, atol=0
    )
    rot = torch.stack([data[f"rot_{i}"] for i in range(4)], 1)
    torch.testing.assert_close(rot, torch.nn.functional.normalize(g.quats.double(), dim=1), rtol=1e-6, atol=1e-6)


def test_round_trip_degree_3(tmp_path):
    g = random_gaussians(n=500, degree=3)
    save_gaussians_ply(tmp_path / "s.ply", g)
    h = load_gaussians_ply(tmp_path / "s.ply")
    assert h.sh_degree == 3 and len(h) == 500
    assert torch.equal(h.means, g.means) and torch.equal(h.sh, g.sh)
    torch.testing.assert_close(h.opacities, g.opacities, rtol=0, atol=1e-6)
    torch.testing.assert_close(h.scales, g.scales, rtol=1e-6, atol=0)
    torch.testing.assert_close(h.quats, torch.nn.functional.normalize(g.quats, dim=1), rtol=0, atol=1e-6)
    assert is_gaussian_ply(tmp_path / "s.ply")


def test_lower_degree_is_zero_padded_and_loads_as_degree_3(tmp_path):
    g = random_gaussians(n=20, degree=1)
    save_gaussians_ply(tmp_path / "s.ply", g)
    h = load_gaussians_ply(tmp_path / "s.ply")
    assert h.sh_degree == 3
    assert torch.equal(h.sh[:, :4], g.sh) and torch.all(h.sh[:, 4:] == 0)


def test_extreme_values_stay_finite(tmp_path):
    g = random_gaussians(n=4, degree=0)
    g.opacities = torch.tensor([0.0, 1.0, 0.5, 1e-12])
    g.scales[0] = 0.0
    g.quats[1] = 0.0
    save_gaussians_ply(tmp_path / "s.ply", g)
    h = load_gaussians_ply(tmp_path / "s.ply")
    assert all(torch.isfinite(t).all() for t in (h.opacities, h.scales, h.quats))
    assert h.opacities[0] < 1e-5 and h.opacities[1] > 1 - 1e-5
    assert torch.equal(h.quats[1], torch.tensor([1.0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
@pytest.mark.parametrize("text", [False, True])
def test_reads_other_tools_files(tmp_path, degree, text):
    """Degree 0-3, no normals, float64 properties, ascii or binary."""
    cols = gaussian_columns(5, degree, dtype=np.float64)
    path = tmp_path / "other.ply"
    write_vertex_ply(path, cols, text=text)
    g = load_gaussians_ply(path)
    assert g.sh_degree == degree and g.sh.dtype == torch.float32
    k = (degree + 1) ** 2 - 1
    for c in range(3):
        torch.testing.assert_close(g.sh[:, 0, c], torch.tensor(cols[f"f_dc_{c}"], dtype=torch.float32))
        for j in range(k):
            torch.testing.assert_close(
                g.sh[:, j + 1, c], torch.tensor(cols[f"f_rest_{k * c + j}"], dtype=torch.float32)
            )
    torch.testing.assert_close(g.opacities, torch.sigmoid(torch.tensor(cols["opacity"])).float())
    torch.testing.assert_close(g.scales[:, 2], torch.exp(torch.tensor(cols["scale_2"])).float())
    assert is_gaussian_ply(path)


@pytest.mark.parametrize("drop", ["x", "z", "opacity", "scale_1", "rot_3", "f_dc_2"])
def test_missing_required_property(tmp_path, drop):
    cols = gaussian_columns(3, 1)
    del cols[drop]
    write_vertex_ply(tmp_path / "bad.ply", cols)
    with pytest.raises(StudioInputError, match=f"lack the properties {drop}"):
        load_gaussians_ply(tmp_path / "bad.ply")


def test_bad_f_rest_count(tmp_path):
    cols = gaussian_columns(3, 1)
    del cols["f_rest_8"]
    write_vertex_ply(tmp_path / "bad.ply", cols)
    with pytest.raises(StudioInputError, match="8 f_rest properties"):
        load_gaussians_ply(tmp_path / "bad.ply")


def test_mesh_ply_is_rejected_and_detected(tmp_path):
    path = tmp_path / "mesh.ply"
    trimesh.creation.icosphere(subdivisions=1).export(str(path))
    assert not is_gaussian_ply(path)
    with pytest.raises(StudioInputError, match="is a mesh PLY"):
        load_gaussians_ply(path)
    # a point cloud with colours but no Gaussian properties, ascii, with a face element
    write_vertex_ply(tmp_path / "pc.ply", {k: np.zeros(3, np.float32) for k in "xyz"}, text=True, faces=True)
    assert not is_gaussian_ply(tmp_path / "pc.ply")


def test_not_a_ply(tmp_path):
    path = tmp_path / "notes.ply"
    path.write_text("just some text\n" * 20)
    assert not is_gaussian_ply(path)
    with pytest.raises(StudioInputError, match="is not a PLY file"):
        load_gaussians_ply(path)


def test_missing_file(tmp_path):
    with pytest.raises(StudioInputError, match="does not exist"):
        load_gaussians_ply(tmp_path / "nope.ply")
    with pytest.raises(StudioInputError, match="does not exist"):
        is_gaussian_ply(tmp_path / "nope.ply")


def test_nan_values_are_rejected(tmp_path):
    cols = gaussian_columns(4, 0)
    cols["scale_0"][2] = np.nan
    write_vertex_ply(tmp_path / "nan.ply", cols)
    with pytest.raises(StudioInputError, match="1 non-finite .* scale"):
        load_gaussians_ply(tmp_path / "nan.ply")


def test_truncated_file(tmp_path):
    save_gaussians_ply(tmp_path / "s.ply", random_gaussians(n=100))
    data = (tmp_path / "s.ply").read_bytes()
    (tmp_path / "cut.ply").write_bytes(data[: len(data) // 2])
    with pytest.raises(StudioInputError, match="truncated"):
        load_gaussians_ply(tmp_path / "cut.ply")


def test_non_finite_scene_is_not_written(tmp_path):
    g = random_gaussians(n=5)
    g.means[3, 1] = float("nan")
    with pytest.raises(StudioInputError, match="means holds 1 non-finite"):
        save_gaussians_ply(tmp_path / "s.ply", g)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "scene.ply"

    def broken_write(self, stream):
        with open(stream, "wb") as f:
            f.write(b"ply\nformat binary_little_endian 1.0\n")
        raise OSError("disk full")

    monkeypatch.setattr(PlyData, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        save_gaussians_ply(path, random_gaussians())
    assert list(tmp_path.iterdir()) == []


def test_save_detaches_and_leaves_the_input_unchanged(tmp_path):
    """Inputs with autograd history are detached, not modified."""
    g = random_gaussians(n=6)
    g.means.requires_grad_(True)
    before = g.quats.clone()
    save_gaussians_ply(tmp_path / "s.ply", g)
    assert torch.equal(g.quats, before)


def test_cli_export_gaussians(tmp_path, monkeypatch, capsys):
    g = random_gaussians(n=12, degree=3)
    calls = []

    def load_gaussians_from_config(config_path, device="cpu"):
        calls.append((config_path, device))
        return g

    fake = types.ModuleType("studio.export.runs")
    fake.load_gaussians_from_config = load_gaussians_from_config
    monkeypatch.setitem(sys.modules, "studio.export.runs", fake)
    config = tmp_path / "config.yml"  # a run's config (validated before the export loads it)
    config.write_text(yaml.dump(registered_config("studio-splat")))
    out = tmp_path / "scene.ply"
    entrypoint(["export", "gaussians", "--load-config", str(config), "--output", str(out)])
    assert calls[0][0] == config
    assert torch.equal(load_gaussians_ply(out).means, g.means)
    assert "12 Gaussians, SH degree 3" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exc:
        entrypoint(["export", "gaussians", "--load-config", str(config), "--output", str(tmp_path / "scene.splat")])
    assert exc.value.code == 2
    assert "must end in .ply" in " ".join(capsys.readouterr().err.split())  # rich wraps long lines
