"""Speed of the triangle rasterizer backends: ``studio.mesh.rasterize`` + ``interpolate``, forward
and backward (to the clip-space vertices and the attributes).

CPU: ``studio`` (cuda/ C++ kernels) against ``torch`` (the readable reference) on a displaced
torus of 50k triangles (default) seen at 256x256 through ``clip_from_opencv``, RGB vertex
colours; the backward takes random weights of colour and depth as the output gradients (the
gradient of their weighted sum, without timing a loss's own operations): one warm-up, then the best of a few
repeats (the two backends interleaved, so both see the same machine load), the ratio torch/studio of
the best times and, in brackets, the median ratio of back-to-back repeats (``_timing.paired_ratio``:
steadier where the machine's speed drifts), and the parity (forward: number of differing pixels/values,
gradients: worst ||ga-gb||/||gb||). With CUDA it also times the studio CUDA kernels against the torch
reference on the GPU (both checked against the studio CPU results).

    python benchmarks/mesh_rasterize.py [--repeats 10] [--torch-repeats 5] [--scenes 50000x256 ...] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from _timing import best_of, interleaved, paired_ratio

from studio.cameras import clip_from_opencv, intrinsics_from_fov, look_at
from studio.mesh import interpolate, rasterize


def torus_mesh(n_faces: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A bumpy torus (major radius 0.7, minor 0.3) with about n_faces triangles: (verts [V,3], faces [F,3])."""
    cols = max(3, int(round(math.sqrt(n_faces / 2 * 8 / 5))))
    rows = max(3, n_faces // (2 * cols))
    a = torch.arange(rows, dtype=torch.float32)[:, None] * (2 * math.pi / rows)
    b = torch.arange(cols, dtype=torch.float32)[None, :] * (2 * math.pi / cols)
    r = 0.3 + 0.02 * torch.sin(7 * a) * torch.cos(5 * b)
    x = (0.7 + r * torch.cos(a)) * torch.cos(b)
    y = (0.7 + r * torch.cos(a)) * torch.sin(b)
    z = r * torch.sin(a)
    verts = torch.stack([x, y, z], -1).reshape(-1, 3)
    i, j = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    v00 = i * cols + j
    v01 = i * cols + (j + 1) % cols
    v10 = ((i + 1) % rows) * cols + j
    v11 = ((i + 1) % rows) * cols + (j + 1) % cols
    faces = torch.cat(
        [torch.stack([v00, v10, v11], -1).reshape(-1, 3), torch.stack([v00, v11, v01], -1).reshape(-1, 3)]
    )
    return verts, faces


def make_scene(n_faces: int, resolution: int):
    verts, faces = torus_mesh(n_faces)
    viewmat = look_at(torch.tensor([0.0, -2.2, 1.3]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    K = intrinsics_from_fov(50.0, resolution, resolution)
    clip = clip_from_opencv(viewmat, K, resolution, resolution, 0.1, 10.0)
    verts_clip = (torch.cat([verts, torch.ones(len(verts), 1)], -1) @ clip.T)[None].contiguous()
    colors = torch.rand(len(verts), 3, generator=torch.Generator().manual_seed(0))
    return verts_clip, faces, colors


def render_step(verts_clip, faces, colors, resolution, backend, device):
    v = verts_clip.detach().to(device).requires_grad_(True)  # own leaves per backend
    c = colors.detach().to(device).requires_grad_(True)
    f = faces.to(device)
    gen = torch.Generator().manual_seed(1)
    w_img = torch.rand(1, resolution, resolution, 3, generator=gen).to(device)
    w_depth = torch.rand(1, resolution, resolution, generator=gen).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        v.grad = c.grad = None
        sync()
        t0 = time.perf_counter()
        bary, tri_id, depth = rasterize(v, f, resolution, resolution, backend=backend)
        img = interpolate(c, bary, tri_id, f, backend=backend)
        sync()
        t1 = time.perf_counter()
        torch.autograd.backward((img, depth), (w_img, w_depth))  # = d/d(inputs) of sum(w_img img) + sum(w_depth depth)
        sync()
        t2 = time.perf_counter()
        outs = tuple(t.detach().cpu() for t in (bary, tri_id, depth, img))
        return t1 - t0, t2 - t1, outs, (v.grad.cpu(), c.grad.cpu())

    return step


def parity(outs, grads, ref_outs, ref_grads) -> str:
    n_diff = sum(int((a != b).sum()) for a, b in zip(outs, ref_outs))
    g = max(float((a - b).norm() / b.norm()) for a, b in zip(grads, ref_grads))
    return f"fwd {n_diff} values differ, grad {g:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--torch-repeats", type=int, default=5)
    parser.add_argument("--scenes", nargs="+", default=["50000x256"], help="FACESxRESOLUTION")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    has_cuda = torch.cuda.is_available()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
        + (f", {torch.cuda.get_device_name()}" if has_cuda else "")
    )
    rows = []
    for spec in args.scenes:
        n, res = (int(x) for x in spec.split("x"))
        verts_clip, faces, colors = make_scene(n, res)
        label = f"{faces.shape[0] / 1000:.0f}k tris @ {res}x{res}"
        ((f_t, b_t, o_t, g_t), tot_t), ((f_s, b_s, o_s, g_s), tot_s) = interleaved(
            (render_step(verts_clip, faces, colors, res, "torch", "cpu"), args.torch_repeats),
            (render_step(verts_clip, faces, colors, res, "studio", "cpu"), args.repeats),
        )
        cover = float((o_t[1] >= 0).float().mean())
        rows.append((label, "torch", "cpu", f_t, b_t, "", f"coverage {cover:.2f}"))
        speedup = f"{(f_t + b_t) / (f_s + b_s):.1f}x (paired {paired_ratio(tot_t, tot_s):.1f}x)"
        rows.append((label, "studio", "cpu", f_s, b_s, speedup, parity(o_s, g_s, o_t, g_t)))
        if has_cuda:
            (f_tc, b_tc, o_tc, g_tc), (f_c, b_c, o_c, g_c) = best_of(
                (render_step(verts_clip, faces, colors, res, "torch", "cuda"), args.repeats),
                (render_step(verts_clip, faces, colors, res, "studio", "cuda"), args.repeats),
            )
            rows.append((label, "torch", "cuda", f_tc, b_tc, "", parity(o_tc, g_tc, o_s, g_s) + " vs studio-cpu"))
            rows.append(
                (
                    label,
                    "studio",
                    "cuda",
                    f_c,
                    b_c,
                    f"{(f_tc + b_tc) / (f_c + b_c):.1f}x vs torch-cuda",
                    parity(o_c, g_c, o_s, g_s) + " vs studio-cpu",
                )
            )
    header = ("scene", "backend", "device", "forward ms", "backward ms", "total ms", "speed-up", "parity")
    table = [header] + [
        (s, b, d, f"{1e3 * f:.1f}", f"{1e3 * bw:.1f}", f"{1e3 * (f + bw):.1f}", ratio, par)
        for s, b, d, f, bw, ratio, par in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


if __name__ == "__main__":
    main()
