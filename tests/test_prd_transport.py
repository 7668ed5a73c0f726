"""``prd``'s light-transport options on small hand-made scenes: ``visibility rays`` (sharp sun
shadows) and ``indirect volume`` / ``gaussian-sh`` (light from a red wall), in training renders and
under relighting (methods/prd/transport.py)."""

from __future__ import annotations

import math

import pytest
import torch
from nerfstudio.data.scene_box import SceneBox

from studio.cameras.nerfstudio import nerfstudio_cameras
from studio.gaussians.sh import rgb_to_sh
from studio.methods.prd.model import PRDModelConfig
from studio.pbr.cubemap import CubemapLight, cube_directions

SIZE = 40
SUN = torch.nn.functional.normalize(torch.tensor([1.0, 0.0, 1.0]), dim=0)  # 45 deg high, from +x


def _lattice(x0, x1, y0, y1, spacing=0.05):
    xs, ys = torch.arange(x0 + spacing / 2, x1, spacing), torch.arange(y0 + spacing / 2, y1, spacing)
    X, Y = torch.meshgrid(xs, ys, indexing="ij")
    return torch.stack([X.reshape(-1), Y.reshape(-1), torch.zeros(X.numel())], -1)


def _model(parts, **options):
    """A PRD model (in the refine stage, p = 1) of flat opaque splats: ``parts`` is a list of
    (points [n,3] on z = 0, lift (x -> plane x = lift when ``upright`` else z = lift), upright, rgb)."""
    cfg = PRDModelConfig(
        backend="studio",
        background_color="white",
        light_resolution=8,
        visibility_resolution=12,
        shadow_resolution=64,
        shadow_lights=1,
        mask_band=0,
        sh_degree=0,
        ablation="no-progress",
        **options,
    )
    means, quats, colors = [], [], []
    half = math.sqrt(0.5)
    for points, lift, upright, rgb in parts:
        if upright:  # the lattice's x becomes the height above the floor, its plane x = lift
            means.append(torch.stack([torch.full_like(points[:, 0], lift), points[:, 1], points[:, 0]], -1))
            quats.append(torch.tensor([[half, 0.0, half, 0.0]]).repeat(points.shape[0], 1))
        else:
            means.append(points + torch.tensor([0.0, 0.0, lift]))
            quats.append(torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(points.shape[0], 1))
        colors.append(torch.tensor(rgb).expand(points.shape[0], 3))
    means, quats, colors = torch.cat(means), torch.cat(quats), torch.cat(colors)
    scene_box = SceneBox(aabb=torch.tensor([[-1.2, -1.2, -0.5], [1.2, 1.2, 1.2]]))
    seed = (means, (colors * 255).round().to(torch.uint8))
    model = cfg.setup(scene_box=scene_box, num_train_data=1, metadata={}, seed_points=seed)
    with torch.no_grad():
        params = model.gaussians.params
        params["means"].copy_(means)
        params["quats"].copy_(quats)
        params["scales"].copy_(torch.log(torch.tensor([0.04, 0.04, 0.003])).expand_as(params["scales"]))
        params["opacities"].fill_(math.log(0.97 / 0.03))
        params["features_dc"].copy_(rgb_to_sh(colors))
        params["albedo"].copy_(torch.logit(torch.full_like(params["albedo"], 0.7)))
        params["roughness"].fill_(math.log(0.9 / 0.1))
        params["metallic"].fill_(-8.0)
    model.step = 10**6
    model.stage_index.fill_(3)
    model.bake_visibility()
    return model.eval()


def _camera(eye, size=SIZE, fov_deg=60.0):
    """Pinhole at ``eye`` looking at the origin (up +y in the image when looking down -z)."""
    eye = torch.tensor(eye, dtype=torch.float32)
    forward = torch.nn.functional.normalize(-eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0])), dim=0)
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward])  # world -> camera rows (OpenCV axes)
    viewmat = torch.eye(4)
    viewmat[:3, :3], viewmat[:3, 3] = R, -R @ eye
    focal = size / 2 / math.tan(math.radians(fov_deg) / 2)
    K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]])
    return nerfstudio_cameras(viewmat[None], K, size)


def _sun_light(sky=0.03, sun=150.0) -> CubemapLight:
    light = CubemapLight(8, init_radiance=sky, learnable=False)
    index = int((cube_directions(8).reshape(-1, 3) @ SUN).argmax())
    with torch.no_grad():
        light.log_radiance.view(-1, 3)[index] = math.log(sun)
    return light


