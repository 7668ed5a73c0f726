"""`splat-distill`: view selection, patch pooling, mask-aware upsampling, EMA, LoRA export, and
`ns-train splat-distill` + `studio export features` end to end on tiny ToyWorld scenes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studio.data.scene_set import scene_folders, view_angles
from studio.methods.splat_distill.datamanager import choose_context, views_between
from studio.methods.splat_distill.model import pool_patches, upsample_masked

NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))
STUDIO = str(Path(sys.executable).with_name("studio"))


def ring(n: int) -> torch.Tensor:
    """[n,3] unit directions on the equator, 360/n degrees apart."""
    a = torch.arange(n) * 2 * math.pi / n
    return torch.stack([a.cos(), a.sin(), torch.zeros(n)], 1)


def test_context_pairs_respect_the_angle_range_and_targets_lie_between():
    dirs = ring(36)  # 10 degrees apart
    gen = torch.Generator().manual_seed(0)
    angles = view_angles(dirs)
    for _ in range(50):
        i, j = choose_context(dirs, (25.0, 60.0), gen)
        assert 25.0 - 1e-3 <= angles[i, j] <= 60.0 + 1e-3
        between = views_between(dirs, i, j)
        assert len(between) >= 1 and i not in between.tolist() and j not in between.tolist()
        assert bool(
            (angles[i, between] <= angles[i, j] + 1e-3).all() & (angles[j, between] <= angles[i, j] + 1e-3).all()
        )


def test_pooling_recovers_a_feature_rendered_over_partial_coverage():
    f = torch.randn(7)
    alpha = torch.zeros(1, 8, 8, 1)
    alpha[:, :3] = 0.8  # partial coverage of the upper part of one 8x8 patch
    feats = alpha * f  # rendered on a zero background: sum_i w_i f = alpha * f
    pooled, a = pool_patches(feats, alpha, 8)
    assert torch.allclose(pooled[0, :, 0, 0], f, atol=1e-5)
    assert a.item() == pytest.approx(0.8 * 3 / 8)


def test_mask_aware_upsampling_keeps_background_patches_out_of_the_object():
    H = 32
    alpha = torch.zeros(1, 1, H, H)
    alpha[..., :, :14] = 1.0  # object on the left 14 columns; patches of 8 px
    feats = torch.zeros(1, 1, 4, 4)
    feats[..., :, :2] = 1.0  # object patches say 1, background patches say -5
    feats[..., :, 2:] = -5.0
    up = upsample_masked(feats, alpha, 8)
    obj = up[0, 0][alpha[0, 0] > 0.5]
    assert torch.allclose(obj, torch.ones_like(obj), atol=1e-5)  # plain bilinear would mix in -5 at the border
    plain = torch.nn.functional.interpolate(feats, size=(H, H), mode="bilinear", align_corners=False)
    assert plain[0, 0][alpha[0, 0] > 0.5].min() < 0.0


def test_scene_folders_accepts_a_scene_or_a_folder_of_scenes(tmp_path: Path, nerf_synthetic: Path):
    from studio.io.errors import StudioInputError

    assert scene_folders(nerf_synthetic) == [nerf_synthetic]
    assert scene_folders(nerf_synthetic.parent) == [nerf_synthetic]
    with pytest.raises(StudioInputError):
        scene_folders(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudioInputError):
        scene_folders(tmp_path / "empty")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    """Two tiny ToyWorld scenes, random teacher + predictor files, and a 3-step LoRA run with the anchor term."""
    from studio.features.registry import save_feature_model
    from studio.features.vit import ToyViT
    from studio.lift.model import GaussianPredictor, PredictorConfig, save_predictor
    from studio.scenes.toyworld.dataset import MakeConfig, make_dataset

    root = tmp_path_factory.mktemp("splat_distill")
    for seed in (5000, 5001):
        cfg = MakeConfig(seed=seed, kind="object", n_train=8, n_test=2, res=32, spp=1, aa=1, relight=(), sheet=False)
        make_dataset(root / "scenes" / f"s{seed}", cfg)
    torch.manual_seed(0)
    teacher = save_feature_model(ToyViT({"dim": 32, "depth": 2, "heads": 2}), root / "teacher.safetensors")
    predictor = save_predictor(GaussianPredictor(PredictorConfig()), root / "predictor.safetensors")
    cmd = [
        NS_TRAIN, "splat-distill", "--data", str(root / "scenes"), "--output-dir", str(root / "runs"),
        "--vis", "tensorboard", "--preset", "tiny", "--max-num-iterations", "3", "--steps-per-save", "3", "--steps-per-eval-image", "2",
        "--pipeline.model.teacher", str(teacher), "--pipeline.model.predictor", str(predictor),
        "--pipeline.model.lora-rank", "2", "--pipeline.model.anchor", "0.5", "--pipeline.datamanager.resolution", "32",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    config = next((root / "runs").rglob("config.yml"))
    return {"root": root, "config": config, "teacher": teacher, "env": env}


def test_ns_train_then_export_gives_a_plain_model_equal_to_the_lora_student(tiny_run):
    from studio.features.registry import load_feature_model, read_feature_config
    from studio.models.runs import load_run

    out = tiny_run["root"] / "student.safetensors"
    cmd = [STUDIO, "export", "features", "--load-config", str(tiny_run["config"]), "--output", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=tiny_run["env"], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    exported = load_feature_model(out)
    assert read_feature_config(out)["training"]["method"] == "splat-distill"
    run = load_run(tiny_run["config"], device="cpu")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        lora_student = run.model.student(images)
        initial = load_feature_model(tiny_run["teacher"])(images)
        plain = exported(images)
    # the exported file is the LoRA student with its adapters merged (fp16 weights), and training moved it
    assert torch.allclose(plain, lora_student, atol=2e-2, rtol=2e-2)
    assert (lora_student - initial).abs().max() > 0
    lora_b = [p for n, p in run.model.student.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.requires_grad for p in lora_b) and max(p.abs().max() for p in lora_b) > 0
    assert not any(p.requires_grad for n, p in run.model.student.named_parameters() if "lora_" not in n)


def test_teacher_is_an_ema_of_the_student(tiny_run):
    from studio.models.runs import load_run

    model = load_run(tiny_run["config"], device="cpu").model
    m = model.config.ema_momentum
    name, p = next((n, p) for n, p in model.student.named_parameters() if p.requires_grad)
    before = dict(model.teacher.named_parameters())[name].detach().clone()
    model.update_teacher()
    after = dict(model.teacher.named_parameters())[name]
    assert torch.allclose(after, m * before + (1 - m) * p.detach(), atol=1e-6)


def test_anchor_compares_the_student_with_the_frozen_initial_model_kept_out_of_checkpoints(tiny_run):
    from studio.features.registry import load_feature_model
    from studio.models.runs import load_run

    model = load_run(tiny_run["config"], device="cpu").model
    checkpoint = torch.load(next((tiny_run["root"] / "runs").rglob("*.ckpt")), weights_only=True)
    assert not any(".initial." in k or ".predictor." in k for k in checkpoint["pipeline"])
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        initial, student = model.initial(images), model.student(images)
        assert torch.allclose(initial, load_feature_model(tiny_run["teacher"])(images))  # not moved by training
    alpha = torch.ones_like(initial[:, :1])
    outputs = {"student": initial, "target": initial, "target_alpha": alpha, "initial": initial}
    assert model.get_loss_dict(outputs, {})["anchor_loss"].abs() < 1e-5
    outputs["student"] = student + torch.randn_like(student)  # a student that has moved (3 LoRA steps barely do)
    expected = 0.5 * (1 - torch.nn.functional.cosine_similarity(outputs["student"], initial, dim=1)).mean()
    assert torch.allclose(model.get_loss_dict(outputs, {})["anchor_loss"], expected) and expected > 0.01
