"""``studio prior eval`` (``studio.eval.priors``): tiny runs of the toy-t2i and toy-nvs evaluations
with the committed weights, the t2i scoring of real renders (it must score them high, and low under
another caption's labels), the view metrics, and the command's JSON, sheet and input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from studio.cli.main import entrypoint
from studio.eval import priors as ep
from studio.eval.classifier import load_attribute_classifier, scene_attributes
from studio.priors import load_prior
from studio.scenes.toyworld.scene import make_scene

MUSHROOM, CYLINDER = "a mushroom with a matte red cap", "a satin green cylinder"  # test, validation: early seeds


@pytest.fixture(autouse=True)
def cache_and_threads(tmp_path_factory, monkeypatch):
    """Real renders go to a folder of this session's, not the user's cache; one torch thread."""
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def classifier():
    return load_attribute_classifier()


def in_unit(value) -> bool:
    return value is not None and 0.0 <= value <= 1.0


def test_t2i_tiny_run(classifier):
    prior = load_prior("toy-t2i")
    out = ep.evaluate_t2i(prior, classifier, [MUSHROOM, CYLINDER], 2, steps=2, real_per_caption=2, real_views=2)
    assert set(out) == {"captions", "splits", "settings", "seconds", "images"}
    assert [out["captions"][c]["split"] for c in (MUSHROOM, CYLINDER)] == ["test", "validation"]
    for row in out["captions"].values():
        assert row["n"] == 2 and row["real"]["n"] == 4
        assert all(in_unit(row[a]) and in_unit(row["real"][a]) for a in ("category", "colour", "material"))
        assert set(row["most_often"]) == {"category", "colour", "material"}
    assert set(out["splits"]) == {"all", "test", "validation"}
    assert out["splits"]["all"]["n"] == 4 and out["splits"]["test"]["captions"] == 1
    assert all(np.isfinite(row["fid"]) and row["fid"] >= 0 for row in out["splits"].values())
    assert out["images"][MUSHROOM]["samples"].shape == (2, 32, 32, 3)
    assert out["images"][MUSHROOM]["real"].shape == (4, 32, 32, 3)
    json.dumps({k: v for k, v in out.items() if k != "images"})  # the rest is JSON


def test_t2i_scores_real_renders_high_and_wrong_labels_low(classifier):
    """Real renders in place of samples: high accuracy and ~0 distance; under another caption, low."""
    real = ep.caption_renders([MUSHROOM, CYLINDER], per_caption=4, views=2)
    assert real[MUSHROOM].shape == (8, 32, 32, 3)
    scores = ep.score_t2i(classifier, real, real)
    for caption in (MUSHROOM, CYLINDER):
        assert scores["captions"][caption]["category"] >= 0.75
        assert scores["captions"][caption]["colour"] >= 0.75
    assert abs(scores["splits"]["all"]["fid"]) < 1e-3
    swapped = ep.score_t2i(classifier, {CYLINDER: real[MUSHROOM]}, real)
    assert swapped["captions"][CYLINDER]["category"] <= 0.25
    assert swapped["captions"][CYLINDER]["colour"] <= 0.25
    assert swapped["splits"]["all"]["fid"] > 1.0


def test_draw_is_a_function_of_seed_and_key():
    prior = load_prior("toy-t2i")
    cond = prior.condition(text=MUSHROOM)
    a, b = (ep.draw(prior, cond, 2, MUSHROOM, 0, 2, 3.0) for _ in range(2))
    assert a.dtype == np.uint8 and a.shape == (2, 32, 32, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, ep.draw(prior, cond, 2, MUSHROOM, 1, 2, 3.0))


def test_nvs_tiny_run(classifier):
    prior = load_prior("toy-nvs")
    out = ep.evaluate_nvs(prior, classifier, [1, 4], azimuths=(30, 180), n_per_view=2, steps=2)
    rows = out["azimuths"]
    assert set(rows) == {"30", "180", "all"}
    assert rows["30"]["n"] == 4 and rows["all"]["n"] == 8
    for row in rows.values():
        assert 0.0 < row["psnr"] < 60.0 and -1.0 <= row["ssim"] <= 1.0 and in_unit(row["mask_iou"])
        assert all(in_unit(row[k]) for k in ("category", "colour", "category_true", "colour_true"))
        assert row["copy_reference"]["psnr"] > 0.0
    images = out["images"]
    assert images["reference"].shape == (2, 32, 32, 3) and images["true"].shape == (2, 2, 32, 32, 3)
    assert images["samples"].shape == (2, 2, 2, 32, 32, 3)
    assert out["settings"]["seeds"] == [1, 4] and out["settings"]["mask_threshold"] == ep.MASK_THRESHOLD


def test_nvs_64_is_scored_at_64_and_at_32(classifier):
    from studio.priors.toy import build_toy_prior

    arch = {"channels": [16, 32, 32], "n_res": 1, "ctx_dim": 32, "heads": 2, "image_size": 64}
    out = ep.evaluate_nvs(build_toy_prior("toy-nvs", {"arch": arch}).eval(), classifier, [1], azimuths=(90,), steps=1)
    assert out["images"]["samples"].shape == (1, 1, 1, 64, 64, 3) and out["images"]["true"].shape == (1, 1, 64, 64, 3)
    assert out["settings"]["res"] == 64 and set(out["azimuths_32"]) == {"90", "all"}
    small = out["azimuths_32"]["90"]
    assert small["copy_reference"] == ep.score_views(*(ep.object_views(1, (90,))[None, k] for k in (0, 1)))
    assert small["psnr"] != out["azimuths"]["90"]["psnr"]
    assert ep.resize_views(np.full((2, 1, 64, 64, 3), 7, np.uint8), 32).shape == (2, 1, 32, 32, 3)


def test_nvs_leaves_snowmen_out_of_the_classifier_columns(classifier):
    rows = ep.evaluate_nvs(load_prior("toy-nvs"), classifier, [0], azimuths=(90,), steps=1)["azimuths"]  # a snowman
    assert rows["90"]["psnr"] > 0 and rows["90"]["category"] is None and rows["90"]["colour_true"] is None


def test_score_nvs_of_the_true_views(classifier):
    """The true views scored as samples: PSNR/SSIM/IoU of identical images; the classifier columns agree."""
    views = np.stack([ep.object_views(s, (90,)) for s in (1, 4)])  # [2, 2, 32, 32, 3]: reference, +90
    labels = [scene_attributes(make_scene(s, "object")) for s in (1, 4)]
    row = ep.score_nvs(classifier, views[:, 1:, None], views[:, 1:], views[:, 0], labels, (90,))["90"]
    assert row["n"] == 2 and row["psnr"] > 100 and row["mask_iou"] == 1.0
    assert (row["category"], row["colour"]) == (row["category_true"], row["colour_true"])
    assert row["copy_reference"]["psnr"] < row["psnr"]


def test_view_scores():
    white = np.full((2, 32, 32, 3), 255, np.uint8)
    square = white.copy()
    square[:, 8:24, 8:24] = (200, 30, 30)
    half = white.copy()
    half[:, 8:24, 8:16] = (30, 30, 200)
    assert np.allclose(ep.mask_iou(square, half), 0.5)
    assert np.allclose(ep.mask_iou(white, white), 1.0)  # both empty
    same = ep.score_views(square, square)
    assert same["psnr"] > 100 and same["ssim"] == pytest.approx(1.0) and same["mask_iou"] == 1.0


def test_command_writes_metrics_and_sheet(tmp_path, capsys):
    out, sheet = tmp_path / "nvs.json", tmp_path / "nvs.png"
    argv = ["prior", "eval", "toy-nvs", "--output", str(out), "--sheet", str(sheet)]
    entrypoint(argv + ["--objects", "2", "--n", "1", "--steps", "2", "--azimuth", "90", "--scale", "1"])
    metrics = json.loads(out.read_text())
    assert metrics["kind"] == "toy-nvs" and metrics["settings"]["seeds"] == [0, 1]
    assert metrics["settings"]["guidance"] == ep.NVS_GUIDANCE
    assert {"channels", "steps"} <= set(metrics["prior_training"])
    assert set(metrics["azimuths"]) == {"90", "all"} and "images" not in metrics
    assert Image.open(sheet).size == (3 * 32, 2 * 32)  # reference, true, sample; one row per object
    assert "+90 deg" in capsys.readouterr().out


def test_command_t2i_split(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ep, "heldout_captions", lambda split=None: {MUSHROOM: "test"})
    out = tmp_path / "t2i.json"
    entrypoint(["prior", "eval", "toy-t2i", "--output", str(out), "--n", "2", "--steps", "2", "--guidance", "2"])
    metrics = json.loads(out.read_text())
    assert list(metrics["captions"]) == [MUSHROOM] and metrics["settings"]["guidance"] == 2.0
    assert metrics["settings"]["real_per_caption"] == 8 and metrics["captions"][MUSHROOM]["real"]["n"] == 32
    assert MUSHROOM in capsys.readouterr().out


def test_heldout_captions_and_seeds():
    assert set(ep.heldout_captions("validation")) == {"a matte blue cone", CYLINDER}
    assert len(ep.heldout_captions()) == 5 and ep.heldout_captions("test")[MUSHROOM] == "test"
    assert ep.split_seeds("validation", 3) == [900, 901, 902] and len(ep.split_seeds("test", 2000)) == 900


@pytest.mark.parametrize(
    "args, message",
    [
        (["no-such-prior", "--output", "{tmp}/m.json"], "unknown prior"),
        (["toy-t2i", "--output", "{tmp}/m.txt"], "must end in .json"),
        (["toy-t2i", "--output", "{tmp}/m.json", "--sheet", "{tmp}/s.jpg"], "must end in .png"),
        (["toy-t2i", "--output", "{tmp}/m.json", "--n", "0"], "must be >= 1"),
    ],
)
def test_command_refuses_bad_inputs(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        entrypoint(["prior", "eval", *(a.format(tmp=tmp_path) for a in args)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
