"""PRD against its ablations (issue 28): train, evaluate and tabulate, per scene and seed, resumably.

Per scene (``--data``: scene folders or folders of them) and seed (``--seeds``), it trains the
``prd`` run first (always: it writes the stage-1 file ``<run>/pretrain.safetensors``), then every
other variant from that file (``--load-stage``: one 3DGS pretraining shared per scene and seed):

* ``no-progress``: pure PBR (``--pipeline.model.ablation no-progress``);
* ``3dgs``: radiance only (``--pipeline.model.ablation 3dgs``);
* ``--add-variant NAME "ARGS"``: any other ns-train arguments (e.g. ``--add-variant stage2-paper
  "--pipeline.model.specular-stage paper"``), also from prd's stage-1 file.

Each run is ``ns-train prd --data DIR --preset PRESET --machine.seed SEED
--pipeline.datamanager.train-cameras-sampling-seed SEED [variant args] [--extra-args]`` (the seed
sets both the initialisation and the order of the training views) into
``WORK/runs/<scene>/s<seed>/<variant>/<scene>/prd/run/``. A run whose config.yml and final
checkpoint exist is skipped, whatever arguments it was trained with (other settings: another
``--work``); one that was interrupted resumes from its last checkpoint (``--load-dir``), or starts
again without one. Each run is then scored with ``studio eval prd
--split SPLIT [--eval-args]`` into ``WORK/metrics/<scene>_s<seed>_<variant>_<split>.json``
(skipped when that file exists), so an interrupted benchmark picks up where it stopped.

The table (printed, and written to ``WORK/table_<split>.md``; all rows to ``WORK/results_<split>.json``)
has, per scene and variant, the mean over the seeds +- half their range of the NVS PSNR, the albedo
PSNR and, per environment, the relighting PSNR over the whole image and over the object's interior
(``relight_psnr_interior``), then one verdict line per scene from the means: prd - no-progress
relighting per environment (whole, interior) and prd - 3dgs NVS (issue 28 asks for prd above
no-progress in both and within 0.5 dB of 3dgs). Its header records the commit, the command line,
the machine, the preset and the split.

Splits. ``--split val`` chooses defaults, ``--split test`` reports them; never tune on test views.
ToyWorld scenes made with ``--n-val N`` have validation views of their own (relit as ``val_<env>/``).
Blender scenes (meta.json names an ``object``; ``shared/tools/blender_scene.py``) have none: their
val split repeats the test split. Every run of such a scene is therefore trained with
``--val-from-train 8`` (the dataparser's ``val_from_train``: every 8th training view is held out
as the val split and not trained on, for both splits, so val and test runs are the same runs), and
``--split val`` scores NVS on those held-out training views; there are no relit renders of them, so
their relighting cells are empty (and the verdict says so); albedo is scored from the training
views' AOVs (``blender_scene.py`` writes them). ToyWorld's validation views have no AOVs (the
committed scenes render them for ``test`` only), so their albedo cells are empty with ``--split val``.

    python benchmarks/prd_ablation.py --data data/duo scenes/toyworld_mushroom scenes/toyworld_multi \\
        scenes/toyworld_table --work /work/prd_bench --seeds 42 43 --split val
    # then, defaults chosen, the same command with --split test (the runs are reused)
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from _record import markdown_header, run_record

ABLATIONS = {
    "prd": "",
    "no-progress": "--pipeline.model.ablation no-progress",
    "3dgs": "--pipeline.model.ablation 3dgs",
}
"""Variant name -> ns-train arguments of the method's ablations (``--pipeline.model.ablation``)."""
BLENDER_VAL_FROM_TRAIN = 8
"""Every K-th training view of a Blender scene is its val split (``StudioDataParserConfig.val_from_train``)."""
RUN_NAME = "run"
"""``--timestamp`` of every run, so its folder is known before it starts."""
NVS_MARGIN_DB = 0.5
"""Issue 28: prd's NVS PSNR within this many dB of 3dgs."""


# ---- training -----------------------------------------------------------------------------------
def is_blender(scene: Path) -> bool:
    """Whether ``scene`` is a ``blender_scene.py`` scene (its meta.json names an ``object``)."""
    meta = scene / "meta.json"
    return meta.is_file() and "object" in json.loads(meta.read_text(encoding="utf-8"))


def run_folder(work: Path, scene: Path, seed: int, variant: str) -> Path:
    """The Nerfstudio run folder of one scene, seed and variant."""
    return work / "runs" / scene.name / f"s{seed}" / variant / scene.name / "prd" / RUN_NAME


