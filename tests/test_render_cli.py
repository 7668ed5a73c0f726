"""``studio render``: turntable videos and sheets of a Gaussian scene and of meshes."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh

from studio.cli.main import entrypoint
from studio.export import save_gaussians_ply
from studio.gaussians import Gaussians, rgb_to_sh
from studio.render.turntable import make_sheet, scene_bounds, turntable

SIZE = 48
FRAMES = 6
# The reference rasterizer: `auto` (the C++ backend on CPU) may start a first-use compile.
BACKEND = "torch"


@pytest.fixture(scope="module")
def gaussians() -> Gaussians:
    """A red blob above a green one (world +Z up), 120 Gaussians."""
    gen = torch.Generator().manual_seed(0)
    n = 60
    means = torch.cat(
        [
            torch.randn(n, 3, generator=gen) * 0.2 + torch.tensor([0.0, 0.0, 0.5]),
            torch.randn(n, 3, generator=gen) * 0.2 - torch.tensor([0.0, 0.0, 0.5]),
        ]
    )
    rgb = torch.cat([torch.tensor([[0.9, 0.1, 0.1]]).expand(n, 3), torch.tensor([[0.1, 0.8, 0.1]]).expand(n, 3)])
    return Gaussians(
        means,
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(2 * n, 1),
        torch.full((2 * n, 3), 0.08),
        torch.full((2 * n,), 0.9),
        rgb_to_sh(rgb)[:, None, :],
    )


@pytest.fixture(scope="module")
def gaussian_ply(gaussians, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scenes") / "splat.ply"
    save_gaussians_ply(path, gaussians)
    return path


@pytest.fixture(scope="module", params=["glb", "ply"])
def mesh_path(request, tmp_path_factory) -> Path:
    """A blue torus as .glb and as a (non-Gaussian) mesh .ply."""
    mesh = trimesh.creation.torus(1.0, 0.3)
    mesh.visual.face_colors = [40, 60, 220, 255]
    path = tmp_path_factory.mktemp("scenes") / f"torus.{request.param}"
    mesh.export(path)
    return path


def _render(path: Path, output: Path, *extra: str) -> None:
    entrypoint(
        [
            "render",
            str(path),
            "--output",
            str(output),
            "--frames",
            str(FRAMES),
            "--size",
            str(SIZE),
            "--backend",
            BACKEND,
            *extra,
        ]
    )


def _fraction(image: np.ndarray, channel: int) -> float:
    """Share of pixels where ``channel`` clearly dominates the other two."""
    rgb = image[..., :3].astype(int)
    others = np.delete(rgb, channel, axis=-1).max(axis=-1)
    return float((rgb[..., channel] > others + 60).mean())


def test_gaussian_turntable_mp4(gaussian_ply, tmp_path):
    out = tmp_path / "turntable.mp4"
    _render(gaussian_ply, out, "--fps", "12")
    frames = np.stack(imageio.mimread(out, format="FFMPEG"))
    assert frames.shape == (FRAMES, SIZE, SIZE, 3)
    assert frames.std() > 20.0
    assert _fraction(frames, 0) > 0.01 and _fraction(frames, 1) > 0.01
    assert sorted(p.name for p in tmp_path.iterdir()) == ["turntable.mp4"]  # no temporary left


def test_gaussian_sheet_png_keeps_up_axis(gaussian_ply, tmp_path):
    out = tmp_path / "sheet.png"
    _render(gaussian_ply, out, "--cols", "3")
    sheet = iio.imread(out)
    assert sheet.shape == (2 * SIZE, 3 * SIZE, 3)
    first = sheet[:SIZE, :SIZE]
    rows = np.arange(SIZE)[:, None].repeat(SIZE, axis=1)
    red, green = (first[..., 0] > 150) & (first[..., 1] < 100), (first[..., 1] > 150) & (first[..., 0] < 100)
    assert red.any() and green.any()
    assert rows[red].mean() < rows[green].mean()  # +Z up: the red blob is above the green one


@pytest.mark.parametrize("suffix", ["png", "gif"])
def test_mesh_outputs(mesh_path, suffix, tmp_path):
    out = tmp_path / f"mesh.{suffix}"
    _render(mesh_path, out)
    image = iio.imread(out, index=None) if suffix == "gif" else iio.imread(out)[None]
    assert image.std() > 20.0
    assert _fraction(image, 2) > 0.05  # the blue face colour, shaded


def test_bad_output_extension_leaves_no_file(gaussian_ply, tmp_path):
    out = tmp_path / "turntable.jpg"
    with pytest.raises(SystemExit) as exit_info:
        _render(gaussian_ply, out)
    assert exit_info.value.code == 2
    assert list(tmp_path.iterdir()) == []


def test_missing_input_is_input_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _render(tmp_path / "missing.ply", tmp_path / "out.png")
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_turntable_library(gaussians):
    frames = turntable(gaussians, n_frames=3, size=24, up=(0.0, 1.0, 0.0), backend=BACKEND)
    assert frames.shape == (3, 24, 24, 3) and frames.dtype == np.uint8
    center, radius = scene_bounds(gaussians)
    assert np.allclose(center, 0.0, atol=0.2) and 0.5 < radius < 2.0
    sheet = make_sheet(frames, cols=2)
    assert sheet.shape == (48, 48, 3)
    assert (sheet[24:, 24:] == 255).all()  # the empty cell


@pytest.mark.parametrize("up", [(0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.3, -0.2, 0.9)])
def test_orbit_cameras_about_any_up_axis(up):
    """``orbit_cameras`` (what the turntable renders from) about ``up`` equals ``orbit_viewmats``'s orbit:
    same eyes, axes and azimuth start."""
    from studio.cameras import orbit_viewmats
    from studio.cameras.nerfstudio import cameras_to_viewmats
    from studio.cameras.sampling import OrbitSampler, orbit_cameras

    center = (0.1, -0.2, 0.3)
    views = OrbitSampler((20.0, 20.0), (0.0, 360.0), (2.0, 2.0), (40.0, 40.0)).ring(6)
    viewmats, Ks, width, height = cameras_to_viewmats(orbit_cameras(views, 32, center, up))
    assert (width, height) == (32, 32)
    assert torch.allclose(viewmats, orbit_viewmats(6, 2.0, 20.0, center, up), atol=1e-5)
    assert torch.allclose(Ks[0, 0, 0], torch.tensor(16.0 / np.tan(np.radians(20.0))).float())
