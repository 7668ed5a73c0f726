"""2D feature models (studio.features): the interface, toy-vit, the transformers DINO adapters, files
and errors, and DINO self-distillation."""

from __future__ import annotations

import math

import pytest
import torch

from studio.features import FeatureModel, check_feature_model, load_feature_model, registry, save_feature_model
from studio.features.dino import DinoConfig, DinoLoss, DinoTrainer, train_dino
from studio.features.vit import ToyViT
from studio.io.errors import StudioInputError

SMALL = {"dim": 32, "depth": 2, "heads": 2}
TINY_DINO = DinoConfig(
    arch={"image_size": 16, "dim": 32, "depth": 1, "heads": 2},
    out_dim=64,
    head_hidden=32,
    head_bottleneck=16,
    batch=4,
    steps=3,
    local_crops=2,
    local_size=8,
    warmup_steps=1,
    teacher_temp_warmup=2,
    freeze_last_layer_steps=1,
    momentum=(0.9, 1.0),
)


def test_toy_vit_shapes_and_strides_at_two_resolutions():
    torch.manual_seed(0)
    model = ToyViT().eval()
    assert isinstance(model, FeatureModel)
    assert (model.name, model.dim, model.patch_size, model.image_size) == ("toy-vit", 192, 8, 32)
    with torch.no_grad():
        f32 = model(torch.rand(2, 3, 32, 32))
        f_big = model(torch.rand(1, 3, 48, 64))
    assert f32.shape == (2, 192, 4, 4) and f32.dtype == torch.float32
    assert f_big.shape == (1, 192, 6, 8) and torch.isfinite(f_big).all()
    with pytest.raises(ValueError, match="multiples of its patch size 8"):
        model(torch.rand(1, 3, 30, 32))
    prepared = model.prepare(torch.rand(1, 3, 50, 70))
    assert prepared.shape == (1, 3, 32, 48) and model(prepared).shape == (1, 192, 4, 6)
    same = torch.rand(1, 3, 32, 32)
    assert model.prepare(same) is same


def test_position_embedding_interpolation():
    model = ToyViT(SMALL)
    assert torch.equal(model.position_embedding(4, 4), model.pos_embed)
    with torch.no_grad():
        model.pos_embed[:, 1:] = torch.arange(SMALL["dim"], dtype=torch.float32)  # constant over the grid
    pos = model.position_embedding(6, 10)
    assert pos.shape == (1, 1 + 60, SMALL["dim"])
    assert torch.equal(pos[:, :1], model.pos_embed[:, :1])  # CLS entry as trained
    torch.testing.assert_close(pos[:, 1:], model.pos_embed[:, 1:2].expand(1, 60, -1))  # bicubic keeps constants
    pos.sum().backward()  # the interpolated embedding trains the learned one
    assert model.pos_embed.grad.abs().sum() > 0


def test_save_load_round_trip_is_fp16_exact(tmp_path):
    torch.manual_seed(1)
    model = ToyViT(SMALL)
    path = save_feature_model(model, tmp_path / "vit.safetensors", extra={"steps": 7})
    check_feature_model(path)
    loaded = load_feature_model(path)
    assert (loaded.name, loaded.dim, loaded.patch_size, loaded.training) == (str(path), 32, 8, False)
    assert registry.read_feature_config(path)["training"] == {"steps": 7}
    state = loaded.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value.half().float()), key
    x = torch.rand(2, 3, 24, 40)
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left nothing behind


def _tiny_transformers_model(model_type: str):
    import transformers

    common = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    if model_type == "dinov2":
        config = transformers.Dinov2Config(patch_size=14, image_size=28, **common)
        return transformers.Dinov2Model(config), (28, 42)
    if model_type == "dinov2_with_registers":
        config = transformers.Dinov2WithRegistersConfig(patch_size=14, image_size=28, num_register_tokens=2, **common)
        return transformers.Dinov2WithRegistersModel(config), (28, 42)
    config = transformers.DINOv3ViTConfig(patch_size=16, image_size=32, num_register_tokens=2, **common)
    return transformers.DINOv3ViTModel(config), (32, 48)


