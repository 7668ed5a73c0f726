"""``studio view`` of ``prd`` runs: the channel renderer and the environment-map controls' back end.

The renderer tests use an untrained prd run (conftest's ``prd_run``): the shading, channels and
light handling do not depend on training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from studio.cameras import look_at
from studio.pbr.envmap import write_hdr
from studio.viewer.prd_renderer import LEARNED_ENV, PRD_CHANNELS, PRDRenderer, is_prd_config, list_envmaps, rotation_z

BACKEND = "torch"  # the reference rasterizer: no first-use compile
W, H = 48, 36


@pytest.fixture(scope="module")
def renderer(prd_run) -> PRDRenderer:
    return PRDRenderer.from_config(prd_run[1], backend=BACKEND, device="cpu")


@pytest.fixture(scope="module")
def sun_env(tmp_path_factory) -> Path:
    """An equirect whose light comes from one side only: a bright lobe around +X, dim elsewhere."""
    from studio.pbr.envmap import equirect_directions

    d = equirect_directions(32, 64)
    lobe = torch.clamp(d[..., 0], min=0.0) ** 8 * 20.0 + 0.02
    path = tmp_path_factory.mktemp("env") / "sun.hdr"
    write_hdr(path, lobe[..., None].expand(-1, -1, 3).numpy())
    return path


def _view(renderer: PRDRenderer) -> tuple[np.ndarray, np.ndarray]:
    g = renderer.model.gaussians.activated()
    center = g.means.detach().median(0).values.cpu()
    eye = center + torch.tensor([2.5, 0.0, 1.0])
    viewmat = look_at(eye, center, torch.tensor([0.0, 0.0, 1.0])).double().numpy()
    K = np.array([[40.0, 0.0, W / 2], [0.0, 40.0, H / 2], [0.0, 0.0, 1.0]])
    return viewmat, K


def test_rotation_z_is_counter_clockwise_from_above():
    np.testing.assert_allclose(rotation_z(90.0) @ torch.tensor([1.0, 0.0, 0.0]), [0.0, 1.0, 0.0], atol=1e-6)


def test_list_envmaps_reads_meta_json(tmp_path):
    (tmp_path / "envs").mkdir()
    for name in ("sky", "studio"):
        write_hdr(tmp_path / "envs" / f"{name}.hdr", np.ones((4, 8, 3), np.float32))
    meta = {
        "env": {"name": "sky", "file": "envs/sky.hdr"},
        "relight": [{"name": "studio", "file": "envs/studio.hdr"}, {"name": "gone", "file": "envs/gone.exr"}],
    }
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    found = list_envmaps(tmp_path, studiolights=tmp_path / "no-such-dir")
    assert list(found) == ["dataset: sky", "dataset: studio"]
    assert found["dataset: studio"] == (tmp_path / "envs" / "studio.hdr").resolve()


def test_non_prd_paths_are_not_prd(tmp_path):
    assert not is_prd_config(tmp_path / "scene.ply")
    assert not is_prd_config(tmp_path / "missing.yml")


def test_prd_config_detected(prd_run):
    assert is_prd_config(prd_run[1])


def test_camera_round_trip(renderer):
    from studio.cameras.nerfstudio import cameras_to_viewmats

    viewmat, K = _view(renderer)
    vm, Ks, width, height = cameras_to_viewmats(renderer.camera(viewmat, K, W, H))
    if torch.allclose(renderer.rotation, torch.eye(3, dtype=renderer.rotation.dtype)) and renderer.scale == 1.0:
        np.testing.assert_allclose(vm[0].double().numpy(), viewmat, atol=1e-5)
    np.testing.assert_allclose(Ks[0].double().numpy(), K, atol=1e-5)
    assert (width, height) == (W, H)


def test_channels_and_env_rotation(renderer, sun_env):
    viewmat, K = _view(renderer)
    renderer.set_environment(LEARNED_ENV, 0.0)
    learned = renderer.render_channels(viewmat, K, W, H)
    assert set(learned) == set(PRD_CHANNELS)
    for name, image in learned.items():
        assert image.shape == (H, W, 3), name
        assert image.dtype == np.float32, name
        assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0, name
    assert learned["composite"].std() > 0.01  # the object is visible
    assert renderer.render(viewmat, K, W, H, "normal").dtype == np.uint8

    renderer.set_environment(str(sun_env), 0.0)
    lit = renderer.render_channels(viewmat, K, W, H)
    renderer.set_environment(str(sun_env), 120.0)
    turned = renderer.render_channels(viewmat, K, W, H)
    assert np.abs(turned["pbr"] - lit["pbr"]).max() > 0.05
    np.testing.assert_allclose(turned["albedo"], lit["albedo"], atol=1e-6)
    np.testing.assert_allclose(lit["albedo"], learned["albedo"], atol=1e-6)
    renderer.set_environment(LEARNED_ENV, 0.0)


def test_pbr_channel_is_the_pbr_part_only(renderer, sun_env):
    """Under a new light, the pbr channel does not change when the radiance field's colours do;
    the radiance residual (1 - p_x) I_radiance and the composite do."""
    assert PRD_CHANNELS[0] == "pbr"  # the viewer opens on the relit PBR image
    viewmat, K = _view(renderer)
    renderer.set_environment(str(sun_env), 0.0)
    params = renderer.model.gaussians.params
    saved = {name: params[name].detach().clone() for name in ("features_dc", "progress")}
    try:
        with torch.no_grad():
            params["progress"].fill_(0.0)  # p = 0.5 on every Gaussian (a logit of 0)
        before = renderer.render_channels(viewmat, K, W, H)
        with torch.no_grad():
            params["features_dc"].add_(torch.tensor([1.0, -1.0, 0.5]))  # other radiance colours
        after = renderer.render_channels(viewmat, K, W, H)
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)
        renderer.set_environment(LEARNED_ENV, 0.0)
    covered = before["progress"][..., 0] > 0.2
    assert covered.sum() > 50
    np.testing.assert_allclose(after["pbr"], before["pbr"], atol=1e-6)
    assert np.abs(after["radiance"] - before["radiance"])[covered].mean() > 0.1
    for name in ("radiance_residual", "composite"):
        assert np.abs(after[name] - before[name])[covered].mean() > 0.05, name
    for image in (before, after):
        np.testing.assert_allclose(image["radiance_residual"], (1.0 - image["progress"]) * image["radiance"], atol=1e-5)


def test_rotated_light_turns_counter_clockwise(renderer, sun_env):
    """Rotating by +90 degrees moves the sun from +X to +Y (seen from +Z, counter-clockwise)."""
    light = renderer.light(str(sun_env), 90.0)
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0]], device=light.log_radiance.device)
    if not torch.allclose(renderer.rotation, torch.eye(3, dtype=renderer.rotation.dtype)):
        dirs = dirs @ renderer.rotation.to(dirs).T  # world -> the model's frame
    x, y, minus_y = light(dirs)[:, 0].tolist()
    assert y > 10 * max(x, minus_y)


def test_bad_env_file_keeps_previous_light(renderer, tmp_path):
    renderer.set_environment(LEARNED_ENV, 30.0)
    with pytest.raises((OSError, FileNotFoundError)):
        renderer.set_environment(str(tmp_path / "missing.exr"))
    assert renderer.env == LEARNED_ENV and renderer.rotation_deg == 30.0
    renderer.set_environment(LEARNED_ENV, 0.0)
