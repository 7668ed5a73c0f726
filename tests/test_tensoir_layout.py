"""TensoIR-Synthetic scenes (``studio.data.tensoir``): ``ns-train``'s dataparser reads their cameras,
images and masks, and ``studio eval prd`` scores their relit test views per environment."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import _inverse_dataset, orbit_c2w
from PIL import Image

from studio.data import DatasetFormat, detect_format, validate_dataset
from studio.io.errors import StudioInputError
from studio.pbr.envmap import write_hdr

SIZE = 16
ANGLE_X = 0.69
TRAIN_ENV = "sunset"
ENV_RADIANCE = {"bridge": 0.5, "city": 2.0}  # constant maps: the light's mean tells which env it is
SHIFT = 0.1  # relit corruption: every value moves by exactly 0.1 (PSNR 20 dB)


def _rgba(seed: int) -> np.ndarray:
    """A view's RGBA image: random colour, an opaque square, transparent elsewhere (uint8)."""
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[4:12, 3:13, 3] = 255
    return rgba


def _write_view(folder: Path, c2w: np.ndarray, seed: int, layout: str, relit: bool) -> None:
    """One view folder as TensoIR's: metadata.json (c2w as a row-major string, or a nested list
    written row- or column-major), rgba.png, albedo.png, normal.png, rgba_<env>.png."""
    folder.mkdir(parents=True)
    if layout == "string":
        mat = ",".join(str(float(v)) for v in c2w.reshape(-1))
    else:
        mat = (c2w.T if layout == "column-major" else c2w).tolist()
    meta = {"cam_angle_x": ANGLE_X, "cam_transform_mat": mat, "imh": SIZE, "imw": SIZE, "envmap": TRAIN_ENV}
    (folder / "metadata.json").write_text(json.dumps(meta))
    rgba = _rgba(seed)
    Image.fromarray(rgba).save(folder / "rgba.png")
    albedo = rgba.copy()
    albedo[..., :3] = np.random.default_rng(seed + 100).integers(10, 250, (SIZE, SIZE, 3))
    Image.fromarray(albedo).save(folder / "albedo.png")
    normal = np.zeros((SIZE, SIZE, 3), np.float32)
    normal[..., 0], normal[..., 2] = 0.6, 0.8
    Image.fromarray(np.concatenate([np.round((normal + 1) * 127.5).astype(np.uint8), rgba[..., 3:]], -1)).save(
        folder / "normal.png"
    )
    if relit:
        for k, name in enumerate([*ENV_RADIANCE, TRAIN_ENV]):
            Image.fromarray(_rgba(seed + 10 * (k + 1))).save(folder / f"rgba_{name}.png")


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Path, list[np.ndarray]]:
    """(scene folder, env map folder, camera-to-worlds of train_000, train_001, test_000, test_001)."""
    root, envs = tmp_path / "lego", tmp_path / "high_res_envmaps_1k"
    poses = [np.asarray(m, np.float64) for m in orbit_c2w(4)]
    for i, (split, layout) in enumerate(
        [("train", "string"), ("train", "column-major"), ("test", "string"), ("test", "row-major")]
    ):
        _write_view(root / f"{split}_{i % 2:03d}", poses[i], seed=i, layout=layout, relit=split == "test")
    envs.mkdir()
    for name, value in ENV_RADIANCE.items():
        write_hdr(envs / f"{name}.hdr", np.full((8, 16, 3), value, np.float32))
    return root, envs, poses


