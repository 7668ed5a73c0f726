"""Where a `prd` run's novel-view error lies: object interior against the silhouette band.

For every test view (rendered over white, as `studio eval prd` does) the squared error is summed
over the object interior and over a band of ``--band`` pixels on each side of the ground-truth
silhouette (alpha > 0.5), divided by the number of pixels and channels and averaged over the
views; the parts add up to the image MSE (with the background far from the object). Columns:

- composite: the PRD image ``p_x I_pbr + (1 - p_x) I_radiance`` (what NVS PSNR measures);
- PBR / radiance alone: each part composited over white with the run's coverage (diagnostic:
  in ``prd`` the radiance fits what the PBR part leaves, so alone it is far from the images);
- alpha: squared coverage error against the ground-truth alpha in the band;
- alpha in / out: mean signed coverage error (coverage minus ground-truth alpha) on the object
  side (alpha > 0.5) and on the background side of the band: negative inside and positive
  outside means blurred silhouettes;
- p: mean straight progress ``p_x / coverage`` over interior and (object side of the) band.

The ``split`` column is the scene's ToyWorld split where its meta.json records one.

    python benchmarks/prd_error_split.py --run prd:runs/duo/prd/.../config.yml --run 3dgs:...
"""

from __future__ import annotations

import argparse
from pathlib import Path


def scene_split(config: Path) -> str:
    """The split recorded in the meta.json of the run's dataset ("-" without one)."""
    from studio.io.config_loader import load_trainer_config
    from studio.scenes.toyworld.splits import dataset_split

    return dataset_split(load_trainer_config(config).pipeline.datamanager.dataparser.data) or "-"


def error_split(config: Path, width: int) -> dict:
    """Mean over the run's test views of the per-region errors (see the module docstring)."""
    import numpy as np
    import torch

    from studio.data.dataparser import StudioDataParserConfig
    from studio.eval.inverse import over_white, read_image
    from studio.metrics import psnr
    from studio.models.runs import load_run
    from studio.render.masks import silhouette_band

    pipeline = load_run(config, with_data=True).pipeline
    model = pipeline.model
    data = Path(pipeline.datamanager.config.dataparser.data)
    outs = StudioDataParserConfig(data=data).setup().get_dataparser_outputs("test")
    white = torch.ones(3)
    rows = []
    for k, path in enumerate(outs.image_filenames):
        rgba = read_image(Path(path))
        alpha = torch.from_numpy(rgba[..., 3])
        gt = torch.from_numpy(over_white(rgba))
        with torch.no_grad():
            out = model.render_gbuffers(outs.cameras[k : k + 1], background=white.to(model.device))
        out = {key: value.cpu() for key, value in out.items()}
        acc = out["accumulation"]
        images = {
            "composite": out["rgb"],
            "pbr": out["pbr"] * acc + 1 - acc,
            "radiance": out["radiance"] * acc + 1 - acc,
        }
        interior, band = silhouette_band(alpha, width)
        n = alpha.numel()
        row = {}
        for name, image in images.items():
            se = ((image - gt) ** 2).mean(-1)
            row[f"{name}_interior"], row[f"{name}_band"] = float(se[interior].sum() / n), float(se[band].sum() / n)
        object_side = band & (alpha > 0.5)
        coverage_error = acc[..., 0] - alpha
        row["alpha_band"] = float((coverage_error**2)[band].sum() / n)
        row["alpha_in"] = float(coverage_error[object_side].mean())
        row["alpha_out"] = float(coverage_error[band & ~object_side].mean())
        p = (out["progress"] / acc.clamp(min=1e-6))[..., 0]
        row["p_interior"], row["p_band"] = float(p[interior].mean()), float(p[object_side].mean())
        row["psnr"] = float(psnr(out["rgb"], gt))
        rows.append(row)
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME:path/to/config.yml of a prd run")
    parser.add_argument("--band", type=int, default=2, help="band half-width in pixels")
    args = parser.parse_args()
    header = [
        "run",
        "split",
        "PSNR (view mean)",
        "composite interior",
        "composite band",
        "PBR interior",
        "PBR band",
        "radiance interior",
        "radiance band",
        "alpha band",
        "alpha in / out",
        "p interior / band",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for spec in args.run:
        name, config = spec.split(":", 1)
        r = error_split(Path(config), args.band)
        cells = [name, scene_split(Path(config)), f"{r['psnr']:.2f}"] + [
            f"{r[k]:.2e}"
            for k in (
                "composite_interior",
                "composite_band",
                "pbr_interior",
                "pbr_band",
                "radiance_interior",
                "radiance_band",
                "alpha_band",
            )
        ]
        cells.append(f"{r['alpha_in']:+.3f} / {r['alpha_out']:+.3f}")
        cells.append(f"{r['p_interior']:.2f} / {r['p_band']:.2f}")
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
