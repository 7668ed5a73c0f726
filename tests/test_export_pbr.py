"""PBR asset export (studio.export.pbr, .bake): texture baking on a synthetic sphere, glTF and EXR round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from studio.export.bake import bake_pbr_textures
from studio.export.pbr import default_env_path, environment_equirect
from studio.mesh.textured import save_glb
from studio.mesh.uv import dilate

T = 128
RED, BLUE = (0.8, 0.1, 0.05), (0.05, 0.2, 0.7)


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _sphere_scene(n: int = 4000):
    """Unit icosphere + flat Gaussians on it: albedo RED / BLUE, metallic 1 / 0 by hemisphere
    (z > 0 / z < 0); roughness 0.2 / 0.7 by x > 0 / x < 0."""
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (3 - math.sqrt(5)) * i
    r = torch.sqrt(1 - z * z)
    means = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1).float()
    up = means[:, 2:3] > 0
    albedo = torch.where(up, torch.tensor(RED), torch.tensor(BLUE))
    metallic = up.float()
    roughness = torch.where(means[:, 0:1] > 0, 0.2, 0.7)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1)  # axis-aligned: fine as sigma_min dominates
    scales = torch.full((n, 3), 0.03)
    opacities = torch.full((n,), 0.9)
    return mesh, means, quats, scales, opacities, albedo, roughness, metallic


def _sample(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Nearest texel of a texture array (row 0 = v = 0; ``np.flipud`` of an image file) at uv [P,2] (v up)."""
    h, w = texture.shape[:2]
    col = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    row = np.clip((uv[:, 1] * h).astype(int), 0, h - 1)
    return texture[row, col]