def test_dataparser_reads_cameras_images_and_masks(scene):
    from nerfstudio.data.datasets.base_dataset import InputDataset

    from studio.data.dataparser import StudioDataParserConfig

    root, _, poses = scene
    assert detect_format(root) is DatasetFormat.TENSOIR
    assert validate_dataset(root) is DatasetFormat.TENSOIR
    parser = StudioDataParserConfig(data=root).setup()
    focal = 0.5 * SIZE / math.tan(0.5 * ANGLE_X)
    for split, first in (("train", 0), ("test", 2), ("val", 2)):
        outputs = parser.get_dataparser_outputs(split)
        cams = outputs.cameras
        assert [p.parent.name for p in outputs.image_filenames] == [
            f"{split.replace('val', 'test')}_00{i}" for i in (0, 1)
        ]
        for i in range(2):  # string, column-major and row-major matrices all give the written c2w
            np.testing.assert_allclose(cams.camera_to_worlds[i].numpy(), poses[first + i][:3], atol=1e-6)
        assert float(cams.fx[0]) == pytest.approx(focal) and float(cams.fy[0]) == pytest.approx(focal)
        assert (float(cams.cx[0]), float(cams.cy[0]), int(cams.width[0]), int(cams.height[0])) == (8.0, 8.0, 16, 16)
    image = InputDataset(parser.get_dataparser_outputs("train"))[1]["image"]
    assert image.shape == (SIZE, SIZE, 4)  # RGBA: the model composites it and takes the alpha as mask
    np.testing.assert_allclose(image.numpy(), _rgba(1) / 255.0, atol=1e-6)


def test_bad_tensoir_metadata_is_one_clear_error(scene):
    root, _, _ = scene
    meta_path = root / "test_001" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["cam_transform_mat"] = "1,2,3"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StudioInputError, match="cam_transform_mat") as info:
        validate_dataset(root)
    assert "\n" not in str(info.value)


class _StubModel:
    """Renders each test view's ground truth (``exact``) or the relit image off by SHIFT (``shifted``);
    tells the env from the light's mean radiance, so a wrong env-map/image pairing shows."""

    def __init__(self, root: Path, cameras, mode: str):
        self.root, self.c2w, self.mode = root, cameras.camera_to_worlds, mode
        self.envs_seen: list[str] = []

    def _folder(self, camera) -> Path:
        dist = (self.c2w - camera.camera_to_worlds[0]).abs().flatten(1).amax(1)
        assert float(dist.min()) < 1e-5, "a camera that is not a test camera"
        return self.root / f"test_{int(dist.argmin()):03d}"

    def render_gbuffers(self, camera, background=None):
        folder = self._folder(camera)
        rgba = np.asarray(Image.open(folder / "rgba.png"), np.float32) / 255.0
        normal = np.asarray(Image.open(folder / "normal.png"), np.float32)[..., :3] / 255.0 * 2 - 1
        out = {
            "rgb": rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:],
            "albedo": 0.5 * np.asarray(Image.open(folder / "albedo.png"), np.float32)[..., :3] / 255.0,
            "normal": normal,
        }
        return {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in out.items()}

    def render_relit(self, camera, light, albedo_scale=None):
        radiance = float(light.log_radiance.exp().mean())
        env = min(ENV_RADIANCE, key=lambda name: abs(ENV_RADIANCE[name] - radiance))
        assert abs(ENV_RADIANCE[env] - radiance) < 0.05 * ENV_RADIANCE[env]
        self.envs_seen.append(env)
        rgba = np.asarray(Image.open(self._folder(camera) / f"rgba_{env}.png"), np.float32) / 255.0
        rgb = rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:]
        if self.mode == "shifted":
            rgb = np.where(rgb < 0.5, rgb + SHIFT, rgb - SHIFT)
        return torch.from_numpy(np.ascontiguousarray(rgb, np.float32))


def _evaluate(root: Path, envmap_dir: Path | None, mode: str):
    from studio.data.dataparser import StudioDataParserConfig
    from studio.eval.inverse import evaluate_inverse, load_test_truth

    outputs = StudioDataParserConfig(data=root).setup().get_dataparser_outputs("test")
    truth = load_test_truth(root, outputs.image_filenames, envmap_dir=envmap_dir)
    model = _StubModel(root, outputs.cameras, mode)
    metrics = evaluate_inverse(outputs.cameras, truth, model.render_gbuffers, model.render_relit, light_resolution=4)
    return metrics, truth, model


