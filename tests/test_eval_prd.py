"""``studio eval prd`` and the inverse-rendering metrics of ``studio.eval.inverse``."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.eval.inverse import (
    METRIC_KEYS,
    albedo_scale,
    aligned_albedo_psnr,
    angular_error_deg,
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


# ------------------------------------------------------------------------------------------ CLI
def test_eval_prd_writes_every_metric(prd_run, tmp_path, capsys):
    from studio.cli.main import entrypoint

    data, config = prd_run
    out = tmp_path / "metrics.json"
    entrypoint(["eval", "prd", "--load-config", str(config), "--output", str(out), "--light-resolution", "4"])
    metrics = json.loads(out.read_text())
    assert tuple(metrics) == METRIC_KEYS
    for key in ("nvs_psnr", "nvs_ssim", "albedo_psnr", "roughness_mse", "normal_mae_deg"):
        assert isinstance(metrics[key], float), key
    assert set(metrics["relight_psnr"]) == {"sun"} and isinstance(metrics["relight_psnr"]["sun"], float)
    assert "nvs_psnr" in capsys.readouterr().out


def test_eval_prd_bad_env_is_one_line_and_no_output(prd_run, tmp_path, capsys):
    from studio.cli.main import entrypoint

    _, config = prd_run
    out = tmp_path / "metrics.json"
    with pytest.raises(SystemExit) as exc:
        entrypoint(["eval", "prd", "--load-config", str(config), "--output", str(out), "--env", "sun"])
    assert exc.value.code == 2
    assert "NAME=PATH" in capsys.readouterr().err
    assert not out.exists()
