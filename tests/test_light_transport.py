"""Light transport for the PBR shading: Gaussian density + shadow rays (sharp sun shadows), the
indirect-light volume and per-Gaussian indirect SH (studio.pbr.gaussian_density, shadow_rays,
indirect, transport)."""

from __future__ import annotations

import math

import pytest
import torch

from studio.pbr.cubemap import CubemapLight, cube_directions, cube_solid_angles
from studio.pbr.gaussian_density import DensityGrid, splat_gaussians
from studio.pbr.indirect import bake_indirect, gaussian_sh_irradiance, relight_scale
from studio.pbr.shading import shade
from studio.pbr.shadow_rays import dominant_lights
from studio.pbr.transport import LightTransport, shade_transport
from studio.pbr.visibility import bake_visibility

UP = torch.tensor([0.0, 0.0, 1.0])
BOX = torch.tensor([[-1.1, -1.1, -0.3], [1.1, 1.1, 1.1]])


def _sheet(x0: float, x1: float, y0: float, y1: float, spacing: float = 0.04, sigma: float = 0.03):
    """Flat opaque splats on a lattice of the rectangle [x0,x1] x [y0,y1] of the plane z = 0."""
    xs = torch.arange(x0 + spacing / 2, x1, spacing)
    ys = torch.arange(y0 + spacing / 2, y1, spacing)
    X, Y = torch.meshgrid(xs, ys, indexing="ij")
    means = torch.stack([X.reshape(-1), Y.reshape(-1), torch.zeros(X.numel())], -1)
    n = means.shape[0]
    return {
        "means": means,
        "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        "scales": torch.tensor([[sigma, sigma, 0.003]]).repeat(n, 1),
        "opacities": torch.full((n,), 0.95),
    }


def _lifted(sheet: dict, z: float) -> dict:
    return dict(sheet, means=sheet["means"] + torch.tensor([0.0, 0.0, z]))


def _wall(x: float) -> dict:
    """The sheet [0,1] x [-1,1] turned upright into the plane x = ``x`` (z from 0 to 1)."""
    sheet = _sheet(0.0, 1.0, -1.0, 1.0)
    m = sheet["means"]
    half = math.sqrt(0.5)
    quats = torch.tensor([[half, 0.0, half, 0.0]]).repeat(m.shape[0], 1)  # 90 deg about y: local z -> x
    return dict(sheet, means=torch.stack([torch.full_like(m[:, 0], x), m[:, 1], m[:, 0]], -1), quats=quats)


def _union(*parts: dict) -> dict:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _floor_line(n: int = 25, half: float = 0.6):
    xs = torch.linspace(-half, half, n)
    points = torch.stack([xs, torch.zeros(n), torch.zeros(n)], -1)
    return xs, points, UP.expand(n, 3)


def _sun_light(resolution: int = 16, sky: float = 0.05, sun: float = 400.0) -> CubemapLight:
    """A dim uniform sky and one very bright texel next to the zenith (a sun)."""
    light = CubemapLight(resolution, init_radiance=sky, learnable=False)
    dirs = cube_directions(resolution).reshape(-1, 3)
    index = int((dirs @ UP).argmax())
    with torch.no_grad():
        light.log_radiance.view(-1, 3)[index] = math.log(sun)
    return light


def test_shadow_rays_cast_a_sharp_sun_shadow_that_the_sh_grid_blurs():
    """A 0.6 x 0.6 square 0.5 above a floor, a sun at the zenith: the floor under the square is
    dark up to a few voxels from the edge and fully lit beyond it with shadow rays, while the
    degree-2 SH grid neither darkens the centre nor keeps the lit floor lit."""
    torch.manual_seed(0)
    scene = _union(_sheet(-1, 1, -1, 1), _lifted(_sheet(-0.3, 0.3, -0.3, 0.3), 0.5))
    density = splat_gaussians(**scene, aabb=BOX, resolution=96)
    grid = bake_visibility(scene["means"], scene["scales"], scene["opacities"], BOX, resolution=16)
    xs, points, normals = _floor_line()
    trans, _ = density.march(points + 2 * density.voxel_size() * normals, normals)
    inside, outside = xs.abs() <= 0.22, xs.abs() >= 0.42  # the edge is at 0.3 (+ the splats' 0.06 tails)
    assert float(trans[inside].max()) < 0.05 and float(trans[outside].min()) > 0.95
    coarse = grid.visibility(points, normals, normals)[:, 0]
    assert float(coarse[inside].min()) > 0.1 and float(coarse[outside].min()) < 0.8  # blurred both ways

    # shaded: the sun's texel is traced, the dim sky is shaded with the baked grid
    light = _sun_light(16)
    n = points.shape[0]
    albedo, rough, metal = torch.full((n, 3), 0.8), torch.full((n, 1), 0.9), torch.zeros(n, 1)
    view = torch.nn.functional.normalize(torch.tensor([0.3, 0.0, 1.0]), dim=-1).expand(n, 3)
    rays = shade_transport(
        albedo, rough, metal, normals, view, points, light, LightTransport(grid, density, shadow_lights=1)
    )
    baked = shade_transport(albedo, rough, metal, normals, view, points, light, LightTransport(grid))
    lum_rays, lum_baked = rays.rgb.mean(-1), baked.rgb.mean(-1)
    assert float(lum_rays[outside].min()) > 8.0 * float(lum_rays[inside].max())  # a hard shadow
    assert float(lum_baked[outside].min()) < 3.0 * float(lum_baked[inside].max())  # a soft one