def test_relighting_protocol_scores_every_non_training_env(scene, capsys):
    root, envs, _ = scene
    metrics, truth, model = _evaluate(root, envs, "exact")
    assert set(truth.relit) == set(ENV_RADIANCE)  # the training light's rgba_sunset.png is not a relit split
    assert capsys.readouterr().err == ""  # (nor an env without a map)
    assert {name: p.name for name, (p, _) in truth.relit.items()} == {n: f"{n}.hdr" for n in ENV_RADIANCE}
    view = truth.views[0]
    np.testing.assert_array_equal(view.mask, _rgba(2)[..., 3] > 127)
    albedo = np.asarray(Image.open(root / "test_000" / "albedo.png"), np.float32)[..., :3] / 255.0
    np.testing.assert_allclose(view.albedo, albedo, atol=1e-6)  # linear: not sRGB-decoded
    np.testing.assert_allclose(
        view.normal[view.mask], np.broadcast_to([0.6, 0.0, 0.8], (view.mask.sum(), 3)), atol=0.01
    )
    assert sorted(model.envs_seen) == sorted(list(ENV_RADIANCE) * 2)
    assert set(metrics["relight_psnr"]) == set(ENV_RADIANCE)
    assert all(v > 60.0 for v in metrics["relight_psnr"].values())
    assert metrics["nvs_psnr"] > 60.0 and metrics["albedo_psnr"] > 60.0  # albedo x0.5 removed by the alignment
    assert metrics["normal_mae_deg"] < 1.0

    shifted, _, _ = _evaluate(root, envs, "shifted")
    assert all(abs(v - 20.0) < 0.01 for v in shifted["relight_psnr"].values())


def test_env_without_a_map_is_skipped_with_a_warning(scene, capsys):
    root, envs, _ = scene
    (envs / "city.hdr").unlink()
    metrics, _, _ = _evaluate(root, envs, "exact")
    assert set(metrics["relight_psnr"]) == {"bridge"}
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "city.hdr" in err and "skipped" in err


def test_envmap_dir_gives_nerf_synthetic_relit_splits_their_maps(tmp_path):
    """A NeRF-synthetic relit split test_sun/ whose meta.json names no file gets sun.hdr from the folder."""
    from studio.data.nerf_synthetic import read_nerf_synthetic
    from studio.eval.inverse import load_test_truth

    root = _inverse_dataset(tmp_path / "scene")
    (root / "meta.json").write_text(json.dumps({"relight": [{"name": "sun", "split": "test_sun"}]}))
    images = read_nerf_synthetic(root, "test").image_paths
    assert load_test_truth(root, images).relit["sun"][0] is None
    (tmp_path / "maps").mkdir()
    write_hdr(tmp_path / "maps" / "sun.hdr", np.ones((4, 8, 3), np.float32))
    assert load_test_truth(root, images, envmap_dir=tmp_path / "maps").relit["sun"][0] == tmp_path / "maps" / "sun.hdr"


@pytest.fixture
def prd_config(scene, tmp_path) -> Path:
    """config.yml of a prd run on the scene (no checkpoint: the tests replace ``load_run``)."""
    import yaml

    from studio.methods.prd.config import prd

    config = copy.deepcopy(prd.config)
    config.data = config.pipeline.datamanager.data = config.pipeline.datamanager.dataparser.data = scene[0]
    path = tmp_path / "config.yml"
    path.write_text(yaml.dump(config), encoding="utf-8")
    return path


def test_studio_eval_prd_on_a_tensoir_scene(scene, prd_config, tmp_path, monkeypatch, capsys):
    import studio.models.runs
    from studio.cli.main import entrypoint
    from studio.data.dataparser import StudioDataParserConfig

    root, envs, _ = scene
    cameras = StudioDataParserConfig(data=root).setup().get_dataparser_outputs("test").cameras
    model = _StubModel(root, cameras, "exact")
    model.device = torch.device("cpu")
    monkeypatch.setattr(
        studio.models.runs, "load_run", lambda *a, **k: SimpleNamespace(pipeline=SimpleNamespace(model=model))
    )
    out = tmp_path / "metrics.json"
    argv = ["eval", "prd", "--load-config", str(prd_config), "--output", str(out), "--light-resolution", "4"]
    entrypoint(argv + ["--envmap-dir", str(envs)])
    metrics = json.loads(out.read_text())
    assert set(metrics["relight_psnr"]) == set(ENV_RADIANCE) and all(v > 60 for v in metrics["relight_psnr"].values())

    empty = tmp_path / "no_maps"
    empty.mkdir()
    out.unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        entrypoint(argv + ["--envmap-dir", str(empty)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "no .hdr or .exr" in err
    assert not out.exists()
