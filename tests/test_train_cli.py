"""`ns-train studio-splat` end to end on a tiny dataset: outputs, safe checkpoints, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from studio.io.config_loader import load_trainer_config
from studio.io.runs import latest_checkpoint, load_gaussians_from_config

NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))


def _train(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [NS_TRAIN, "studio-splat", "--data", str(data), "--output-dir", str(out), "--vis", "tensorboard",
           "--max-num-iterations", "12", "--pipeline.model.num-random", "300", *extra]
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
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "r_0.png" in result.stdout and "corrupt" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()
