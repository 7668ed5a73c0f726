"""Render sheet of FlashWorld on held-out scenes: what the generator makes, next to the truth.

    python benchmarks/flashworld_sheet.py --data data/lift-test --scenes 4 --output benchmarks/figures/flashworld_sheet.png

One row per scene (the first ``--scenes`` of ``--data``, the protocol of ``studio eval generate``):
the input view, then for each of two test views the ground truth, the 1-step, 4-step and teacher
results rendered there (at the test view's resolution, over white).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from PIL import Image

    from studio.cameras.normalize import scene_frame, to_frame
    from studio.eval.feature_lift.data import find_scenes
    from studio.eval.generate import (
        VARIANTS,
        GenerateEvalConfig,
        VariantModels,
        render_fn_of,
        run_variant,
        scene_inputs,
    )
    from studio.eval.inverse import over_white
    from studio.generators.flashworld import world_gaussians

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--teacher-weights", type=Path, default=None)
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args()

    models = VariantModels.load(args.weights, args.teacher_weights)
    cfg = GenerateEvalConfig()
    rows = []
    for index, folder in enumerate(find_scenes([args.data])[: args.scenes]):
        _, test, test_images, _, viewmats, Ks, ref, _ = scene_inputs(folder, cfg, index, models.student.res)
        frame = scene_frame(viewmats[None])
        vm, K = to_frame(viewmats[None], frame), Ks[None]
        size = test.height
        up = torch.nn.functional.interpolate(ref[None], size=(size, size), mode="nearest")[0]
        tiles = [up.permute(1, 2, 0).numpy()]
        renders = {}
        with torch.no_grad():
            for variant in VARIANTS:
                gaussians, _, _ = run_variant(models, variant, ref[None], "", vm, K, cfg, index)
                renders[variant] = render_fn_of(world_gaussians(gaussians, frame), test)
        for t in (0, len(test_images) // 2):
            tiles.append(over_white(test_images[t]))
            tiles += [renders[v](test.camera_to_worlds[t])[0].numpy() for v in VARIANTS]
        rows.append(np.concatenate(tiles, axis=1))
    sheet = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST).save(args.output)
    print(f"Wrote {args.output}: columns = input | (truth, 1-step, 4-step, teacher) x 2 test views")


if __name__ == "__main__":
    main()
