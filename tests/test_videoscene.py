"""VideoScene: trajectories, keyframe conditioning, leap-flow distillation, the policy, files, CLI and training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_flashworld import small_model as small_flashworld

from studio.cameras.paths import interpolate_viewmats, orbit_viewmats
from studio.generators.flashworld import FlashWorld, save_flashworld
from studio.generators.policy import LeapPolicy, load_policy, save_policy
from studio.generators.videoscene import VideoScene
from studio.lift.model import GaussianPredictor, PredictorConfig, save_predictor

SMALL_PREDICTOR = PredictorConfig(
    stem_dim=8, feat_dim=16, attn_layers=1, attn_heads=2, num_depths=8, unet_dim=8, head_dim=8
)
STUDIO = str(Path(sys.executable).with_name("studio"))
NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))


def small_pipeline(policy: bool = True) -> VideoScene:
    torch.manual_seed(0)
    return VideoScene(
        GaussianPredictor(SMALL_PREDICTOR).eval(),
        small_flashworld(1),
        small_flashworld(2),
        LeapPolicy(views=4, width=8).eval() if policy else None,
        timestep=300,
    )


def two_views(B: int = 1, R: int = 32):
    """Inputs 45 degrees apart on a ring of radius 3 around (0.1, 0.2, 0.3)."""
    from studio.cameras.convert import intrinsics_from_fov

    ring = orbit_viewmats(24, 3.0, 30.0, center=(0.1, 0.2, 0.3))
    vm = ring[[0, 3]][None].expand(B, 2, 4, 4).clone()
    return torch.rand(B, 2, 3, R, R), vm, intrinsics_from_fov(40.0, R, R).expand(B, 2, 3, 3).clone()


def save_small_weights(folder: Path) -> dict:
    """Small student, teacher, predictor and policy files; their CLI flags."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "--weights": save_flashworld(small_flashworld(1), folder / "student.safetensors"),
        "--teacher-weights": save_flashworld(small_flashworld(2), folder / "teacher.safetensors", kind="toy-mv"),
        "--predictor-weights": save_predictor(GaussianPredictor(SMALL_PREDICTOR), folder / "predictor.safetensors"),
        "--policy-weights": save_policy(LeapPolicy(views=4, width=8), folder / "policy.safetensors", 300),
    }
    return {k: str(v) for k, v in files.items()}


def test_interpolated_trajectory_orbits_the_focus_between_two_cameras():
    ring = orbit_viewmats(24, 3.0, 30.0, center=(0.1, 0.2, 0.3))
    path = interpolate_viewmats(ring[0][None], ring[3][None], 4)[0]
    assert torch.allclose(path[0], ring[0], atol=1e-3) and torch.allclose(path[-1], ring[3], atol=1e-3)
    c2w = torch.linalg.inv(path)
    offsets = c2w[:, :3, 3] - torch.tensor([0.1, 0.2, 0.3])
    assert torch.allclose(offsets.norm(dim=-1), torch.full((4,), 3.0), atol=1e-3)
    dirs = torch.nn.functional.normalize(offsets, dim=-1)
    steps = torch.acos((dirs[1:] * dirs[:-1]).sum(-1).clamp(max=1.0))
    assert torch.allclose(steps, steps.mean().expand(3), atol=1e-4)  # evenly spaced in angle
    assert torch.allclose(c2w[:, :3, 2], -dirs, atol=1e-3)  # every camera looks at the focus


def test_given_keyframes_enter_clean_at_t0_and_replace_the_estimate():
    model = small_flashworld()
    prior = model.prior
    vm = orbit_viewmats(24, 1.0, 30.0)[None, :4]
    Ks = two_views()[2][:, :1].expand(1, 4, 3, 3)
    first, last = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    cond = model.condition(vm, Ks, keyframes={0: first, -1: last})
    assert cond.tensors["ref_mask"].tolist() == [[1.0, 0.0, 0.0, 1.0]]
    x_t = torch.randn(1, 4, 3, 32, 32)
    t = torch.tensor([700])
    x, t_views, _ = prior.network_input(x_t, t, cond)
    assert t_views.tolist() == [0, 700, 700, 0]
    assert torch.allclose(x[3, :3], last[0] * 2 - 1) and torch.equal(x[1, :3], x_t[0, 1])
    _, x0, _ = model.denoise(x_t, t, cond, vm, Ks)
    assert torch.allclose(x0[0, 0], first[0] * 2 - 1) and torch.allclose(x0[0, 3], last[0] * 2 - 1)
    assert not prior.unconditional(cond).tensors["ref_mask"].any()