@pytest.mark.parametrize("kind", ["random", "sun"])
def test_shadow_rays_without_occluders_give_the_unshadowed_shading(kind: str):
    """Taking the brightest texels out of the light and adding them back as traced directional
    lights leaves the specular term as it was and the diffuse term at the exact irradiance (the
    sum over texels), which the degree-2 SH irradiance of a sun misses by far."""
    torch.manual_seed(0)
    light = CubemapLight(8, init_radiance=0.2, learnable=False)
    with torch.no_grad():
        if kind == "random":
            light.log_radiance.add_(torch.randn_like(light.log_radiance))
        else:
            sun = int((cube_directions(8).reshape(-1, 3) @ torch.tensor([0.3, 0.2, 0.9])).argmax())
            light.log_radiance.view(-1, 3)[sun] = math.log(300.0)
    empty = DensityGrid(torch.zeros(8, 8, 8), BOX)
    n = 64
    normal = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    view = torch.nn.functional.normalize(normal + 0.5 * torch.randn(n, 3), dim=-1)
    albedo, metallic = torch.rand(n, 3), torch.rand(n, 1)
    args = (albedo, torch.rand(n, 1), metallic, normal, view)
    plain = shade(*args, light)
    split = shade_transport(*args, torch.zeros(n, 3), light, LightTransport(None, empty, shadow_lights=5))
    torch.testing.assert_close(split.specular, plain.specular, rtol=1e-4, atol=1e-6)
    texels = cube_directions(8).reshape(-1, 3)
    irradiance = ((normal @ texels.T).clamp(min=0.0) * cube_solid_angles(8).reshape(-1)) @ light.radiance().reshape(
        -1, 3
    )
    exact = (1.0 - metallic) * albedo * irradiance / math.pi

    def error(x):
        return float(((x - exact).abs().sum(-1) / exact.abs().sum(-1).clamp(min=1e-6)).mean())

    assert error(split.diffuse) < 0.02 and error(split.diffuse) <= error(plain.diffuse)
    if kind == "sun":
        assert error(plain.diffuse) > 0.2


def test_dominant_lights_pick_the_sun():
    light = _sun_light(8, sky=0.1, sun=500.0)
    suns = dominant_lights(light.radiance(), 1)
    assert float(suns.directions[0] @ UP) > 0.95 and float(suns.mask.sum()) == 1.0
    assert float(suns.power.min()) > 1.0  # radiance 500 times a texel's solid angle (~0.06 sr)


def test_indirect_volume_lights_a_floor_next_to_a_red_wall_and_nothing_without_it():
    """Floor points near an upright red wall get red indirect irradiance (more the closer they are);
    without the wall (the floor alone) they get none: the floor does not light itself."""
    red, grey = torch.tensor([0.9, 0.05, 0.05]), torch.tensor([0.2, 0.2, 0.2])
    floor, wall = _sheet(-1, 1, -1, 1), _wall(0.3)
    xs = torch.tensor([-0.6, -0.2, 0.2])
    points = torch.stack([xs, torch.zeros(3), torch.zeros(3)], -1)
    normals = UP.expand(3, 3)
    results = {}
    for name, parts, colors in (
        ("wall", (floor, wall), (grey, red)),
        ("floor", (floor,), (grey,)),
    ):
        scene = _union(*parts)
        rgb = torch.cat([c.expand(p["means"].shape[0], 3) for p, c in zip(parts, colors)])
        density = splat_gaussians(**scene, aabb=BOX, resolution=48, colors=rgb)
        results[name] = bake_indirect(density, BOX, resolution=12).irradiance(points, normals)
    lit = results["wall"]
    assert bool((lit[:, 0] > 5.0 * lit[:, 1:].max(-1).values).all())  # red
    assert bool((lit[1:, 0] > lit[:-1, 0]).all()) and float(lit[-1, 0]) > 0.5  # grows towards the wall
    assert float(results["floor"].abs().max()) < 0.02 * float(lit[-1, 0])


def test_gaussian_sh_irradiance_of_uniform_and_directional_light():
    normals = torch.nn.functional.normalize(torch.randn(10, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    uniform = torch.zeros(10, 4, 3)
    uniform[:, 0] = 0.7 * math.sqrt(4.0 * math.pi)  # radiance 0.7 from every direction
    torch.testing.assert_close(gaussian_sh_irradiance(uniform, normals), torch.full((10, 3), 0.7 * math.pi))
    from_above = uniform.clone()
    from_above[:, 2] = 0.7 * math.sqrt(4.0 * math.pi / 3.0)  # + a band-1 lobe along +z
    e = gaussian_sh_irradiance(from_above[:2], torch.stack([UP, -UP]))
    assert float(e[0, 0]) > 1.5 * 0.7 * math.pi and float(e[1, 0]) < 0.5 * 0.7 * math.pi


def test_relight_scale_is_the_ratio_of_mean_radiances():
    a = CubemapLight(8, init_radiance=0.5, learnable=False)
    b = CubemapLight(8, init_radiance=2.0, learnable=False)
    torch.testing.assert_close(relight_scale(a, b), torch.full((3,), 4.0), rtol=1e-4, atol=0)


@pytest.mark.parametrize("resolution", [24, 48])
def test_splatted_sheet_is_opaque_without_holes(resolution: int):
    """A sheet of opacity-0.95 splats stops a ray crossing it anywhere (the splat's footprint is
    filled, not only the voxels next to its centre), at any grid resolution."""
    sheet = _sheet(-1, 1, -1, 1, spacing=0.1, sigma=0.07)
    density = splat_gaussians(**sheet, aabb=BOX, resolution=resolution)
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=gen) * 1.4 - 0.7
    origins = torch.cat([xy, torch.full((200, 1), -0.25)], -1)
    trans, _ = density.march(origins, UP.expand(200, 3))
    assert float(trans.max()) < 0.1