def final_checkpoint(run: Path) -> Optional[Path]:
    """The checkpoint of ``run``'s last step (``max_num_iterations - 1`` of its config.yml), when written."""
    from studio.io.config_loader import load_trainer_config

    config = run / "config.yml"
    if not config.is_file():
        return None
    last = int(load_trainer_config(config).max_num_iterations) - 1
    ckpt = run / "nerfstudio_models" / f"step-{last:09d}.ckpt"
    return ckpt if ckpt.is_file() else None


def train_command(scene: Path, seed: int, run: Path, preset: str, args: str, stage: Optional[Path]) -> List[str]:
    """``ns-train prd`` of one run (``args``: the variant's and --extra-args' ns-train arguments)."""
    from studio.models.checkpoints import checkpoint_files

    cmd = [str(Path(sys.executable).with_name("ns-train")), "prd", "--data", str(scene)]
    cmd += ["--output-dir", str(run.parents[2]), "--experiment-name", scene.name, "--timestamp", RUN_NAME]
    cmd += ["--vis", "tensorboard", "--preset", preset, "--machine.seed", str(seed)]
    cmd += ["--pipeline.datamanager.train-cameras-sampling-seed", str(seed), *shlex.split(args)]
    if stage is not None:
        cmd += ["--load-stage", str(stage)]
    if (run / "nerfstudio_models").is_dir() and checkpoint_files(run / "nerfstudio_models"):
        cmd += ["--load-dir", str(run / "nerfstudio_models")]  # resume an interrupted run
    if is_blender(scene):  # a dataparser flag: after the dataparser's subcommand, last
        cmd += ["studio-data-parser-config", "--val-from-train", str(BLENDER_VAL_FROM_TRAIN)]
    return cmd


