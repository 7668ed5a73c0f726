"""``prd``: PBR Gaussian attributes, baked visibility, the PRD composite, stages and ablations."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import Tensor

from studio.gaussians.pbr import activate_pbr, initial_pbr_params, shortest_axis_normals
from studio.io.config_loader import load_trainer_config
from studio.pbr.visibility import bake_visibility, object_bounds
from studio.render.masks import progress_band, silhouette_band

NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))
SCENE = Path(__file__).resolve().parents[1] / "scenes" / "toyworld_mushroom"


def test_shortest_axis_normal_faces_the_camera():
    quats = torch.tensor(
        [[1.0, 0, 0, 0], [math.cos(math.pi / 4), math.sin(math.pi / 4), 0, 0]]
    )  # identity, 90 deg about x
    scales = torch.tensor([[0.1, 0.1, 0.001], [0.1, 0.1, 0.001]])
    means = torch.zeros(2, 3)
    up = shortest_axis_normals(means, quats, scales, torch.tensor([0.0, 0.0, 5.0]))
    down = shortest_axis_normals(means, quats, scales, torch.tensor([0.0, 0.0, -5.0]))
    assert torch.allclose(up[0], torch.tensor([0.0, 0.0, 1.0])) and torch.allclose(
        down[0], torch.tensor([0.0, 0.0, -1.0])
    )
    # rotated 90 deg about x: the local z axis points along -y (or +y), never along z
    side = shortest_axis_normals(means, quats, scales, torch.tensor([0.0, 5.0, 0.0]))
    assert torch.allclose(side[1], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_initial_pbr_params_activate_to_the_requested_values():
    acts = activate_pbr(initial_pbr_params(4, albedo=0.3, roughness=0.7, metallic=0.2, progress=0.0))
    assert torch.allclose(acts["albedo"], torch.full((4, 3), 0.3)) and torch.allclose(
        acts["roughness"], torch.full((4, 1), 0.7)
    )
    assert float(acts["progress"].max()) < 1e-5  # stage 1: p = 0


def test_visibility_of_a_floor():
    """Opaque splats on the plane z = 0: above it, the upper hemisphere is free and the lower one blocked."""
    gen = torch.Generator().manual_seed(0)
    n = 3000
    means = torch.cat([torch.rand(n, 2, generator=gen) * 2 - 1, torch.zeros(n, 1)], -1)
    scales = torch.tensor([0.05, 0.05, 0.001]).repeat(n, 1)
    grid = bake_visibility(means, scales, torch.ones(n), torch.tensor([[-1.0, -1, -1], [1, 1, 1]]), resolution=8)
    p = torch.tensor([[0.1, -0.1, 0.3]])
    up, down = torch.tensor([[0.0, 0, 1]]), torch.tensor([[0.0, 0, -1]])
    assert grid.visibility(p, up, up).item() > 0.9 and grid.visibility(p, down, up).item() < 0.1
    assert grid.ambient_occlusion(p, up).item() > 0.9
    # a downward-facing surface sees the floor (at least a grid cell, 0.25, above it: lookups are offset by one)
    assert grid.ambient_occlusion(p + torch.tensor([[0.0, 0, 0.1]]), down).item() < 0.15


def test_visibility_on_the_surface_of_a_solid_ball():
    """A convex object does not occlude its own surface: AO ~ 1 there, although the grid points
    inside the ball (which the trilinear lookup would mix in) see nothing."""
    gen = torch.Generator().manual_seed(0)
    n = 20000
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    means = dirs * 0.4 * torch.rand(n, 1, generator=gen) ** (1 / 3)  # uniform in the ball of radius 0.4
    grid = bake_visibility(
        means, torch.full((n, 3), 0.03), torch.ones(n), object_bounds(means, torch.ones(n)), resolution=16
    )
    normals = torch.nn.functional.normalize(torch.randn(200, 3, generator=gen), dim=-1)
    points = normals * 0.4
    assert float(grid.ambient_occlusion(points, normals).mean()) > 0.85
    assert float(grid.visibility(points, normals, normals).mean()) > 0.85
    assert float(grid.visibility(points, -normals, normals).mean()) < 0.1  # looking into the ball


def _prd(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        NS_TRAIN,
        "prd",
        "--data",
        str(SCENE),
        "--output-dir",
        str(out),
        "--vis",
        "tensorboard",
        "--pipeline.model.stage-iters",
        "8",
        "4",
        "4",
        "4",
        "--pipeline.model.num-random",
        "400",
        "--pipeline.model.visibility-resolution",
        "4",
        *extra,
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def _scheduler_steps(run: Path) -> int:
    """Scheduler steps of the position learning rate in a run's last checkpoint."""
    ckpt = torch.load(max((run / "nerfstudio_models").glob("*.ckpt")), weights_only=True)
    return int(ckpt["schedulers"]["means"]["last_epoch"])


