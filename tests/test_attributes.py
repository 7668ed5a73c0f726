"""The ToyWorld attribute classifier (``studio.eval.classifier``): the committed weights on fresh
held-out renders, features, the Fréchet distance, a few training steps and ``studio eval attributes``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from studio.eval import classifier as clf
from studio.eval.classifier.labels import labelled, render_heldout
from studio.priors.toydata import DataConfig, make_data
from studio.scenes.toyworld.scene import make_scene

TEST_SEEDS = [1, 4, 5, 6, 7, 8, 9, 10, 11, 12]  # test seeds of known categories
SNOWMAN_SEED, PURPLE_CAPSULE_SEED = 0, 109


@pytest.fixture(scope="module")
def model():
    return clf.load_attribute_classifier()


@pytest.fixture(scope="module")
def heldout():
    """2 fresh 32x32 views of each test seed, plus a snowman and a purple capsule."""
    return labelled(render_heldout(TEST_SEEDS + [SNOWMAN_SEED, PURPLE_CAPSULE_SEED], DataConfig(views=2)))


def test_committed_weights_are_small_and_recorded():
    assert clf.DEFAULT_WEIGHTS.stat().st_size < 2_000_000
    record = json.loads(clf.DEFAULT_WEIGHTS.with_suffix(".json").read_text())["record"]
    assert record["accuracy"]["test"]["all"]["category"] >= 0.95
    assert record["accuracy"]["test"]["all"]["colour"] >= 0.90


def test_classifies_fresh_heldout_renders(model, heldout):
    mine = np.isin(heldout.seeds, TEST_SEEDS)
    pred = model.predict_indices(heldout.images[mine])
    labels = heldout.labels[mine]
    assert len(labels) == 2 * len(TEST_SEEDS) and (labels >= 0).all()
    assert np.mean(pred[:, 0] == labels[:, 0]) >= 0.8
    assert np.mean(pred[:, 1] == labels[:, 1]) >= 0.8


def test_larger_renders_are_resized(model):
    """64x64 renders (of 3D results, say) are resized with antialiasing to the classifier's 32x32."""
    data = render_heldout(TEST_SEEDS[:5], DataConfig(views=2, res=64))
    truth = [clf.scene_attributes(make_scene(int(s))) for s in np.repeat(data.seeds, 2)]
    pred = model.predict(data.images.reshape(-1, 64, 64, 3))
    assert np.mean([p["category"] == t["category"] for p, t in zip(pred, truth)]) >= 0.8
    assert np.mean([p["colour"] == t["colour"] for p, t in zip(pred, truth)]) >= 0.8


def test_accuracy_table_rows(model, heldout):
    table = clf.accuracy_table(model, heldout)
    assert table["all"]["n"] == 2 * (len(TEST_SEEDS) + 1)  # all but the snowman
    assert table["snowman"]["n"] == 2 and table["snowman"]["category"] is None
    assert sum(table["snowman"]["taken_for"].values()) == 2
    assert table["purple capsule"]["n"] == 2
    assert "teal box" not in table
    assert np.sum(table["material_confusion"]["counts"]) == len(heldout)


def test_features_shape_and_inputs(model, heldout):
    uint8 = heldout.images[:4]  # [4, 32, 32, 3] uint8
    x = torch.from_numpy(uint8).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        f = model.features(uint8)
        assert f.shape == (4, model.config["arch"]["feature_dim"])
        assert torch.allclose(f, model.features(x), atol=1e-5)
        big = torch.nn.functional.interpolate(x, size=256, mode="bilinear")
        assert model.features(big).shape == f.shape


def test_fid_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    assert abs(clf.fid_features_distance(a, a)) < 1e-6
    shifted = clf.fid_features_distance(a, a + 1.0)  # mean moved by 1 in each of 8 dims
    assert shifted == pytest.approx(8.0, rel=1e-6)
    scaled = clf.fid_features_distance(a, 3.0 * a)  # same mean (almost), stds 1 -> 3: ~8 * (3 - 1)^2
    assert 25.0 < scaled < 40.0 and scaled > shifted
    assert clf.fid_features_distance(torch.from_numpy(a), a[:250]) < 0.5


def test_caption_attributes_match_scene_descriptions():
    for seed in range(1000, 1100):
        desc = make_scene(seed)
        assert clf.caption_attributes(desc["caption"]) == clf.scene_attributes(desc)
    assert clf.caption_attributes("a snowman with a matte orange nose")["category"] == "snowman"


def test_training_steps_reduce_the_loss():
    views = labelled(make_data(DataConfig(n_seeds=6, views=2), workers=1))
    cfg = clf.ClassifierTrainConfig(
        steps=40, batch=16, lr=3e-3, warmup=5, arch={"channels": [8, 16], "feature_dim": 16}
    )
    model, record = clf.train_classifier(views, cfg, log=lambda s: None, log_every=10)
    assert len(record["losses"]) == 4 and record["losses"][-1] < record["losses"][0]
    assert not model.training


def test_cli_writes_the_table(tmp_path, monkeypatch, heldout, capsys):
    from studio.cli.main import entrypoint

    monkeypatch.setattr(clf, "heldout_views", lambda split, views, res: heldout)
    out = tmp_path / "metrics.json"
    entrypoint(["eval", "attributes", "--output", str(out)])
    metrics = json.loads(out.read_text())
    assert set(metrics) >= {"test", "validation", "weights", "training"}
    assert metrics["test"]["all"]["n"] == 2 * (len(TEST_SEEDS) + 1)
    assert "purple capsule" in capsys.readouterr().out
