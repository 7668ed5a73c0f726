"""VP3D's reward models (studio.rewards): the embedded toy-clip, the CLIP adapter, visual consistency."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from studio.io.errors import StudioInputError
from studio.rewards import VisualConsistency, load_image_text_model
from studio.rewards.contrastive import ToyCLIP, contrastive_loss, load_toy_clip, save_toy_clip

VIEWS = {986: "a matte red capsule", 988: "a satin blue sphere", 973: "a matte blue torus"}
"""Validation seeds (held out from training) of clearly different objects, with their captions."""


@pytest.fixture(scope="module")
def toy_clip():
    torch.set_num_threads(1)
    return load_image_text_model("toy-clip")


@pytest.fixture(scope="module")
def renders() -> torch.Tensor:
    """One 32x32 view of each seed of VIEWS, [3,3,32,32] in [0,1]."""
    from studio.priors.toydata import DataConfig, render_views

    cfg, rng = DataConfig(res=32, aa=4, spp=16), np.random.default_rng(0)
    views = [render_views(s, math.radians(30.0), 0.6, 1.1, cfg, rng, training=False) for s in VIEWS]
    assert [v["caption"] for v in views] == list(VIEWS.values())
    return torch.from_numpy(np.stack([v["images"][0] for v in views])).permute(0, 3, 1, 2).float() / 255.0


def test_toy_clip_prefers_the_right_caption_on_heldout_objects(toy_clip, renders):
    captions = list(VIEWS.values())
    scores = torch.stack([toy_clip.alignment(renders, c) for c in captions], 1)  # [image, caption]
    assert scores.argmax(1).tolist() == [0, 1, 2], scores
    # the colour alone: the red capsule against the same caption in blue, the blue sphere in red
    assert toy_clip.alignment(renders[:1], captions[0]) > toy_clip.alignment(renders[:1], "a matte blue capsule")
    assert toy_clip.alignment(renders[1:2], captions[1]) > toy_clip.alignment(renders[1:2], "a satin red sphere")
    # any render size: a 96x96 upsampling embeds like the 32x32 view
    big = torch.nn.functional.interpolate(renders, size=(96, 96), mode="bilinear", align_corners=False)
    assert (toy_clip.embed_images(big) * toy_clip.embed_images(renders)).sum(-1).min() > 0.97


def test_alignment_gradients_reach_the_image_and_raise_it(toy_clip):
    torch.manual_seed(0)
    logits = torch.zeros(1, 3, 32, 32).uniform_(-0.5, 0.5).add_(2.0).requires_grad_()  # a pale grey image
    target = "a glossy red sphere"
    first = toy_clip.alignment(torch.sigmoid(logits), target)
    first.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in toy_clip.parameters())  # the weights are frozen
    opt = torch.optim.Adam([logits], lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        (-toy_clip.alignment(torch.sigmoid(logits), target).sum()).backward()
        opt.step()
    after = toy_clip.alignment(torch.sigmoid(logits), target)
    assert after.item() > first.item() + 0.1, (first.item(), after.item())


def test_embeddings_are_unit_and_texts_cached(toy_clip, renders):
    e = toy_clip.embed_images(renders)
    t = toy_clip.embed_texts(["a matte red capsule", "a satin blue sphere"])
    assert e.shape == (3, toy_clip.dim) and t.shape == (2, toy_clip.dim)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert "a matte red capsule" in toy_clip._text_cache
    with pytest.raises(ValueError):
        toy_clip.alignment(renders, ["a", "b"])  # 2 texts for 3 images


def test_multi_positive_infonce():
    """Perfect embeddings: image->text is ~0; caption 0 has two images, so text->image is at best log 2."""
    text = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    text = torch.stack([text[0], torch.nn.functional.normalize(text[1] - (text[1] @ text[0]) * text[0], dim=0)])
    labels = torch.tensor([0, 0, 1])
    loss = contrastive_loss(text[labels], text, labels, torch.tensor(100.0))
    assert loss.item() == pytest.approx(0.25 * math.log(2.0), abs=1e-4)
    shuffled = contrastive_loss(text[torch.tensor([1, 1, 0])], text, labels, torch.tensor(100.0))
    assert shuffled > loss + 10


def test_toy_clip_file_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = ToyCLIP({"arch": {"stem": 8, "channels": [8, 16], "embed_dim": 16, "text_dim": 16, "groups": 4}}).eval()
    path = save_toy_clip(model, tmp_path / "m.safetensors", {"steps": 0})
    loaded = load_image_text_model(str(path))
    assert isinstance(loaded, ToyCLIP) and loaded.config["training"] == {"steps": 0}
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(loaded.embed_images(x), model.embed_images(x), atol=2e-2)
    assert (tmp_path / "m.json").is_file()
    with pytest.raises(StudioInputError):
        load_toy_clip(Path(__file__))  # not a safetensors file


def _tiny_clip(folder: Path) -> Path:
    from tiny_snapshots import tiny_clip_tokenizer
    from transformers import CLIPConfig, CLIPModel

    tiny_clip_tokenizer(folder)
    text = dict(vocab_size=100, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    text.update(max_position_embeddings=77, bos_token_id=21, eos_token_id=22, pad_token_id=22)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    vision.update(image_size=30, patch_size=6)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)).save_pretrained(folder)
    return folder


def test_local_clip_folder_loads_through_the_registry(tmp_path: Path):
    model = load_image_text_model(str(_tiny_clip(tmp_path / "clip")))
    images = torch.rand(2, 3, 40, 52, requires_grad=True)
    e = model.embed_images(images)
    t = model.embed_texts(["lower newer", "wider"])
    assert e.shape == (2, 24) and t.shape == (2, 24)
    assert torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    model.alignment(images, ["lower newer", "wider"]).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert model.logit_scale.item() > 1.0


def test_missing_or_wrong_clip_folder_is_one_input_error(tmp_path: Path):
    with pytest.raises(StudioInputError, match="neither"):
        load_image_text_model(str(tmp_path / "missing"))
    (tmp_path / "dino").mkdir()
    (tmp_path / "dino" / "config.json").write_text('{"model_type": "dinov2"}')
    with pytest.raises(StudioInputError, match="not 'clip'"):
        load_image_text_model(str(tmp_path / "dino"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudioInputError, match="no config.json"):
        load_image_text_model(str(tmp_path / "empty"))


@pytest.mark.parametrize("model,pooling", [("toy-vit", "mean"), ("toy-vit", "patch"), ("toy-clip", "mean")])
def test_visual_consistency(model, pooling, renders):
    reward = VisualConsistency(model, pooling=pooling)
    x = renders.clone().requires_grad_()
    score = reward(x, renders[:1])
    assert score.shape == (3,)
    assert score[0].item() == pytest.approx(1.0, abs=1e-4)
    assert (score[1:] < 0.999).all()
    score.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad[1:].abs().sum() > 0