def test_arc_batches_keep_trajectory_order_and_the_source_resolution():
    from studio.generators.orbits import OrbitSet, sample_orbits, split_arcs

    S, V, R = 2, 10, 16
    rng = np.random.default_rng(0)
    vm = np.broadcast_to(orbit_viewmats(V, 2.0, 20.0).numpy(), (S, V, 4, 4)).copy()
    images = np.broadcast_to(np.arange(V, dtype=np.uint8)[None, :, None, None, None], (S, V, R, R, 3)).copy()
    Ks = np.broadcast_to(two_views(R=R)[2][0, 0].numpy(), (S, V, 3, 3)).copy()
    data = OrbitSet(images, vm, Ks, np.array(["a", "b"]), np.full((S, V, R, R), 255, np.uint8))
    with pytest.raises(ValueError, match="ordered"):
        sample_orbits(data, np.array([0]), 4, 8, rng, arc=True)
    arcs = split_arcs(data, 5)
    assert arcs.n_scenes == 4 and arcs.ordered and list(arcs.captions) == ["a", "a", "b", "b"]
    batch = sample_orbits(arcs, np.array([0, 1, 2, 3]), 4, 8, rng, held=1, arc=True, source=True)
    order = (batch.source_images[:, :, 0, 0, 0] * 255).round()
    assert (order[:, 1:] > order[:, :-1]).all() and batch.images.shape[-1] == 8
    assert batch.source_images.shape[-1] == R and torch.allclose(
        batch.source_Ks[..., 0, 0] * 8 / R, batch.Ks[..., 0, 0]
    )


def test_arc_camera_path_makes_trajectories():
    from studio.scenes.toyworld.cameras import ARC_VIEWS, camera_path

    c2w = camera_path("arc", 2 * ARC_VIEWS, "train", np.zeros(3), 3.0, seed=4)
    az = np.degrees(np.arctan2(c2w[:, 1, 3], c2w[:, 0, 3])).reshape(2, ARC_VIEWS)
    steps = np.diff(np.unwrap(np.radians(az), axis=1), axis=1)
    span = np.degrees(steps.sum(1))
    assert (steps > 0).all() and ((span >= 30) & (span <= 70)).all()
    assert np.allclose(
        camera_path("arc", 3, "test", np.zeros(3), 3.0), camera_path("orbit", 3, "test", np.zeros(3), 3.0)
    )


def test_leap_loss_is_the_teachers_boundary_step_and_trains_the_video_model_only():
    from studio.cameras.normalize import scene_frame
    from studio.generators.leap import leap_step
    from studio.generators.orbits import OrbitBatch
    from studio.generators.train import FlashWorldLossConfig

    pipeline = small_pipeline(policy=False)
    images, vm, Ks = two_views(2)
    traj = interpolate_viewmats(vm[:, 0], vm[:, 1], 4)
    Ks4 = Ks[:, :1].expand(2, 4, 3, 3)
    batch = OrbitBatch(
        images=torch.rand(2, 4, 3, 32, 32), viewmats=traj, Ks=Ks4, held_images=torch.rand(2, 1, 3, 32, 32),
        held_viewmats=traj[:, :1], held_Ks=Ks4[:, :1], alpha=torch.ones(2, 4, 1, 32, 32),
        held_alpha=torch.ones(2, 1, 1, 32, 32), captions=["", ""], frame=scene_frame(traj),
        source_images=torch.cat([images[:, :1], torch.rand(2, 2, 3, 32, 32), images[:, 1:]], 1), source_Ks=Ks4,
    )  # fmt: skip
    teacher = pipeline.teacher
    cfg = FlashWorldLossConfig(leap_range=(20, 20), solver_skip=20, guidance_scale=1.0)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    student = FlashWorld(teacher.prior.__class__(teacher.prior.config))
    student.load_state_dict(teacher.state_dict())
    loss, _ = leap_step(student, student, teacher, pipeline, batch, rng, gen, cfg)
    assert float(loss) < 1e-10  # one step from t = skip to 0: the target is the teacher's own x0
    with torch.no_grad():
        for p in student.prior.unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cfg.leap_range = (100, 800)
    loss, _ = leap_step(student, student, teacher, pipeline, batch, np.random.default_rng(0), gen, cfg)
    loss.backward()
    assert float(loss) > 0 and any(
        p.grad is not None and p.grad.abs().max() > 0 for p in student.prior.unet.parameters()
    )
    assert all(p.grad is None for p in student.head.parameters())


