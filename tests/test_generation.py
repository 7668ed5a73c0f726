"""Generation plumbing: orbit cameras, single-image preprocessing, reference losses, and
`ns-train sds` / `ns-train dreamcraft3d` end to end with tiny randomly initialised priors."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from studio.cameras.sampling import OrbitSampler, OrbitViews, orbit_c2w, relative_pose
from studio.data.single_image import load_reference
from studio.io.errors import StudioInputError
from studio.models.reference_losses import pearson, reference_losses
from studio.priors.diffusers import zero123_pose

NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))
MUSHROOM = Path(__file__).resolve().parents[1] / "scenes" / "toyworld_mushroom"


def test_orbit_cameras_match_toyworld_convention():
    from studio.scenes.toyworld.cameras import _sph, look_at

    views = OrbitSampler().sample(6, torch.Generator().manual_seed(0))
    c2w = orbit_c2w(views.elevation, views.azimuth, views.distance)
    for i in range(6):
        eye = _sph(float(views.distance[i]), float(views.elevation[i]), float(views.azimuth[i]), (0.0, 0.0, 0.0))
        ref = look_at(eye, (0.0, 0.0, 0.0))[:3]
        assert np.allclose(c2w[i].numpy(), ref, atol=1e-5)
    top = orbit_c2w(torch.tensor([90.0]), torch.tensor([0.0]), torch.tensor([2.0]))
    assert torch.isfinite(top).all() and torch.allclose(top[0, :, 3], torch.tensor([0.0, 0.0, 2.0]), atol=1e-5)


def test_resolution_milestones_and_progressive_views():
    """Render size steps up at its milestones (DreamCraft3D coarse: 128, then 384 from step 3000);
    progressive views open linearly from the front view to the full ranges by ``progressive_until``."""
    from studio.data.orbit import OrbitDataManagerConfig, progressive_sampler

    cfg = OrbitDataManagerConfig(resolution=128, resolution_milestones=(3000,), milestone_resolutions=(384,))
    assert [cfg.resolution_at(s) for s in (0, 2999, 3000, 9000)] == [128, 128, 384, 384]
    with pytest.raises(StudioInputError, match="one size per step"):
        OrbitDataManagerConfig(resolution_milestones=(10, 20), milestone_resolutions=(64,)).resolution_at(0)
    full = OrbitSampler((-10.0, 45.0), (-180.0, 180.0), (1.8, 1.8), (40.0, 40.0))
    start = progressive_sampler(full, (0.0, 30.0), 0, 200)
    assert start.elevation_range == (0.0, 0.0) and start.azimuth_range == (30.0, 30.0)
    half = progressive_sampler(full, (0.0, 30.0), 100, 200)
    assert half.elevation_range == (-5.0, 22.5) and half.azimuth_range == (-75.0, 105.0)
    assert progressive_sampler(full, (0.0, 30.0), 200, 200) is full
    views = half.sample(256, torch.Generator().manual_seed(0))
    assert views.azimuth.min() >= -75.0 and views.azimuth.max() <= 105.0


def test_relative_pose_is_zero123_convention():
    ref = OrbitViews(torch.tensor([10.0]), torch.tensor([30.0]), torch.tensor([1.8]), torch.tensor([40.0]))
    tgt = OrbitViews(
        torch.tensor([40.0, -5.0]), torch.tensor([120.0, 0.0]), torch.tensor([1.8, 2.0]), torch.tensor([40.0, 40.0])
    )
    ours = relative_pose(ref, tgt)
    theirs = zero123_pose(tgt.elevation, tgt.azimuth, tgt.distance, ref.elevation, ref.azimuth, ref.distance)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert ours[0, 0] == pytest.approx(math.radians(-30.0))  # higher camera: smaller polar angle


def test_reference_from_rgb_finds_the_object(tmp_path: Path):
    import imageio.v3 as iio

    rgba = iio.imread(MUSHROOM / "test" / "r_000.png").astype(np.float32) / 255.0
    rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    iio.imwrite(tmp_path / "rgb.png", (rgb * 255).astype(np.uint8))
    a = load_reference(MUSHROOM / "test" / "r_000.png", size=64, border_ratio=0.2)
    b = load_reference(tmp_path / "rgb.png", size=64, border_ratio=0.2)
    iou = ((a.mask > 0.5) & (b.mask > 0.5)).sum() / ((a.mask > 0.5) | (b.mask > 0.5)).sum()
    assert iou > 0.9
    ys, xs = np.nonzero(a.mask > 0.5)  # recentred: the box fills 1 - 2 * 0.2 of the frame, centred
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 == pytest.approx(0.6 * 64, abs=2)
    assert abs((ys.max() + ys.min()) / 2 - 31.5) <= 1.5 and abs((xs.max() + xs.min()) / 2 - 31.5) <= 1.5
    iio.imwrite(tmp_path / "blank.png", np.full((32, 32, 3), 255, np.uint8))
    with pytest.raises(StudioInputError, match="no foreground"):
        load_reference(tmp_path / "blank.png")


def test_reference_losses_vanish_at_the_target():
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(16, 16, 1)
    mask[4:12, 4:12] = 1.0
    color = torch.rand(16, 16, 3, generator=g)
    bg = torch.tensor([0.2, 0.3, 0.4])
    depth = torch.rand(16, 16, 1, generator=g) + 1.0
    batch = {"ref_rgb": color * mask + (1 - mask), "ref_mask": mask, "ref_depth": 3.0 * depth + 1.0}
    perfect = reference_losses(color * mask + bg * (1 - mask), mask, depth, bg, batch)
    assert perfect["rgb"] < 1e-10 and perfect["mask"] < 1e-10 and perfect["depth_rel"] < 1e-5
    worse = reference_losses(color * mask + bg * (1 - mask), mask * 0.5, -depth, bg, batch)
    assert worse["mask"] > 0.01 and worse["depth_rel"] > 1.9
    assert pearson(torch.arange(5.0), torch.ones(5)) == 0


def _tiny_priors(tmp_path: Path) -> tuple[Path, Path]:
    from studio.priors.toy import build_toy_prior, save_toy_prior

    small = {"channels": [16, 32, 32], "n_res": 1, "heads": 2}
    t2i = build_toy_prior("toy-t2i", {"arch": {**small, "text_dim": 32}, "vocabulary": ["a", "matte", "red", "cone"]})
    nvs = build_toy_prior("toy-nvs", {"arch": {**small, "ctx_dim": 32}})
    return save_toy_prior(t2i, tmp_path / "t2i.safetensors"), save_toy_prior(nvs, tmp_path / "nvs.safetensors")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [NS_TRAIN, *args, "--vis", "tensorboard"], capture_output=True, text=True, env=env, timeout=900
    )


@pytest.mark.parametrize(
    "guidance,representation",
    [("sds", "gaussians"), ("vsd", "gaussians"), pytest.param("sds", "nerf", marks=pytest.mark.slow)],  # NeRF: ~60 s
)
def test_sds_trains_and_keeps_frozen_priors_out_of_checkpoints(tmp_path: Path, guidance: str, representation: str):
    t2i, _ = _tiny_priors(tmp_path)
    result = _run(
        "sds",
        "--prompt",
        "a matte red cone",
        "--pipeline.model.prior",
        str(t2i),
        "--pipeline.model.guidance",
        guidance,
        "--pipeline.model.representation",
        representation,
        "--max-num-iterations",
        "6",
        "--output-dir",
        str(tmp_path / "runs"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ckpt = next((tmp_path / "runs").glob("unnamed/sds/*/nerfstudio_models/*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["pipeline"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    if representation == "nerf":  # the field is saved with the optimiser state of its own group
        assert any(k.startswith("_model.field.encoding") for k in state)
        optimizers = torch.load(ckpt, map_location="cpu", weights_only=True)["optimizers"]
        assert set(optimizers) == {"nerf"} and optimizers["nerf"]["state"]
        config = ckpt.parent.parent / "config.yml"
        studio = str(Path(NS_TRAIN).with_name("studio"))
        out = subprocess.run(
            [studio, "export", "gaussians", "--load-config", str(config), "--output", str(tmp_path / "g.ply")],
            capture_output=True,
            text=True,
        )
        assert out.returncode != 0 and "is a NeRF" in out.stderr + out.stdout and not (tmp_path / "g.ply").exists()
        # after 6 steps the field is still about its blob 10 (1 - |x| / 0.5): density 5 at |x| ~ 0.25
        out = subprocess.run(
            [
                studio,
                "export",
                "mesh",
                "--load-config",
                str(config),
                "--output",
                str(tmp_path / "m.ply"),
                "--resolution",
                "48",
                "--density-level",
                "5",
            ],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        mesh = trimesh.load(tmp_path / "m.ply")
        radius = np.linalg.norm(mesh.vertices, axis=1)
        assert len(mesh.faces) > 100 and 0.15 < radius.mean() < 0.35 and radius.std() < 0.05
        assert mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    prior_keys = [k for k in state if "guidance" in k]
    if guidance == "sds":
        assert prior_keys == []  # the frozen teacher is not copied into the run
    else:
        assert prior_keys and all(".fake." in k for k in prior_keys)  # only the trained fake score
        assert not any("text_encoder" in k for k in prior_keys)  # its frozen text encoder is not


def test_dreamcraft3d_coarse_fits_the_reference(tmp_path: Path):
    """Reference losses alone (no guidance) shape the Gaussians into the input's silhouette."""
    from studio.cameras.nerfstudio import cameras_to_viewmats
    from studio.cameras.sampling import orbit_cameras
    from studio.export.runs import load_gaussians_from_config
    from studio.render import rasterize

    _, nvs = _tiny_priors(tmp_path)
    result = _run(
        "dreamcraft3d",
        "--data",
        str(MUSHROOM / "test" / "r_000.png"),
        "--pipeline.model.nvs-prior",
        str(nvs),
        "--pipeline.model.nvs-sds-weight",
        "0",
        "--pipeline.model.stage-iters",
        "150",
        "0",
        "0",
        "--output-dir",
        str(tmp_path / "runs"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = next((tmp_path / "runs").glob("*/dreamcraft3d/*/config.yml"))
    g = load_gaussians_from_config(config)
    ref = load_reference(MUSHROOM / "test" / "r_000.png", size=64, border_ratio=0.2)
    cam = orbit_cameras(OrbitViews(*(torch.tensor([v]) for v in (15.0, 0.0, 1.8, 40.0))), 64)
    viewmats, Ks, w, h = cameras_to_viewmats(cam)
    out = rasterize(g.means, g.quats, g.scales, g.opacities, g.sh, viewmats, Ks, w, h, sh_degree=g.sh_degree)
    pred, gt = out.alpha[0, ..., 0] > 0.5, torch.from_numpy(ref.mask) > 0.5
    assert (pred & gt).sum() / (pred | gt).sum() > 0.7

    bad = _run("dreamcraft3d", "--data", str(tmp_path / "missing.png"), "--output-dir", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "error: --data: image" in bad.stderr and "does not exist" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_dreamcraft3d_all_stages_export_and_resume(tmp_path: Path):
    """Coarse -> geometry -> texture (BSD) writes a textured .glb and a 3DGS .ply that other tools
    open; a run from the saved geometry stage (SDS texture, the ablation) does too."""
    import trimesh

    from studio.export.ply import load_gaussians_ply

    _, nvs = _tiny_priors(tmp_path)
    common = [
        "--data",
        str(MUSHROOM / "test" / "r_000.png"),
        "--pipeline.model.nvs-prior",
        str(nvs),
        "--pipeline.model.stage-iters",
        "120",
        "8",
        "8",
        "--pipeline.model.mesh-resolution",
        "32",
        "--pipeline.model.texture-size",
        "64",
    ]
    result = _run(
        "dreamcraft3d",
        *common,
        "--pipeline.model.bootstrap-every",
        "4",
        "--pipeline.model.finetune-steps",
        "2",
        "--pipeline.model.bootstrap-views",
        "4",
        "--output-dir",
        str(tmp_path / "runs"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = next((tmp_path / "runs").glob("*/dreamcraft3d/*"))
    assert f"Wrote {run / 'export' / 'mesh.glb'}" in result.stdout.replace("\n", "")
    scene = trimesh.load(run / "export" / "mesh.glb")
    mesh = next(iter(scene.geometry.values()))
    assert len(mesh.faces) > 100 and mesh.visual.material.baseColorTexture is not None
    assert len(load_gaussians_ply(run / "export" / "gaussians.ply")) > 0
    resumed = _run(
        "dreamcraft3d",
        *common,
        "--pipeline.model.texture-guidance",
        "sds",
        "--load-stage",
        str(run / "geometry.safetensors"),
        "--output-dir",
        str(tmp_path / "resumed"),
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert next((tmp_path / "resumed").glob("*/dreamcraft3d/*/export/mesh.glb")).stat().st_size > 0


def test_image_to_3d_eval_helpers():
    from studio.eval.image_to_3d import chamfer_distance, orbit_of_c2w
    from studio.scenes.toyworld.cameras import _sph, look_at

    c2w = look_at(_sph(1.7, 25.0, -60.0, (0.0, 0.0, 0.0)), (0.0, 0.0, 0.0))
    elev, az, dist = orbit_of_c2w(c2w)
    assert (elev, az, dist) == pytest.approx((25.0, -60.0, 1.7), abs=1e-6)
    off = look_at(_sph(1.7, 25.0, -60.0, (0.0, 0.0, 0.0)), (0.3, 0.0, 0.0))
    with pytest.raises(StudioInputError, match="does not look at the world origin"):
        orbit_of_c2w(off)
    pts = np.random.default_rng(0).normal(size=(500, 3))
    assert chamfer_distance(pts, pts) == 0.0
    assert chamfer_distance(pts, pts + [0.1, 0.0, 0.0]) == pytest.approx(0.1, rel=0.2)
