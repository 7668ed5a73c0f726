"""studio.export.transform: similarity transforms with SH rotation, Nerfstudio dataparser inverse."""

from __future__ import annotations

import pytest
import torch

from studio.cameras import intrinsics_from_fov, look_at
from studio.export import dataparser_to_world, transform_gaussians
from studio.export.transform import dataparser_points_to_world, rotate_sh, sh_rotation_matrices
from studio.gaussians import Gaussians, eval_sh, quat_to_rotmat
from studio.render import rasterize


def random_rotation(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def random_gaussians(n: int = 64, degree: int = 3, seed: int = 0, dtype=torch.float64) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=gen, dtype=dtype),
        quats=torch.randn(n, 4, generator=gen, dtype=dtype),
        scales=torch.rand(n, 3, generator=gen, dtype=dtype) * 0.2 + 0.01,
        opacities=torch.rand(n, generator=gen, dtype=dtype),
        sh=torch.randn(n, (degree + 1) ** 2, 3, generator=gen, dtype=dtype),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("degree", [1, 2, 3])
def test_rotated_sh_in_rotated_direction_equals_original(seed, degree):
    rot = random_rotation(seed)
    sh = torch.randn(10, (degree + 1) ** 2, 3, dtype=torch.float64)
    dirs = torch.nn.functional.normalize(torch.randn(10, 200, 3, dtype=torch.float64), dim=-1)
    rotated = rotate_sh(sh, rot)
    before = eval_sh(degree, sh[:, None].expand(-1, 200, -1, -1), dirs)
    after = eval_sh(degree, rotated[:, None].expand(-1, 200, -1, -1), dirs @ rot.T)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-10)
    assert torch.equal(rotated[:, 0], sh[:, 0])


def test_band_matrices_are_orthogonal_and_compose():
    a, b = random_rotation(3), random_rotation(4)
    for da, db, dab in zip(sh_rotation_matrices(a, 3), sh_rotation_matrices(b, 3), sh_rotation_matrices(a @ b, 3)):
        eye = torch.eye(len(da), dtype=torch.float64)
        torch.testing.assert_close(da @ da.T, eye, rtol=0, atol=1e-10)
        # Y((AB)^T d) = Y(B^T A^T d) = D_B Y(A^T d) = D_B D_A Y(d)
        torch.testing.assert_close(dab, db @ da, rtol=0, atol=1e-10)
    identity = sh_rotation_matrices(torch.eye(3, dtype=torch.float64), 3)
    for d in identity:
        torch.testing.assert_close(d, torch.eye(len(d), dtype=torch.float64), rtol=0, atol=1e-12)


def test_transform_maps_means_covariances_and_scales():
    g = random_gaussians()
    rot, t, s = random_rotation(5), torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), 2.5
    h = transform_gaussians(g, rot, t, s)
    torch.testing.assert_close(h.means, s * g.means @ rot.T + t)
    torch.testing.assert_close(h.scales, s * g.scales)
    torch.testing.assert_close(h.opacities, g.opacities)

    def covariance(x: Gaussians) -> torch.Tensor:
        m = quat_to_rotmat(x.quats) * x.scales[:, None, :]
        return m @ m.transpose(1, 2)

    torch.testing.assert_close(covariance(h), s * s * rot @ covariance(g) @ rot.T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transform_then_inverse_gives_back_the_input(dtype):
    g = random_gaussians(dtype=dtype)
    rot, t, s = random_rotation(6).to(dtype), torch.tensor([1.0, 2.0, -0.5], dtype=dtype), 0.37
    h = transform_gaussians(g, rot, t, s)
    back = transform_gaussians(h, rot.T, -rot.T @ t / s, 1.0 / s)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    assert back.means.dtype == dtype
    torch.testing.assert_close(back.means, g.means, **tol)
    torch.testing.assert_close(back.scales, g.scales, **tol)
    torch.testing.assert_close(back.sh, g.sh, **tol)
    q0 = torch.nn.functional.normalize(g.quats, dim=1)
    q1 = torch.nn.functional.normalize(back.quats, dim=1)
    torch.testing.assert_close(q1 * torch.sign((q0 * q1).sum(1, keepdim=True)), q0, **tol)


def test_dataparser_to_world_inverts_the_nerfstudio_transform():
    world = random_gaussians()
    rot, b, s = random_rotation(7), torch.tensor([0.2, 0.1, -0.4], dtype=torch.float64), 0.8
    # Nerfstudio: x' = s (A x + b)
    in_dataparser_frame = transform_gaussians(world, rot, s * b, s)
    torch.testing.assert_close(in_dataparser_frame.means, s * (world.means @ rot.T + b))
    transform = torch.cat([rot, b[:, None]], dim=1)  # [3,4], as in dataparser_transforms.json
    back = dataparser_to_world(in_dataparser_frame, transform, s)
    torch.testing.assert_close(back.means, world.means)
    torch.testing.assert_close(back.scales, world.scales)
    torch.testing.assert_close(back.sh, world.sh)
    points = dataparser_points_to_world(in_dataparser_frame.means, transform, s)  # a NeRF mesh's vertices
    torch.testing.assert_close(points, world.means.double())


def test_renders_agree_after_moving_scene_and_camera_together():
    """A view-dependent scene moved by x -> s R x + t looks the same from the moved camera."""
    g = random_gaussians(n=300, degree=3, seed=2, dtype=torch.float32)
    g.means = g.means * 0.4
    g.scales = g.scales * 0.3
    g.sh = g.sh * 0.3
    rot, t, s = random_rotation(8).float(), torch.tensor([0.5, -0.2, 0.3]), 1.7
    h = transform_gaussians(g, rot, t, s)

    view = look_at(torch.tensor([0.3, -2.5, 1.0]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    moved = torch.eye(4)
    moved[:3, :3] = view[:3, :3] @ rot.T  # cam' = s cam: x = R^T (x' - t) / s
    moved[:3, 3] = s * view[:3, 3] - view[:3, :3] @ rot.T @ t
    K = intrinsics_from_fov(60.0, 32, 32)[None]

    def render(x: Gaussians, viewmat: torch.Tensor):
        return rasterize(
            x.means, x.quats, x.scales, x.opacities, x.sh, viewmat[None], K, 32, 32, backend="torch", sh_degree=3
        )

    a, b = render(g, view), render(h, moved)
    assert a.alpha.mean() > 0.2
    torch.testing.assert_close(b.color, a.color, rtol=0, atol=1e-4)
    torch.testing.assert_close(b.alpha, a.alpha, rtol=0, atol=1e-4)
    torch.testing.assert_close(b.depth, s * a.depth, rtol=1e-4, atol=1e-4)


def test_rejects_non_rotations():
    g = random_gaussians(n=3)
    with pytest.raises(ValueError, match="proper rotation"):
        transform_gaussians(g, torch.diag(torch.tensor([1.0, 1.0, -1.0])), torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="proper rotation"):
        transform_gaussians(g, 2 * torch.eye(3), torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="positive scale"):
        transform_gaussians(g, torch.eye(3), torch.zeros(3), 0.0)