def _face_centroid_uv(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    return uv[faces].mean(axis=1)


@pytest.fixture(scope="module")
def baked():
    mesh, means, quats, scales, opacities, albedo, roughness, metallic = _sphere_scene()
    out = bake_pbr_textures(
        np.asarray(mesh.vertices),
        np.asarray(mesh.faces),
        means,
        quats,
        scales,
        opacities,
        albedo,
        roughness,
        metallic,
        texture_size=T,
        k=8,
    )
    return out


def _expected(centroids: np.ndarray):
    up = centroids[:, 2] > 0
    albedo = np.where(up[:, None], np.array(RED), np.array(BLUE))
    rough = np.where(centroids[:, 0] > 0, 0.2, 0.7)
    metal = up.astype(float)
    # away from the attribute boundaries (z = 0 for albedo/metallic, x = 0 for roughness)
    safe = (np.abs(centroids[:, 2]) > 0.25) & (np.abs(centroids[:, 0]) > 0.25)
    return albedo, rough, metal, safe


def test_bake_reproduces_attributes(baked):
    assert baked.base_color.shape == (T, T, 3) and baked.base_color.dtype == np.uint8
    assert baked.metallic_roughness.shape == (T, T, 3)
    assert baked.uv.shape == (len(baked.vertices), 2)
    assert baked.uv.min() >= 0 and baked.uv.max() <= 1
    assert 0.2 < baked.coverage.mean() < 1.0
    centroids = baked.vertices[baked.faces].mean(axis=1)
    albedo, rough, metal, safe = _expected(centroids)
    assert safe.sum() > 300
    uvc = _face_centroid_uv(baked.uv, baked.faces)
    got_albedo = _srgb_to_linear(_sample(baked.base_color, uvc))
    mr = _sample(baked.metallic_roughness, uvc).astype(float) / 255.0
    assert np.abs(got_albedo - albedo)[safe].max() < 0.03
    assert np.abs(mr[:, 1] - rough)[safe].max() < 0.03
    assert np.abs(mr[:, 2] - metal)[safe].max() < 0.03
    assert (mr[:, 0] == 1.0).all()
    # every texel is filled (dilation + fill): no black background bleeding into seams
    assert baked.base_color.reshape(-1, 3).max(axis=1).min() > 0


def test_glb_round_trip(baked, tmp_path):
    path = tmp_path / "asset.glb"
    nbytes = save_glb(path, baked.to_trimesh())
    assert path.stat().st_size == nbytes > 0
    assert not list(tmp_path.glob(".asset*"))  # atomic write left no temporary file
    loaded = trimesh.load(path, force="mesh")
    assert isinstance(loaded.visual, trimesh.visual.TextureVisuals)
    uv = np.asarray(loaded.visual.uv)
    assert uv.shape == (len(loaded.vertices), 2)
    mat = loaded.visual.material
    assert isinstance(mat, trimesh.visual.material.PBRMaterial)
    assert mat.baseColorTexture is not None and mat.metallicRoughnessTexture is not None
    assert mat.baseColorTexture.size == (T, T) and mat.metallicRoughnessTexture.size == (T, T)
    # the UV convention survives the glTF v flip: sample the loaded textures at the loaded UVs
    faces = np.asarray(loaded.faces)
    centroids = np.asarray(loaded.vertices)[faces].mean(axis=1)
    albedo, rough, metal, safe = _expected(centroids)
    uvc = _face_centroid_uv(uv, faces)
    base = np.flipud(np.asarray(mat.baseColorTexture.convert("RGB")))  # image files: row 0 = v = 1
    mr = np.flipud(np.asarray(mat.metallicRoughnessTexture.convert("RGB"))).astype(float) / 255.0
    assert np.abs(_srgb_to_linear(_sample(base, uvc)) - albedo)[safe].max() < 0.03
    assert np.abs(_sample(mr, uvc)[:, 1] - rough)[safe].max() < 0.03
    assert np.abs(_sample(mr, uvc)[:, 2] - metal)[safe].max() < 0.03


def test_dilate_grows_and_keeps_valid():
    img = torch.zeros(8, 8, 1)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    img[3, 3], mask[3, 3] = 0.5, True
    img[3, 4], mask[3, 4] = 1.0, True
    out = dilate(img, mask, iterations=1, fill_rest=False)
    assert out[3, 3, 0] == 0.5 and out[3, 4, 0] == 1.0
    assert torch.isclose(out[2, 2, 0], torch.tensor(0.5)) and torch.isclose(out[2, 3, 0], torch.tensor(0.75))
    assert out[0, 0, 0] == 0
    assert torch.isclose(dilate(img, mask, iterations=1)[0, 0, 0], torch.tensor(0.75))


def test_environment_exr_round_trip(tmp_path):
    from studio.io.exr import write_exr
    from studio.pbr.cubemap import CubemapLight
    from studio.pbr.envmap import read_envmap

    light = CubemapLight(8, init_radiance=0.5, learnable=False)
    env = environment_equirect(light, 16)
    assert env.shape == (16, 32, 3) and env.dtype == np.float32
    assert np.allclose(env, 0.5, atol=1e-5)
    path = default_env_path(tmp_path / "asset.glb")
    assert path.name == "asset_env.exr"
    write_exr(path, env)
    back = read_envmap(path)
    assert back.shape == (16, 32, 3)
    assert np.allclose(back, env, atol=1e-4)


def test_environment_rotation():
    from studio.pbr.cubemap import CubemapLight, cube_directions
    from studio.pbr.envmap import equirect_directions

    light = CubemapLight(16, learnable=False)

    with torch.no_grad():
        dirs = cube_directions(16)
        light.log_radiance.copy_(
            torch.log(1.0 + dirs[..., 0:1].clamp(min=0).expand(*dirs.shape[:-1], 3))
        )  # bright towards +x
    rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # training dir = rot @ world dir
    env = environment_equirect(light, 32, rotation=rot)
    world = equirect_directions(32, 64)
    bright = world.reshape(-1, 3)[np.argmax(env[..., 0].reshape(-1))]
    # brightest world direction w has rot @ w = +x, i.e. w = rot^T x = -y
    assert torch.allclose(bright, torch.tensor([0.0, -1.0, 0.0]), atol=0.15)


# ---- distillation progress ---------------------------------------------------------------------
def _radial_quats(normals: torch.Tensor) -> torch.Tensor:
    """(w,x,y,z) rotations taking +z to each unit normal [N,3] (none may be -z)."""
    q = torch.stack([1.0 + normals[:, 2], -normals[:, 1], normals[:, 0], torch.zeros_like(normals[:, 0])], -1)
    return q / q.norm(dim=-1, keepdim=True)


def _progress_run(progress: torch.Tensor, light=None, rotation=None, radiance_srgb=(0.6, 0.4, 0.2)):
    """A PBRRun of flat Gaussians on the unit sphere (shortest axis radial, albedo RED everywhere,
    one radiance colour ``radiance_srgb``) with the given progress [N,1]."""
    from studio.export.pbr import PBRRun
    from studio.gaussians import Gaussians
    from studio.gaussians.sh import rgb_to_sh
    from studio.pbr.cubemap import CubemapLight

    _, means, _, _, opacities, _, roughness, metallic = _sphere_scene(2000)
    means = means[means[:, 2] > -0.99]  # _radial_quats needs normals away from -z
    n = len(means)
    gaussians = Gaussians(
        means=means,
        quats=_radial_quats(means),
        scales=torch.tensor([0.03, 0.03, 0.003]).repeat(n, 1),
        opacities=opacities[:n],
        sh=rgb_to_sh(torch.tensor(radiance_srgb)).repeat(n, 1, 1),
    )
    return PBRRun(
        gaussians=gaussians,
        albedo=torch.tensor(RED).repeat(n, 1),
        roughness=roughness[:n],
        metallic=metallic[:n],
        progress=progress(means) if callable(progress) else progress,
        light=light if light is not None else CubemapLight(8, init_radiance=1.0, learnable=False),
        rotation=rotation if rotation is not None else torch.eye(3),
    )


def test_low_progress_half_is_blended_and_warned():
    """p = 0 on the lower half: the albedo there is the radiance field's colour undone by the
    (uniform) light, the upper half keeps the PBR albedo; half the surface is reported."""
    from studio.export.pbr import blended_albedo, low_progress_fraction, low_progress_warning
    from studio.pbr.tonemap import srgb_to_linear

    run = _progress_run(lambda m: (m[:, 2:3] > 0).float())
    albedo = blended_albedo(run)
    up = run.gaussians.means[:, 2] > 0
    torch.testing.assert_close(albedo[up], run.albedo[up])
    expected = srgb_to_linear(torch.tensor([0.6, 0.4, 0.2]))  # E(n) / pi = 1 under radiance 1
    torch.testing.assert_close(albedo[~up], expected.expand(int((~up).sum()), 3), atol=2e-3, rtol=0)
    fraction = low_progress_fraction(run.progress, run.gaussians.opacities)
    assert abs(fraction - 0.5) < 0.01
    line = low_progress_warning(fraction, blended=True)
    assert line is not None and "50%" in line and "\n" not in line
    assert "weakly trained" in low_progress_warning(fraction, blended=False)


def test_full_progress_keeps_the_pbr_albedo_and_does_not_warn():
    from studio.export.pbr import blended_albedo, low_progress_fraction, low_progress_warning

    run = _progress_run(lambda m: torch.ones(len(m), 1))
    torch.testing.assert_close(blended_albedo(run), run.albedo)
    fraction = low_progress_fraction(run.progress, run.gaussians.opacities)
    assert fraction == 0.0 and low_progress_warning(fraction, blended=True) is None


def test_radiance_albedo_undoes_the_light_in_the_training_frame():
    """Light bright towards training +x; training dir = rot @ world dir maps world -y to +x, so the
    Gaussians facing world -y are lit most and need the darkest albedo for the same radiance."""
    from studio.export.pbr import radiance_albedo
    from studio.pbr.cubemap import CubemapLight, cube_directions

    light = CubemapLight(16, learnable=False)
    with torch.no_grad():
        dirs = cube_directions(16)
        light.log_radiance.copy_(torch.log(0.05 + 2.0 * dirs[..., 0:1].clamp(min=0).expand(*dirs.shape[:-1], 3)))
    rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    run = _progress_run(lambda m: torch.zeros(len(m), 1), light=light, rotation=rot, radiance_srgb=(0.3, 0.3, 0.3))
    albedo = radiance_albedo(run)[:, 0]
    y = run.gaussians.means[:, 1]
    assert float(albedo[y < -0.7].mean()) < 0.5 * float(albedo[y > 0.7].mean())


def _sphere_around(gaussians, **kwargs):
    """Stand-in for ``extract_mesh``: an icosphere around the Gaussians (their median distance)."""
    centre = gaussians.means.mean(0).cpu().numpy()
    radius = float((gaussians.means - gaussians.means.mean(0)).norm(dim=-1).median())
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=radius)
    return trimesh.Trimesh(mesh.vertices + centre, mesh.faces, process=False)