@pytest.mark.parametrize("model_type", ["dinov2", "dinov2_with_registers", "dinov3_vit"])
def test_transformers_dino_adapter(tmp_path, model_type):
    torch.manual_seed(2)
    hf, (H, W) = _tiny_transformers_model(model_type)
    hf.eval().save_pretrained(tmp_path / "dino")
    check_feature_model(tmp_path / "dino")
    model = load_feature_model(tmp_path / "dino")
    p = hf.config.patch_size
    assert (model.dim, model.patch_size, model.image_size, model.name) == (32, p, 2 * p, str(tmp_path / "dino"))
    x = torch.rand(2, 3, H, W)
    with torch.no_grad():
        features = model(x)
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        hidden = hf(pixel_values=(x - mean[:, None, None]) / std[:, None, None]).last_hidden_state
    assert features.shape == (2, 32, H // p, W // p) and features.dtype == torch.float32
    patches = hidden[:, -(H // p) * (W // p) :]  # CLS and register tokens come first
    torch.testing.assert_close(features.flatten(2).transpose(1, 2), patches, rtol=1e-5, atol=1e-5)
    if model_type == "dinov2":  # a fine-tuned copy saves and loads as our own file
        saved = save_feature_model(model, tmp_path / "student.safetensors")
        with torch.no_grad():
            again = load_feature_model(saved)(x)
        torch.testing.assert_close(again, features, rtol=0.05, atol=0.05)


def _one_line_error(spec) -> str:
    with pytest.raises(StudioInputError) as err:
        load_feature_model(spec)
    with pytest.raises(StudioInputError) as checked:
        check_feature_model(spec)
    message = str(err.value)
    assert message == str(checked.value) and "\n" not in message
    return message


def test_missing_or_unusable_models_raise_one_line(tmp_path, monkeypatch):
    assert "nope" in _one_line_error(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "no config.json" in _one_line_error(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    assert "'bert'" in _one_line_error(tmp_path / "other")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text('{"model_type": "dinov2"}')
    assert "no weights" in _one_line_error(tmp_path / "noweights")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    assert "not a feature-model file" in _one_line_error(tmp_path / "foreign.safetensors")
    monkeypatch.setitem(registry.EMBEDDED, "toy-vit", tmp_path / "missing" / "toy-vit.safetensors")
    assert "studio features train" in _one_line_error("toy-vit")


def test_dino_steps_train_the_student_and_move_the_ema_teacher():
    trainer = DinoTrainer(TINY_DINO)
    teacher0 = [p.clone() for p in trainer.teacher.parameters()]
    student0 = [p.clone() for p in trainer.student.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(teacher0, student0))
    gen = torch.Generator().manual_seed(0)
    losses = [trainer.train_step(torch.rand(4, 3, 16, 16, generator=gen)) for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses)
    teacher, student = list(trainer.teacher.parameters()), list(trainer.student.parameters())
    moved = [not torch.equal(t, t0) for t, t0 in zip(teacher, teacher0)]
    assert any(moved), "the teacher follows the student by EMA"
    differs = [not torch.equal(t, s) for t, s in zip(teacher, student)]
    assert any(differs), "the teacher is an average, not a copy"
    # the EMA step: after a step with momentum l, the teacher moved (1 - l) of the way to the student
    l_next = trainer.schedules()["momentum"]
    before = [t.clone() for t in trainer.teacher.parameters()]
    trainer.train_step(torch.rand(4, 3, 16, 16, generator=gen))
    for t, t_before, s in zip(trainer.teacher.parameters(), before, trainer.student.parameters()):
        torch.testing.assert_close(t, l_next * t_before + (1 - l_next) * s)
    assert not any(p.requires_grad for p in trainer.teacher.parameters())


def test_dino_centre_moves_to_the_teacher_mean():
    torch.manual_seed(3)
    loss_fn = DinoLoss(out_dim=16, center_momentum=0.9)
    mean = torch.randn(16)
    teacher = [mean + 0.1 * torch.randn(8, 16) for _ in range(2)]
    student = [torch.randn(8, 16, requires_grad=True) for _ in range(4)]
    batch_mean = torch.cat(teacher).mean(0)
    distances = []
    for _ in range(30):
        loss = loss_fn(student, teacher, teacher_temp=0.04)
        distances.append(float((loss_fn.center[0] - batch_mean).norm()))
    assert math.isfinite(loss.item())
    torch.testing.assert_close(loss_fn.center[0], batch_mean * (1 - 0.9**30))
    assert all(b < a for a, b in zip(distances, distances[1:])) and distances[-1] < 0.05 * distances[0]
    loss.backward()  # gradients reach every student crop (each is a target of some teacher crop)
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)


def test_train_dino_returns_a_feature_model_and_a_json_record(tmp_path):
    images = torch.randint(0, 256, (3, 2, 16, 16, 3), dtype=torch.uint8)  # ToyData-like [S,V,H,W,3]
    seen = []
    model, stats = train_dino(TINY_DINO, images, progress=lambda step, loss: seen.append(step))
    assert seen == [1, 2, 3] and stats["steps"] == 3 and stats["images"] == 6
    assert math.isfinite(stats["loss_last"]) and not model.training
    assert model(torch.rand(1, 3, 24, 16)).shape == (1, 32, 3, 2)
    path = save_feature_model(model, tmp_path / "toy.safetensors", extra=stats)
    assert registry.read_feature_config(path)["training"]["config"]["out_dim"] == 64
