"""Sparse3D on held-out scenes from 2-3 views: the method, its plain-SDS baseline and its ablations.

For every scene folder and every variant it runs ``studio eval sparse-view`` once (skipped when that
run's JSON exists, so an interrupted benchmark resumes) and collects the JSON files into one markdown
table: test-view PSNR, SSIM, mask IoU, (LPIPS,) depth MAE and Chamfer distance per scene, and the mean
over the scenes of each split (ToyWorld's meta.json records it: validation scenes choose defaults,
test scenes are reported; the two are never averaged together). The table's header records the
commit, the command line and the machine.

Variants (``--variants``; ``studio eval sparse-view --method`` and ``--method-args``):

* ``sparse3d``: the method as configured (epipolar controller, C-SDS);
* ``sds``: the plain-SDS baseline (``--method sds``: no controller, ``--pipeline.model.csds none``);
* ``csds-<none|classifier|reference>-ctrl-<on|off>``: the ablation grid, ``--pipeline.model.csds X
  --pipeline.model.controller True|False`` (``ablations`` names all six);
* ``--add-variant NAME "ARGS"``: any other ns-train arguments, under a name of your own.

Scenes: ``--data`` takes NeRF-synthetic scene folders or folders of them (e.g. ``studio scenes make
--path ring --n-train 9 --n-test 8 --res 64 --relight ''`` of the ToyWorld test seeds 44 60 61 65 73
and validation seeds 903 906 911, or a ``shared/tools/blender_scene.py`` scene); ``DIR:2,3,4`` gives
one scene its own input views (default ``--views``).

    python benchmarks/sparse_view.py --data /work/sv/test /work/sv/val /work/sv/blender/rough_cone:2,3,4 \\
        --work /work/sv/bench --variants sparse3d sds [--extra-args "--max-num-iterations 600"]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _record import markdown_header, run_record

KEYS = ("psnr", "ssim", "mask_iou", "lpips", "depth_mae", "chamfer")
HEADS = {"psnr": "PSNR", "ssim": "SSIM", "mask_iou": "mask IoU", "lpips": "LPIPS", "depth_mae": "depth MAE"}
CSDS = ("none", "classifier", "reference")
ABLATIONS = {
    f"csds-{csds}-ctrl-{'on' if ctrl else 'off'}": (
        "sparse3d",
        f"--pipeline.model.csds {csds} --pipeline.model.controller {ctrl}",
    )
    for csds in CSDS
    for ctrl in (True, False)
}
VARIANTS = {"sparse3d": ("sparse3d", ""), "sds": ("sds", ""), **ABLATIONS}
"""Variant name -> (``studio eval sparse-view --method``, ``--method-args``)."""


def scene_specs(values: list[str], views: list[int]) -> list[tuple[Path, list[int]]]:
    """(scene folder, input views) of each --data value (``DIR`` or ``DIR:V,V[,V]``; a folder of
    scenes gives each of them)."""
    from studio.eval.feature_lift.data import find_scenes

    out = []
    for value in values:
        m = re.fullmatch(r"(.+):(\d+(?:,\d+)+)", value)
        path, own = (Path(m.group(1)), [int(v) for v in m.group(2).split(",")]) if m else (Path(value), views)
        out += [(scene, own) for scene in find_scenes([path])]
    return out


def run(scene: Path, views: list[int], variant: str, method: str, method_args: str, work: Path) -> dict:
    """``studio eval sparse-view`` of one scene and variant (skipped when its JSON exists); its metrics."""
    tag = f"{scene.name}_v{'-'.join(map(str, views))}_{variant}"
    out = work / f"{tag}.json"
    if not out.is_file():
        cmd = [str(Path(sys.executable).with_name("studio")), "eval", "sparse-view", "--method", method]
        cmd += ["--data", str(scene), "--views", *map(str, views), "--output", str(out)]
        cmd += ["--work-dir", str(work / tag), f"--method-args={method_args}"]
        print("$", shlex.join(cmd), flush=True)
        t0 = time.time()
        subprocess.run(cmd, check=True)
        metrics = json.loads(out.read_text())
        metrics["seconds"] = round(time.time() - t0)
        out.write_text(json.dumps(metrics, indent=1) + "\n")
    return json.loads(out.read_text())


def fmt(value, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if key == "psnr" else f"{value:.4f}"


def table(rows: list[dict], variants: list[str]) -> str:
    """Markdown: a row per scene and variant, then per split and variant the mean over its scenes
    (a metric's mean over the scenes that have it; n is the number of scenes)."""
    keys = [k for k in KEYS if any(r["metrics"].get(k) is not None for r in rows)]
    head = ["scene", "split", "object", "views", "variant", *(HEADS.get(k, k.capitalize()) for k in keys), "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r["metrics"]
        cells = [r["scene"], r["split"], r["caption"], " ".join(map(str, r["views"])), r["variant"]]
        cells += [fmt(m.get(k), k) for k in keys] + [str(m.get("settings", {}).get("train_seconds", "-"))]
        lines.append("| " + " | ".join(cells) + " |")
    for split in dict.fromkeys(r["split"] for r in rows):
        for variant in variants:
            group = [r["metrics"] for r in rows if r["split"] == split and r["variant"] == variant]
            if not group:
                continue
            means = []
            for k in keys:
                values = [m[k] for m in group if m.get(k) is not None]
                means.append(fmt(sum(values) / len(values), k) if values else "-")
            lines.append(f"| **mean** | {split} | n = {len(group)} | | {variant} | " + " | ".join(means) + " | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs="+", required=True, help="scene folders or folders of them (DIR or DIR:V,V,V)")
    parser.add_argument("--work", type=Path, required=True, help="folder of the runs, their JSON files and the table")
    parser.add_argument("--views", type=int, nargs="+", default=[0, 3, 6], help="input views (transforms_train.json)")
    parser.add_argument(
        "--variants",
        nargs="*",
        default=["sparse3d", "sds"],
        choices=[*VARIANTS, "ablations"],
        help="variants to run (ablations: the six csds x controller ones; none: only --add-variant ones)",
    )
    parser.add_argument(
        "--add-variant", nargs=2, action="append", default=[], metavar=("NAME", "ARGS"), help="a variant of your own"
    )
    parser.add_argument("--extra-args", default="", help="ns-train arguments added to every run (after the variant's)")
    parser.add_argument("--output", type=Path, default=None, help="markdown table (default: WORK/table.md)")
    args = parser.parse_args()

    variants = {}
    for name in args.variants:
        variants.update(ABLATIONS if name == "ablations" else {name: VARIANTS[name]})
    for name, extra in args.add_variant:
        variants[name] = ("sparse3d", extra)
    from studio.scenes.toyworld.splits import dataset_split

    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for scene, views in scene_specs(args.data, args.views):
        meta = json.loads((scene / "meta.json").read_text()) if (scene / "meta.json").is_file() else {}
        for variant, (method, method_args) in variants.items():
            metrics = run(scene, views, variant, method, f"{method_args} {args.extra_args}".strip(), args.work)
            rows.append(
                {
                    "scene": scene.name,
                    "split": dataset_split(scene) or "-",
                    "caption": meta.get("caption") or meta.get("object") or "-",
                    "views": views,
                    "variant": variant,
                    "metrics": metrics,
                }
            )
    record = run_record()
    text = markdown_header(record) + "\n\n" + table(rows, list(variants)) + "\n"
    print(text)
    (args.output or args.work / "table.md").write_text(text)
    (args.work / "results.json").write_text(json.dumps({**record, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
