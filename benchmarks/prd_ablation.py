"""PRD against its ablations (pure PBR, radiance-only 3DGS) on scenes with ground truth.

Evaluates trained runs with ``studio eval prd`` and prints one markdown table (the scene's ToyWorld
split where its meta.json records one, NVS, albedo, roughness, normals, relighting per environment).
Train the runs first, sharing stage 1::

    ns-train prd --data DIR --output-dir runs/SCENE/prd
    ns-train prd --data DIR --output-dir runs/SCENE/no-progress --pipeline.model.ablation no-progress \\
        --load-stage runs/SCENE/prd/.../pretrain.safetensors
    ns-train prd --data DIR --output-dir runs/SCENE/3dgs --pipeline.model.ablation 3dgs --load-stage ...

    python benchmarks/prd_ablation.py --run SCENE:prd:CFG --run SCENE:no-progress:CFG --run SCENE:3dgs:CFG ...
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def scene_split(config: Path) -> str:
    """The split recorded in the meta.json of the run's dataset ("-" without one)."""
    from studio.io.config_loader import load_trainer_config
    from studio.scenes.toyworld.splits import dataset_split

    return dataset_split(load_trainer_config(config).pipeline.datamanager.dataparser.data) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="SCENE:ABLATION:path/to/config.yml")
    parser.add_argument("--output", type=Path, default=None, help="also write all metrics to this JSON")
    args = parser.parse_args()

    from studio.cli.eval import Prd

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, spec in enumerate(args.run):
            scene, ablation, config = spec.split(":", 2)
            out = Path(tmp) / f"{k}.json"
            Prd(load_config=Path(config), output=out).main()
            rows.append((scene, ablation, json.loads(out.read_text())))
    envs = sorted({env for _, _, m in rows for env in (m.get("relight_psnr") or {})})

    def fmt(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    splits = [scene_split(Path(spec.split(":", 2)[2])) for spec in args.run]
    header = ["scene", "split", "ablation", "NVS PSNR", "NVS SSIM", "albedo PSNR", "roughness MSE", "normal MAE (deg)"]
    header += [f"relight {e}" for e in envs]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (scene, ablation, m), split in zip(rows, splits):
        relit = m.get("relight_psnr") or {}
        cells = [
            scene,
            split,
            ablation,
            fmt(m["nvs_psnr"]),
            fmt(m["nvs_ssim"], 3),
            fmt(m["albedo_psnr"]),
            fmt(m["roughness_mse"], 4),
            fmt(m["normal_mae_deg"], 1),
        ] + [fmt(relit.get(e)) for e in envs]
        print("| " + " | ".join(cells) + " |")
    if args.output is not None:
        from studio.io.atomic import atomic_write_text

        atomic_write_text(
            args.output,
            json.dumps(
                [{"scene": s, "split": sp, "ablation": a, **m} for (s, a, m), sp in zip(rows, splits)], indent=1
            ),
        )


if __name__ == "__main__":
    main()