def test_pipeline_keeps_the_inputs_and_the_policy_picks_its_best_action():
    model = small_pipeline()
    images, vm, Ks = two_views(2, R=64)
    inputs = model.prepare(images, vm, Ks)
    assert inputs.viewmats.shape == (2, 4, 4, 4) and inputs.Ks[0, 0, 0, 2] == 16.0
    out = model.generate(inputs, generator=torch.Generator().manual_seed(0))
    small = torch.nn.functional.interpolate(images.flatten(0, 1), size=(32, 32), mode="area").view(2, 2, 3, 32, 32)
    assert torch.allclose(out.video[:, 0], small[:, 0], atol=1e-5) and torch.allclose(
        out.video[:, -1], small[:, 1], atol=1e-5
    )
    assert out.gaussians.means.shape == (2, 4 * 32 * 32, 3)
    cond = model.condition(model.student, inputs)
    best = torch.tensor(model.policy.actions)[model.policy(out.coarse_video, cond).argmax(-1)]
    assert torch.equal(out.timestep, best)
    fixed = model.generate(inputs, 500, torch.Generator().manual_seed(0))
    assert fixed.timestep.tolist() == [500, 500]


def test_policy_file_round_trip_keeps_the_fixed_timestep(tmp_path: Path):
    from studio.io.errors import StudioInputError

    policy = LeapPolicy(actions=(100, 300), views=4, width=8)
    save_policy(policy, tmp_path / "p.safetensors", 300)
    loaded, fixed = load_policy(tmp_path / "p.safetensors")
    assert fixed == 300 and loaded.actions == (100, 300)
    x = torch.rand(1, 4, 3, 32, 32)
    cond = small_flashworld().condition(orbit_viewmats(4, 1.0)[None], two_views()[2][:, :1].expand(1, 4, 3, 3))
    assert torch.allclose(loaded(x, cond), policy(x, cond))
    with pytest.raises(StudioInputError):
        load_policy(tmp_path / "missing.safetensors")