def test_silhouette_band_of_a_square():
    alpha = torch.zeros(40, 40)
    alpha[10:30, 10:30] = 1.0
    interior, band = silhouette_band(alpha, 2)
    assert interior.sum() == 16 * 16 and bool(interior[12:28, 12:28].all())
    assert band.sum() == 24 * 24 - 16 * 16 and bool(band[8, 8]) and not bool(band[7, 20])
    assert not bool((interior & band).any())
    # at most half the object's pixels: 5 px would leave out 300 of 400, 2 px leaves out 144
    assert torch.equal(progress_band(alpha, 5, 0.5), band)
    assert torch.equal(progress_band(alpha, 5, 1.0), silhouette_band(alpha, 5)[1])
    assert not progress_band(alpha, 5, 0.1).any()


def _object_progress(model, dataset, views=range(4)) -> Tensor:
    """Mean straight progress (p_x over coverage) on the object's pixels inside the silhouette band, per view."""
    values = []
    with torch.no_grad():
        for i in views:
            out = model.render_gbuffers(dataset.cameras[i : i + 1])
            interior = _interior(model, dataset[i]["image"])
            values.append(out["progress"][..., 0][interior].sum() / out["accumulation"][..., 0][interior].sum())
    return torch.stack(values)


def _interior(model, image: Tensor) -> Tensor:
    """Ground-truth object pixels outside the progress loss's silhouette band."""
    alpha = image[..., 3].float() / (255.0 if image.dtype == torch.uint8 else 1.0)
    band = progress_band(alpha, model.config.mask_band, model.config.mask_band_share)
    return (alpha > 0.5) & ~band


