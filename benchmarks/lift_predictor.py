"""Novel-view quality and speed of the feed-forward Gaussian predictor on held-out scenes.

    python benchmarks/lift_predictor.py --data DIR [--weights PATH] [--pairs 4] [--resolution 64] [--output m.json]

DIR is a NeRF-synthetic scene or a folder of them (e.g. ``studio scenes make`` of test-split
ToyWorld seeds, 0-899). Per scene, ``--pairs`` context pairs are drawn with a seeded generator as
``ns-train splat-distill`` draws them (angle 25-60 degrees between the views' directions), and every
view between the two is a target. Printed and written: PSNR / SSIM of the predictor's renders (white
background) against the true views, the same for the nearer context view copied as it is (a
baseline that needs no 3D), and seconds per scene-pair (prediction + rendering of all its targets,
wall clock, after one warm-up) with the torch thread count. With ``--features MODEL`` (e.g.
``toy-vit``) also the lifting round trip: the model's features of context view A, upsampled to
pixels and lifted onto view A's Gaussians, rendered back at view A; mean cosine similarity to the input
features where the rendered alpha exceeds 0.5 (``roundtrip_cosine``) and the fraction of such pixels.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


@torch.no_grad()
def roundtrip(model, features, sc, ctx: list, near, far, r: int) -> tuple[float, float]:
    """(mean cosine where alpha > 0.5, covered fraction) of view ``ctx[0]``'s features lifted onto
    its own Gaussians (predicted from both context views) and rendered back at that view."""
    import torch.nn.functional as F

    from studio.lift import lift_features, render_features

    g = model(sc.images[ctx][None], sc.viewmats[ctx][None], sc.Ks[ctx][None], near, far).views([0])
    f = features(features.prepare(sc.images[ctx[:1]]))  # [1,D,h,w]
    f = F.interpolate(f, size=(r, r), mode="bilinear", align_corners=False)
    lifted = lift_features(f[None], g)
    a = ctx[:1]
    out = render_features(g, lifted, sc.viewmats[a][None], sc.Ks[a][None], r, r)
    back, alpha = out.color[0, 0].permute(2, 0, 1), out.alpha[0, 0, ..., 0]
    cos = F.cosine_similarity(back, f[0], dim=0)
    mask = alpha > 0.5
    return float(cos[mask].mean()), float(mask.float().mean())


def main() -> None:
    from studio.data.scene_set import load_scene_views, scene_folders, view_angles
    from studio.lift import load_predictor, render
    from studio.methods.splat_distill.datamanager import choose_context, views_between
    from studio.metrics import psnr, ssim

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--weights", type=Path, default=None, help="predictor .safetensors (default: the embedded one)")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument("--features", default=None, help="feature model for the lifting round trip (e.g. toy-vit)")
    args = ap.parse_args()

    model = load_predictor(args.weights)
    features = None
    if args.features:
        from studio.features.registry import load_feature_model

        features = load_feature_model(args.features)
    rows_rt: dict = {"roundtrip_cosine": [], "roundtrip_covered": []}
    white = torch.ones(3)
    rows = {"predictor_psnr": [], "predictor_ssim": [], "copy_psnr": [], "copy_ssim": [], "seconds": []}
    warm = False
    scenes = scene_folders(args.data)
    for root in scenes:
        sc = load_scene_views(root, args.resolution)
        gen = torch.Generator().manual_seed(args.seed)
        angles = view_angles(sc.directions)
        for _ in range(args.pairs):
            i, j = choose_context(sc.directions, (25.0, 60.0), gen)
            t = views_between(sc.directions, i, j)
            ctx = [i, j]
            near, far = torch.tensor([sc.near]), torch.tensor([sc.far])

            def predict_and_render():
                with torch.no_grad():
                    g = model(sc.images[ctx][None], sc.viewmats[ctx][None], sc.Ks[ctx][None], near, far)
                    r = args.resolution
                    return render(g, sc.viewmats[t][None], sc.Ks[t][None], r, r, background=white).color[0]

            if not warm:
                predict_and_render()
                warm = True
            start = time.perf_counter()
            pred = predict_and_render().permute(0, 3, 1, 2).clamp(0, 1)  # [T,3,H,W]
            rows["seconds"].append(time.perf_counter() - start)
            if features is not None:
                cosine, covered = roundtrip(model, features, sc, ctx, near, far, args.resolution)
                rows_rt["roundtrip_cosine"].append(cosine)
                rows_rt["roundtrip_covered"].append(covered)
            true = sc.images[t]
            nearer = torch.where(angles[t, i] <= angles[t, j], i, j)
            copy = sc.images[nearer]
            for name, img in (("predictor", pred), ("copy", copy)):
                for k in range(len(t)):
                    rows[f"{name}_psnr"].append(float(psnr(img[k], true[k])))
                    rows[f"{name}_ssim"].append(float(ssim(img[k : k + 1], true[k : k + 1])))
    summary = {k: float(np.mean(v)) for k, v in {**rows, **rows_rt}.items() if v}
    summary.update(
        scenes=len(scenes),
        pairs=len(rows["seconds"]),
        targets=len(rows["predictor_psnr"]),
        resolution=args.resolution,
        threads=torch.get_num_threads(),
    )
    print(json.dumps(summary, indent=2))
    if args.output:
        from studio.io import atomic_write_bytes

        atomic_write_bytes(args.output, json.dumps(summary, indent=2).encode())


if __name__ == "__main__":
    main()