def _shadow_contrast(visibility: str) -> float:
    """Lit floor / shadowed floor brightness of a square 0.5 above a floor under a 45-degree sun,
    seen from straight above (the shadow falls on x in [-0.8, -0.2], next to the square)."""
    floor = _lattice(-1, 1, -1, 1)
    square = _lattice(-0.3, 0.3, -0.3, 0.3)
    model = _model([(floor, 0.0, False, (0.6, 0.6, 0.6)), (square, 0.5, False, (0.6, 0.6, 0.6))], visibility=visibility)
    camera = _camera([0.0, 0.0, 2.6])
    with torch.no_grad():
        out = model.render_gbuffers(camera, light=_sun_light())
    # pixel -> world x, y on the floor: straight down view, image x = world x, image row = -world y
    focal = SIZE / 2 / math.tan(math.radians(30.0))
    cols = (torch.arange(SIZE) + 0.5 - SIZE / 2) / focal
    depth = out["depth"][..., 0]
    wx = cols[None, :] * depth
    wy = -cols[:, None] * depth
    floor_px = (out["accumulation"][..., 0] > 0.9) & (depth > 2.3) & (wy.abs() < 0.25)
    lum = out["pbr"].mean(-1)
    shadow = floor_px & (wx > -0.7) & (wx < -0.4)
    lit = floor_px & (wx > 0.45) & (wx < 0.8)
    assert int(shadow.sum()) > 4 and int(lit.sum()) > 4
    return float(lum[lit].mean() / lum[shadow].mean())


def test_rays_cast_the_sun_shadow_that_the_sh_grid_misses():
    rays, grid = _shadow_contrast("rays"), _shadow_contrast("sh-grid")
    assert rays > 2.5 and grid < 1.5, (rays, grid)


def _wall_scene(indirect: str, with_wall: bool = True):
    floor = _lattice(-1, 1, -1, 1)
    parts = [(floor, 0.0, False, (0.3, 0.3, 0.3))]
    if with_wall:
        parts.append((_lattice(0.0, 1.0, -1.0, 1.0), 0.35, True, (0.95, 0.1, 0.1)))
    return _model(parts, indirect=indirect)


def _floor_red_excess(out) -> float:
    """Mean (R - G) of the PBR image over covered pixels (the red cast the wall puts on the floor)."""
    covered = out["accumulation"][..., 0] > 0.9
    return float((out["pbr"][..., 0] - out["pbr"][..., 1])[covered].mean())


@pytest.mark.parametrize("indirect", ["volume", "gaussian-sh"])
def test_indirect_light_from_a_red_wall(indirect):
    """The floor beside a red wall turns red with indirect light (learned: after fitting the
    per-Gaussian SH to the volume); without the option, or without the wall, it stays grey.
    Relit under a light twice as bright, the indirect light doubles (``indirect_relight scale``)."""
    camera = _camera([-1.6, 0.0, 1.6])  # looks at the floor and the wall's red face from -x
    model = _wall_scene(indirect)
    if indirect == "gaussian-sh":
        param = model.gaussians.params["indirect"]
        assert float(param.detach().abs().max()) == 0.0  # zero at the start, as Relightable 3D Gaussians
        optimizer = torch.optim.Adam([param], lr=0.4)
        for _ in range(15):
            out = model.render_gbuffers(camera)
            loss = model.distillation_losses(out, {"image": torch.ones(SIZE, SIZE, 4)}, with_progress=True)
            optimizer.zero_grad()
            loss["indirect_loss"].backward()
            optimizer.step()
    with torch.no_grad():
        out = model.render_gbuffers(camera)
        brighter = CubemapLight(8, init_radiance=1.0, learnable=False)
        with torch.no_grad():
            brighter.log_radiance.copy_(model.light.log_radiance + math.log(2.0))
        relit = model.render_gbuffers(camera, light=brighter)
        model.config.indirect = "none"
        plain = model.render_gbuffers(camera)
    covered = out["accumulation"][..., 0] > 0.9
    assert "indirect" in out and "indirect" not in plain
    red = out["indirect"][covered]
    assert float(red[:, 0].mean()) > 0.1 and float(red[:, 0].mean()) > 3 * float(red[:, 1].mean())
    torch.testing.assert_close(relit["indirect"], 2.0 * out["indirect"], rtol=1e-4, atol=1e-6)
    assert _floor_red_excess(out) > _floor_red_excess(plain) + 0.02
    with torch.no_grad():
        no_wall = _wall_scene(indirect, with_wall=False).render_gbuffers(camera)
    alone = no_wall["indirect"][no_wall["accumulation"][..., 0] > 0.9]
    assert float(alone.mean()) < 0.05 * float(red[:, 0].mean())


def test_indirect_volume_and_param_survive_a_state_dict_round_trip():
    model = _wall_scene("gaussian-sh")
    state = model.state_dict()
    assert "indirect_coeffs" in state and "gaussians.params.indirect" in state
    fresh = _wall_scene("gaussian-sh", with_wall=False)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.indirect_volume.coeffs, model.indirect_volume.coeffs)
    assert "indirect" in fresh.get_param_groups()
