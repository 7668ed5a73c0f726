"""Kill and resume (issue 21).

* A staged run resumed with ``--load-dir`` continues as if it had never stopped: a prd run stopped
  in its diffuse stage (stage 3) ends with the progress statistics and learning rates of the
  uninterrupted run (the stage is not entered again: p is not reset to ``progress_init``, the
  refine stage scales p's learning rate once), and the resumed optimizers train the loaded
  parameters.
* ``--load-dir`` takes the last good checkpoint: a truncated newest file is skipped (one line says
  why), temporary files of a killed write are removed; ``--load-step`` / ``--load-checkpoint`` load
  exactly the file they name.
* Runs SIGKILLed (``tests/fault_driver.py``) at a step, inside a stage transition or while writing
  a checkpoint and resumed with ``--load-dir`` end bit-identical to the uninterrupted run with the
  same seed (CPU): checkpoints carry the generator states and the training state outside
  ``state_dict()`` (``studio.models.checkpoints``), and the CPU rasterizer's backward sums in a
  fixed order. Two runs with the same seed are identical too.
  The slow part (``-m slow``) does this for studio-splat, prd and dreamcraft3d with random steps.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_driver import final_checkpoint, kill_and_resume, max_difference, run_folder, train

from studio.io.errors import StudioInputError
from studio.models.checkpoints import select_checkpoint

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "scenes" / "toyworld_mushroom"
NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))
SHORT_PRD = [
    "--pipeline.model.stage-iters",
    "8",
    "4",
    "8",
    "4",
    "--pipeline.model.num-random",
    "400",
    "--pipeline.model.visibility-resolution",
    "4",
]
"""prd in seconds: 24 steps over the four stages, few Gaussians, a coarse visibility grid."""
ARGS = [
    *SHORT_PRD,
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


# ---- choosing the checkpoint ----------------------------------------------------------------------
def _fake_checkpoint(path: Path, step: int) -> None:
    torch.save({"step": step, "pipeline": {"w": torch.full((4,), float(step))}}, path)


def test_load_dir_falls_back_past_a_truncated_newest_checkpoint_and_a_temp_file(tmp_path: Path, capsys):
    for step in (10, 20, 30):
        _fake_checkpoint(tmp_path / f"step-{step:09d}.ckpt", step)
    newest = tmp_path / "step-000000030.ckpt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a copy cut short
    temp = tmp_path / ".step-000000040.k3x9a1.tmp.ckpt"  # atomic_path's temp file of a killed write
    temp.write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    path, state = select_checkpoint(tmp_path, None, None)
    assert path.name == "step-000000020.ckpt" and state["step"] == 20
    assert not temp.exists()
    out = capsys.readouterr().out
    assert out.count("Skipping checkpoint") == 1 and "Skipping checkpoint step-000000030.ckpt" in out
    assert select_checkpoint(tmp_path, 10, None)[1]["step"] == 10  # --load-step: exactly that one
    with pytest.raises(StudioInputError, match="cannot be loaded"):
        select_checkpoint(tmp_path, 30, None)  # named explicitly: an error, no silent fallback
    assert select_checkpoint(None, None, tmp_path / "step-000000010.ckpt")[1]["step"] == 10
    assert select_checkpoint(None, None, None) is None
    for step in (10, 20):
        (tmp_path / f"step-{step:09d}.ckpt").write_bytes(b"")
    with pytest.raises(StudioInputError, match="no loadable"):
        select_checkpoint(tmp_path, None, None)


def test_atomic_checkpoint_writes_leave_the_previous_file_on_failure(tmp_path: Path):
    from studio.io.atomic import atomic_path

    target = tmp_path / "step-000000001.ckpt"
    _fake_checkpoint(target, 1)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert torch.load(target, weights_only=True)["step"] == 1 and list(tmp_path.iterdir()) == [target]


# ---- the training state outside state_dict() --------------------------------------------------
class _Sampler(torch.nn.Module):
    """A module with the kinds of state ``training_state`` saves (generators and listed attributes)."""

    def __init__(self):
        super().__init__()
        self.generator = torch.Generator().manual_seed(1)
        self.shuffle = random.Random(2)
        self.np_rng = np.random.default_rng(3)
        self.train_unseen_cameras = [4, 0, 2]
        self.strategy_state = {"grad2d": torch.arange(3.0), "count": None, "scene_scale": 1.5}

    def draws(self) -> tuple:
        """Next values of every generator, the global ones included."""
        return (
            torch.rand(2, generator=self.generator).tolist(),
            self.shuffle.random(),
            float(self.np_rng.random()),
            torch.rand(2).tolist(),
            float(np.random.rand()),
            random.random(),
        )


def test_training_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path):
    from studio.models.checkpoints import restore_training_state, training_state

    torch.manual_seed(0)
    pipeline = torch.nn.Sequential(_Sampler())
    pipeline[0].draws()
    torch.save({"resume": training_state(pipeline)}, tmp_path / "state.ckpt")
    expected = pipeline[0].draws()
    pipeline[0].train_unseen_cameras.pop(0)
    pipeline[0].strategy_state["grad2d"] += 1.0

    fresh = torch.nn.Sequential(_Sampler())  # a new process: seeded generators, initial attributes
    restore_training_state(fresh, torch.load(tmp_path / "state.ckpt", weights_only=True)["resume"], "cpu")
    assert fresh[0].train_unseen_cameras == [4, 0, 2]
    assert torch.equal(fresh[0].strategy_state["grad2d"], torch.arange(3.0))
    assert fresh[0].draws() == expected
    restore_training_state(fresh, None, "cpu")  # checkpoints of earlier versions: nothing to restore


# ---- kill and resume --------------------------------------------------------------------------
SPLAT = [
    "studio-splat",
    "--data",
    str(SCENE),
    "--preset",
    "tiny",
    "--max-num-iterations",
    "30",
    "--steps-per-save",
    "10",
    "--save-only-latest-checkpoint",
    "False",
    "--pipeline.model.num-random",
    "2000",
    "--pipeline.model.refine-start-iter",  # densification (its accumulators) inside the run
    "5",
    "--pipeline.model.refine-every",
    "5",
    "--machine.seed",
    "3",
]


@pytest.fixture(scope="module")
def splat_run(tmp_path_factory) -> Path:
    """The uninterrupted tiny studio-splat run (30 steps, checkpoints every 10)."""
    out = tmp_path_factory.mktemp("splat_full")
    result = train(SPLAT, out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_folder(out)


def test_splat_killed_while_writing_a_checkpoint_resumes_bit_identical(splat_run: Path, tmp_path: Path):
    run, lines = kill_and_resume(SPLAT, tmp_path, ["save:20"])
    assert "step-000000020" in lines[0] and "bytes written" in lines[0]  # killed half-way through the write
    assert final_checkpoint(run).name == final_checkpoint(splat_run).name == "step-000000029.ckpt"
    assert not list((run / "nerfstudio_models").glob(".*"))  # the temp file was cleaned up
    assert max_difference(final_checkpoint(splat_run), final_checkpoint(run)) == 0.0


def test_same_seed_on_cpu_gives_the_same_run(splat_run: Path, tmp_path: Path):
    result = train(SPLAT, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert max_difference(final_checkpoint(splat_run), final_checkpoint(run_folder(tmp_path))) == 0.0


# ---- slow: random steps, stage transitions and checkpoint writes for every method --------------
PRD = [
    "prd",
    "--data",
    str(SCENE),
    "--preset",
    "tiny",
    *SHORT_PRD,
    "--steps-per-save",
    "5",
    "--save-only-latest-checkpoint",
    "False",
    "--pipeline.model.refine-start-iter",
    "3",
    "--pipeline.model.refine-every",
    "3",
    "--machine.seed",
    "5",
]
DREAMCRAFT3D = [
    "dreamcraft3d",
    "--data",
    str(REPO / "scenes" / "images" / "toy_mushroom.png"),
    "--preset",
    "tiny",  # the embedded toy priors
    "--pipeline.model.stage-iters",
    "24",
    "6",
    "6",
    "--optimizers.opacities.optimizer.lr",  # opaque enough to mesh after a short coarse stage
    "0.5",
    "--pipeline.model.num-random",
    "1000",
    "--pipeline.model.refine-start-iter",
    "4",
    "--pipeline.model.refine-every",
    "4",
    "--pipeline.model.mesh-resolution",
    "32",
    "--pipeline.model.texture-size",
    "64",
    "--pipeline.model.bootstrap-every",
    "3",
    "--pipeline.model.finetune-steps",
    "2",
    "--pipeline.model.bootstrap-views",
    "4",
    "--steps-per-save",
    "4",
    "--save-only-latest-checkpoint",
    "False",
    "--machine.seed",
    "5",
]
FAULT_SEED = int(os.environ.get("STUDIO_FAULT_SEED", "0")) or int(time.time()) % 100_000


def _faults(seed: int, plan: list) -> list:
    """The fault strings of ``plan``: fixed ones as given, ``(lo, hi)`` a random step in [lo, hi]
    drawn by the fault driver from a seed derived from ``seed``."""
    rng = random.Random(seed)
    return [f"random:{rng.randrange(1 << 30)}:{p[0]}:{p[1]}" if isinstance(p, tuple) else p for p in plan]


SLOW_CASES = {
    # studio-splat: 30 steps, checkpoints at 10, 20, 29
    "studio-splat": (SPLAT, [(1, 19), "save:20", (21, 28)]),
    # prd: pretrain 0-7, specular 8-11, diffuse 12-19, refine 20-23; checkpoints every 5
    "prd": (PRD, [(1, 7), "stage:specular", "save:10", "stage:diffuse", "stage:refine", (21, 23)]),
    # dreamcraft3d: coarse 0-23, geometry 24-29, texture 30-35; checkpoints every 4
    "dreamcraft3d": (DREAMCRAFT3D, [(1, 23), "stage:geometry", "save:28", "stage:texture", (31, 34)]),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(SLOW_CASES))
def test_killed_anywhere_resumes_bit_identical(method: str, tmp_path: Path):
    args, plan = SLOW_CASES[method]
    print(f"fault seed {FAULT_SEED} (STUDIO_FAULT_SEED={FAULT_SEED} repeats this draw)")
    full = train(args, tmp_path / "full")
    assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
    run, lines = kill_and_resume(args, tmp_path / "killed", _faults(FAULT_SEED, plan))
    print("\n".join(lines))
    assert sum("SIGKILL" in line for line in lines) == len(plan)
    a, b = final_checkpoint(run_folder(tmp_path / "full")), final_checkpoint(run)
    assert a.name == b.name
    assert max_difference(a, b) == 0.0