def train(scene: Path, seed: int, variant: str, args: str, work: Path, preset: str, stage: Optional[Path]) -> Path:
    """Train one run unless its final checkpoint exists; its folder."""
    run = run_folder(work, scene, seed, variant)
    if final_checkpoint(run) is None:
        cmd = train_command(scene, seed, run, preset, args, stage)
        print("$", shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        if final_checkpoint(run) is None:
            raise RuntimeError(f"ns-train ended without the final checkpoint of {run}.")
    return run


# ---- evaluation ---------------------------------------------------------------------------------
def evaluate(run: Path, out: Path, split: str, eval_args: str) -> dict:
    """``studio eval prd`` of one run into ``out`` (skipped when it exists); its metrics."""
    if not out.is_file():
        cmd = [str(Path(sys.executable).with_name("studio")), "eval", "prd", "--load-config", str(run / "config.yml")]
        cmd += ["--output", str(out), "--split", split, *shlex.split(eval_args)]
        print("$", shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return json.loads(out.read_text(encoding="utf-8"))


# ---- table --------------------------------------------------------------------------------------
def spread(values: Sequence[Optional[float]]) -> Optional[Tuple[float, float]]:
    """(mean, half the range) of the values that are not None; None when there are none."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    return sum(present) / len(present), (max(present) - min(present)) / 2


def fmt(stat: Optional[Tuple[float, float]]) -> str:
    return "-" if stat is None else f"{stat[0]:.2f} ± {stat[1]:.2f}"


def summary(group: List[dict]) -> dict:
    """Mean and half-range over the seeds of one scene and variant: ``nvs``, ``albedo``, and per
    environment ``relight`` / ``interior`` (``{env: (mean, half range)}``)."""
    envs = sorted({e for m in group for e in (m.get("relight_psnr") or {})})

    def per_env(key: str) -> Dict[str, Tuple[float, float]]:
        stats = {e: spread([(m.get(key) or {}).get(e) for m in group]) for e in envs}
        return {e: s for e, s in stats.items() if s is not None}

    return {
        "nvs": spread([m.get("nvs_psnr") for m in group]),
        "albedo": spread([m.get("albedo_psnr") for m in group]),
        "relight": per_env("relight_psnr"),
        "interior": per_env("relight_psnr_interior"),
    }


def _gap(a: Dict[str, Tuple[float, float]], b: Dict[str, Tuple[float, float]], env: str) -> Optional[float]:
    """Difference of the means of ``env`` in ``a`` and ``b`` (None when either lacks it)."""
    return a[env][0] - b[env][0] if env in a and env in b else None


def _signed(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:+.2f}"


def verdict(scene: str, stats: Dict[str, dict], split: str) -> str:
    """prd against no-progress (relighting, whole and interior, per environment) and 3dgs (NVS), from the means."""
    prd, pbr, gs = stats.get("prd"), stats.get("no-progress"), stats.get("3dgs")
    parts = []
    if pbr is None:
        parts.append("relight: no no-progress runs")
    elif not prd["relight"]:
        parts.append(f"relight: no relit views in the {split} split")
    else:
        gaps, better = [], True
        for env in prd["relight"]:
            whole = _gap(prd["relight"], pbr["relight"], env)
            inner = _gap(prd["interior"], pbr["interior"], env)
            gaps.append(f"{env} {_signed(whole)} (interior {_signed(inner)})")
            better &= whole is not None and inner is not None and whole > 0 and inner > 0
        parts.append(f"relight prd - no-progress {'; '.join(gaps)} dB: {'better' if better else 'NOT better'}")
    if gs is None or prd["nvs"] is None or gs["nvs"] is None:
        parts.append("NVS: no 3dgs runs")
    else:
        gap = prd["nvs"][0] - gs["nvs"][0]
        parts.append(f"NVS prd - 3dgs {gap:+.2f} dB: {'within' if gap >= -NVS_MARGIN_DB else 'NOT within'} 0.5 dB")
    return f"**verdict {scene}**: " + "; ".join(parts)


def table(rows: List[dict], variants: List[str], split: str) -> str:
    """Markdown: per scene and variant the mean ± half range over the seeds, then each scene's verdict."""
    head = ["scene", "variant", "seeds", "NVS PSNR", "albedo PSNR", "relight PSNR", "relight PSNR interior"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    verdicts = []
    for scene in dict.fromkeys(r["scene"] for r in rows):
        stats = {}
        for variant in variants:
            group = [r for r in rows if r["scene"] == scene and r["variant"] == variant]
            if not group:
                continue
            s = stats[variant] = summary([r["metrics"] for r in group])
            relit = "; ".join(f"{e} {fmt(v)}" for e, v in s["relight"].items()) or "-"
            inner = "; ".join(f"{e} {fmt(v)}" for e, v in s["interior"].items()) or "-"
            seeds = " ".join(str(r["seed"]) for r in group)
            lines.append(
                f"| {scene} | {variant} | {seeds} | {fmt(s['nvs'])} | {fmt(s['albedo'])} | {relit} | {inner} |"
            )
        verdicts.append(verdict(scene, stats, split))
    return "\n".join(lines) + "\n\n" + "\n\n".join(verdicts)


# ---- driver -------------------------------------------------------------------------------------
def variant_args(ablations: List[str], added: List[Tuple[str, str]]) -> Dict[str, str]:
    """Variant name -> ns-train arguments, prd first (its run writes the shared stage-1 file)."""
    variants = {"prd": ABLATIONS["prd"]}
    variants.update({name: ABLATIONS[name] for name in ablations})
    for name, args in added:
        if name in variants:
            raise SystemExit(f"--add-variant {name}: that name is already a variant; choose another.")
        variants[name] = args
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="scene folders or folders of them")
    parser.add_argument("--work", type=Path, required=True, help="folder of the runs, metrics and tables")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43], help="--machine.seed of the runs")
    parser.add_argument(
        "--ablations", nargs="+", default=list(ABLATIONS), choices=list(ABLATIONS), help="prd is always run"
    )
    parser.add_argument(
        "--add-variant", nargs=2, action="append", default=[], metavar=("NAME", "ARGS"), help="a variant of your own"
    )
    parser.add_argument(
        "--split", choices=("val", "test"), required=True, help="views scored (val: choose; test: report)"
    )
    parser.add_argument("--preset", choices=("tiny", "full", "auto"), default="tiny", help="ns-train --preset")
    parser.add_argument("--extra-args", default="", help="ns-train arguments of every run (after the variant's)")
    parser.add_argument("--eval-args", default="", help="studio eval prd arguments (e.g. --envmap-dir DIR)")
    args = parser.parse_args()

    from studio.eval.feature_lift.data import find_scenes

    variants = variant_args(args.ablations, args.add_variant)
    scenes = find_scenes(args.data)
    (args.work / "metrics").mkdir(parents=True, exist_ok=True)
    rows = []
    for scene in scenes:
        for seed in args.seeds:
            stage = None
            for variant, extra in variants.items():
                run = train(scene, seed, variant, f"{extra} {args.extra_args}", args.work, args.preset, stage)
                if stage is None:
                    stage = run / "pretrain.safetensors"
                    if not stage.is_file():
                        raise SystemExit(f"{run} has no pretrain.safetensors; remove that run folder to retrain it.")
                out = args.work / "metrics" / f"{scene.name}_s{seed}_{variant}_{args.split}.json"
                metrics = evaluate(run, out, args.split, args.eval_args)
                rows.append({"scene": scene.name, "seed": seed, "variant": variant, "metrics": metrics})

    from studio.io.atomic import atomic_write_text

    record = {**run_record(), "preset": args.preset, "split": f"{args.split} views"}
    text = markdown_header(record) + "\n\n" + table(rows, list(variants), args.split) + "\n"
    print(text)
    atomic_write_text(args.work / f"table_{args.split}.md", text)
    atomic_write_text(args.work / f"results_{args.split}.json", json.dumps({**record, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
