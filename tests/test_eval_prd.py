"""``studio eval prd`` and the inverse-rendering metrics of ``studio.eval.inverse``."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from studio.eval.inverse import (
    METRIC_KEYS,
    albedo_scale,
    aligned_albedo_psnr,
    angular_error_deg,
    default_interior_band_px,
    evaluate_inverse,
    interior_mask,
    masked_angular_error_deg,
    masked_mse,
    masked_psnr,
)


# -------------------------------------------------------------------------------------- metrics
def test_albedo_scale_recovers_a_known_per_channel_scale():
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.5, 1.25, 2.0])
    gts = [torch.rand(8, 8, 3, generator=gen) * 0.8 + 0.1 for _ in range(3)]
    preds = [g / scale for g in gts]
    masks = [torch.rand(8, 8, generator=gen) > 0.3 for _ in range(3)]
    # background pixels (outside the masks) hold garbage that must not matter
    for p, m in zip(preds, masks):
        p[~m] = 123.0
    s = albedo_scale(preds, gts, masks)
    torch.testing.assert_close(s, scale, rtol=1e-6, atol=1e-6)
    value, s2 = aligned_albedo_psnr(preds, gts, masks)
    assert value > 100.0  # exact after alignment (the PSNR clamps the MSE at 1e-12)
    torch.testing.assert_close(s2, scale)


def test_albedo_scale_ignores_black_predictions_and_empty_channels():
    gt = torch.full((4, 4, 3), 0.5)
    pred = torch.full((4, 4, 3), 0.25)
    pred[0, :, 0] = 0.0  # excluded from channel 0
    pred[..., 2] = 0.0  # no valid pixel: scale 1
    s = albedo_scale([pred], [gt], [torch.ones(4, 4, dtype=torch.bool)])
    torch.testing.assert_close(s, torch.tensor([2.0, 2.0, 1.0]))


def test_angular_error_of_known_normals():
    z = torch.tensor([0.0, 0.0, 1.0])
    tilted = torch.tensor([math.sin(math.radians(30)), 0.0, math.cos(math.radians(30))])
    pred = torch.stack([z, tilted, -z, torch.tensor([0.0, 2.0, 0.0])])
    gt = torch.stack([z, z, z, z * 5])  # normalised inside
    err = angular_error_deg(pred, gt)
    torch.testing.assert_close(err, torch.tensor([0.0, 30.0, 180.0, 90.0]), atol=1e-3, rtol=0)
    mask = torch.tensor([True, True, False, False])
    assert abs(float(masked_angular_error_deg(pred, gt, mask)) - 15.0) < 1e-3


def test_masked_mse_and_psnr_use_only_masked_pixels():
    pred = torch.zeros(2, 2, 1)
    gt = torch.tensor([[[0.1], [0.0]], [[5.0], [5.0]]])
    mask = torch.tensor([[True, True], [False, False]])
    assert abs(float(masked_mse(pred, gt, mask)) - 0.005) < 1e-7
    assert abs(float(masked_psnr(pred, gt, mask)) - (-10 * math.log10(0.005))) < 1e-4


def test_interior_band_width_scales_with_resolution():
    assert default_interior_band_px(128, 128) == 3
    assert default_interior_band_px(256, 512) == 6
    assert default_interior_band_px(800, 800) == 19
    assert default_interior_band_px(16, 16) == 1


def _disc_truth(tmp_path: Path, size: int = 64):
    """A test view and one relit split of a disc of radius 20 px (RGBA PNGs), its camera stand-ins
    and the relit image over white."""
    from studio.eval.inverse import TestTruth, ViewTruth

    yy, xx = np.mgrid[:size, :size] + 0.5
    alpha = (np.hypot(yy - size / 2, xx - size / 2) < 20).astype(np.float32)
    rgba = np.concatenate([np.full((size, size, 3), 77 / 255, np.float32), alpha[..., None]], -1)  # 8-bit exact
    path = tmp_path / "r_000.png"
    Image.fromarray(np.round(rgba * 255).astype(np.uint8)).save(path)
    env = tmp_path / "env.hdr"
    from studio.pbr.envmap import write_hdr

    write_hdr(env, np.ones((4, 8, 3), np.float32))
    rgb = rgba[..., :3] * alpha[..., None] + 1.0 - alpha[..., None]
    truth = TestTruth(views=[ViewTruth(rgb=rgb, mask=alpha > 0.5)], relit={"sun": (env, [path])})
    return truth, [object()], torch.from_numpy(rgb), torch.from_numpy(alpha)


def _relit_metrics(truth, cameras, relit_image, band_px=3, lpips=None):
    gbuffers = {"rgb": torch.from_numpy(truth.views[0].rgb)}
    return evaluate_inverse(
        _Indexable(cameras),
        truth,
        render_gbuffers=lambda cam: gbuffers,
        render_relit=lambda cam, light, scale: relit_image,
        light_resolution=4,
        lpips=lpips,
        interior_band_px=band_px,
    )


class _Indexable(list):
    """Stand-in for Nerfstudio Cameras: len() and slicing."""


def test_interior_relight_psnr_ignores_the_silhouette_band(tmp_path):
    """An error confined to the 3-px band inside the silhouette lowers the whole-image PSNR but not
    the interior one; an error in the interior lowers both."""
    truth, cameras, gt, alpha = _disc_truth(tmp_path)
    band = (alpha > 0.5) & ~interior_mask(alpha, 3)
    assert band.sum() > 50  # a ring of pixels
    in_band = gt.clone()
    in_band[band] = 1.0 - in_band[band]
    edge = _relit_metrics(truth, cameras, in_band)
    assert edge["relight_psnr"]["sun"] < 25.0
    assert edge["relight_psnr_interior"]["sun"] > 100.0  # exact inside (the MSE clamps at 1e-12)

    inside = gt.clone()
    inside[interior_mask(alpha, 3)] += 0.1
    core = _relit_metrics(truth, cameras, inside)
    assert abs(core["relight_psnr_interior"]["sun"] - 20.0) < 0.01
    assert core["relight_psnr"]["sun"] > core["relight_psnr_interior"]["sun"]  # diluted by unchanged pixels
    # a wider band than the corrupted ring still ignores it; a 1-px band does not
    assert _relit_metrics(truth, cameras, in_band, band_px=5)["relight_psnr_interior"]["sun"] > 100.0
    assert _relit_metrics(truth, cameras, in_band, band_px=1)["relight_psnr_interior"]["sun"] < 30.0


def test_lpips_keys_are_none_without_weights_and_filled_with_them(tmp_path):
    truth, cameras, gt, _ = _disc_truth(tmp_path)
    without = _relit_metrics(truth, cameras, gt)
    assert tuple(without) == METRIC_KEYS
    assert without["nvs_lpips"] is None and without["relight_lpips"] is None
    calls = []

    def fake_lpips(pred, target):  # [B,3,H,W] in [0,1], as studio.metrics.lpips_if_available's callable
        assert pred.shape == target.shape == (1, 3, *gt.shape[:2])
        calls.append(1)
        return (pred - target).abs().mean()

    shifted = (gt + 0.1).clamp(0, 1)
    with_lpips = _relit_metrics(truth, cameras, shifted, lpips=fake_lpips)
    assert with_lpips["nvs_lpips"] == 0.0
    assert with_lpips["relight_lpips"]["sun"] > 0.0 and len(calls) == 2


# ------------------------------------------------------------------------------------------ CLI
SCENE = Path(__file__).resolve().parents[1] / "scenes" / "toyworld_mushroom"
SHIFT = 0.1  # NVS / relit corruption: every value moves by exactly 0.1 (PSNR 20 dB)
TILT_DEG = 30.0
ROUGHNESS_OFFSET = 0.2
ALBEDO_SCALE = (0.5, 0.7, 0.9)


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.float32) / 255.0


def _over_white(path: Path) -> np.ndarray:
    rgba = _png(path)
    a = rgba[..., 3:]
    return rgba[..., :3] * a + 1.0 - a


def _srgb_decode(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _shift(img: np.ndarray) -> np.ndarray:
    """Every value moved by exactly SHIFT, staying inside [0, 1]."""
    return np.where(img < 0.5, img + SHIFT, img - SHIFT).astype(np.float32)


def _tilt(n: np.ndarray, deg: float) -> np.ndarray:
    """Each unit normal turned by ``deg`` towards a direction perpendicular to it."""
    axis = np.where(np.abs(n[..., 2:3]) < 0.9, np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]))
    t = np.cross(n, axis)
    t /= np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
    r = math.radians(deg)
    return (math.cos(r) * n + math.sin(r) * t).astype(np.float32)


class _TruthModel:
    """Stands in for a trained prd model: its G-buffers are the mushroom's test files, read here
    without ``studio.eval.inverse`` (``exact``), with the albedo scaled per channel (``scaled``),
    or with known errors (``corrupt``: rgb and relit images off by SHIFT, albedo colour-shifted,
    roughness + ROUGHNESS_OFFSET, normals tilted by TILT_DEG)."""

    device = torch.device("cpu")

    def __init__(self, cameras, mode: str, split: str = "test"):
        self.c2w, self.mode, self.split = cameras.camera_to_worlds, mode, split
        self.relit_scales: list = []

    def _index(self, camera) -> int:
        dist = (self.c2w - camera.camera_to_worlds[0]).abs().flatten(1).amax(1)
        assert float(dist.min()) < 1e-5, "a camera that is not a test camera"
        return int(dist.argmin())

    def render_gbuffers(self, camera, background=None):
        from studio.pbr.envmap import read_envmap

        assert background is not None and torch.equal(background.cpu(), torch.ones(3))  # scored over white
        i, test = self._index(camera), SCENE / self.split
        rgb = _over_white(test / f"r_{i:03d}.png")
        if not (test / f"albedo_{i:04d}.png").is_file():  # a split without AOVs
            return {"rgb": torch.from_numpy(_shift(rgb) if self.mode == "corrupt" else rgb)}
        albedo = _srgb_decode(_png(test / f"albedo_{i:04d}.png")[..., :3])
        roughness = _png(test / f"roughness_{i:04d}.png")[..., None]
        normal = np.asarray(read_envmap(test / f"normal_{i:04d}.exr"), np.float32)
        if self.mode == "scaled":
            albedo = albedo * np.array(ALBEDO_SCALE, np.float32)
        if self.mode == "corrupt":
            rgb, roughness = _shift(rgb), roughness + ROUGHNESS_OFFSET
            albedo = _srgb_decode(np.clip(_png(test / f"albedo_{i:04d}.png")[..., :3] + [0.15, -0.1, 0.1], 0, 1))
            normal = _tilt(normal, TILT_DEG)
        out = {"rgb": rgb, "albedo": albedo, "roughness": roughness, "normal": normal}
        return {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in out.items()}

    def render_relit(self, camera, light, albedo_scale=None):
        self.relit_scales.append(albedo_scale)
        relit = _over_white(SCENE / f"{self.split}_studio" / f"r_{self._index(camera):03d}.png")
        return torch.from_numpy(_shift(relit) if self.mode == "corrupt" else relit)


@pytest.fixture(scope="module")
def prd_config(tmp_path_factory) -> Path:
    """config.yml of a prd run on the mushroom (no checkpoint: these tests replace ``load_run``)."""
    import yaml

    from studio.methods.prd.config import prd

    config = copy.deepcopy(prd.config)
    config.data = config.pipeline.datamanager.data = config.pipeline.datamanager.dataparser.data = SCENE
    path = tmp_path_factory.mktemp("prd_config") / "config.yml"
    path.write_text(yaml.dump(config), encoding="utf-8")
    return path


def _eval_with(prd_config, tmp_path, monkeypatch, mode: str, split: str = "test"):
    """``studio eval prd`` on the mushroom's ``split`` with a _TruthModel in place of the run's model."""
    import studio.metrics
    import studio.models.runs
    from studio.cli.main import entrypoint
    from studio.data.dataparser import StudioDataParserConfig

    cameras = StudioDataParserConfig(data=SCENE).setup().get_dataparser_outputs(split).cameras
    model = _TruthModel(cameras, mode, split)
    loads = []

    def fake_load_run(config, **kwargs):
        loads.append(kwargs)
        return SimpleNamespace(pipeline=SimpleNamespace(model=model))

    monkeypatch.setattr(studio.models.runs, "load_run", fake_load_run)
    monkeypatch.setattr(studio.metrics, "lpips_if_available", lambda: None)  # as without local weights
    out = tmp_path / f"{mode}.json"
    entrypoint(
        [
            "eval",
            "prd",
            "--load-config",
            str(prd_config),
            "--data",
            str(SCENE),
            "--output",
            str(out),
            "--light-resolution",
            "4",
            "--split",
            split,
        ]
    )
    assert loads and Path(loads[0]["data"]) == SCENE  # --data replaces the run's dataset
    return json.loads(out.read_text()), model


def test_eval_prd_of_the_ground_truth_is_perfect(prd_config, tmp_path, monkeypatch, capsys):
    """G-buffers equal to the ground truth score (near) the clamp of every metric; a per-channel
    scale of the albedo is removed by the alignment and handed on to the relit render."""
    metrics, model = _eval_with(prd_config, tmp_path, monkeypatch, "exact")
    assert tuple(metrics) == METRIC_KEYS and set(metrics["relight_psnr"]) == {"studio"}
    assert metrics["nvs_psnr"] > 60.0 and metrics["nvs_ssim"] > 0.9999
    assert metrics["albedo_psnr"] > 60.0
    assert metrics["roughness_mse"] < 1e-10
    assert metrics["normal_mae_deg"] < 0.1
    assert metrics["relight_psnr"]["studio"] > 60.0
    assert len(model.relit_scales) == 8
    for s in model.relit_scales:
        torch.testing.assert_close(s, torch.ones(3), atol=1e-5, rtol=0)
    printed = capsys.readouterr().out
    assert "albedo_psnr" in printed
    assert metrics["relight_psnr_interior"]["studio"] > 60.0
    assert metrics["nvs_lpips"] is None and metrics["relight_lpips"] is None  # no LPIPS weights (fixture)
    assert sum("LPIPS not computed" in line for line in printed.splitlines()) == 1

    scaled, model = _eval_with(prd_config, tmp_path, monkeypatch, "scaled")
    assert scaled["albedo_psnr"] > 60.0
    for s in model.relit_scales:
        torch.testing.assert_close(s, 1.0 / torch.tensor(ALBEDO_SCALE), atol=1e-3, rtol=0)


def test_eval_prd_of_known_errors(prd_config, tmp_path, monkeypatch):
    """Each corruption shows in its own metric by its known amount."""
    metrics, _ = _eval_with(prd_config, tmp_path, monkeypatch, "corrupt")
    assert abs(metrics["nvs_psnr"] - 20.0) < 0.01 and metrics["nvs_ssim"] < 0.99
    assert abs(metrics["relight_psnr"]["studio"] - 20.0) < 0.01
    assert abs(metrics["relight_psnr_interior"]["studio"] - 20.0) < 0.01
    assert abs(metrics["roughness_mse"] - ROUGHNESS_OFFSET**2) < 1e-5
    assert abs(metrics["normal_mae_deg"] - TILT_DEG) < 0.5
    assert metrics["albedo_psnr"] < 30.0


def test_eval_prd_scores_the_validation_views_apart_from_the_test_views(prd_config, tmp_path, monkeypatch):
    """--split val scores the validation cameras against val/ and val_studio/ (distinct from the test
    views): a model that draws the validation views scores perfectly there, and the test views'
    images are never asked for (the stand-in model asserts every camera is one of its split's)."""
    metrics, model = _eval_with(prd_config, tmp_path, monkeypatch, "exact", split="val")
    assert metrics["nvs_psnr"] > 60.0 and metrics["relight_psnr"]["studio"] > 60.0
    assert metrics["albedo_psnr"] is None  # the mushroom's validation views carry no AOVs (--aovs test)
    corrupt, _ = _eval_with(prd_config, tmp_path, monkeypatch, "corrupt", split="val")
    assert abs(corrupt["nvs_psnr"] - 20.0) < 0.01 and abs(corrupt["relight_psnr"]["studio"] - 20.0) < 0.01


def test_eval_prd_split_val_needs_its_own_validation_views(prd_config, tmp_path, capsys):
    """A dataset whose val split is its test split (NeRF-synthetic from Blender) is refused for
    --split val in one line, and nothing is written."""
    from studio.cli.main import entrypoint

    scene = tmp_path / "scene"
    shutil.copytree(SCENE, scene, ignore=shutil.ignore_patterns("val", "val_*", "transforms_val_*.json"))
    shutil.copyfile(scene / "transforms_test.json", scene / "transforms_val.json")
    out = tmp_path / "metrics.json"
    with pytest.raises(SystemExit) as exc:
        entrypoint(
            [
                "eval",
                "prd",
                "--load-config",
                str(prd_config),
                "--data",
                str(scene),
                "--output",
                str(out),
                "--split",
                "val",
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no validation views of its own" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_eval_prd_bad_env_is_one_line_and_no_output(prd_config, tmp_path, capsys):
    from studio.cli.main import entrypoint

    out = tmp_path / "metrics.json"
    with pytest.raises(SystemExit) as exc:
        entrypoint(["eval", "prd", "--load-config", str(prd_config), "--output", str(out), "--env", "sun"])
    assert exc.value.code == 2
    assert "NAME=PATH" in capsys.readouterr().err
    assert not out.exists()


def test_eval_prd_runs_a_real_model(prd_run, tmp_path):
    """The CLI end to end on a real (untrained) PRDModel loaded by ``load_run``: every metric is
    finite and an untrained model is far from the ground truth."""
    from studio.cli.main import entrypoint

    _, config = prd_run
    out = tmp_path / "metrics.json"
    entrypoint(["eval", "prd", "--load-config", str(config), "--output", str(out), "--light-resolution", "4"])
    metrics = json.loads(out.read_text())
    values = [metrics[k] for k in ("nvs_psnr", "nvs_ssim", "albedo_psnr", "roughness_mse", "normal_mae_deg")]
    assert all(math.isfinite(v) for v in values) and set(metrics["relight_psnr"]) == {"sun"}
    assert metrics["nvs_psnr"] < 40.0 and metrics["normal_mae_deg"] > 1.0