def test_prd_stages_stage1_file_and_ablation_from_it(tmp_path: Path):
    from nerfstudio.utils.eval_utils import eval_setup

    from studio.pbr.cubemap import CubemapLight

    # every checkpoint kept; one at step 11, the last step of the specular stage (stages 8 4 4 4)
    result = _prd(tmp_path / "prd", "--save-only-latest-checkpoint", "False", "--steps-per-save", "11")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = next((tmp_path / "prd").glob("toyworld_mushroom/prd/*"))
    stage1 = run / "pretrain.safetensors"
    assert stage1.is_file()
    _, pipeline, _, _ = eval_setup(run / "config.yml", test_mode="test")
    model = pipeline.model
    assert int(model.stage_index) == 3  # the last checkpoint is in the refine stage
    assert model.visibility is not None and model.visibility.coeffs.shape == (4, 4, 4, 9)  # baked in stage 3, saved
    p = model.pbr_attributes()["progress"].detach()
    assert float(p.min()) > 1e-4  # distillation started from progress_init (0.01), not the stage-1 p = 0
    dataset = pipeline.datamanager.eval_dataset
    final_progress = _object_progress(model, dataset)
    camera = dataset.cameras[0:1]
    out = model.render_gbuffers(camera)
    for key, ch in (("rgb", 3), ("pbr", 3), ("albedo", 3), ("normal", 3), ("progress", 1), ("roughness", 1)):
        assert out[key].shape[-1] == ch and torch.isfinite(out[key]).all()

    # the specular stage shades everything as a metal; from the diffuse stage on, metallic is the learned one
    model.train()
    model.stage_index.fill_(1)
    assert torch.equal(model.stage.get_outputs(camera)["metallic"], torch.ones_like(out["metallic"]))
    model.stage_index.fill_(2)
    diffuse = model.stage.get_outputs(camera)
    assert float(diffuse["metallic"].max()) < 0.5  # initial 0.1, only a few steps of training
    model.eval()
    model.stage_index.fill_(3)

    # relighting is the PBR part alone: under a black light the object is black (only the white
    # background shows through its partial coverage), and the radiance field's SH change nothing,
    # while they do change the composite
    acc = out["accumulation"].detach()
    black = CubemapLight(model.config.light_resolution, init_radiance=0.0)
    white = CubemapLight(model.config.light_resolution, init_radiance=1.0)
    relit_black, relit_white = model.render_relit(camera, black), model.render_relit(camera, white)
    torch.testing.assert_close(relit_black, (1.0 - acc).expand_as(relit_black), atol=1e-5, rtol=0)
    assert float((relit_white - relit_black).max()) > 0.05  # the object is lit by a white light
    sh = {k: model.gaussians.params[k].detach().clone() for k in ("features_dc", "features_rest")}
    with torch.no_grad():
        for name in sh:
            model.gaussians.params[name].zero_()
        no_sh = model.render_gbuffers(camera)
        assert float((no_sh["rgb"] - out["rgb"]).abs().max()) > 1e-3
        assert torch.equal(model.render_relit(camera, black), relit_black)
        assert torch.equal(model.render_relit(camera, white), relit_white)
        for name, value in sh.items():
            model.gaussians.params[name].copy_(value)

    ablation = _prd(tmp_path / "np", "--load-stage", str(stage1), "--pipeline.model.ablation", "no-progress")
    assert ablation.returncode == 0, ablation.stdout[-3000:] + ablation.stderr[-3000:]
    run_np = next((tmp_path / "np").glob("toyworld_mushroom/prd/*"))
    assert load_trainer_config(run_np / "config.yml").max_num_iterations == 12  # stages 2-4 only
    assert not (run_np / "pretrain.safetensors").exists()
    # its learning-rate schedules continue where the full run's were at the end of stage 1
    assert _scheduler_steps(run_np) == _scheduler_steps(run) == 20
    _, pipe_np, _, _ = eval_setup(run_np / "config.yml", test_mode="test")
    out_np = pipe_np.model.render_gbuffers(camera)
    assert torch.allclose(out_np["progress"], out_np["accumulation"])  # pure PBR: p = 1 on the object

    # in prd the radiance field also fits the images on its own (radiance_weight) from stage 2 on:
    # zero when its image is the ground truth, whatever the PBR image and p; no-progress and 3dgs have no such term
    batch = {"image": dataset[0]["image"]}
    image = batch["image"].float() / 255.0 if batch["image"].dtype == torch.uint8 else batch["image"]
    exact = dict(
        out, radiance=image[..., :3], accumulation=image[..., 3:], pbr=1 - out["pbr"], progress=1 - out["progress"]
    )
    for index in range(4):
        model.stage_index.fill_(index)
        losses = model.get_loss_dict(out, batch)
        assert ("radiance_loss" in losses) == (index > 0), index
    assert float(losses["radiance_loss"]) > 0.01 and float(model.get_loss_dict(exact, batch)["radiance_loss"]) < 1e-5
    model.stage_index.fill_(2)  # the diffuse stage
    pipe_np.model.stage_index.fill_(2)
    losses = model.get_loss_dict(out, batch)
    assert "progress_loss" in losses and "radiance_loss" not in pipe_np.model.get_loss_dict(out_np, batch)
    model.config.ablation = "3dgs"
    assert "radiance_loss" not in model.get_loss_dict(out, batch)
    model.config.ablation = "prd"
    # the progress loss leaves the silhouette band out: p there changes nothing, p inside does
    alpha = image[..., 3:]
    band = progress_band(alpha[..., 0], model.config.mask_band, model.config.mask_band_share)
    interior = (alpha[..., 0] > 0.5) & ~band
    assert model.config.mask_band > 0 and band.any() and interior.any()
    for region, moves in ((band, False), (interior, True)):
        changed = dict(out, progress=torch.where(region[..., None], 1 - out["progress"], out["progress"]))
        moved = not torch.allclose(model.get_loss_dict(changed, batch)["progress_loss"], losses["progress_loss"])
        assert moved == moves

    # p on the object grows in the diffuse and refine stages (mask loss): the end of the specular stage had less
    specular_end = torch.load(run / "nerfstudio_models" / "step-000000011.ckpt", weights_only=True)
    pipeline.load_pipeline(specular_end["pipeline"], specular_end["step"])
    model.eval()
    assert int(model.stage_index) == 1
    specular_progress = _object_progress(model, dataset)
    assert float(final_progress.mean()) > 1.05 * float(specular_progress.mean()), (final_progress, specular_progress)
    assert bool((final_progress > specular_progress).all())

    bad = _prd(tmp_path / "bad", "--load-stage", str(tmp_path / "missing.safetensors"))
    assert bad.returncode == 2 and "error: --load-stage" in bad.stderr and "Traceback" not in bad.stdout + bad.stderr
