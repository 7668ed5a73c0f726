"""Where the texture-stage guidance of a ``dreamcraft3d`` run points, measured against held-out ground truth.

For a run on a NeRF-synthetic dataset (``studio eval image-to-3d`` makes such runs), it renders the
test views at the novel-view prior's resolution and prints:

* the PSNR against the ground truth (same resolution, over white) of the renders, of SDEdit
  augmentations of them (``studio.guidance.bsd.augment_views``; t' ranges x CFG scales) and of pure
  samples of the prior given the reference image and the relative camera;
* for guidance directions g, the cosine between w(t) g and x - x_gt on the rendered object's pixels,
  averaged over noise draws: positive means a descent step moves the renders toward the ground
  truth. Directions of the prior: its CFG direction eps_c - eps_u, its denoising direction
  eps_u - eps, SDS at CFG 1 and 5. After one bootstrap round per augmentation CFG scale (16 orbit
  views, view-dependent t' as the run; the bootstrapped copy fine-tuned on the augmented renders,
  a render-score copy with the same recipe on the raw renders): boot_c - pre_c (BSD with an
  untrained render-score copy), boot_c - lora_c and boot_cfg2 - lora_c.

    python benchmarks/bsd_directions.py --load-config RUN/config.yml --data DATASET [--draws 32]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-config", type=Path, required=True, help="config.yml of a dreamcraft3d run")
    parser.add_argument("--data", type=Path, required=True, help="its NeRF-synthetic dataset (test views)")
    parser.add_argument("--draws", type=int, default=32, help="noise draws per cosine")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F

    from studio.cameras.sampling import OrbitViews, orbit_cameras
    from studio.data.nerf_synthetic import read_nerf_synthetic
    from studio.eval.image_to_3d import orbit_of_c2w
    from studio.eval.inverse import over_white, read_image
    from studio.guidance.bsd import augment_views, finetune, view_dependent_t_range
    from studio.guidance.sds import model_latents, sds_weight
    from studio.metrics import psnr
    from studio.models.runs import load_run
    from studio.priors.sampling import sample

    torch.manual_seed(args.seed)
    pipeline = load_run(args.load_config, device="cpu", with_data=True).pipeline
    model = pipeline.model
    _, batch = pipeline.datamanager.next_train(0)
    prior = model.nvs_guidance.prior
    S = prior.image_size
    test = read_nerf_synthetic(args.data, "test")
    orbits = torch.tensor([orbit_of_c2w(c) for c in test.camera_to_worlds], dtype=torch.float32)
    fov = math.degrees(2.0 * math.atan(0.5 * test.width / test.fx))
    views = OrbitViews(orbits[:, 0], orbits[:, 1], orbits[:, 2], torch.full((len(orbits),), fov))

    with torch.no_grad():
        rgb, alpha, _, _ = model.render_any(orbit_cameras(views, S))
        renders = rgb.permute(0, 3, 1, 2)
        gt = torch.stack([torch.from_numpy(over_white(read_image(p))).float() for p in test.image_paths]).permute(
            0, 3, 1, 2
        )
        gt = F.interpolate(gt, (S, S), mode="bilinear", antialias=True, align_corners=False)
        x, x_gt = model_latents(prior, renders), model_latents(prior, gt)
        mask = (alpha.permute(0, 3, 1, 2) > 0.5).float()
        target = (x - x_gt) * mask
        cond, uncond = model.nvs_conditions(batch, views)
        print(
            f"{len(orbits)} test views at {S}x{S}: renders {float(psnr(renders, gt)):.2f} dB against the ground truth"
        )
        for lo, hi in ((0.05, 0.2), (0.2, 0.5)):
            row = [
                f"{float(psnr(prior.decode(augment_views(prior, x, cond, (lo, hi), uncond, s, 20, as_latents=True)), gt)):.2f}"
                for s in (1.0, 2.0, 7.5)
            ]
            print(f"  SDEdit t' in [{lo}, {hi}], CFG 1 / 2 / 7.5: {' / '.join(row)} dB")
        print(
            f"  pure samples, CFG 2: {float(psnr(prior.decode(sample(prior, len(x), cond, uncond, 2.0, 20)), gt)):.2f} dB"
        )

    def cosines(models, directions):
        """mean +- s.e. over draws of cos(w(t) g * mask, target) for each direction g(eps outputs)."""
        found = {k: [] for k in directions}
        T = prior.num_train_timesteps
        for _ in range(args.draws):
            t = (torch.rand(len(x)) * 0.45 + 0.05).mul(T).long()  # the texture schedule's widest range
            eps = torch.randn_like(x)
            x_t = prior.add_noise(x, eps, t)
            w = sds_weight(prior.alphas_cumprod[t].to(x), "sds").view(-1, 1, 1, 1)
            out = {"eps": eps}
            with torch.no_grad():
                for name, m in models.items():
                    out[name + "_c"] = m.to_eps(x_t, t, m.predict(x_t, t, cond))
                    out[name + "_u"] = m.to_eps(x_t, t, m.predict(x_t, t, uncond))
            for k, g in directions.items():
                v = w * g(out) * mask
                found[k].append(float((v * target).sum() / (v.norm() * target.norm() + 1e-12)))
        for k, v in found.items():
            print(f"  {k:34s} cos {np.mean(v):+.3f} +- {np.std(v) / math.sqrt(len(v)):.3f}")

    print("cosine with renders - ground truth (positive: toward the ground truth)")
    cosines(
        {"pre": prior},
        {
            "CFG direction eps_c - eps_u": lambda o: o["pre_c"] - o["pre_u"],
            "denoising eps_u - eps": lambda o: o["pre_u"] - o["eps"],
            "SDS, CFG 1": lambda o: o["pre_c"] - o["eps"],
            "SDS, CFG 5": lambda o: o["pre_u"] + 5.0 * (o["pre_c"] - o["pre_u"]) - o["eps"],
        },
    )

    bsd = model.texture_guidance
    orbit, offsets = model.bootstrap_orbit(batch)
    b_cond, b_uncond = model.nvs_conditions(batch, orbit)
    t_range = view_dependent_t_range(offsets, *model.config.augment_t_range)
    with torch.no_grad():
        raw = model_latents(prior, model.render_any(orbit_cameras(orbit, S))[0].permute(0, 3, 1, 2))
        first = b_cond.index(slice(0, 1))
        class_latents = sample(prior, 8, first, prior.unconditional(first), 7.5, 20)

    def tuned(data):
        copy = prior.clone_trainable()
        finetune(
            copy,
            data,
            b_cond,
            bsd.finetune_steps,
            bsd.finetune_lr,
            bsd.prior_preservation_weight,
            class_latents,
            first,
            b_uncond,
            bsd.finetune_batch,
            generator=torch.Generator().manual_seed(args.seed),
            as_latents=True,
        )
        return copy

    lora = tuned(raw)
    for scale in (7.5, 1.0):
        with torch.no_grad():
            augmented = augment_views(prior, raw, b_cond, t_range, b_uncond, scale, 20, as_latents=True)
        print(f"after a bootstrap round with augmentation CFG {scale}")
        cosines(
            {"pre": prior, "boot": tuned(augmented), "lora": lora},
            {
                "boot_c - pre_c": lambda o: o["boot_c"] - o["pre_c"],
                "boot_c - lora_c": lambda o: o["boot_c"] - o["lora_c"],
                "boot_cfg2 - lora_c": lambda o: o["boot_u"] + 2.0 * (o["boot_c"] - o["boot_u"]) - o["lora_c"],
            },
        )


if __name__ == "__main__":
    main()
