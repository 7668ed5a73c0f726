"""The CUDA variant of the 'gauss' extension compiles, links and imports (no GPU needed), and,
where a GPU exists, its CUDA kernels match the CPU kernels.

Without a GPU the build needs nvcc (CUDA_HOME, default /usr/local/cuda-13.0) and an explicit
TORCH_CUDA_ARCH_LIST. The build is cached like any other (``studio.ext.build_dir``): the first
run compiles for about 2-3 minutes, later runs only import.
"""

from __future__ import annotations

import pytest
import torch
from conftest import cuda_extension  # tests/ is on sys.path

from studio.cameras import intrinsics_from_fov, orbit_viewmats
from studio.render import rasterize
from studio.render._torch_impl import rasterize_to_pixels_torch
from studio.render.tiles import isect_tiles


@pytest.fixture(scope="module")
def cuda_ext():
    yield from cuda_extension("gauss")


def test_cuda_extension_builds_and_runs_on_cpu(cuda_ext):
    assert cuda_ext.with_cuda
    # the CUDA build carries the CPU kernels too: check them against the torch reference
    gen = torch.Generator().manual_seed(0)
    width, height, n = 20, 18, 30
    means2d = torch.rand(1, n, 2, generator=gen) * torch.tensor([width, height])
    conics = torch.tensor([0.2, 0.05, 0.3]).expand(1, n, 3).contiguous()
    values = torch.rand(1, n, 4, generator=gen)
    opacities = torch.rand(1, n, generator=gen)
    isect = isect_tiles(
        means2d, torch.full((1, n), 8, dtype=torch.int32), torch.rand(1, n, generator=gen), width, height
    )
    colors, alphas, final_T, last_ids = cuda_ext.rasterize_fwd(
        means2d, conics, values, opacities, width, height, isect.isect_offsets, isect.flatten_ids
    )
    ref_colors, ref_alphas = rasterize_to_pixels_torch(means2d, conics, values, opacities, width, height, isect)
    assert torch.allclose(colors, ref_colors, atol=1e-5) and torch.allclose(alphas, ref_alphas, atol=1e-5)
    assert torch.allclose(final_T, 1.0 - alphas[..., 0]) and (last_ids >= 0).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("n_channels", [3, 17, 49])
def test_cuda_kernels_match_cpu(cuda_ext, n_channels):
    gen = torch.Generator().manual_seed(n_channels)
    n, width, height = 3000, 77, 61
    params = {
        "means": 0.7 * (2.0 * torch.rand(n, 3, generator=gen) - 1.0),
        "quats": torch.randn(n, 4, generator=gen),
        "scales": 0.01 + 0.08 * torch.rand(n, 3, generator=gen),
        "opacities": torch.rand(n, generator=gen),
        "colors": torch.rand(n, n_channels, generator=gen),
    }
    viewmats = orbit_viewmats(2, 3.0)
    Ks = intrinsics_from_fov(50.0, width, height).expand(2, 3, 3)
    results = {}
    for device in ("cpu", "cuda"):
        leaves = {k: v.detach().to(device).requires_grad_(True) for k, v in params.items()}
        out = rasterize(*leaves.values(), viewmats.to(device), Ks.to(device), width, height, backend="studio")
        g2 = torch.Generator().manual_seed(3)
        images = (out.color, out.alpha, out.depth)
        sum((img * torch.rand(img.shape, generator=g2).to(device)).sum() for img in images).backward()
        results[device] = ([img.detach().cpu() for img in images], {k: v.grad.cpu() for k, v in leaves.items()})
    (images_g, grads_g), (images_c, grads_c) = results["cuda"], results["cpu"]
    for a, b in zip(images_g, images_c):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-4
    for name, gb in grads_c.items():
        assert float((grads_g[name] - gb).norm() / gb.norm()) < 1e-3, name
