"""Parity of the ``studio`` backend (cuda/ CPU kernels) with the ``torch`` reference, and of the
reference with an independent per-pixel brute force.

Parity as in DESIGN.md: forward ``max|a-b| / max|b| < 1e-4``, gradients ``||ga-gb|| / ||gb|| < 1e-3``.
The first test to run builds the CPU extension once (about 1-2 minutes, then cached).
"""

from __future__ import annotations

import math

import pytest
import torch

from studio.cameras import intrinsics_from_fov, look_at
from studio.render import rasterize
from studio.render._studio_impl import rasterize_to_pixels_studio
from studio.render._torch_impl import rasterize_to_pixels_torch
from studio.render.projection import project_gaussians
from studio.render.tiles import TILE_SIZE, isect_tiles

FWD_TOL = 1e-4
GRAD_TOL = 1e-3


def _cameras(n_cams: int, width: int, height: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """[C,4,4] viewmats at distance ~3 around the origin, [C,3,3] Ks with slightly different fovs."""
    viewmats, Ks = [], []
    for c in range(n_cams):
        az = 2.0 * math.pi * c / n_cams + 0.3
        eye = torch.tensor([3.0 * math.cos(az), 3.0 * math.sin(az), 0.8 + 0.2 * c])
        target = 0.1 * torch.randn(3, generator=gen)
        viewmats.append(look_at(eye, target, torch.tensor([0.0, 0.0, 1.0])))
        Ks.append(intrinsics_from_fov(45.0 + 5.0 * c, width, height))
    return torch.stack(viewmats), torch.stack(Ks)


def _scene(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Gaussians in a unit-ish cube, plus a few behind the cameras / far off-screen, and a
    dense, opaque cluster (saturated pixels, opacity 1 hits the 0.999 clamp)."""
    means = 0.7 * (2.0 * torch.rand(n, 3, generator=gen) - 1.0)
    means[: n // 20] *= 6.0  # far out: off-screen or behind some camera
    scales = 0.02 + 0.12 * torch.rand(n, 3, generator=gen)
    opacities = 0.05 + 0.95 * torch.rand(n, generator=gen)
    cluster = slice(n // 20, n // 20 + n // 8)
    means[cluster] = 0.15 * torch.randn(means[cluster].shape, generator=gen)
    opacities[cluster] = 0.9 + 0.1 * torch.rand(opacities[cluster].shape, generator=gen)
    opacities[cluster.start : cluster.start + 5] = 1.0
    return {
        "means": means,
        "quats": torch.randn(n, 4, generator=gen),
        "scales": scales,
        "opacities": opacities,
    }


def _rel_max(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _rel_norm(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _render_both(params, viewmats, Ks, width, height, background=None, sh_degree=None):
    """Render with both backends on leaf copies; loss = random weighted color + alpha + depth."""
    results = {}
    for backend in ("torch", "studio"):
        leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        out = rasterize(
            leaves["means"],
            leaves["quats"],
            leaves["scales"],
            leaves["opacities"],
            leaves["colors"],
            viewmats,
            Ks,
            width,
            height,
            background=background,
            backend=backend,
            sh_degree=sh_degree,
        )
        gen = torch.Generator().manual_seed(7)
        loss = sum((img * torch.rand(img.shape, generator=gen)).sum() for img in (out.color, out.alpha, out.depth))
        loss.backward()
        results[backend] = (out, {k: v.grad for k, v in leaves.items()})
    return results


def _check_parity(results) -> None:
    (out_s, grads_s), (out_t, grads_t) = results["studio"], results["torch"]
    for name in ("color", "alpha", "depth"):
        a, b = getattr(out_s, name), getattr(out_t, name)
        assert a.shape == b.shape
        assert _rel_max(a, b) < FWD_TOL, name
    for name, gb in grads_t.items():
        assert gb is not None and gb.abs().sum() > 0, name
        assert _rel_norm(grads_s[name], gb) < GRAD_TOL, name
    assert out_s.meta["backend"] == "studio"
    assert out_s.alpha.min() >= 0.0 and out_s.alpha.max() < 1.0


@pytest.mark.parametrize(
    "n_channels, n_cams, width, height, per_camera, background",
    [
        (3, 2, 45, 37, False, "shared"),
        (16, 3, 40, 29, True, None),
        (48, 2, 33, 50, False, "per_camera"),
    ],
)
def test_features_match_torch(n_channels, n_cams, width, height, per_camera, background):
    gen = torch.Generator().manual_seed(n_channels)
    params = _scene(400, gen)
    shape = (n_cams, 400, n_channels) if per_camera else (400, n_channels)
    params["colors"] = torch.rand(shape, generator=gen)
    viewmats, Ks = _cameras(n_cams, width, height, gen)
    bg = None
    if background == "shared":
        bg = torch.rand(n_channels, generator=gen)
    elif background == "per_camera":
        bg = torch.rand(n_cams, n_channels, generator=gen)
    results = _render_both(params, viewmats, Ks, width, height, background=bg)
    _check_parity(results)

    out = results["studio"][0]
    meta = out.meta
    assert meta["radii"].shape == (n_cams, 400)
    assert (meta["radii"] == 0).any() and (meta["radii"] > 0).any()  # culled and visible ones
    assert meta["means2d"].grad is not None and meta["means2d"].grad.shape == (n_cams, 400, 2)
    assert meta["means2d"].grad.abs().sum() > 0
    assert (out.alpha > 0.999).any(), "the scene should saturate some pixels"


def test_sh_degree3_matches_torch():
    gen = torch.Generator().manual_seed(3)
    params = _scene(300, gen)
    params["colors"] = 0.3 * torch.randn(300, 16, 3, generator=gen)
    viewmats, Ks = _cameras(3, 51, 35, gen)
    results = _render_both(params, viewmats, Ks, 51, 35, background=torch.tensor([0.2, 0.5, 0.9]), sh_degree=3)
    _check_parity(results)


def test_composite_direct_degenerate_conics():
    """The compositing alone on random 2D Gaussians, some with indefinite conics (sigma < 0
    somewhere) or huge extents, so the kernels' per-Gaussian pixel bounds meet every case."""
    gen = torch.Generator().manual_seed(11)
    n_cams, n, dim, width, height = 2, 300, 5, 53, 38
    means2d = torch.rand(n_cams, n, 2, generator=gen) * torch.tensor([width, height]) * 1.2 - 5.0
    a = 0.02 + 0.5 * torch.rand(n_cams, n, generator=gen)
    c = 0.02 + 0.5 * torch.rand(n_cams, n, generator=gen)
    b = (2.0 * torch.rand(n_cams, n, generator=gen) - 1.0) * torch.sqrt(a * c) * 0.9
    b[:, :20] = 1.05 * torch.sqrt(a[:, :20] * c[:, :20])  # indefinite (mildly: the reference's exp must not overflow)
    a[:, 20:30], b[:, 20:30], c[:, 20:30] = 1e-4, 0.0, 1e-4  # covers many tiles
    conics = torch.stack([a, b, c], dim=-1)
    opacities = torch.rand(n_cams, n, generator=gen)
    opacities[:, 30:40] = 1.0
    values = torch.rand(n_cams, n, dim, generator=gen)
    depths = 1.0 + torch.rand(n_cams, n, generator=gen)
    radii = torch.randint(1, 30, (n_cams, n), generator=gen, dtype=torch.int32)
    radii[:, 20:30] = 200
    isect = isect_tiles(means2d, radii, depths, width, height)

    results = {}
    for name, fn in (("torch", rasterize_to_pixels_torch), ("studio", rasterize_to_pixels_studio)):
        leaves = [t.clone().requires_grad_(True) for t in (means2d, conics, values, opacities)]
        img, alpha = fn(*leaves, width, height, isect)
        g2 = torch.Generator().manual_seed(5)
        (
            (img * torch.rand(img.shape, generator=g2)).sum() + (alpha * torch.rand(alpha.shape, generator=g2)).sum()
        ).backward()
        results[name] = (img, alpha, [t.grad for t in leaves])
    img_s, alpha_s, grads_s = results["studio"]
    img_t, alpha_t, grads_t = results["torch"]
    assert _rel_max(img_s, img_t) < FWD_TOL and _rel_max(alpha_s, alpha_t) < FWD_TOL
    for gs, gt in zip(grads_s, grads_t):
        assert torch.isfinite(gt).all()
        assert _rel_norm(gs, gt) < GRAD_TOL


def test_nothing_visible():
    gen = torch.Generator().manual_seed(2)
    params = _scene(50, gen)
    params["means"] = params["means"] + torch.tensor([0.0, 0.0, 100.0])  # far outside every view
    params["colors"] = torch.rand(50, 3, generator=gen)
    viewmats, Ks = _cameras(1, 20, 17, gen)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    out = rasterize(*leaves.values(), viewmats, Ks, 20, 17, backend="studio")
    assert out.meta["flatten_ids"].numel() == 0
    assert out.color.abs().max() == 0 and out.alpha.abs().max() == 0
    (out.color.sum() + out.alpha.sum()).backward()
    assert leaves["colors"].grad.abs().max() == 0


def _brute_force(means2d, conics, values, opacities, radii, depths, width, height):
    """Per-pixel loop, independent of the tile machinery: each pixel takes the Gaussians whose
    tile rectangle covers its tile, sorts them by depth and composites them one by one."""
    n_cams, n, _ = values.shape
    colors_img = [[[None] * width for _ in range(height)] for _ in range(n_cams)]
    alphas_img = [[[None] * width for _ in range(height)] for _ in range(n_cams)]
    for cam in range(n_cams):
        for i in range(height):
            for j in range(width):
                tx, ty = j // TILE_SIZE, i // TILE_SIZE
                hits = []
                for g in range(n):
                    r = int(radii[cam, g])
                    if r <= 0:
                        continue
                    mx, my = float(means2d[cam, g, 0]), float(means2d[cam, g, 1])
                    if math.floor((mx - r) / TILE_SIZE) <= tx < math.ceil((mx + r) / TILE_SIZE) and (
                        math.floor((my - r) / TILE_SIZE) <= ty < math.ceil((my + r) / TILE_SIZE)
                    ):
                        hits.append(g)
                hits.sort(key=lambda g: float(depths[cam, g]))
                T = torch.ones((), dtype=values.dtype)
                color = torch.zeros(values.shape[-1], dtype=values.dtype)
                for g in hits:
                    dx = means2d[cam, g, 0] - (j + 0.5)
                    dy = means2d[cam, g, 1] - (i + 0.5)
                    a, b, c = conics[cam, g]
                    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                    alpha = torch.clamp(opacities[cam, g] * torch.exp(-sigma), max=0.999)
                    if sigma < 0 or alpha < 1.0 / 255.0:
                        continue
                    if T * (1.0 - alpha) <= 1e-4:
                        break
                    color = color + T * alpha * values[cam, g]
                    T = T * (1.0 - alpha)
                colors_img[cam][i][j] = color
                alphas_img[cam][i][j] = 1.0 - T
    colors = torch.stack([torch.stack([torch.stack(row) for row in cam]) for cam in colors_img])
    alphas = torch.stack([torch.stack([torch.stack(row) for row in cam]) for cam in alphas_img])[..., None]
    return colors, alphas


def test_torch_reference_matches_brute_force():
    """Guards the reference itself (float64), and the studio kernels against the same loop."""
    gen = torch.Generator().manual_seed(4)
    n, width, height = 14, 21, 18
    params = _scene(n, gen)
    params["means"] = 0.5 * (2.0 * torch.rand(n, 3, generator=gen) - 1.0)
    params["scales"] = 0.1 + 0.25 * torch.rand(n, 3, generator=gen)
    viewmats, Ks = _cameras(2, width, height, gen)
    proj = project_gaussians(
        params["means"].double(),
        params["quats"].double(),
        params["scales"].double(),
        viewmats.double(),
        Ks.double(),
        width,
        height,
    )
    isect = isect_tiles(proj.means2d, proj.radii, proj.depths, width, height)
    values = torch.rand(2, n, 3, generator=gen, dtype=torch.float64)
    opacities = params["opacities"].double()[None].expand(2, -1).contiguous()
    inputs = [proj.means2d.detach(), proj.conics.detach(), values, opacities]

    def run(fn, dtype):
        leaves = [t.to(dtype).clone().requires_grad_(True) for t in inputs]
        img, alpha = fn(*leaves)
        g2 = torch.Generator().manual_seed(9)
        w_img = torch.rand(img.shape, generator=g2, dtype=torch.float64).to(dtype)
        w_alpha = torch.rand(alpha.shape, generator=g2, dtype=torch.float64).to(dtype)
        ((img * w_img).sum() + (alpha * w_alpha).sum()).backward()
        return img.double(), alpha.double(), [t.grad.double() for t in leaves]

    brute = run(lambda *x: _brute_force(*x, proj.radii, proj.depths, width, height), torch.float64)
    assert brute[1].max() > 0.5, "the tiny scene should cover the image"
    reference = run(lambda *x: rasterize_to_pixels_torch(*x, width, height, isect), torch.float64)
    for got, want in zip(reference[:2], brute[:2]):
        assert _rel_max(got, want) < 1e-10
    for got, want in zip(reference[2], brute[2]):
        assert _rel_norm(got, want) < 1e-8

    studio = run(lambda *x: rasterize_to_pixels_studio(*x, width, height, isect), torch.float32)
    for got, want in zip(studio[:2], brute[:2]):
        assert _rel_max(got, want) < FWD_TOL
    for got, want in zip(studio[2], brute[2]):
        assert _rel_norm(got, want) < GRAD_TOL


def test_without_normals_same_images():
    """``with_normal=False`` skips the normals and changes nothing else."""
    gen = torch.Generator().manual_seed(2)
    params = _scene(300, gen)
    viewmats, Ks = _cameras(1, 40, 32, gen)
    colors = torch.rand(300, 3, generator=gen)
    args = (*params.values(), colors, viewmats, Ks, 40, 32)
    full = rasterize(*args, backend="studio")
    bare = rasterize(*args, backend="studio", with_normal=False)
    assert bare.normal is None and full.normal.abs().sum() > 0
    for name in ("color", "alpha", "depth"):
        assert torch.equal(getattr(full, name), getattr(bare, name))
