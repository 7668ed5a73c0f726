"""Render sheet of VideoScene on held-out scenes: what each variant makes, next to the truth.

    python benchmarks/videoscene_sheet.py --data data/vs-test --pairs 6 --output benchmarks/figures/videoscene_sheet.png

One row per input pair (the protocol of ``studio eval generate --method videoscene``: test-ring views
``i`` and ``i + 3``): the two inputs; at the first novel view between them the truth, the coarse
feed-forward Gaussians, one step at the fixed and at the policy's timestep, and the teacher; then
the two generated frames between the inputs of the policy's one step and of the teacher. All at the
video model's resolution, over white.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from PIL import Image

    from studio.data.nerf_synthetic import read_nerf_synthetic
    from studio.eval.feature_lift.data import find_scenes
    from studio.eval.generate import reference_image
    from studio.eval.videoscene import VideoSceneEvalConfig, pair_inputs, render_fn_of, ring_pairs, run_variant
    from studio.generators.videoscene import load_videoscene

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--pairs", type=int, default=6, help="rows: the first pair of each of the first N scenes")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--teacher-weights", type=Path, default=None)
    ap.add_argument("--policy-weights", type=Path, default=None)
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args()

    kwargs = {"policy": args.policy_weights} if args.policy_weights else {}
    model = load_videoscene(args.weights, args.teacher_weights, **kwargs)
    cfg, res = VideoSceneEvalConfig(), model.res
    rows = []
    with torch.no_grad():
        for folder in find_scenes([args.data])[: args.pairs]:
            test = read_nerf_synthetic(folder, "test")
            i, j, novel = ring_pairs(len(test.image_paths), cfg.gap, cfg.pairs)[0]
            inputs = pair_inputs(model, test, i, j, "cpu")
            K = torch.tensor([[test.fx, 0.0, test.cx], [0.0, test.fy, test.cy], [0.0, 0.0, 1.0]])
            K[:2] *= res / test.width
            views = (i, j, novel[0])  # the inputs and the truth at the novel view
            tiles = [reference_image(test.image_paths[v], res)[0].permute(1, 2, 0).numpy() for v in views]
            frames = {}
            for variant in ("coarse", "fixed", "policy", "teacher"):
                gaussians, video, _, _ = run_variant(model, variant, inputs, cfg, torch.Generator().manual_seed(0))
                tiles.append(render_fn_of(gaussians, inputs, K, res)(test.camera_to_worlds[novel[0]])[0].numpy())
                frames[variant] = video[0]
            for variant in ("policy", "teacher"):
                tiles += [frames[variant][v].permute(1, 2, 0).numpy() for v in (1, 2)]
            rows.append(np.concatenate(tiles, axis=1))
    sheet = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(sheet).resize((sheet.shape[1] * 4, sheet.shape[0] * 4), Image.NEAREST).save(args.output)
    print(
        f"Wrote {args.output}: columns = input a | input b | (truth, coarse, 1-step fixed, 1-step policy, teacher) "
        "at a novel view | 1-step frames x2 | teacher frames x2"
    )


if __name__ == "__main__":
    main()
