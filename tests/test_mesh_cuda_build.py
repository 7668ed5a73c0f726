"""The CUDA variant of the 'mesh' extension compiles, links and imports (no GPU needed), its CPU
kernels still match the torch reference, and, where a GPU exists, its CUDA kernels match the CPU
kernels (forward bit-exact, gradients to 1e-3).

Without a GPU the build needs nvcc (CUDA_HOME, default /usr/local/cuda-13.0) and an explicit
TORCH_CUDA_ARCH_LIST (set to 9.0 here when missing). Cached like any other build: the first run
compiles for a few minutes, later runs only import.
"""

from __future__ import annotations

import pytest
import torch
from conftest import cuda_extension  # tests/ is on sys.path (rootdir-relative imports)
from test_mesh_rasterize import random_scene

from studio.mesh import interpolate, rasterize
from studio.mesh._torch_impl import rasterize_torch


@pytest.fixture(scope="module")
def mesh_cuda_ext():
    yield from cuda_extension("mesh")


def test_mesh_cuda_extension_builds_and_runs_on_cpu(mesh_cuda_ext):
    assert mesh_cuda_ext.with_cuda
    verts_clip, faces = random_scene(300, 1, seed=4)
    bary, tri_id, depth = mesh_cuda_ext.rasterize_fwd(verts_clip, faces.int(), 40, 30)
    ref = rasterize_torch(verts_clip, faces, 40, 30)
    assert torch.equal(tri_id, ref[1]) and torch.equal(bary, ref[0]) and torch.equal(depth, ref[2])
    assert (tri_id >= 0).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("n_channels", [3, 9])
def test_mesh_cuda_kernels_match_cpu(mesh_cuda_ext, n_channels):
    verts_clip, faces = random_scene(4000, 2, seed=n_channels)
    attr = torch.rand(verts_clip.shape[1], n_channels, generator=torch.Generator().manual_seed(1))
    results = {}
    for device in ("cpu", "cuda"):
        v = verts_clip.detach().to(device).requires_grad_(True)
        a = attr.detach().to(device).requires_grad_(True)
        bary, tri_id, depth = rasterize(v, faces.to(device), 97, 65, backend="studio")
        img = interpolate(a, bary, tri_id, faces.to(device), backend="studio")
        gen = torch.Generator().manual_seed(3)
        loss = (img * torch.rand(img.shape, generator=gen).to(device)).sum()
        loss = loss + (depth * torch.rand(depth.shape, generator=gen).to(device)).sum()
        loss.backward()
        results[device] = [t.detach().cpu() for t in (bary, tri_id, depth, img, v.grad, a.grad)]
    cpu, gpu = results["cpu"], results["cuda"]
    for x, y in zip(cpu[:4], gpu[:4]):
        assert torch.equal(x, y)
    for x, y in zip(cpu[4:], gpu[4:]):
        assert float((x - y).norm() / x.norm()) < 1e-3
