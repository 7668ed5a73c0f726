"""Kill and resume (issue 21): final quality of runs SIGKILLed and resumed vs the uninterrupted run.

Per method (studio-splat, prd, dreamcraft3d; small CPU settings below), one uninterrupted run and,
for each fault point, a run SIGKILLed there by ``tests/fault_driver.py`` and resumed with
``--load-dir`` in the same folder, all with the same seed. Fault points: a step inside a stage or
the transition into a named stage, and the middle of a checkpoint write. Prints one markdown table:
the stage and step of the kill, the final metric of both runs and their difference, and the
largest difference between their final model states (parameters and buffers).

Final metrics, from the final checkpoint (``studio.models.runs.load_run``): studio-splat and prd,
PSNR on the scene's test views (``get_average_eval_image_metrics``); dreamcraft3d, PSNR of the
reference-view render against the preprocessed input image.

    python benchmarks/resume.py [--work DIR] [--seed 0] [--methods studio-splat prd dreamcraft3d]

9 to 14 minutes on a 2-core CPU with the defaults (longer when other jobs share it).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fault_driver import final_checkpoint, kill_and_resume, max_difference, run_folder, train  # noqa: E402

MUSHROOM = REPO / "scenes" / "toyworld_mushroom"


# ---- final metrics ------------------------------------------------------------------------------
def eval_psnr(config: Path) -> float:
    """Mean PSNR of the final model on the run's test views."""
    from studio.models.runs import load_run

    run = load_run(config, device="cpu", with_data=True)
    return float(run.pipeline.get_average_eval_image_metrics()["psnr"])


def reference_psnr(config: Path) -> float:
    """PSNR of the final model's render at the reference camera against the preprocessed input."""
    import torch

    from studio.metrics import psnr
    from studio.models.runs import load_run

    run = load_run(config, device="cpu", with_data=True)
    batch = run.pipeline.datamanager.reference_batch()
    with torch.no_grad():
        out = run.model.render_reference(batch)
    return float(psnr(out["rgb"], batch["ref_rgb"]))


@dataclass
class Case:
    """A method's command line, stage layout (names, steps; one stage ``train`` for unstaged
    methods), fault points (``"stage:NAME"``, ``"save:N"`` or ``(lo, hi)``: a random step in
    [lo, hi]) and final metric (name, function of the run's config.yml)."""

    args: List[str]
    stages: List[Tuple[str, int]]
    faults: List[object]
    metric: Tuple[str, Callable[[Path], float]]


CASES = {
    "studio-splat": Case(
        [
            "studio-splat",
            "--data",
            str(MUSHROOM),
            "--preset",
            "tiny",
            "--max-num-iterations",
            "300",
            "--steps-per-save",
            "100",
            "--pipeline.model.num-random",
            "5000",
            "--pipeline.model.refine-start-iter",
            "100",
            "--pipeline.model.refine-every",
            "50",
        ],
        [("train", 300)],
        [(101, 299), "save:200"],
        ("test PSNR", eval_psnr),
    ),
    "prd": Case(
        [
            "prd",
            "--data",
            str(MUSHROOM),
            "--preset",
            "tiny",
            "--pipeline.model.stage-iters",
            "150",
            "30",
            "60",
            "30",
            "--pipeline.model.num-random",
            "5000",
            "--pipeline.model.refine-start-iter",
            "60",
            "--pipeline.model.refine-every",
            "30",
            "--pipeline.model.refine-stop-iter",
            "150",
            "--steps-per-save",
            "40",
        ],
        [("pretrain", 150), ("specular", 30), ("diffuse", 60), ("refine", 30)],
        ["stage:diffuse", "save:240"],
        ("test PSNR", eval_psnr),
    ),
    "dreamcraft3d": Case(
        [
            "dreamcraft3d",
            "--data",
            str(REPO / "scenes" / "images" / "toy_mushroom.png"),
            "--preset",
            "tiny",
            "--pipeline.model.stage-iters",
            "100",
            "20",
            "20",
            "--pipeline.model.mesh-resolution",
            "48",
            "--pipeline.model.bootstrap-every",
            "10",
            "--pipeline.model.finetune-steps",
            "5",
            "--pipeline.model.bootstrap-views",
            "4",
            "--steps-per-save",
            "20",
        ],
        [("coarse", 100), ("geometry", 20), ("texture", 20)],
        ["stage:texture", "save:100"],
        ("reference-view PSNR", reference_psnr),
    ),
}


def stage_of(step: int, stages: Sequence[Tuple[str, int]]) -> str:
    """Name of the stage that global step ``step`` belongs to."""
    end = 0
    for name, length in stages:
        end += length
        if step < end:
            return name
    return stages[-1][0]


def resolve(fault: object, rng: random.Random, stages: Sequence[Tuple[str, int]]) -> Tuple[str, str, int]:
    """(fault driver string, description, step) of a fault point; random steps come from ``rng``."""
    if isinstance(fault, tuple):
        step = rng.randint(*fault)
        return f"step:{step}", f"step {step}", step
    kind, _, arg = str(fault).partition(":")
    if kind == "stage":
        names = [name for name, _ in stages]
        step = sum(length for _, length in stages[: names.index(arg)])
        return str(fault), f"entering {arg}", step
    return str(fault), f"checkpoint write {arg}", int(arg)


def model_difference(a: Path, b: Path) -> float:
    """max |a - b| over the model state (parameters and buffers) of two checkpoints."""
    return max_difference(a, b, keys=("pipeline",))


# ---- runs ---------------------------------------------------------------------------------------
def run_method(method: str, work: Path, seed: int, rng: random.Random) -> List[List[str]]:
    """Table rows of one method: its uninterrupted run, then each fault point killed and resumed."""
    case = CASES[method]
    args = [*case.args, "--machine.seed", str(seed)]
    metric_name, metric = case.metric
    start = time.time()
    full = train(args, work / method / "full")
    if full.returncode != 0:
        raise RuntimeError(f"{method}: uninterrupted run failed\n{full.stdout[-3000:]}{full.stderr[-3000:]}")
    full_run = run_folder(work / method / "full")
    base = metric(full_run / "config.yml")
    rows = []
    for k, fault in enumerate(case.faults):
        spec, what, step = resolve(fault, rng, case.stages)
        run, _ = kill_and_resume(args, work / method / f"fault{k}", [spec])
        value = metric(run / "config.yml")
        diff = model_difference(final_checkpoint(full_run), final_checkpoint(run))
        rows.append(
            [
                method,
                what,
                stage_of(step, case.stages),
                str(step),
                metric_name,
                f"{base:.4f}",
                f"{value:.4f}",
                f"{value - base:+.4f}",
                f"{diff:.3g}",
            ]
        )
    print(f"{method}: {time.time() - start:.0f} s", file=sys.stderr)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (--machine.seed) and fault-step seed")
    parser.add_argument("--methods", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    print(f"seed {args.seed} (training and random fault steps)", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        rows = [row for method in args.methods for row in run_method(method, work, args.seed, rng)]
    header = [
        "method",
        "fault point",
        "stage killed in",
        "step",
        "final metric",
        "uninterrupted",
        "resumed",
        "difference",
        "max abs Δ model state",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
