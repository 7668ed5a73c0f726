"""Speed of the Gaussian rasterizer backends, forward + backward through ``studio.render.rasterize``.

CPU: ``studio`` (cuda/ C++ kernels) against ``torch`` (the readable reference) on 20k Gaussians at
128x128 and 100k Gaussians at 256x256 (RGB colours, default options): one warm-up, then the best
of a few repeats (backends interleaved: ``_timing.best_of``), and the ratio torch/studio. With CUDA it also times studio-CUDA against gsplat
on the same scenes and prints the parity of the CUDA kernels with the CPU results.

    python benchmarks/rasterize.py [--repeats 10] [--torch-repeats 2] [--scenes 20000x128 100000x256]
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from _timing import best_of

from studio.cameras import intrinsics_from_fov, orbit_viewmats
from studio.render import rasterize


def make_scene(n: int, resolution: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """N Gaussians in [-0.8, 0.8]^3 with scales 0.01-0.05 and random opacities and colours, seen by
    one camera at distance 3 (50 degree field of view). Returns (params, viewmats [1,4,4], Ks [1,3,3])."""
    gen = torch.Generator().manual_seed(seed)
    params = {
        "means": 0.8 * (2.0 * torch.rand(n, 3, generator=gen) - 1.0),
        "quats": torch.randn(n, 4, generator=gen),
        "scales": 0.01 + 0.04 * torch.rand(n, 3, generator=gen),
        "opacities": torch.rand(n, generator=gen),
        "colors": torch.rand(n, 3, generator=gen),
    }
    viewmats = orbit_viewmats(1, 3.0, elevation_deg=20.0)
    Ks = intrinsics_from_fov(50.0, resolution, resolution)[None]
    return params, viewmats, Ks


def render_step(params, viewmats, Ks, resolution, backend, device) -> Callable[[], tuple[float, float, tuple, dict]]:
    """A closure that renders once, backpropagates a fixed random weighting of color, alpha and
    depth, and returns (forward s, backward s, images, gradients)."""
    leaves = {k: v.detach().to(device).requires_grad_(True) for k, v in params.items()}  # own leaves per backend
    viewmats, Ks = viewmats.to(device), Ks.to(device)
    gen = torch.Generator().manual_seed(1)
    weights = [torch.rand(1, resolution, resolution, d, generator=gen).to(device) for d in (3, 1, 1)]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        for leaf in leaves.values():
            leaf.grad = None
        sync()
        t0 = time.perf_counter()
        out = rasterize(*leaves.values(), viewmats, Ks, resolution, resolution, backend=backend)
        sync()
        t1 = time.perf_counter()
        images = (out.color, out.alpha, out.depth)
        sum((img * w).sum() for img, w in zip(images, weights)).backward()
        sync()
        t2 = time.perf_counter()
        grads = {k: v.grad.detach().cpu() for k, v in leaves.items()}
        return t1 - t0, t2 - t1, tuple(img.detach().cpu() for img in images), grads

    return step


def parity(images, grads, ref_images, ref_grads) -> str:
    """Forward max|a-b|/max|b| over color/alpha/depth and worst per-parameter ||ga-gb||/||gb||."""
    fwd = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(images, ref_images))
    bwd = max(float((grads[k] - g).norm() / g.norm()) for k, g in ref_grads.items())
    return f"fwd {fwd:.1e}, grad {bwd:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats of the fast backends")
    parser.add_argument("--torch-repeats", type=int, default=2, help="timed repeats of the torch reference")
    parser.add_argument("--scenes", nargs="+", default=["20000x128", "100000x256"], help="NxRESOLUTION")
    args = parser.parse_args()
    has_cuda = torch.cuda.is_available()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
        + (f", {torch.cuda.get_device_name()}" if has_cuda else "")
    )

    rows = []
    for spec in args.scenes:
        n, resolution = (int(x) for x in spec.split("x"))
        params, viewmats, Ks = make_scene(n, resolution)
        label = f"{n // 1000}k @ {resolution}x{resolution}"
        (f_t, b_t, img_t, grad_t), (f_s, b_s, img_s, grad_s) = best_of(
            (render_step(params, viewmats, Ks, resolution, "torch", "cpu"), args.torch_repeats),
            (render_step(params, viewmats, Ks, resolution, "studio", "cpu"), args.repeats),
        )
        rows.append((label, "torch", "cpu", f_t, b_t, "", ""))
        rows.append(
            (
                label,
                "studio",
                "cpu",
                f_s,
                b_s,
                f"{(f_t + b_t) / (f_s + b_s):.1f}x",
                parity(img_s, grad_s, img_t, grad_t),
            )
        )
        if has_cuda:
            (f_g, b_g, img_g, grad_g), (f_c, b_c, img_c, grad_c) = best_of(
                (render_step(params, viewmats, Ks, resolution, "gsplat", "cuda"), args.repeats),
                (render_step(params, viewmats, Ks, resolution, "studio", "cuda"), args.repeats),
            )
            rows.append(
                (label, "gsplat", "cuda", f_g, b_g, "", parity(img_g, grad_g, img_s, grad_s) + " vs studio-cpu")
            )
            rows.append(
                (
                    label,
                    "studio",
                    "cuda",
                    f_c,
                    b_c,
                    f"{(f_g + b_g) / (f_c + b_c):.2f}x vs gsplat",
                    parity(img_c, grad_c, img_s, grad_s) + " vs studio-cpu",
                )
            )

    header = ("scene", "backend", "device", "forward ms", "backward ms", "total ms", "speed-up", "parity")
    table = [header] + [
        (s, b, d, f"{1e3 * f:.1f}", f"{1e3 * bw:.1f}", f"{1e3 * (f + bw):.1f}", ratio, par)
        for s, b, d, f, bw, ratio, par in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    main()
