"""Embedded toy priors: data split, tokenizer, models, training, files, registry, CLI (all small)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from studio.io import StudioInputError
from studio.io.inputs import validate
from studio.priors import Condition, load_prior
from studio.priors.sampling import sample
from studio.priors.text import WordTokenizer
from studio.priors.toy import ToyNVSPrior, build_toy_prior, load_toy_prior, save_toy_prior
from studio.priors.toydata import DataConfig, make_data
from studio.priors.train import Batcher, TrainConfig, denoising_loss, embed, train_prior
from studio.scenes.toyworld.splits import HeldOutSceneError, training_seeds

SMALL = {"arch": {"channels": [16, 32, 32], "n_res": 1, "text_dim": 32, "ctx_dim": 32, "heads": 2}}
TINY_DATA = DataConfig(n_seeds=2, views=3, res=32, aa=1, spp=1)


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_data():
    return make_data(TINY_DATA, workers=1)


def _jitter(prior, scale=0.02, seed=0):
    """Random weights everywhere (zero-initialised output layers would make every output 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return prior


def _cond(prior, B=2):
    if isinstance(prior, ToyNVSPrior):
        return prior.condition(image=torch.rand(B, 3, 32, 32), pose=torch.randn(B, 4))
    return prior.condition(text=["a glossy red sphere", "a matte blue box"][:B])


def test_data_respects_split(tiny_data):
    assert tiny_data.images.shape == (2, 3, 32, 32, 3) and tiny_data.images.dtype == np.uint8
    assert list(tiny_data.seeds) == training_seeds(2)
    assert tiny_data.elevation.shape == tiny_data.azimuth.shape == tiny_data.radius.shape == (2, 3)
    assert (tiny_data.images.reshape(-1, 3) == 255).all(1).mean() > 0.3  # white background
    with pytest.raises(HeldOutSceneError):  # seeds 0-999 are evaluation scenes
        make_data(TINY_DATA, seeds=[5], workers=1)
    with pytest.raises(HeldOutSceneError):  # a training-range seed whose caption is held out
        make_data(TINY_DATA, seeds=[1098], workers=1)  # 'a glossy mottled purple capsule'


def test_tokenizer_unknown_words_and_empty_text():
    tok = WordTokenizer(max_len=8)
    ids, mask = tok(["a fluffy red torus", ""])
    assert ids[0, :4].tolist() == [tok.stoi["a"], tok.stoi["<unk>"], tok.stoi["red"], tok.stoi["torus"]]
    assert mask[0].tolist() == [True] * 4 + [False] * 4
    assert mask[1].sum() == 1 and ids[1].sum() == 0  # empty text: one <pad> position
    assert tok.decode(tok.ids("A Glossy, RED torus.")) == "a glossy red torus"
    from studio.scenes.toyworld.scene import make_scene

    for s in range(1000, 1040):  # the vocabulary covers ToyWorld's captions
        assert 1 not in tok.ids(make_scene(s)["caption"])


@pytest.mark.parametrize("kind", ["toy-t2i", "toy-nvs"])
def test_predict_shapes_condition_and_conversions(kind):
    torch.manual_seed(0)
    prior = _jitter(build_toy_prior(kind, SMALL)).eval()
    assert prior.prediction_type == "v" and prior.image_size == 32 and prior.latent_shape == (3, 32, 32)
    assert prior.alphas_cumprod.shape == (1000,) and prior.alphas_cumprod[0] > 0.99 and prior.alphas_cumprod[-1] < 1e-3
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([10, 700])
    c = _cond(prior)
    with torch.no_grad():
        out_c = prior.predict(x, t, c)
        out_u = prior.predict(x, t, prior.unconditional(c))
        out_b = prior.predict(x, t, Condition.cat([c, prior.unconditional(c)], [2, 2]).index(slice(0, 2)))
    assert out_c.shape == (2, 3, 32, 32)
    assert (out_c - out_u).abs().max() > 1e-4
    torch.testing.assert_close(out_b, out_c, atol=1e-5, rtol=1e-5)
    # the network's exact target converts back to x0 and eps
    x0, eps = torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, 3, 32, 32)
    x_t = prior.add_noise(x0, eps, t)
    target = prior.training_target(x0, eps, t)
    torch.testing.assert_close(prior.to_x0(x_t, t, target), x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(prior.to_eps(x_t, t, target), eps, atol=1e-4, rtol=1e-4)
    clone = prior.clone_trainable()
    assert all(p.requires_grad for p in clone.trainable_parameters())


def test_t2i_camera_condition_starts_as_noop():
    prior = build_toy_prior("toy-t2i", SMALL).eval()
    _jitter(prior.unet)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([100, 500])
    c = prior.condition(text=["a red box", "a blue cone"])
    cc = prior.condition(text=["a red box", "a blue cone"], pose=torch.randn(2, 16))
    with torch.no_grad():
        torch.testing.assert_close(prior.predict(x, t, cc), prior.predict(x, t, c))
    assert "camera" in prior.unconditional(cc).tensors


@pytest.mark.parametrize("kind", ["toy-t2i", "toy-nvs"])
def test_training_steps_reduce_loss_on_fixed_batch(kind, tiny_data):
    torch.manual_seed(0)
    prior = build_toy_prior(kind, SMALL).train()
    cfg = TrainConfig(name=kind, cond_drop=0.0)
    x0, c = Batcher(prior, tiny_data, cfg, torch.device("cpu"))(4)
    t = torch.tensor([100, 400, 700, 950])
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(prior.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = denoising_loss(prior, x0, embed(prior, c), t=t, eps=eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses  # ~0.94 -> ~0.55 in 30 steps


def test_train_prior_save_load_round_trip(tiny_data, tmp_path):
    cfg = TrainConfig(name="toy-t2i", steps=3, batch=4, arch=SMALL["arch"], data=TINY_DATA)
    prior, stats = train_prior(cfg, tiny_data, "cpu")
    assert stats["steps"] == 3 and np.isfinite(stats["final_loss"])
    _jitter(prior)
    with torch.no_grad():  # the fp16 file holds these exact values
        for p in prior.parameters():
            p.copy_(p.half().float())
    path = save_toy_prior(prior, tmp_path / "t2i.safetensors")
    assert path.with_suffix(".json").is_file()
    loaded = load_prior(path)
    assert next(iter(loaded.state_dict().values())).dtype == torch.float32
    assert loaded.config["vocabulary"] == prior.config["vocabulary"]
    assert loaded.config["training"]["data"]["split"].startswith("train")
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 600])
    with torch.no_grad():
        a = prior.eval().predict(x, t, prior.condition(text=["a red box", ""]))
        b = loaded.predict(x, t, loaded.condition(text=["a red box", ""]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    nvs = _jitter(build_toy_prior("toy-nvs", SMALL))
    p2 = save_toy_prior(nvs, tmp_path / "nvs.safetensors")
    assert isinstance(load_toy_prior(p2), ToyNVSPrior)


def test_time_budget_cuts_steps_and_keeps_schedule(tiny_data, monkeypatch):
    from studio.priors import train as train_mod

    clock = iter([0.0, 3.0, 10.0])  # start, after the 30 calibration steps (0.1 s/step), end
    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(time=lambda: next(clock)))
    cfg = TrainConfig(
        name="toy-t2i", steps=1000, batch=2, warmup=5, arch=SMALL["arch"], data=TINY_DATA, time_budget=10.0
    )
    _, stats = train_prior(cfg, tiny_data, "cpu")
    assert cfg.steps == 100 and stats["steps"] == 100
    assert train_mod.lr_at(cfg.steps - 1, cfg) == pytest.approx(0.1 * cfg.lr, rel=5e-3)  # cosine still ends at 10%


def test_training_resumes_to_the_weights_of_an_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    from studio.io.training_state import CheckpointMismatchError
    from studio.priors import train as train_mod

    def config(**kw):
        return TrainConfig(name="toy-t2i", steps=6, batch=2, warmup=2, arch=SMALL["arch"], data=TINY_DATA, **kw)

    whole, stats = train_prior(config(), tiny_data, "cpu")
    assert stats["finished"] and stats["steps_done"] == 6
    clock = iter(float(k) for k in range(1000))  # every call of time.time() advances one second
    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(time=lambda: next(clock)))
    ckpt = tmp_path / "state.pt"
    _, first = train_prior(config(checkpoint=str(ckpt), stop_after=2.5), tiny_data, "cpu")
    assert not first["finished"] and 0 < first["steps_done"] < 6 and ckpt.is_file()
    monkeypatch.undo()
    resumed, second = train_prior(config(checkpoint=str(ckpt)), tiny_data, "cpu", resume=True)
    assert second["finished"] and second["sittings"] == 2
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    with pytest.raises(CheckpointMismatchError, match="lr"):
        train_prior(config(checkpoint=str(ckpt), lr=1e-3), tiny_data, "cpu", resume=True)


def test_version_1_t2i_files_load_without_pooled_text(tmp_path):
    prior = build_toy_prior("toy-t2i", SMALL)
    assert prior.text_pool is not None
    old = build_toy_prior("toy-t2i", {**SMALL, "format_version": 1})
    assert old.text_pool is None and not old.config["arch"]["pooled_text"]
    path = save_toy_prior(old, tmp_path / "old.safetensors")
    assert load_toy_prior(path).text_pool is None


def test_nvs_64_predicts_saves_and_loads(tmp_path):
    prior = _jitter(build_toy_prior("toy-nvs", {"arch": {**SMALL["arch"], "image_size": 64}})).eval()
    assert prior.image_size == 64 and prior.latent_shape == (3, 64, 64)
    assert prior.ref_encoder.pos.shape[1] == 16**2 and prior.null_tokens.shape[1] == 16**2 + 1
    x, t = torch.randn(2, 3, 64, 64), torch.tensor([10, 700])
    cond = prior.condition(image=torch.rand(2, 3, 32, 32), pose=torch.randn(2, 4))  # a 32 px reference is resized
    assert cond.tensors["ref"].shape == (2, 3, 64, 64)
    with torch.no_grad():
        out = prior.predict(x, t, cond)
        assert out.shape == (2, 3, 64, 64)
        loaded = load_toy_prior(save_toy_prior(prior, tmp_path / "nvs64.safetensors"))
        torch.testing.assert_close(loaded.predict(x, t, cond), out, atol=2e-2, rtol=2e-2)  # fp16 file
    assert loaded.image_size == 64 and loaded.config["arch"]["image_size"] == 64
    with pytest.raises(ValueError, match="image_size"):
        build_toy_prior("toy-nvs", {"arch": {**SMALL["arch"], "image_size": 30}})


def test_files_without_image_size_are_32px():
    from studio.priors.registry import WEIGHTS_DIR
    from studio.priors.toy import read_toy_config

    path = WEIGHTS_DIR / "toy-nvs.safetensors"
    assert "image_size" not in read_toy_config(path)["arch"]  # the committed file predates the field
    prior = load_toy_prior(path)
    assert prior.image_size == 32 and prior.latent_shape == (3, 32, 32)


def test_init_from_copies_matching_tensors_and_resizes_the_token_grid(tmp_path):
    from studio.priors.toy import init_from

    small = _jitter(build_toy_prior("toy-nvs", SMALL))
    with torch.no_grad():  # positions that vary along x only: the 8x8 grid's column index
        small.ref_encoder.pos.copy_(torch.arange(8.0).repeat(8)[None, :, None].expand_as(small.ref_encoder.pos))
    path = save_toy_prior(small, tmp_path / "nvs32.safetensors")
    source = load_toy_prior(path).state_dict()
    big = build_toy_prior("toy-nvs", {"arch": {**SMALL["arch"], "image_size": 64}})
    report = init_from(big, path)
    assert report["resized"] == ["null_tokens", "ref_encoder.pos"] and report["fresh"] == []
    state = big.state_dict()
    assert report["copied"] == len(state) - 2
    for name, value in state.items():
        if name not in report["resized"]:
            assert torch.equal(value, source[name]), name
    pos = state["ref_encoder.pos"].reshape(16, 16, -1)
    assert torch.equal(pos, pos[:1].expand_as(pos))  # still constant along y
    assert (pos[0, 1:, 0] >= pos[0, :-1, 0]).all() and pos.min() == 0.0 and pos.max() == 7.0  # bilinear ramp
    assert torch.equal(state["null_tokens"][:, -1], source["null_tokens"][:, -1])  # the pose token is kept
    with pytest.raises(ValueError, match="toy-t2i"):
        init_from(big, save_toy_prior(build_toy_prior("toy-t2i", SMALL), tmp_path / "t2i.safetensors"))


def test_ddim_sampler_is_seeded():
    prior = _jitter(build_toy_prior("toy-t2i", SMALL)).eval()
    c = prior.condition(text="a red box")

    def draw(seed, eta):
        x = sample(prior, 2, c, None, 3.0, 3, torch.Generator().manual_seed(seed), eta, clamp_x0=True)
        return prior.decode(x)

    a, b = draw(1, 0.0), draw(1, 0.0)
    assert a.shape == (2, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(draw(1, 1.0), draw(1, 1.0))  # eta > 0 draws its noise from the generator too
    assert (draw(1, 1.0) - a).abs().max() > 1e-3 and (draw(2, 0.0) - a).abs().max() > 1e-3


def test_load_prior_missing_weights_message(tmp_path, monkeypatch):
    from studio.priors import registry

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(StudioInputError, match=r"studio prior train toy-t2i"):
        load_prior("toy-t2i")
    with pytest.raises(StudioInputError, match="Unknown prior"):
        load_prior("no-such-prior")
    with pytest.raises(StudioInputError, match="does not exist"):
        load_prior(tmp_path / "missing.safetensors")


def test_cli_train_and_sample(tmp_path):
    from studio.cli.prior import Sample, Train

    out = tmp_path / "w" / "toy-nvs.safetensors"
    Train(
        name="toy-nvs",
        steps=2,
        batch=2,
        data_seeds=2,
        data_views=2,
        data_spp=1,
        data_aa=1,
        workers=1,
        cache_dir=tmp_path / "cache",
        output=out,
        device="cpu",
    ).main()
    assert out.is_file() and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    grid = tmp_path / "grid.png"
    Sample(name=str(out), output=grid, n=2, steps=2, elevation_delta=(0.0,), scene_seed=3, scale=1).main()
    from PIL import Image

    assert Image.open(grid).size == (3 * 32, 32)
    # a 16 px prior from those 32 px weights (--data-res, --init), recorded in its training metadata
    small = tmp_path / "w" / "toy-nvs-16.safetensors"
    args = dict(name="toy-nvs", steps=1, batch=2, data_seeds=2, data_views=2, data_spp=1, data_aa=1, workers=1)
    Train(**args, data_res=16, init=out, cache_dir=tmp_path / "cache", output=small, device="cpu").main()
    config = load_prior(small).config
    assert config["arch"]["image_size"] == 16 and config["training"]["data"]["res"] == 16
    assert config["training"]["init"]["path"] == str(out) and config["training"]["init"]["fresh"] == []
    Sample(name=str(small), output=grid, n=2, steps=2, elevation_delta=(0.0,), scene_seed=3, scale=1).main()
    assert Image.open(grid).size == (3 * 16, 16)
    with pytest.raises(StudioInputError, match="--data-res"):
        Train(**args, data_res=12, output=small).main()
    with pytest.raises(StudioInputError, match="must end in .png"):
        validate(Sample(name=str(out), output=tmp_path / "grid.jpg").inputs())