def test_eval_and_generate_run_the_pipeline_without_nerfstudio(tmp_path: Path):
    from studio.cli.main import entrypoint
    from studio.scenes.toyworld.dataset import MakeConfig, make_dataset

    flags = save_small_weights(tmp_path / "w")
    make_dataset(
        tmp_path / "scene",
        MakeConfig(seed=3, kind="object", n_train=1, n_test=8, res=32, spp=1, aa=1, relight=(), sheet=False),
    )
    out = tmp_path / "vs.json"
    args = ["eval", "generate", "--method", "videoscene", "--data", str(tmp_path / "scene"), "--output", str(out),
            "--gap", "2", "--pairs", "2", "--timesteps", "200", "--teacher-steps", "2", "--device", "cpu"]  # fmt: skip
    entrypoint(args + [x for kv in flags.items() for x in kv])
    result = json.loads(out.read_text())
    assert set(result["variants"]) == {"coarse", "fixed", "policy", "teacher", "teacher-leap", "t=200"}
    assert result["n_pairs"] == 2
    for row in result["variants"].values():
        assert 0 < row["psnr"] < 60 and row["seconds"] > 0 and 0 <= row["mask_iou"] <= 1
    assert result["variants"]["t=200"]["timestep"] == 200 and result["settings"]["fixed_timestep"] == 300
    test = json.loads((tmp_path / "scene" / "transforms_test.json").read_text())
    cams = {"camera_angle_x": test["camera_angle_x"], "frames": test["frames"][:2]}
    (tmp_path / "cams.json").write_text(json.dumps(cams))
    views = [str(tmp_path / "scene" / f"{f['file_path']}.png") for f in test["frames"][:2]]
    code = (
        "import sys; from studio.cli.main import entrypoint; entrypoint(sys.argv[1:]); "
        "assert 'nerfstudio' not in sys.modules, 'studio generate imported nerfstudio'"
    )
    gen = ["generate", "videoscene", "--views", *views, "--cameras", str(tmp_path / "cams.json"),
           "--output", str(tmp_path / "scene.ply"), "--sheet", str(tmp_path / "sheet.png"), "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, "-c", code, *gen, *[x for kv in flags.items() for x in kv]],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    from studio.export.ply import load_gaussians_ply

    assert len(load_gaussians_ply(tmp_path / "scene.ply")) == 4 * 32 * 32 and (tmp_path / "sheet.png").is_file()
    one = subprocess.run([STUDIO, *gen[:3], views[0], *gen[5:]], capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 2 and len(one.stderr.strip().splitlines()) == 1


def test_ns_train_videoscene_distils_on_arc_scenes_and_refuses_other_scenes(tmp_path: Path):
    from studio.scenes.toyworld.dataset import MakeConfig, make_dataset

    for seed, path in ((5000, "arc"), (5001, "orbit")):
        cfg = MakeConfig(seed=seed, kind="object", n_train=10, n_test=1, res=32, spp=1, aa=1, relight=(), sheet=False)
        cfg.path = path
        make_dataset(tmp_path / path / f"s{seed}", cfg)
    flags = save_small_weights(tmp_path / "w")
    cmd = [
        NS_TRAIN, "videoscene", "--data", str(tmp_path / "arc"), "--output-dir", str(tmp_path / "runs"),
        "--vis", "tensorboard", "--preset", "tiny", "--max-num-iterations", "2", "--steps-per-save", "2",
        "--steps-per-eval-image", "1", "--pipeline.model.init", flags["--teacher-weights"],
        "--pipeline.model.predictor", flags["--predictor-weights"], "--pipeline.datamanager.resolution", "32",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    keys = torch.load(next((tmp_path / "runs").rglob("*.ckpt")), weights_only=True)["pipeline"]
    assert any(".generator.prior." in k for k in keys) and any(".target." in k for k in keys)
    bad = subprocess.run([*cmd[:3], str(tmp_path / "orbit"), *cmd[4:]], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--path arc" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_policy_training_runs_on_arcs_and_writes_a_loadable_policy(tmp_path: Path, monkeypatch):
    from studio.generators.policy import PolicyTrainConfig, train_policy
    from studio.lift.data import LiftDataConfig

    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path / "cache"))
    flags = save_small_weights(tmp_path / "w")
    cfg = PolicyTrainConfig(
        student=flags["--weights"], teacher=flags["--teacher-weights"], predictor=flags["--predictor-weights"],
        data=LiftDataConfig(n_object=2, n_multi=0, res=32, aa=1, spp=1), actions=(100, 500), width=8,
        steps=3, batch=2, fixed_timestep=500, output=str(tmp_path / "policy.safetensors"), device="cpu", workers=1,
    )  # fmt: skip
    policy, info = train_policy(cfg, log=lambda _m: None)
    loaded, fixed = load_policy(tmp_path / "policy.safetensors")
    assert info["steps"] == 3 and fixed == 500 and loaded.actions == (100, 500)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), policy.state_dict().values()))


@pytest.mark.slow
@pytest.mark.parametrize("module", ["studio.generators.train", "studio.generators.policy"])
def test_leap_distillation_and_policy_training_run_under_torchrun_ddp(module, tmp_path: Path):
    """The student's and the policy's training run as 2-process DDP (torchrun, gloo on CPU); the
    averaged gradients give other weights than one process."""
    from conftest import run_single_and_ddp
    from safetensors.torch import load_file

    flags = save_small_weights(tmp_path / "w")
    data = "--data.n-object 2 --data.n-multi 0 --data.views 5 --data.res 32 --data.aa 1 --data.spp 1".split()
    if module == "studio.generators.train":
        args = ["--phase", "leap", "--init", flags["--teacher-weights"], "--predictor", flags["--predictor-weights"]]
        args += "--steps 2 --batch 1 --warmup 1 --log-every 2 --workers 1 --ema-decay 0".split()
    else:
        args = ["--student", flags["--weights"], "--teacher", flags["--teacher-weights"]]
        args += ["--predictor", flags["--predictor-weights"], "--width", "8", "--steps", "2", "--batch", "2"]
        args += ["--workers", "1", "--device", "cpu"]
    runs = run_single_and_ddp(module, args + data, tmp_path, timeout=900)
    for _, text in runs.values():
        assert text.count("Saved ") == 1, text[-3000:]
    a, b = load_file(str(runs["ddp"][0])), load_file(str(runs["single"][0]))
    assert a.keys() == b.keys()
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) > 0  # rank 1's batch counted
