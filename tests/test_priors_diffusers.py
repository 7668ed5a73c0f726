"""Diffusers adapters (Stable Diffusion, DeepFloyd IF, Zero123, Stable Zero123) on tiny random models.

The models are built here, saved in the real snapshot layouts and loaded back through the
adapters, with the network blocked: nothing is downloaded.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from diffusers import DDPMScheduler, PNDMScheduler  # noqa: E402
from tiny_snapshots import make_if, make_sd, make_zero123  # noqa: E402 (tests/ is on sys.path)

from studio.io.errors import StudioInputError  # noqa: E402
from studio.io.pretrained import resolve_pretrained  # noqa: E402
from studio.priors.base import Condition  # noqa: E402
from studio.priors.diffusers import (  # noqa: E402
    DeepFloydIFPrior,
    StableDiffusionPrior,
    StableZero123Prior,
    Zero123Prior,
    zero123_pose,
)

pytestmark = pytest.mark.usefixtures("offline")


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    return make_sd(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="module")
def if_dir(tmp_path_factory):
    return make_if(tmp_path_factory.mktemp("if"))


@pytest.fixture(scope="module")
def z123_dir(tmp_path_factory):
    return make_zero123(tmp_path_factory.mktemp("zero123"))


def _ddpm_like(prior) -> DDPMScheduler:
    cfg = {k: v for k, v in prior.scheduler_config.items() if not k.startswith("_")}
    cfg.update(clip_sample=False, thresholding=False)
    return DDPMScheduler.from_config(cfg)


# ---- Stable Diffusion ------------------------------------------------------------------------
def test_sd_loads_encodes_decodes(sd_dir):
    prior = StableDiffusionPrior(sd_dir, device="cpu", encode_mode="mean")
    assert prior.model_dtype == torch.float32 and prior.unet.dtype == torch.float32
    assert prior.prediction_type == "eps"
    assert prior.image_size == 16 and prior.latent_shape == (4, 8, 8)
    assert prior.alphas_cumprod.shape == (1000,) and prior.alphas_cumprod.dtype == torch.float32
    ref = PNDMScheduler.from_pretrained(sd_dir / "scheduler").alphas_cumprod
    assert torch.allclose(prior.alphas_cumprod, ref)

    img = torch.rand(2, 3, 16, 16, requires_grad=True)
    lat = prior.encode(img)
    assert lat.shape == (2, 4, 8, 8)
    with torch.no_grad():
        want = prior.vae.encode(img * 2 - 1).latent_dist.mean * prior.vae.config.scaling_factor
    assert torch.allclose(lat, want, atol=1e-5)
    lat.square().sum().backward()  # SDS needs gradients through the encoder
    assert img.grad is not None and img.grad.abs().sum() > 0

    assert prior.encode(torch.rand(1, 3, 32, 32)).shape == (1, 4, 8, 8)  # resized to image_size
    out = prior.decode(lat.detach())
    assert out.shape == (2, 3, 16, 16) and out.min() >= 0 and out.max() <= 1
    with torch.no_grad():
        want = ((prior.vae.decode(lat / prior.vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1)
    assert torch.allclose(out, want, atol=1e-5)


def test_sd_predict_condition_and_scheduler_conversions(sd_dir):
    prior = StableDiffusionPrior(sd_dir, device="cpu")
    cond = prior.condition(text="lower newer")
    assert cond.tensors["text"].shape == (1, 77, 32)
    unc = prior.unconditional(cond)
    assert unc.tensors["text"].shape == (1, 77, 32)
    assert prior.condition(text=["lower", "wider"]).tensors["text"].shape == (2, 77, 32)

    torch.manual_seed(0)
    x0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([500, 500])
    x_t = prior.add_noise(x0, eps, t)
    sched = _ddpm_like(prior)
    assert torch.allclose(x_t, sched.add_noise(x0, eps, t), atol=1e-5)
    with torch.no_grad():
        out_c = prior.predict(x_t, t, cond)
        out_u = prior.predict(x_t, t, unc)
        both = prior.predict(torch.cat([x_t, x_t]), torch.cat([t, t]), Condition.cat([cond, unc], [2, 2]))
    assert out_c.shape == (2, 4, 8, 8)
    assert not torch.allclose(out_c, out_u)
    assert torch.allclose(both, torch.cat([out_c, out_u]), atol=1e-5)
    step = sched.step(out_c, 500, x_t).pred_original_sample
    assert torch.allclose(prior.to_x0(x_t, t, out_c), step, atol=1e-4)
    assert torch.allclose(prior.to_eps(x_t, t, out_c), out_c)


def test_sd_v_prediction_matches_scheduler(sd_dir, tmp_path):
    vdir = tmp_path / "sd_v"
    vdir.mkdir()
    for sub in ("unet", "vae", "text_encoder", "tokenizer"):
        (vdir / sub).symlink_to(sd_dir / sub)
    PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        prediction_type="v_prediction",
    ).save_pretrained(vdir / "scheduler")
    prior = StableDiffusionPrior(str(vdir), device="cpu")
    assert prior.prediction_type == "v"
    sched = _ddpm_like(prior)
    torch.manual_seed(1)
    x0, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    for tt in (10, 400, 990):
        t = torch.tensor([tt])
        x_t = prior.add_noise(x0, eps, t)
        v = prior.training_target(x0, eps, t)
        assert torch.allclose(v, sched.get_velocity(x0, eps, t), atol=1e-5)
        assert torch.allclose(prior.to_x0(x_t, t, v), x0, atol=1e-4)
        assert torch.allclose(prior.to_eps(x_t, t, v), eps, atol=1e-4)
        with torch.no_grad():
            out = prior.predict(x_t, t, prior.condition(text="lower"))
        step = sched.step(out, tt, x_t).pred_original_sample
        assert torch.allclose(prior.to_x0(x_t, t, out), step, atol=1e-4)


def test_sd_lora_clone_trains_only_lora(sd_dir):
    prior = StableDiffusionPrior(sd_dir, device="cpu")
    assert prior.trainable_parameters() == []
    base_state = {k: v.clone() for k, v in prior.state_dict().items()}
    cond = prior.condition(text="lower newer", pose=torch.eye(4)[None].repeat(2, 1, 1))
    assert cond.tensors["camera"].shape == (2, 16)
    unc = prior.unconditional(cond)
    assert torch.equal(unc.tensors["camera"], torch.zeros(2, 16))
    torch.manual_seed(2)
    x_t, t = torch.randn(2, 4, 8, 8), torch.tensor([300, 700])
    with torch.no_grad():
        before = prior.predict(x_t, t, cond)

    clone = prior.clone_trainable()
    params = clone.trainable_parameters()
    names = {n for n, p in clone.unet.named_parameters() if any(p is q for q in params)}
    assert params and all(p.requires_grad for p in params)
    assert all("lora_" in n or n.startswith("class_embedding.") for n in names)
    assert any(n.startswith("class_embedding.") for n in names)
    assert any(".to_out.0.lora_A" in n for n in names) and any(".attn2.to_k.lora_B" in n for n in names)
    # shared frozen weights, no LoRA in the teacher
    assert clone.unet.conv_in.weight.data_ptr() == prior.unet.conv_in.weight.data_ptr()
    assert clone.vae is prior.vae and clone.text_encoder is prior.text_encoder
    assert not any("lora" in n for n in prior.unet.state_dict())
    assert prior.unet.class_embedding is None
    n_trainable = sum(p.numel() for p in params)
    assert n_trainable < 0.5 * sum(p.numel() for p in prior.unet.parameters())
    with torch.no_grad():  # zero-initialised LoRA B and camera MLP: same output as the teacher
        assert torch.allclose(clone.predict(x_t, t, cond), before, atol=1e-5)

    opt = torch.optim.Adam(params, lr=1e-2)
    lora_b = next(p for n, p in clone.unet.named_parameters() if "lora_B" in n)
    b0 = lora_b.detach().clone()
    target = torch.randn_like(x_t)
    for _ in range(2):
        opt.zero_grad()
        loss = (clone.predict(x_t, t, cond) - target).square().mean()
        loss.backward()
        opt.step()
    assert not torch.equal(lora_b, b0)
    assert all(p.grad is None for p in prior.parameters())
    for k, v in prior.state_dict().items():
        assert torch.equal(v, base_state[k]), k
    with torch.no_grad():
        assert torch.allclose(prior.predict(x_t, t, cond), before, atol=1e-6)
        after = clone.predict(x_t, t, cond)
        assert not torch.allclose(after, before, atol=1e-4)
        no_cam = clone.predict(x_t, t, Condition({"text": cond.tensors["text"]}))
        assert not torch.allclose(after, no_cam, atol=1e-6)  # the camera MLP is used
    sd = clone.lora_state_dict()
    assert set(sd) == names
    with pytest.raises(ValueError):
        clone.clone_trainable()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sd_reduced_precision_and_lora_dtypes(sd_dir, dtype):
    prior = StableDiffusionPrior(sd_dir, dtype=dtype, device="cpu")
    assert prior.unet.dtype == dtype and prior.alphas_cumprod.dtype == torch.float32
    cond = prior.condition(text="lower")
    x_t = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        out = prior.predict(x_t, torch.tensor([100]), cond)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    clone = prior.clone_trainable(camera_dim=0)
    assert all(p.dtype == torch.float32 for p in clone.trainable_parameters())
    loss = clone.predict(x_t, torch.tensor([100]), cond).square().mean()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in clone.trainable_parameters())


# ---- DeepFloyd IF ----------------------------------------------------------------------------
def test_if_predicts_eps_channels_and_matches_ddpm(if_dir):
    prior = DeepFloydIFPrior(if_dir, device="cpu")
    assert prior.image_size == 16 and prior.latent_shape == (3, 16, 16) and prior.prediction_type == "eps"
    img = torch.rand(2, 3, 16, 16)
    x = prior.encode(img)
    assert torch.allclose(x, img * 2 - 1) and torch.allclose(prior.decode(x), img, atol=1e-6)
    cond = prior.condition(text="a red glossy torus")
    assert cond.tensors["text"].shape == (1, 77, 16)
    unc = prior.unconditional(cond)
    t = torch.tensor([250, 250])
    with torch.no_grad():
        out = prior.predict(x, t, cond)
        raw = prior.unet(x, t, encoder_hidden_states=cond.tensors["text"].expand(2, -1, -1)).sample
        assert not torch.allclose(out, prior.predict(x, t, unc))
    assert out.shape == (2, 3, 16, 16) and raw.shape == (2, 6, 16, 16)
    assert torch.equal(out, raw[:, :3])
    step = _ddpm_like(prior).step(raw, 250, x).pred_original_sample  # learned_range: splits the 6 channels
    assert torch.allclose(prior.to_x0(x, t, out), step, atol=1e-4)
    clone = prior.clone_trainable()
    assert clone.trainable_parameters() and all(
        "lora" in n for n, p in clone.unet.named_parameters() if p.requires_grad
    )

    no_t5 = DeepFloydIFPrior(if_dir, device="cpu", load_text_encoder=False)
    assert no_t5.text_encoder is None
    with torch.no_grad():
        got = no_t5.predict(x, t, no_t5.condition(text_embeddings=cond.tensors["text"]))
    assert torch.allclose(got, out, atol=1e-6)
    with pytest.raises(ValueError, match="text encoder"):
        no_t5.condition(text="a red torus")


# ---- Zero123 ---------------------------------------------------------------------------------
def test_zero123_pose_convention():
    p = zero123_pose(30.0, 90.0, 2.0, ref_elevation_deg=0.0, ref_azimuth_deg=0.0, ref_radius=1.5)
    assert torch.allclose(p, torch.tensor([[-math.pi / 6, 1.0, 0.0, 0.5]]), atol=1e-6)
    p = zero123_pose([0.0, 10.0], 180.0, ref_elevation_deg=20.0, variant="stable-zero123")
    assert p.shape == (2, 4)
    assert torch.allclose(p[:, 0], torch.deg2rad(torch.tensor([20.0, 10.0])))
    assert torch.allclose(p[:, 3], torch.deg2rad(torch.tensor([70.0, 70.0])))


def test_zero123_condition_predict(z123_dir):
    prior = Zero123Prior(z123_dir, device="cpu")
    assert prior.image_size == 16 and prior.latent_shape == (4, 8, 8)
    torch.manual_seed(3)
    ref = torch.rand(1, 3, 16, 16)
    pose = zero123_pose([0.0, 30.0], [45.0, -90.0], [1.0, 1.2], ref_radius=1.0)
    cond = prior.condition(image=ref, pose=pose)
    assert cond.tensors["clip"].shape == (2, 1, 32) and cond.tensors["ref_latent"].shape == (2, 4, 8, 8)
    with torch.no_grad():  # the diffusers community pipeline's recipe, by hand
        x = torch.nn.functional.interpolate(ref, (32, 32), mode="bicubic", align_corners=True)
        x = (x - prior.clip_mean) / prior.clip_std
        emb = prior.image_encoder(x).image_embeds[:, None].expand(2, -1, -1)
        want = prior.cc_projection(torch.cat([emb, pose[:, None]], dim=-1))
        lat = prior.vae.encode(ref * 2 - 1).latent_dist.mode()  # not scaled, as Zero123
    assert torch.allclose(cond.tensors["clip"], want, atol=1e-5)
    assert torch.allclose(cond.tensors["ref_latent"], lat.expand(2, -1, -1, -1), atol=1e-5)
    unc = prior.unconditional(cond)
    assert all(torch.count_nonzero(v) == 0 for v in unc.tensors.values())
    x_t, t = torch.randn(2, 4, 8, 8), torch.tensor([600, 600])
    with torch.no_grad():
        out = prior.predict(x_t, t, cond)
        out_u = prior.predict(x_t, t, unc)
        sample = torch.cat([x_t, cond.tensors["ref_latent"]], dim=1)
        raw = prior.unet(sample, t, encoder_hidden_states=cond.tensors["clip"]).sample
    assert out.shape == (2, 4, 8, 8) and torch.allclose(out, raw, atol=1e-6)
    assert not torch.allclose(out, out_u)
    assert not torch.allclose(out[0], out[1])  # different poses
    with pytest.raises(ValueError):
        prior.condition(text="a torus")
    clone = prior.clone_trainable()
    assert clone.trainable_parameters()
    with torch.no_grad():
        assert torch.allclose(clone.predict(x_t, t, cond), out, atol=1e-5)


# ---- missing weights -------------------------------------------------------------------------
def test_missing_default_weights_one_clear_line(monkeypatch, tmp_path):
    with pytest.raises(StudioInputError) as e:
        StableDiffusionPrior(device="cpu")
    msg = str(e.value)
    assert "\n" not in msg
    assert "Stable Diffusion 2.1-base" in msg and "stabilityai/stable-diffusion-2-1-base" in msg
    assert "huggingface-cli download" in msg and "--prior-path" in msg
    with pytest.raises(StudioInputError, match="DeepFloyd/IF-I-XL-v1.0"):
        DeepFloydIFPrior(device="cpu")
    with pytest.raises(StudioInputError, match="does not exist"):
        Zero123Prior(str(tmp_path / "no" / "such" / "folder"), device="cpu")


def test_missing_component_names_it(sd_dir, tmp_path):
    broken = tmp_path / "sd_broken"
    broken.mkdir()
    for sub in ("unet", "text_encoder", "tokenizer", "scheduler"):
        (broken / sub).symlink_to(sd_dir / sub)
    with pytest.raises(StudioInputError, match="'vae/'") as e:
        StableDiffusionPrior(broken, device="cpu")
    assert "\n" not in str(e.value) and "huggingface-cli download stabilityai/stable-diffusion-2-1-base" in str(e.value)
    (broken / "vae").mkdir()  # present but without weights
    with pytest.raises(StudioInputError, match="vae/"):
        StableDiffusionPrior(broken, device="cpu")


def test_resolve_from_hf_cache_layout(tmp_path):
    cache = tmp_path / "hf_cache"
    snap = cache / "models--org--tiny-model" / "snapshots" / "0123abcd"
    (snap / "unet").mkdir(parents=True)
    (snap / "unet" / "config.json").write_text("{}")
    (cache / "models--org--tiny-model" / "refs").mkdir()
    (cache / "models--org--tiny-model" / "refs" / "main").write_text("0123abcd")
    assert resolve_pretrained("org/tiny-model", "Tiny") == snap
    shutil.rmtree(cache / "models--org--tiny-model" / "refs")  # a cache copied without refs/
    assert resolve_pretrained("org/tiny-model", "Tiny") == snap
    local = tmp_path / "local"
    local.mkdir()
    assert resolve_pretrained(str(local), "Tiny") == local.resolve()
    with pytest.raises(StudioInputError, match="org/other"):
        resolve_pretrained("org/other", "Tiny")


def test_load_prior_picks_the_adapter_of_a_folder(sd_dir, if_dir, z123_dir):
    from studio.priors import load_prior

    assert isinstance(load_prior(str(sd_dir)), StableDiffusionPrior)
    assert isinstance(load_prior(str(if_dir)), DeepFloydIFPrior)
    assert isinstance(load_prior(str(z123_dir)), Zero123Prior)


def test_stable_zero123_is_registered_and_needs_local_weights(z123_dir, tmp_path):
    from studio.priors import load_prior

    with pytest.raises(StudioInputError) as e:
        load_prior("stable-zero123")
    msg = str(e.value)
    assert "\n" not in msg
    assert "Stable Zero123" in msg and "ashawkey/stable-zero123-diffusers" in msg
    assert "huggingface-cli download" in msg and "--prior-path" in msg

    snap = tmp_path / "hf_cache" / "models--ashawkey--stable-zero123-diffusers" / "snapshots" / "0123abcd"
    snap.parent.mkdir(parents=True)
    snap.symlink_to(z123_dir, target_is_directory=True)
    prior = load_prior("stable-zero123")
    assert isinstance(prior, StableZero123Prior) and prior.pose_variant == "stable-zero123"
    pose = zero123_pose([0.0, 30.0], [45.0, -90.0], ref_elevation_deg=10.0, variant=prior.pose_variant)
    cond = prior.condition(image=torch.rand(1, 3, 16, 16), pose=pose)
    assert cond.tensors["clip"].shape == (2, 1, 32)
