"""A render sheet of 2D feature models side by side: per test view, the image and each model's
features in PCA colours (one PCA basis per row, fitted on all models' features of that view, so
colours compare across models).

    python benchmarks/feature_sheet.py --data SCENE_OR_FOLDER --model teacher --model student.safetensors \
        --output sheet.png [--views 4] [--size 128]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def main() -> None:
    from PIL import Image

    from studio.eval.feature_lift import find_scenes, load_split
    from studio.features.registry import load_feature_model
    from studio.io import atomic_write_bytes
    from studio.lift.pca import pca_basis, pca_colors

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, nargs="+", required=True)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--views", type=int, default=3, help="test views per scene")
    ap.add_argument("--size", type=int, default=128, help="pixels per cell")
    args = ap.parse_args()

    models = [load_feature_model("toy-vit" if m == "teacher" else m) for m in args.model]
    rows = []
    for root in find_scenes(args.data):
        split = load_split(root, "test", args.size)
        for k in range(min(args.views, len(split.images))):
            img = split.images[k : k + 1]
            with torch.no_grad():
                feats = [m(m.prepare(img))[0] for m in models]  # [D,h,w] each
            basis = pca_basis(torch.cat([f.flatten(1) for f in feats], 1).T)
            cells = [img[0]]
            for f in feats:
                rgb = pca_colors(f.permute(1, 2, 0), basis).permute(2, 0, 1)[None]
                cells.append(F.interpolate(rgb, size=img.shape[-2:], mode="nearest")[0])
            rows.append(torch.cat(cells, 2))
    sheet = (torch.cat(rows, 1).permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
    import io

    buf = io.BytesIO()
    Image.fromarray(sheet).save(buf, format="PNG")
    atomic_write_bytes(args.output, buf.getvalue())
    print(f"Wrote {args.output}: columns = image, " + ", ".join(args.model))


if __name__ == "__main__":
    main()