def test_export_pbr_of_an_untrained_run_warns_and_records_progress(prd_run, tmp_path, monkeypatch):
    """An untrained prd run has p ~ 0 everywhere: the export bakes the blended albedo (not the PBR
    albedo's uniform initial grey), warns, and writes the low-progress share into the .glb. The
    mesh extraction (tested in test_export_mesh) is replaced by a sphere around the Gaussians."""
    import studio.export.mesh
    from studio.export.pbr import export_pbr

    monkeypatch.setattr(studio.export.mesh, "extract_mesh", _sphere_around)
    colours = {}
    for blend in (True, False):
        out = tmp_path / f"asset_{blend}.glb"
        info = export_pbr(prd_run[1], out, texture_size=32, env_height=8, backend="torch", blend_low_progress=blend)
        assert info["low_progress_fraction"] > 0.99
        assert info["warning"] is not None and "100%" in info["warning"]
        record = trimesh.load(out, force="mesh").metadata["studio_pbr"]
        assert record["low_progress_fraction"] == pytest.approx(info["low_progress_fraction"])
        assert record["albedo"] == info["albedo"] == ("blended" if blend else "pbr")
        material = trimesh.load(out, force="mesh").visual.material
        colours[blend] = np.asarray(material.baseColorTexture.convert("RGB")).astype(float)
    assert np.abs(colours[False] - 188.0).max() <= 1.0  # sRGB of the initial albedo 0.5
    assert np.abs(colours[True] - 188.0).mean() > 5.0


def test_export_pbr_cli_prints_the_low_progress_warning(prd_run, tmp_path, monkeypatch, capsys):
    import studio.export.mesh
    from studio.cli.main import entrypoint

    monkeypatch.setattr(studio.export.mesh, "extract_mesh", _sphere_around)
    out = tmp_path / "asset.glb"
    entrypoint(
        [
            "export",
            "pbr",
            "--load-config",
            str(prd_run[1]),
            "--output",
            str(out),
            "--texture-size",
            "32",
            "--env-height",
            "8",
            "--backend",
            "torch",
            "--device",
            "cpu",
        ]
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if "p < 0.5" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: 100% of the surface")
