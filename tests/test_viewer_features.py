"""``studio view`` of ``splat-distill`` runs: the lifted feature Gaussians of a scene of the run's data.

The run is a real 2-step ``ns-train splat-distill`` run (about 10 s on 2 CPU cores) on two tiny
ToyWorld scenes, with a random ToyViT teacher and a random Gaussian predictor: what the viewer shows
does not depend on training. No browser is started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import free_port, studio_process

from studio.viewer.feature_renderer import FEATURE_MODES, FeatureRenderer, is_splat_distill_config

NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))
RES = 48
W, H = 56, 40  # not the data's size or aspect: the renderer follows the requested camera


@pytest.fixture(scope="module")
def sd_run(tmp_path_factory) -> Path:
    """config.yml of a 2-step splat-distill run on two ToyWorld objects (random teacher and predictor)."""
    from studio.features.registry import save_feature_model
    from studio.features.vit import ToyViT
    from studio.lift.model import GaussianPredictor, save_predictor
    from studio.scenes.toyworld.dataset import MakeConfig, make_dataset

    root = tmp_path_factory.mktemp("sd_view")
    for name, seed in (("first", 5), ("second", 11)):
        cfg = MakeConfig(seed=seed, kind="object", n_train=6, n_test=1, res=RES, spp=1, aa=1, relight=(), sheet=False)
        make_dataset(root / "data" / name, cfg)
    save_feature_model(ToyViT(), root / "teacher.safetensors")
    save_predictor(GaussianPredictor(), root / "predictor.safetensors")
    cmd = [
        NS_TRAIN,
        "splat-distill",
        "--data",
        str(root / "data"),
        "--output-dir",
        str(root / "runs"),
        "--preset",
        "tiny",
        "--vis",
        "tensorboard",
        "--max-num-iterations",
        "2",
        "--steps-per-save",
        "2",
        "--pipeline.model.teacher",
        str(root / "teacher.safetensors"),
        "--pipeline.model.predictor",
        str(root / "predictor.safetensors"),
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (config,) = (root / "runs").glob("*/splat-distill/*/config.yml")
    return config


@pytest.fixture(scope="module")
def renderer(sd_run) -> FeatureRenderer:
    return FeatureRenderer.from_config(sd_run, device="cpu")


def _training_view(renderer: FeatureRenderer, view: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A training camera of the current scene (viewmat, K for a W x H image)."""
    scene = renderer.datamanager.scenes[renderer.scene_index]
    K = scene.Ks[view].double().numpy().copy()
    K[0, 2], K[1, 2] = W / 2.0, H / 2.0
    return scene.viewmats[view].double().numpy(), K


def test_splat_distill_config_detected(sd_run, tmp_path):
    assert is_splat_distill_config(sd_run)
    assert not is_splat_distill_config(tmp_path / "scene.ply")
    assert not is_splat_distill_config(tmp_path / "missing.yml")


def test_other_method_config_is_not_splat_distill(tmp_path):
    import yaml

    from studio.models.registry import registered_config

    path = tmp_path / "config.yml"
    path.write_text(yaml.dump(registered_config("studio-splat")), encoding="utf-8")
    assert not is_splat_distill_config(path)


def test_features_render_where_the_gaussians_are(renderer):
    assert FEATURE_MODES[0] == "features (PCA)" and "rgb" in FEATURE_MODES
    assert renderer.scene_names() == ["0: first", "1: second"]
    assert renderer.scene_index == 0 and renderer.num_gaussians == 2 * 64 * 64
    viewmat, K = _training_view(renderer)
    image = renderer.render(viewmat, K, W, H)  # the default mode: features (PCA)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    covered = renderer.render_outputs(viewmat, K, W, H)["accumulation"][..., 0].numpy() > 0.5
    assert covered.mean() > 0.05, "the Gaussians should cover part of a training view"
    colours = image[covered].astype(np.float64)
    assert colours.std(axis=0).max() > 10.0, "the lifted features should not all have one PCA colour"
    assert len(np.unique(image[covered], axis=0)) > 20
    empty = renderer.render(_turned_away() @ viewmat, K, W, H)
    assert (empty >= 254).all(), "the background is white"
    # the same view gives the same colours (the PCA basis must not change between frames)
    np.testing.assert_array_equal(renderer.render(viewmat, K, W, H), image)
    rgb = renderer.render(viewmat, K, W, H, "rgb")
    assert rgb.shape == (H, W, 3) and np.abs(rgb.astype(int) - image).mean() > 1.0
    with pytest.raises(ValueError):
        renderer.render(viewmat, K, W, H, "depth")


def _turned_away() -> np.ndarray:
    """A turn of the camera by 180 degrees about its y axis (applied after a viewmat: it looks away)."""
    return np.diag([-1.0, 1.0, -1.0, 1.0])


def test_scene_and_context_pair_choice(renderer):
    first = renderer.model.preview[0].means.clone()
    renderer.set_scene(1, 0)
    second = renderer.model.preview[0].means.clone()
    assert renderer.scene_index == 1 and not np.allclose(first.numpy(), second.numpy())
    center, radius = renderer.bounds()
    assert center.shape == (3,) and np.isfinite(center).all() and 0.0 < radius < 10.0
    renderer.set_scene(1, 3)  # another context pair of the same scene
    assert renderer.context_seed == 3 and not np.allclose(second.numpy(), renderer.model.preview[0].means.numpy())
    with pytest.raises(ValueError):
        renderer.set_scene(2)
    assert renderer.scene_index == 1 and renderer.context_seed == 3  # a refused choice changes nothing
    renderer.set_scene(0, 0)
    np.testing.assert_allclose(renderer.model.preview[0].means.numpy(), first.numpy())


def test_view_serves_a_splat_distill_run_on_loopback(sd_run):
    """``studio view CONFIG`` loads the run through the splat-distill path and listens on 127.0.0.1 only."""
    port = free_port()
    with studio_process("view", str(sd_run), "--port", str(port)) as (proc, lines):
        deadline = time.monotonic() + 20.0
        while True:
            assert proc.poll() is None, "studio view exited early:\n" + "".join(lines)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1.0) as resp:
                    assert resp.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "the page did not answer"
                time.sleep(0.1)
        listening = [
            c.laddr for c in psutil.Process(proc.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
        ]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
        deadline = time.monotonic() + 120.0
        while not any("scene loaded" in line for line in lines):
            assert proc.poll() is None, "studio view exited early:\n" + "".join(lines)
            assert time.monotonic() < deadline, "no 'scene loaded':\n" + "".join(lines)
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 130, "".join(lines)
