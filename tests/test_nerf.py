"""The NeRF option of ``sds`` (``studio.nerf``): volume rendering against closed forms, and the
field's density blob."""

from __future__ import annotations

import math

import torch

from studio.nerf import HashGridField, HashGridFieldConfig, render_rays, sphere_bounds


def test_sphere_bounds_are_the_chord():
    o = torch.tensor([[0.0, 0.0, -3.0], [0.0, 0.6, -3.0], [0.0, 2.0, -3.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0, 1.0]]).expand(4, 3)
    near, far, hit = sphere_bounds(o, d, 1.0)
    assert hit.tolist() == [True, True, False, True]
    torch.testing.assert_close(near[:2], torch.tensor([2.0, 3.0 - 0.8]))
    torch.testing.assert_close(far[:2], torch.tensor([4.0, 3.0 + 0.8]))
    assert near[3] == 0.0 and far[3] == 1.0  # a ray starting inside enters at its origin


def test_constant_density_ball_matches_beer_lambert():
    """A homogeneous ball of density s: alpha = 1 - exp(-s * chord) (NeRF Eq. 3 is exact for it),
    colour = alpha * c + (1 - alpha) * background, depth = the chord's expected hit distance."""
    sigma, colour, bg = 1.5, torch.tensor([0.9, 0.2, 0.1]), torch.tensor([0.0, 0.0, 1.0])

    def field(points):
        density = torch.full_like(points[..., :1], sigma)
        return density, colour.expand(*points.shape[:-1], 3)

    y = torch.tensor([0.0, 0.5, 0.9, 1.5])
    origins = torch.stack([torch.zeros(4), y, torch.full((4,), -3.0)], -1)
    dirs = torch.tensor([[0.0, 0.0, 2.0]]).expand(4, 3)  # not unit: render_rays normalises
    rgb, alpha, depth = render_rays(field, origins, dirs, 1.0, 512, bg)
    chord = 2 * (1 - y**2).clamp(min=0).sqrt()
    expected = 1 - torch.exp(-sigma * chord)
    torch.testing.assert_close(alpha[:, 0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(rgb, expected[:, None] * colour + (1 - expected[:, None]) * bg, atol=1e-5, rtol=0)
    # expected distance of the first hit inside the chord [a, a + L]: a + 1/s - L e^{-sL} / (1 - e^{-sL})
    a = 3 - chord[:3] / 2
    L = chord[:3]
    first_hit = a + 1 / sigma - L * torch.exp(-sigma * L) / (1 - torch.exp(-sigma * L))
    torch.testing.assert_close(depth[:3, 0], first_hit, atol=2e-3, rtol=0)
    assert alpha[3] == 0 and depth[3] == 0 and torch.equal(rgb[3], bg)  # a ray that misses the ball


def test_field_starts_as_a_blob_and_is_differentiable():
    torch.manual_seed(0)
    field = HashGridField(HashGridFieldConfig())
    centre, edge = field(torch.zeros(1, 3))[0], field(torch.tensor([[0.0, 0.0, 0.95]]))[0]
    assert centre.item() > 5.0 and edge.item() < 0.1  # opaque at the centre, empty near the bounds
    rgb, alpha, _ = render_rays(
        field, torch.tensor([[0.0, 0.0, -2.0]]), torch.tensor([[0.0, 0.0, 1.0]]), 1.0, 32, torch.ones(3), perturb=True
    )
    assert alpha.item() > 0.99
    rgb.sum().backward()
    grads = [p.grad for p in field.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert math.isfinite(float(sum(g.abs().sum() for g in grads)))


def test_mesh_export_level_matches_the_rendered_silhouette():
    """Without a level, ``field_mesh`` picks the density whose surface outlines what the volume
    renders show: at init (the blob) its radius is where a ray's alpha crosses 1/2."""
    from studio.nerf.mesh import field_mesh

    torch.manual_seed(0)
    field = HashGridField(HashGridFieldConfig())
    mesh = field_mesh(field, resolution=48, n_views=6, image_size=32)
    radius = torch.as_tensor(mesh.vertices).norm(dim=1)
    y = torch.linspace(0.0, 0.6, 121)
    origins = torch.stack([torch.zeros_like(y), y, torch.full_like(y, -2.0)], -1)
    with torch.no_grad():
        alpha = render_rays(field, origins, torch.tensor([[0.0, 0.0, 1.0]]).expand_as(origins), 0.6, 32, torch.ones(3))[
            1
        ][:, 0]
    y50 = float(y[(alpha >= 0.5).nonzero().max()])
    assert abs(float(radius.mean()) - y50) < 0.06 and float(radius.std()) < 0.03
    assert mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)


def test_camera_rays_follow_the_opencv_convention():
    from studio.cameras import camera_rays, intrinsics_from_fov, look_at

    eye = torch.tensor([0.0, -2.0, 0.5])
    viewmat = look_at(eye, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    K = intrinsics_from_fov(40.0, 9, 9)
    origins, dirs = camera_rays(viewmat, K, 9, 9)
    torch.testing.assert_close(origins[0], eye)
    centre = torch.nn.functional.normalize(dirs[4 * 9 + 4], dim=0)  # the middle pixel looks at the target
    torch.testing.assert_close(centre, torch.nn.functional.normalize(-eye, dim=0), atol=1e-5, rtol=0)
    assert dirs[0, 2] > dirs[-1, 2]  # row 0 is the top of the image (OpenCV y down, world z up)
