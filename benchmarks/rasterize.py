"""Speed of the Gaussian rasterizer backends, forward + backward through ``studio.render.rasterize``.

CPU: ``studio`` (cuda/ C++ kernels) against ``torch`` (the readable reference) on 20k Gaussians at
128x128, the same count with 1.7x larger Gaussians (about 3x the pixel-Gaussian pairs), and 100k
Gaussians at 256x256 (RGB colours, default options): one warm-up, then the best of a few repeats
(backends interleaved: ``_timing.best_of``), and the ratio torch/studio. Next to the times it
prints the scene's pixel-Gaussian pairs above alpha 1/255 (``count_pairs``: every pair of the tile
lists a kernel composites unless its pixel is saturated) and their rate, pairs per second of forward +
backward. ``--shared`` times everything while another 2-thread torch job (matrix products in a
loop, a subprocess) runs, as on a machine shared with a training run or a browser. With CUDA it
also times studio-CUDA against gsplat on the same scenes and prints the parity of the CUDA kernels
with the CPU results.

    python benchmarks/rasterize.py [--repeats 10] [--torch-repeats 2] [--shared]
        [--scenes 20000x128 20000x128x1.7 100000x256]   # N x RESOLUTION [x SCALE]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from typing import Callable, Iterator

import torch
from _timing import best_of

from studio.cameras import intrinsics_from_fov, orbit_viewmats
from studio.render import rasterize
from studio.render._torch_impl import count_pairs
from studio.render.tiles import TileIntersections

# The competing job of --shared: 2 threads of 512x512 matrix products until killed; "ready" once running.
COMPETING_JOB = """
import torch
torch.set_num_threads(2)
a = torch.randn(512, 512)
print("ready", flush=True)
while True:
    a = torch.tanh(a @ a)
