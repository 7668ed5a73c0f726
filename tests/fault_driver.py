"""``ns-train`` that SIGKILLs itself at a chosen point: fault injection for the resume tests and
``benchmarks/resume.py``, without hooks in the production code (it monkeypatches the trainer).

    python tests/fault_driver.py FAULT -- <ns-train arguments>

FAULT is one of

* ``step:N``: at the start of training step N (before its forward pass);
* ``stage:NAME``: inside the transition into stage NAME of a staged method, after the stage index
  moved on and the stage's ``enter`` did its one-time work, before the first step of the stage;
* ``save:N``: while writing the checkpoint of step N, after half of its bytes reached the disk;
* ``random:SEED:LO:HI``: ``step:N`` with N drawn uniformly from [LO, HI] by ``random.Random(SEED)``
  (the seed and the step are printed).

Every patched point prints ``fault_driver: ...`` before the kill. Without reaching its point the
run ends normally. Not collected by pytest (no ``test_`` prefix).

Imported (``tests/test_resume.py``, ``benchmarks/resume.py``), it runs such chains: ``train`` one
``ns-train`` run (through this script when given a fault), ``kill_and_resume`` a run killed at
each fault in turn, each time resumed in the same folder with ``--load-dir``, then to its end, and
``max_difference`` between two checkpoints.
"""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))
RUN_NAME = "run"
"""``--timestamp`` of every run: a resumed run writes into the folder of the run it resumes."""


