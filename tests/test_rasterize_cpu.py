"""The CPU rasterizer's own machinery: AVX2 tile loops against the scalar ones, reproducible
backward, the extension's tile lists against ``isect_tiles``, and opacity-aware tile extents that
drop no pixel-Gaussian pair.

The first test to run builds the CPU extension once (about 1-2 minutes, then cached).
"""

from __future__ import annotations

import pytest
import torch

from studio.cameras import intrinsics_from_fov, orbit_viewmats
from studio.ext import load_extension
from studio.render._studio_impl import isect_tiles_studio, rasterize_to_pixels_studio
from studio.render._torch_impl import count_pairs
from studio.render.projection import project_gaussians
from studio.render.tiles import isect_tiles, tile_extents


@pytest.fixture(scope="module")
def ext():
    return load_extension("gauss", with_cuda=False)


def _gaussians_2d(n_cams: int, n: int, dim: int, width: int, height: int, seed: int) -> dict[str, torch.Tensor]:
    """Random 2D Gaussians over (and a little beyond) the image: anisotropic conics, a few opaque
    ones (saturated pixels, the 0.999 clamp) and a few below alpha 1/255 everywhere."""
    gen = torch.Generator().manual_seed(seed)
    means2d = torch.rand(n_cams, n, 2, generator=gen) * torch.tensor([width, height]) * 1.2 - 5.0
    a = 0.02 + 0.5 * torch.rand(n_cams, n, generator=gen)
    c = 0.02 + 0.5 * torch.rand(n_cams, n, generator=gen)
    b = (2.0 * torch.rand(n_cams, n, generator=gen) - 1.0) * torch.sqrt(a * c) * 0.95
    opacities = torch.rand(n_cams, n, generator=gen)
    opacities[:, :10] = 1.0
    opacities[:, 10:15] = 0.003
    det = a * c - b * b
    radii = torch.ceil(3.0 * torch.sqrt(torch.maximum(c, a) / det)).to(torch.int32)  # >= 3 sigma on both axes
    return {
        "means2d": means2d,
        "conics": torch.stack([a, b, c], dim=-1),
        "values": torch.rand(n_cams, n, dim, generator=gen),
        "opacities": opacities,
        "depths": 1.0 + torch.rand(n_cams, n, generator=gen),
        "radii": radii,
    }


def _composite(scene, width, height, isect, seed=5):
    """Studio forward + backward of a random weighting of colour and alpha: (image, alpha, grads)."""
    leaves = [scene[k].clone().requires_grad_(True) for k in ("means2d", "conics", "values", "opacities")]
    img, alpha = rasterize_to_pixels_studio(*leaves, width, height, isect)
    gen = torch.Generator().manual_seed(seed)
    loss = (img * torch.rand(img.shape, generator=gen)).sum() + (alpha * torch.rand(alpha.shape, generator=gen)).sum()
    loss.backward()
    return img.detach(), alpha.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("n_channels", [4, 19])
def test_avx2_matches_scalar(ext, n_channels):
    if ext.cpu_simd() != "avx2":
        pytest.skip("this CPU has no AVX2/FMA: only the scalar loops run")
    width, height = 53, 38
    scene = _gaussians_2d(2, 400, n_channels, width, height, seed=n_channels)
    extents = tile_extents(scene["radii"], scene["conics"], scene["opacities"])
    isect = isect_tiles_studio(scene["means2d"], extents, scene["depths"], width, height)
    previous = ext.set_cpu_simd(False)
    try:
        assert ext.cpu_simd() == "scalar"
        scalar = _composite(scene, width, height, isect)
    finally:
        ext.set_cpu_simd(previous)
    assert ext.cpu_simd() == "avx2"
    simd = _composite(scene, width, height, isect)
    assert (scalar[1] > 0.999).any(), "the scene should saturate some pixels"
    for got, want in zip(simd[:2], scalar[:2]):
        assert float((got - want).abs().max() / want.abs().max()) < 1e-5
    for got, want in zip(simd[2], scalar[2]):
        assert want.abs().sum() > 0
        assert float((got - want).norm() / want.norm()) < 1e-5