"""


def make_scene(
    n: int, resolution: int, scale: float = 1.0, seed: int = 0
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """N Gaussians in [-0.8, 0.8]^3 with scales scale * (0.01-0.05) and random opacities and colours,
    seen by one camera at distance 3 (50 degree field of view). Returns (params, viewmats [1,4,4], Ks [1,3,3])."""
    gen = torch.Generator().manual_seed(seed)
    params = {
        "means": 0.8 * (2.0 * torch.rand(n, 3, generator=gen) - 1.0),
        "quats": torch.randn(n, 4, generator=gen),
        "scales": scale * (0.01 + 0.04 * torch.rand(n, 3, generator=gen)),
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


def parse_scene(spec: str) -> tuple[int, int, float]:
    """'NxRESOLUTION' or 'NxRESOLUTIONxSCALE' -> (N, resolution, scale)."""
    parts = spec.split("x")
    if len(parts) not in (2, 3):
        raise SystemExit(f"A scene is NxRESOLUTION or NxRESOLUTIONxSCALE (e.g. 20000x128x1.7); got {spec!r}.")
    return int(parts[0]), int(parts[1]), float(parts[2]) if len(parts) == 3 else 1.0


def scene_pairs(params, viewmats, Ks, resolution) -> int:
    """Pixel-Gaussian pairs above alpha 1/255 of the scene (``count_pairs`` on the tile lists)."""
    with torch.no_grad():
        meta = rasterize(*params.values(), viewmats, Ks, resolution, resolution, backend="studio").meta
    isect = TileIntersections(
        meta["tiles_per_gauss"],
        meta["isect_ids"],
        meta["flatten_ids"],
        meta["isect_offsets"],
        meta["tile_width"],
        meta["tile_height"],
    )
    return count_pairs(meta["means2d"], meta["conics"], meta["opacities"], resolution, resolution, isect)


@contextlib.contextmanager
def competing_job(enabled: bool) -> Iterator[None]:
    """While inside, another 2-thread torch process multiplies matrices (when enabled)."""
    if not enabled:
        yield
        return
    job = subprocess.Popen([sys.executable, "-c", COMPETING_JOB], stdout=subprocess.PIPE, text=True)
    try:
        if job.stdout.readline().strip() != "ready":
            raise RuntimeError("The competing 2-thread job of --shared did not start.")
        yield
    finally:
        job.kill()
        job.wait()


def parity(images, grads, ref_images, ref_grads) -> str:
    """Forward max|a-b|/max|b| over color/alpha/depth and worst per-parameter ||ga-gb||/||gb||."""
    fwd = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(images, ref_images))
    bwd = max(float((grads[k] - g).norm() / g.norm()) for k, g in ref_grads.items())
    return f"fwd {fwd:.1e}, grad {bwd:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats of the fast backends")
    parser.add_argument("--torch-repeats", type=int, default=2, help="timed repeats of the torch reference")
    parser.add_argument(
        "--scenes",
        nargs="+",
        default=["20000x128", "20000x128x1.7", "100000x256"],
        help="NxRESOLUTION or NxRESOLUTIONxSCALE (Gaussian sizes times SCALE)",
    )
    parser.add_argument("--shared", action="store_true", help="time while another 2-thread torch job runs")
    args = parser.parse_args()
    scenes = [parse_scene(spec) for spec in args.scenes]
    has_cuda = torch.cuda.is_available()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
        + (f", {torch.cuda.get_device_name()}" if has_cuda else "")
        + (", shared with another 2-thread job" if args.shared else "")
    )
    with competing_job(args.shared):
        rows = time_scenes(scenes, args.repeats, args.torch_repeats, has_cuda)

    print_table(rows)


def print_table(rows: list[tuple]) -> None:
    """Rows of ``time_scenes`` as aligned columns (times in ms, pair rates in millions per second)."""
    header = ("scene", "pairs", "backend", "device", "fwd ms", "bwd ms", "total ms", "Mpairs/s", "speed-up", "parity")
    table = [header]
    for scene, pairs, backend, device, fwd, bwd, ratio, par in rows:
        times = (f"{1e3 * fwd:.1f}", f"{1e3 * bwd:.1f}", f"{1e3 * (fwd + bwd):.1f}", f"{pairs / (fwd + bwd) / 1e6:.1f}")
        table.append((scene, f"{pairs / 1e6:.2f}M", backend, device, *times, ratio, par))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def time_scenes(scenes: list[tuple[int, int, float]], repeats: int, torch_repeats: int, has_cuda: bool) -> list[tuple]:
    """Times every backend on every scene; rows (scene, pairs, backend, device, forward s, backward s,
    speed-up, parity)."""
    rows = []
    for n, resolution, scale in scenes:
        params, viewmats, Ks = make_scene(n, resolution, scale)
        label = f"{n // 1000}k @ {resolution}x{resolution}" + (f", scales x{scale:g}" if scale != 1.0 else "")
        pairs = scene_pairs(params, viewmats, Ks, resolution)
        (f_t, b_t, img_t, grad_t), (f_s, b_s, img_s, grad_s) = best_of(
            (render_step(params, viewmats, Ks, resolution, "torch", "cpu"), torch_repeats),
            (render_step(params, viewmats, Ks, resolution, "studio", "cpu"), repeats),
        )
        rows.append((label, pairs, "torch", "cpu", f_t, b_t, "", ""))
        rows.append(
            (
                label,
                pairs,
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
                (render_step(params, viewmats, Ks, resolution, "gsplat", "cuda"), repeats),
                (render_step(params, viewmats, Ks, resolution, "studio", "cuda"), repeats),
            )
            rows.append(
                (label, pairs, "gsplat", "cuda", f_g, b_g, "", parity(img_g, grad_g, img_s, grad_s) + " vs studio-cpu")
            )
            rows.append(
                (
                    label,
                    pairs,
                    "studio",
                    "cuda",
                    f_c,
                    b_c,
                    f"{(f_g + b_g) / (f_c + b_c):.2f}x vs gsplat",
                    parity(img_c, grad_c, img_s, grad_s) + " vs studio-cpu",
                )
            )
    return rows


if __name__ == "__main__":
    main()
