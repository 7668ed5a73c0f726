"""`ns-train studio-splat` end to end on a tiny dataset: outputs, safe checkpoints, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from studio.export.runs import load_gaussians_from_config
from studio.io.config_loader import load_trainer_config
from studio.io.runs import latest_checkpoint

NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))


def _train(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        NS_TRAIN,
        "studio-splat",
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--vis",
        "tensorboard",
        "--max-num-iterations",
        "12",
        "--pipeline.model.num-random",
        "300",
        *extra,
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_train_writes_a_loadable_run(nerf_synthetic: Path, tmp_path: Path):
    result = _train(nerf_synthetic, tmp_path / "runs")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Using the 'tiny' preset" in result.stdout or torch.cuda.is_available()
    configs = list((tmp_path / "runs").glob("scene/studio-splat/*/config.yml"))
    assert len(configs) == 1
    config = load_trainer_config(configs[0])
    assert config.preset in ("tiny", "full") and config.max_num_iterations == 12
    assert config.pipeline.model.max_gaussians is not None  # filled from the preset
    ckpt = torch.load(latest_checkpoint(configs[0]), map_location="cpu", weights_only=True)
    assert "_model.gaussians.params.means" in ckpt["pipeline"]
    gaussians = load_gaussians_from_config(configs[0])
    assert len(gaussians) > 0 and gaussians.sh_degree == 3
    assert torch.isfinite(gaussians.means).all()


def test_bad_input_stops_before_any_output(nerf_synthetic: Path, tmp_path: Path):
    (nerf_synthetic / "train" / "r_0.png").write_bytes(b"garbage")
    result = _train(nerf_synthetic, tmp_path / "runs")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "r_0.png" in errors[0] and "corrupt" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()


def test_exported_ply_matches_the_trained_model_in_world_coordinates(tmp_path: Path):
    """Nerfstudio data is re-oriented and re-scaled by the dataparser; the export undoes that."""
    import json

    from conftest import write_nerfstudio
    from nerfstudio.utils.eval_utils import eval_setup

    from studio.cameras import opengl_c2w_to_viewmat
    from studio.export import load_gaussians_ply
    from studio.metrics import psnr
    from studio.render import rasterize

    data = write_nerfstudio(tmp_path / "ns_scene")
    result = _train(data, tmp_path / "runs")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (config_path,) = (tmp_path / "runs").glob("*/studio-splat/*/config.yml")
    ply = tmp_path / "scene.ply"
    export = subprocess.run(
        [
            str(Path(sys.executable).with_name("studio")),
            "export",
            "gaussians",
            "--load-config",
            str(config_path),
            "--output",
            str(ply),
        ],
        capture_output=True,
        text=True,
    )
    assert export.returncode == 0, export.stderr

    _, pipeline, _, _ = eval_setup(config_path, test_mode="inference")
    transform = pipeline.datamanager.train_dataparser_outputs.dataparser_transform
    assert not torch.allclose(transform, torch.eye(4)[:3])  # the check is meaningful only if data moved
    camera = pipeline.datamanager.train_dataset.cameras[0:1]
    model_rgb = pipeline.model.get_outputs_for_camera(camera)["rgb"]

    name = pipeline.datamanager.train_dataparser_outputs.image_filenames[0].name
    frame = next(
        f for f in json.loads((data / "transforms.json").read_text())["frames"] if f["file_path"].endswith(name)
    )
    viewmat = opengl_c2w_to_viewmat(torch.tensor(frame["transform_matrix"], dtype=torch.float32))[None]
    K = torch.tensor([[frame["fl_x"], 0, frame["cx"]], [0, frame["fl_y"], frame["cy"]], [0, 0, 1.0]])[None]
    g = load_gaussians_ply(ply)
    out = rasterize(
        g.means,
        g.quats,
        g.scales,
        g.opacities,
        g.sh,
        viewmat,
        K,
        frame["w"],
        frame["h"],
        background=torch.ones(3),
        sh_degree=pipeline.model.active_sh_degree(),
    )
    assert float(psnr(out.color[0].clamp(0, 1), model_rgb)) > 45.0
