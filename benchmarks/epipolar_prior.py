"""Novel views of the multiview-consistent prior with and without its epipolar controller.

    python benchmarks/epipolar_prior.py [--prior toy-epipolar] [--split validation|test] [--objects 20]
        [--guidance 3] [--output m.json] [--sheet s.png]

Held-out ToyWorld objects (validation seeds 900-999 or test seeds 0-899, the first ``--objects``
single-object seeds of the split): three posed inputs at azimuths 0/120/240 and targets half-way
between them (``studio.eval.epipolar_prior``). Prints and writes PSNR / SSIM / mask IoU of DDIM
samples with the controller, of the base novel-view prior (controller off, the nearest input as its
reference) and of the nearest input copied; the sheet shows, per object, the inputs, the true
targets, the controller's and the base's samples.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from studio.eval.epipolar_prior import evaluate_sparse_nvs
    from studio.eval.priors import split_seeds
    from studio.io import atomic_write_text
    from studio.priors import load_prior

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", default="toy-epipolar")
    ap.add_argument("--split", choices=("validation", "test"), default="validation")
    ap.add_argument("--objects", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument("--sheet", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prior = load_prior(args.prior)
    seeds = split_seeds(args.split, args.objects)
    out = evaluate_sparse_nvs(prior, seeds, guidance=args.guidance, steps=args.steps)
    images = out.pop("images")
    out["settings"].update(prior=args.prior, split=args.split)
    for name in ("controller", "base", "copy_nearest"):
        s = out[name]
        print(f"{name:14s} PSNR {s['psnr']:6.2f} dB  SSIM {s['ssim']:.4f}  mask IoU {s['mask_iou']:.4f}")
    if args.output:
        atomic_write_text(args.output, json.dumps(out, indent=1) + "\n")
    if args.sheet:
        from PIL import Image

        rows = [
            np.concatenate([*images["inputs"][i], *images["true"][i], *images["controller"][i], *images["base"][i]], 1)
            for i in range(len(seeds))
        ]
        Image.fromarray(np.concatenate(rows, 0)).resize(
            (rows[0].shape[1] * 3, len(rows) * rows[0].shape[0] * 3), Image.NEAREST
        ).save(args.sheet)


if __name__ == "__main__":
    main()
