"""A staged run resumed with ``--load-dir`` continues as if it had never stopped: a prd run stopped
in its diffuse stage (stage 3) ends with the progress statistics and learning rates of the
uninterrupted run (the stage is not entered again: p is not reset to ``progress_init``, the refine
stage scales p's learning rate once), and the resumed optimizers train the loaded parameters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "scenes" / "toyworld_mushroom"
NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))
ARGS = [
    "--pipeline.model.stage-iters",
    "8",
    "4",
    "8",
    "4",
    "--pipeline.model.num-random",
    "400",
    "--pipeline.model.visibility-resolution",
    "4",
    "--steps-per-save",
    "14",
    "--save-only-latest-checkpoint",
    "False",
    "--machine.seed",
    "7",
    "--pipeline.model.progress-lr-scale",  # p moves visibly within these few steps
    "50",
]


def _train(out: Path, *extra: str) -> Path:
    cmd = [NS_TRAIN, "prd", "--data", str(SCENE), "--output-dir", str(out), "--vis", "tensorboard", *ARGS, *extra]
    result = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return next(out.glob("toyworld_mushroom/prd/*"))


def _final(run: Path) -> dict:
    ckpt = torch.load(max((run / "nerfstudio_models").glob("*.ckpt")), weights_only=True)
    p = torch.sigmoid(ckpt["pipeline"]["_model.gaussians.params.progress"])
    lrs = {group: state["param_groups"][0]["lr"] for group, state in ckpt["optimizers"].items()}
    return {"step": ckpt["step"], "p": p, "lr": lrs, "stage": int(ckpt["pipeline"]["_model.stage_index"])}


def test_prd_resumed_in_stage_3_matches_the_uninterrupted_run(tmp_path: Path):
    full = _train(tmp_path / "full")
    assert (full / "nerfstudio_models" / "step-000000014.ckpt").is_file()  # step 14: inside the diffuse stage (12-19)
    resumed = _train(tmp_path / "resumed", "--load-dir", str(full / "nerfstudio_models"), "--load-step", "14")
    a, b = _final(full), _final(resumed)
    assert a["step"] == b["step"] == 23 and a["stage"] == b["stage"] == 3
    assert a["lr"] == b["lr"]  # p's rate scaled once by progress_lr_refine; the schedules continued
    # p trained away from progress_init (0.01) and was not reset to it at the resume; the resumed
    # optimizers hold the loaded parameters (else p would stay at the checkpoint's values)
    assert abs(float(a["p"].mean()) - 0.01) > 0.02, float(a["p"].mean())
    assert abs(float(a["p"].mean()) - float(b["p"].mean())) < 0.02
    assert abs(float(a["p"].std()) - float(b["p"].std())) < 0.02
    start = torch.sigmoid(
        torch.load(full / "nerfstudio_models" / "step-000000014.ckpt", weights_only=True)["pipeline"][
            "_model.gaussians.params.progress"
        ]
    )
    assert not torch.allclose(start, b["p"])  # the resumed run changed p
