"""toy-mv and FlashWorld: cameras, the multi-view denoiser, the two modes, DMD, files, CLI and training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from studio.cameras.normalize import from_frame, scene_frame, to_frame
from studio.cameras.paths import orbit_viewmats
from studio.cameras.rays import camera_rays, plucker_raymaps
from studio.generators.flashworld import (
    FlashWorld,
    default_cameras,
    load_flashworld,
    save_flashworld,
    step_timesteps,
    world_gaussians,
)
from studio.priors.toy_mv import build_toy_mv

SMALL = {"arch": {"channels": [8, 16, 16], "n_res": 1, "heads": 2, "text_dim": 16, "text_layers": 1}}
STUDIO = str(Path(sys.executable).with_name("studio"))
NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))


def small_model(seed: int = 0) -> FlashWorld:
    torch.manual_seed(seed)
    model = FlashWorld(build_toy_mv(SMALL)).eval()
    with torch.no_grad():  # zero-initialised output layers would hide the network's dependencies
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def cameras(B: int = 1, V: int = 4):
    vm, Ks = default_cameras(V, 32)
    return vm[None].expand(B, V, 4, 4).clone(), Ks[None].expand(B, V, 3, 3).clone()


def test_plucker_raymaps_hold_the_pixel_rays():
    vm = orbit_viewmats(2, 3.0, 25.0, center=(0.5, -1.0, 0.2))
    K = torch.tensor([[30.0, 0.0, 16.0], [0.0, 30.0, 16.0], [0.0, 0.0, 1.0]])
    rays = plucker_raymaps(vm, K.expand(2, 3, 3), 32, 32)  # [2,6,32,32]
    origin, dirs = camera_rays(vm[1], K, 32, 32)
    d, m = rays[1, :3].flatten(1).T, rays[1, 3:].flatten(1).T
    assert torch.allclose(d, torch.nn.functional.normalize(dirs, dim=-1), atol=1e-5)
    assert torch.allclose(m, torch.cross(origin, d, dim=-1), atol=1e-4)
    assert (d * m).sum(-1).abs().max() < 1e-4  # a Plücker pair: d . m = 0


def test_scene_frame_centres_the_look_at_point_at_unit_distance():
    vm = orbit_viewmats(5, 2.5, [10.0, 30.0, 20.0, 40.0, 15.0], center=(1.0, 2.0, 0.5))[None]
    frame = scene_frame(vm)
    assert torch.allclose(frame.center[0], torch.tensor([1.0, 2.0, 0.5]), atol=1e-3)
    assert torch.allclose(frame.scale, torch.tensor([2.5]), atol=1e-3)
    normalised = to_frame(vm, frame)
    assert torch.allclose(torch.linalg.inv(normalised)[0, :, :3, 3].norm(dim=-1), torch.ones(5), atol=1e-3)
    assert torch.allclose(from_frame(normalised, frame), vm, atol=1e-4)


def test_views_attend_to_each_other_and_a_given_image_replaces_view_0():
    model = small_model()
    vm, Ks = cameras()
    cond = model.condition(vm, Ks, image=torch.rand(1, 3, 32, 32), text="a red cube")
    x = torch.randn(1, 4, 3, 32, 32)
    t = torch.tensor([600])
    with torch.no_grad():
        out = model.prior.predict(x, t, cond)
        other = x.clone()
        other[:, 2] = torch.randn(3, 32, 32)
        moved = model.prior.predict(other, t, cond)
        noise0 = x.clone()
        noise0[:, 0] = torch.randn(3, 32, 32)
        same = model.prior.predict(noise0, t, cond)
    assert (moved[:, 1] - out[:, 1]).abs().max() > 1e-4  # view 1 sees view 2 (cross-view attention)
    assert torch.allclose(same, out, atol=1e-5)  # view 0 is the given image, whatever its noise


def test_the_unconditional_branch_keeps_each_items_cameras():
    model = small_model()
    vm, Ks = cameras(2)
    vm[1] = orbit_viewmats(4, 1.0, 45.0)  # another camera set for item 1
    cond = model.condition(vm, Ks, image=torch.rand(2, 3, 32, 32), text=["a red cube", "a blue cone"])
    uncond = model.prior.unconditional(cond)
    assert torch.equal(uncond.tensors["pose"], cond.tensors["pose"]) and not uncond.tensors["ref_mask"].any()
    assert torch.equal(uncond.tensors["text"][0], uncond.tensors["text"][1])  # the same empty caption


def test_one_step_generation_gives_pixel_aligned_gaussians_per_seed():
    model = small_model()
    vm, Ks = cameras()
    cond = model.condition(vm, Ks, image=torch.rand(1, 3, 32, 32))
    with torch.no_grad():
        a = model.generate(cond, vm, Ks, 1, torch.Generator().manual_seed(3))
        b = model.generate(cond, vm, Ks, 1, torch.Generator().manual_seed(3))
        c = model.generate(cond, vm, Ks, 4, torch.Generator().manual_seed(3))
    assert a.means.shape == (1, 4 * 32 * 32, 3) and torch.equal(a.means, b.means)
    assert not torch.allclose(a.means, c.means)
    assert step_timesteps(1, 1000) == [999] and step_timesteps(4, 1000) == [999, 749, 499, 249]
    # depth along each pixel's ray stays in the head's range (normalised frame: cameras at distance 1)
    assert a.depth.min() >= model.head.near - 1e-4 and a.depth.max() <= model.head.far + 1e-4


def test_dmd_gradient_vanishes_when_the_fake_score_equals_the_real_one():
    from studio.generators.train import dmd_gradient

    model = small_model()
    vm, Ks = cameras(2)
    prior = model.prior
    cond = model.condition(vm, Ks, image=torch.rand(2, 3, 32, 32))
    x = torch.rand(2, 4, 3, 32, 32) * 2 - 1
    t, eps = torch.tensor([300, 700]), torch.randn_like(x)
    zero = dmd_gradient(prior, prior, x, cond, None, cond, t, eps, 1.0)
    assert zero.abs().max() < 1e-5
    other = small_model(seed=1).prior
    assert dmd_gradient(prior, other, x, cond, None, cond, t, eps, 1.0).abs().max() > 1e-3


def test_reprojection_error_is_zero_for_the_gaussians_own_renders_and_grows_when_a_view_changes():
    from studio.eval.generate import reprojection_error
    from studio.lift.gaussians import gaussians_from_depth, render

    vm, Ks = default_cameras(3, 32, span_deg=30.0)
    depth = torch.full((1, 3, 32, 32), 1.0)
    ramp = torch.linspace(0, 1, 32)
    colors = torch.stack([ramp[None].expand(32, 32), ramp[:, None].expand(32, 32), torch.full((32, 32), 0.5)])
    colors = colors[None, None].expand(1, 3, 3, 32, 32)  # smooth, so resampling between views is exact up to blur
    g = gaussians_from_depth(depth, colors, vm[None], Ks[None], opacity=0.99, scale=0.6)
    out = render(g.views([0]), vm[None], Ks[None], 32, 32, background=torch.ones(3))
    images = out.color[0].permute(0, 3, 1, 2)
    consistent = reprojection_error(images, out.depth[0, ..., 0], out.alpha[0, ..., 0], vm, Ks)
    images[1] = torch.rand_like(images[1])
    broken = reprojection_error(images, out.depth[0, ..., 0], out.alpha[0, ..., 0], vm, Ks)
    assert consistent < 0.05 and broken > 0.15


def test_files_round_trip_and_toy_mv_loads_as_a_prior(tmp_path: Path):
    from studio.priors import load_prior

    model = small_model()
    student = save_flashworld(model, tmp_path / "fw.safetensors", {"steps": 1})
    prior_file = save_flashworld(model, tmp_path / "toy-mv.safetensors", {"steps": 1}, kind="toy-mv")
    vm, Ks = cameras()
    x, t = torch.randn(1, 4, 3, 32, 32), torch.tensor([500])
    for path in (student, prior_file):
        loaded = load_flashworld(path)
        cond = loaded.condition(vm, Ks, text="a cube")
        ref = model.condition(vm, Ks, text="a cube")
        with torch.no_grad():
            _, _, ga = model.denoise(x, t, ref, vm, Ks)
            _, _, gb = loaded.denoise(x, t, cond, vm, Ks)
        assert torch.allclose(ga.means, gb.means, atol=2e-2)  # fp16 weights
    prior = load_prior(prior_file)
    assert prior.kind == "toy-mv" and prior.latent_shape == (4, 3, 32, 32)


def test_world_gaussians_undo_the_scene_normalisation():
    model = small_model()
    world_vm = orbit_viewmats(4, 3.0, 20.0, center=(0.3, 0.2, 0.1))[None]
    frame = scene_frame(world_vm)
    vm, Ks = to_frame(world_vm, frame), cameras()[1]
    with torch.no_grad():
        g = model.generate(model.condition(vm, Ks, text=""), vm, Ks, 1, torch.Generator().manual_seed(0))
    scene = world_gaussians(g, frame)
    # a Gaussian seen from camera 0 lies on that camera's pixel ray in the world too
    cam = scene.means[:10] @ world_vm[0, 0, :3, :3].T + world_vm[0, 0, :3, 3]
    assert torch.allclose(cam[:, 2], g.depth[0, 0].flatten()[:10] * frame.scale[0], rtol=1e-3)


def test_camera_file_round_trip_and_clear_errors(tmp_path: Path):
    from studio.data.camera_file import read_cameras, write_cameras
    from studio.io.errors import StudioInputError

    vm = orbit_viewmats(3, 2.0, 30.0)
    path = write_cameras(tmp_path / "cams.json", vm, 40.0)
    back, Ks = read_cameras(path, 32)
    assert torch.allclose(back, vm, atol=1e-5) and Ks.shape == (3, 3, 3)
    (tmp_path / "bad.json").write_text(json.dumps({"frames": [{"transform_matrix": vm[0].tolist()}]}))
    with pytest.raises(StudioInputError, match="field of view"):
        read_cameras(tmp_path / "bad.json", 32)


def test_studio_generate_writes_a_ply_without_importing_nerfstudio(tmp_path: Path):
    from studio.data.camera_file import write_cameras
    from studio.export.ply import load_gaussians_ply

    weights = save_flashworld(small_model(), tmp_path / "fw.safetensors")
    image = tmp_path / "view.png"
    from PIL import Image

    rgba = np.zeros((48, 48, 4), np.uint8)
    rgba[12:36, 12:36] = (200, 40, 40, 255)  # a red square on a transparent background
    Image.fromarray(rgba).save(image)
    cams = write_cameras(tmp_path / "cams.json", orbit_viewmats(4, 2.0, 20.0, center=(1.0, 0.0, 0.0)), 40.0)
    out = tmp_path / "scene.ply"
    code = (
        "import sys; from studio.cli.main import entrypoint; entrypoint(sys.argv[1:]); "
        "assert not any(m.startswith('nerfstudio') for m in sys.modules), 'nerfstudio imported'"
    )
    args = ["generate", "flashworld", "--image", str(image), "--output", str(out), "--weights", str(weights)]
    args += ["--cameras", str(cams), "--sheet", str(tmp_path / "sheet.png"), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    scene = load_gaussians_ply(out)
    assert len(scene) == 4 * 32 * 32 and (tmp_path / "sheet.png").is_file()
    # the scene sits where the camera file's cameras look (x = 1), not at the normalised origin
    assert abs(float(scene.means[:, 0].median()) - 1.0) < 0.5
    missing = subprocess.run(
        [STUDIO, "generate", "flashworld", "--output", str(out)], capture_output=True, text=True, env=env
    )
    assert missing.returncode == 2 and "--image and/or --prompt" in missing.stderr


def test_both_training_phases_run_and_write_loadable_weights(tmp_path: Path):
    from studio.generators.orbits import OrbitSet
    from studio.generators.train import FlashWorldTrainConfig, train_flashworld

    rng = np.random.default_rng(0)
    S, V = 3, 6
    vm = torch.stack([orbit_viewmats(V, 2.0, 20.0) for _ in range(S)]).numpy()
    Ks = np.broadcast_to(default_cameras(1, 32)[1][0].numpy(), (S, V, 3, 3)).copy()
    images = (rng.random((S, V, 32, 32, 3)) * 255).astype(np.uint8)
    data = OrbitSet(images, vm, Ks, np.array(["a cube"] * S), np.full((S, V, 32, 32), 255, np.uint8))
    dual = FlashWorldTrainConfig(
        phase="dual", channels=(8, 16, 16), steps=2, batch=2, output=str(tmp_path / "mv.safetensors")
    )
    dual.device = "cpu"
    model, info = train_flashworld(dual, data=[data], log=lambda _m: None)
    assert info["step"] == 2 and (tmp_path / "mv.safetensors").is_file()
    dmd = FlashWorldTrainConfig(
        phase="dmd", init=dual.output, steps=2, batch=2, output=str(tmp_path / "fw.safetensors")
    )
    dmd.device, dmd.ema_decay = "cpu", 0.0  # the saved weights are the trained ones (no averaging)
    before = load_flashworld(dual.output)
    student, info = train_flashworld(dmd, data=[data], log=lambda _m: None)
    after = load_flashworld(dmd.output)
    moved = [(a - b).abs().max() for a, b in zip(after.head.parameters(), before.head.parameters())]
    assert info["step"] == 2 and max(moved) > 0


def test_ns_train_flashworld_post_trains_on_a_folder_of_scenes(tmp_path: Path):
    from studio.scenes.toyworld.dataset import MakeConfig, make_dataset

    for seed in (5000, 5001):
        cfg = MakeConfig(seed=seed, kind="object", n_train=6, n_test=1, res=32, spp=1, aa=1, relight=(), sheet=False)
        make_dataset(tmp_path / "scenes" / f"s{seed}", cfg)
    init = save_flashworld(small_model(), tmp_path / "toy-mv.safetensors", kind="toy-mv")
    cmd = [
        NS_TRAIN, "flashworld", "--data", str(tmp_path / "scenes"), "--output-dir", str(tmp_path / "runs"),
        "--vis", "tensorboard", "--preset", "tiny", "--max-num-iterations", "2", "--steps-per-save", "2",
        "--steps-per-eval-image", "1", "--pipeline.model.init", str(init),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(next((tmp_path / "runs").rglob("*.ckpt")), weights_only=True)
    keys = checkpoint["pipeline"]
    assert any(".generator.head." in k for k in keys) and any(".fake." in k for k in keys)
    bad = subprocess.run(
        [*cmd[:2], "--data", str(tmp_path / "nowhere"), *cmd[4:]], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_eval_generate_and_image_to_3d_score_the_generator_on_held_out_views(tmp_path: Path):
    from studio.cli.main import entrypoint
    from studio.scenes.toyworld.dataset import MakeConfig, make_dataset

    make_dataset(
        tmp_path / "scene",
        MakeConfig(seed=3, kind="object", n_train=4, n_test=2, res=32, spp=1, aa=1, relight=(), sheet=False),
    )
    weights = save_flashworld(small_model(), tmp_path / "fw.safetensors")
    out = tmp_path / "gen.json"
    entrypoint(["eval", "generate", "--data", str(tmp_path / "scene"), "--weights", str(weights), "--output", str(out),
                "--teacher-weights", str(weights), "--teacher-steps", "2", "--device", "cpu"])  # fmt: skip
    result = json.loads(out.read_text())
    assert set(result["variants"]) == {"1-step", "4-step", "teacher"} and result["n_scenes"] == 1
    for row in result["variants"].values():
        assert 0 < row["psnr"] < 60 and row["seconds"] > 0 and row["reprojection_error"] >= 0
    assert result["speedup_1step_vs_teacher"] > 0  # measured, not asserted on (no timing in tests)
    i2d = tmp_path / "i2d.json"
    entrypoint(["eval", "image-to-3d", "--method", "flashworld", "--data", str(tmp_path / "scene"), "--view", "1",
                "--output", str(i2d), f"--method-args=--variant teacher --weights {weights} --teacher-weights {weights}"])  # fmt: skip
    metrics = json.loads(i2d.read_text())
    assert metrics["chamfer"] is None and metrics["psnr"] > 0 and 0 <= metrics["mask_iou"] <= 1


@pytest.mark.slow
def test_training_runs_under_torchrun_ddp(tmp_path: Path):
    """The same entry point runs as 2-process DDP (torchrun, gloo on CPU): one process renders the
    data and writes the weights, and the averaged gradients give other weights than one process."""
    from conftest import run_single_and_ddp
    from safetensors.torch import load_file

    args = "--phase dual --steps 2 --batch 1 --warmup 1 --log-every 2 --seed 9 --workers 1 --ema-decay 0".split()
    args += "--channels 8 16 16 --object-data.n-seeds 0".split()
    args += "--data.n-object 1 --data.n-multi 1 --data.views 5 --data.res 32 --data.aa 1 --data.spp 1".split()
    runs = run_single_and_ddp("studio.generators.train", args, tmp_path, timeout=900)
    for _, text in runs.values():
        assert text.count("Saved ") == 1, text[-3000:]
    a, b = load_file(str(runs["ddp"][0])), load_file(str(runs["single"][0]))
    assert a.keys() == b.keys()
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) > 0  # rank 1's batch counted