def kill(reason: str) -> None:
    """Print ``reason`` and SIGKILL this process (no cleanup, no atexit, no flushing of open files)."""
    print(f"fault_driver: SIGKILL {reason}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def parse(fault: str) -> Tuple[str, str]:
    """(kind, argument) of a FAULT string; ``random:`` resolves to a ``step``."""
    kind, _, arg = fault.partition(":")
    if kind == "random":
        seed, lo, hi = (int(v) for v in arg.split(":"))
        step = random.Random(seed).randint(lo, hi)
        print(f"fault_driver: random seed {seed} in [{lo}, {hi}] -> step {step}", flush=True)
        return "step", str(step)
    if kind not in ("step", "stage", "save"):
        raise SystemExit(f"unknown fault {fault!r} (step:N, stage:NAME, save:N, random:SEED:LO:HI)")
    return kind, arg


def at_step(step: int) -> None:
    """Kill at the start of ``StudioTrainer.train_iteration(step)``."""
    from studio.models.trainer import StudioTrainer

    original = StudioTrainer.train_iteration

    def train_iteration(self, current: int):
        if current == step:
            kill(f"at step {step}")
        return original(self, current)

    StudioTrainer.train_iteration = train_iteration


def in_stage(name: str) -> None:
    """Kill inside ``StagedModel.advance_to`` right after stage ``name``'s ``enter``."""
    from studio.models.staged import StagedModel, stage_at

    original = StagedModel.advance_to

    def advance_to(self, step: int) -> None:
        names = self.stage_names()
        entering = names[int(self.stage_index) + 1 : stage_at(step, self.stage_iters()) + 1]
        if name in entering:
            stage = self.stages[names.index(name)]
            enter = stage.enter

            def enter_then_kill() -> None:
                enter()
                kill(f"entering stage {name} (step {step})")

            stage.enter = enter_then_kill
        original(self, step)

    StagedModel.advance_to = advance_to


def half_write(save: Callable) -> Callable:
    """A ``torch.save`` that writes half of the serialised bytes to the file, syncs them and kills."""

    def torch_save(obj, f, *args, **kwargs) -> None:
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        with open(f, "wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            os.fsync(out.fileno())
        kill(f"writing {f} ({len(data) // 2} of {len(data)} bytes written)")

    return torch_save


def during_save(step: int) -> None:
    """Kill while ``StudioTrainer.save_checkpoint(step)`` writes its file."""
    import torch

    from studio.models.trainer import StudioTrainer

    original = StudioTrainer.save_checkpoint

    def save_checkpoint(self, current: int) -> None:
        if current == step:
            torch.save = half_write(torch.save)
        original(self, current)

    StudioTrainer.save_checkpoint = save_checkpoint


# ---- running chains (imported by the tests and the benchmark) ---------------------------------
def train(
    args: Sequence[str],
    out: Path,
    fault: Optional[str] = None,
    load_dir: Optional[Path] = None,
) -> subprocess.CompletedProcess:
    """``ns-train *args`` into ``out`` (run folder ``out/<experiment>/<method>/run``; tensorboard, no
    viewer), through this script when ``fault`` is given, resuming from ``load_dir`` when given."""
    cmd = [*args, "--output-dir", str(out), "--timestamp", RUN_NAME, "--vis", "tensorboard"]
    if load_dir is not None:
        cmd += ["--load-dir", str(load_dir)]
    prefix = [NS_TRAIN] if fault is None else [sys.executable, __file__, fault, "--"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*prefix, *cmd], capture_output=True, text=True, env=env, timeout=1800)


def run_folder(out: Path) -> Path:
    """The run folder of ``train(..., out)``."""
    return next(Path(out).glob(f"*/*/{RUN_NAME}"))


def has_checkpoint(out: Path) -> bool:
    """Whether ``out``'s run wrote a checkpoint (``step-<n>.ckpt``)."""
    return any(Path(out).glob(f"*/*/{RUN_NAME}/nerfstudio_models/step-*.ckpt"))


def kill_and_resume(args: Sequence[str], out: Path, faults: Sequence[str]) -> Tuple[Path, List[str]]:
    """Train with each fault in turn (each run SIGKILLed, then resumed with ``--load-dir`` from its
    folder's last good checkpoint, from scratch while there is none), then to the end. Returns the
    run folder and the ``fault_driver:`` lines printed; RuntimeError when a run does not end as
    expected (killed, then finished)."""
    lines: List[str] = []
    for fault in [*faults, None]:
        load_dir = run_folder(out) / "nerfstudio_models" if has_checkpoint(out) else None
        result = train(args, out, fault, load_dir)
        lines += [line for line in result.stdout.splitlines() if line.startswith("fault_driver:")]
        expected = 0 if fault is None else -signal.SIGKILL
        if result.returncode != expected:
            log = result.stdout[-3000:] + result.stderr[-3000:]
            raise RuntimeError(f"fault {fault}: exit status {result.returncode}, expected {expected}\n{log}")
    return run_folder(out), lines


def final_checkpoint(run: Path) -> Path:
    """The highest-step checkpoint of a run folder."""
    from studio.models.checkpoints import checkpoint_files

    return checkpoint_files(run / "nerfstudio_models")[0]


def _tensors(value, path: str = ""):
    """(path, tensor or primitive) leaves of a nested checkpoint entry."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{path}/{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{path}/{i}")
    else:
        yield path, value


def max_difference(a: Path, b: Path, keys: Sequence[str] = ("step", "pipeline", "optimizers", "schedulers")) -> float:
    """max |a - b| over every floating-point tensor of the checkpoint entries ``keys`` (model
    parameters and buffers, optimizer moments, scheduler state); inf when the structure, a shape
    or a non-float value differs."""
    import torch

    la, lb = (dict(_tensors({k: torch.load(p, weights_only=True)[k] for k in keys})) for p in (a, b))
    if la.keys() != lb.keys():
        return float("inf")
    worst = 0.0
    for key, x in la.items():
        y = lb[key]
        if not torch.is_tensor(x):
            worst = worst if x == y else float("inf")
        elif x.shape != y.shape:
            worst = float("inf")
        elif x.is_floating_point():
            worst = max(worst, float((x - y).abs().max()) if x.numel() else 0.0)
        elif not torch.equal(x, y):
            worst = float("inf")
    return worst


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] != "--":
        raise SystemExit(__doc__)
    kind, arg = parse(argv[0])
    {"step": lambda: at_step(int(arg)), "stage": lambda: in_stage(arg), "save": lambda: during_save(int(arg))}[kind]()
    from nerfstudio.scripts.train import entrypoint

    sys.argv = ["ns-train", *argv[2:]]
    entrypoint()


if __name__ == "__main__":
    main(sys.argv[1:])