def test_backward_is_reproducible(ext):
    width, height = 70, 45
    scene = _gaussians_2d(1, 600, 3, width, height, seed=1)
    isect = isect_tiles_studio(
        scene["means2d"],
        tile_extents(scene["radii"], scene["conics"], scene["opacities"]),
        scene["depths"],
        width,
        height,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first, second = _composite(scene, width, height, isect), _composite(scene, width, height, isect)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(first[2], second[2]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("seed", range(6))
def test_extension_tile_lists_equal_isect_tiles(ext, seed):
    gen = torch.Generator().manual_seed(seed)
    n_cams, n, width, height = 1 + seed % 3, 300, 37 + 7 * seed, 29 + 5 * seed
    means2d = (torch.rand(n_cams, n, 2, generator=gen) * 1.4 - 0.2) * torch.tensor([width, height])
    extents = torch.rand(n_cams, n, 2, generator=gen) * 30.0
    extents[torch.rand(n_cams, n, generator=gen) < 0.2] = 0.0  # culled
    depths = torch.randint(1, 5, (n_cams, n), generator=gen).float()  # ties: the Gaussian index decides
    radii = torch.randint(0, 20, (n_cams, n), generator=gen, dtype=torch.int32)
    for sizes in (extents, radii):
        want = isect_tiles(means2d, sizes, depths, width, height)
        per_axis = sizes if sizes.ndim == 3 else sizes.float()[..., None].expand(n_cams, n, 2)
        got = isect_tiles_studio(means2d, per_axis, depths, width, height)
        assert want.flatten_ids.numel() > 0
        for name in ("tiles_per_gauss", "isect_ids", "flatten_ids", "isect_offsets"):
            assert torch.equal(getattr(got, name), getattr(want, name)), name


def test_tile_extents_drop_no_pair():
    width, height = 96, 80
    scene = _gaussians_2d(2, 500, 3, width, height, seed=3)
    extents = tile_extents(scene["radii"], scene["conics"], scene["opacities"])
    assert (extents <= scene["radii"][..., None]).all()
    assert (extents[:, 10:15] == 0).all(), "Gaussians below alpha 1/255 are culled"
    tight = isect_tiles(scene["means2d"], extents, scene["depths"], width, height)
    square = isect_tiles(scene["means2d"], scene["radii"], scene["depths"], width, height)
    assert tight.flatten_ids.numel() < 0.9 * square.flatten_ids.numel()
    pairs = [
        count_pairs(scene["means2d"], scene["conics"], scene["opacities"], width, height, isect)
        for isect in (tight, square)
    ]
    assert pairs[0] == pairs[1] > 0


def test_fused_projection_matches_torch():
    """The extension's projection (forward and backward) against projection.py under autograd, with
    Gaussians behind the near plane, beyond the clamped field of view and off the image, un-normalised
    quaternions and a loss on every output, culled Gaussians' conics included."""
    gen = torch.Generator().manual_seed(11)
    n, width, height = 2000, 96, 64
    params = {
        "means": 1.5 * torch.randn(n, 3, generator=gen),
        "quats": 3.0 * torch.randn(n, 4, generator=gen),
        "scales": 0.001 + 0.1 * torch.rand(n, 3, generator=gen),
        "viewmats": orbit_viewmats(3, 3.0, elevation_deg=20.0),
    }
    Ks = intrinsics_from_fov(50.0, width, height)[None].expand(3, 3, 3).contiguous()
    results = []
    for fused in (False, True):
        leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        proj = project_gaussians(*leaves.values(), Ks, width, height, fused=fused)
        weights = torch.Generator().manual_seed(3)
        loss = sum((t * torch.randn(t.shape, generator=weights)).sum() for t in proj[:3])
        loss.backward()
        results.append((proj, {k: v.grad for k, v in leaves.items()}))
    (ref, ref_grads), (fused, fused_grads) = results
    culled = ref.radii == 0
    assert 0.2 < culled.float().mean() < 0.9, "the scene exercises culling"
    assert torch.equal(fused.radii, ref.radii)
    for a, b in zip(fused[:3], ref[:3]):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-5
    for name, gb in ref_grads.items():
        assert float((fused_grads[name] - gb).norm() / gb.norm()) < 1e-5, name


def test_fused_tile_extents_match_torch():
    width, height = 96, 80
    scene = _gaussians_2d(2, 500, 3, width, height, seed=4)
    scene["conics"][0, 20] = torch.tensor([1.0, 2.0, 1.0])  # indefinite: keeps its radius
    scene["radii"][1, 30] = 0  # culled
    args = (scene["radii"], scene["conics"], scene["opacities"])
    reference, fused = tile_extents(*args), tile_extents(*args, fused=True)
    assert torch.allclose(fused, reference, rtol=1e-6, atol=0.0)
    assert fused[0, 20].tolist() == [float(scene["radii"][0, 20])] * 2 and fused[1, 30].tolist() == [0.0, 0.0]
    lists = [isect_tiles(scene["means2d"], e, scene["depths"], width, height) for e in (reference, fused)]
    assert torch.equal(lists[0].flatten_ids, lists[1].flatten_ids)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_fused_sh_colours_match_torch(degree):
    """SH colours and their gradients (coefficients, means) against sh.py under autograd, with
    colours clamped at 0 and a mean at a camera centre."""
    from studio.render.rasterize import _features

    gen = torch.Generator().manual_seed(degree)
    n = 400
    viewmats = orbit_viewmats(2, 3.0, elevation_deg=20.0)
    means = torch.randn(n, 3, generator=gen)
    means[0] = -(viewmats[0, :3, :3].T @ viewmats[0, :3, 3])  # the first camera's centre
    coeffs = 0.8 * torch.randn(n, 16, 3, generator=gen)
    results = []
    for fused in (False, True):
        m, c = means.clone().requires_grad_(True), coeffs.clone().requires_grad_(True)
        rgb = _features(m, c, viewmats, degree, 2, fused=fused)
        (rgb * torch.rand(rgb.shape, generator=torch.Generator().manual_seed(9))).sum().backward()
        results.append((rgb.detach(), c.grad, m.grad))
    (ref, ref_c, ref_m), (out, out_c, out_m) = results
    assert (ref == 0).any(), "some colours are clamped"
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(out_c, ref_c, atol=1e-5)
    if degree == 0:  # the colour does not depend on the direction
        assert ref_m is None and not out_m.any()
    else:  # [0] is at a camera centre, where both divide by eps
        assert torch.allclose(out_m[1:], ref_m[1:], rtol=1e-4, atol=1e-5)
