"""The Wan2.2 TI2V multi-view adapter on a tiny random snapshot.

Tiny ``WanTransformer3DModel`` / ``AutoencoderKLWan`` (residual, patchified, as TI2V) / UMT5 /
T5 tokenizer are built here, saved in the ``Wan-AI/Wan2.2-TI2V-5B-Diffusers`` layout and loaded
back through the adapter with the network blocked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from conftest import save_tiny_t5_tokenizer  # noqa: E402 (tests/ is on sys.path)

from studio.io.errors import StudioInputError  # noqa: E402
from studio.priors.base import Condition  # noqa: E402
from studio.priors.diffusers import WanMultiViewPrior  # noqa: E402
from studio.priors.multiview import MultiViewPrior, mv_pose  # noqa: E402

Z = 4  # VAE z_dim = transformer in/out channels
IMG = 32  # pixels; the tiny VAE compresses 4x -> 8x8 latents -> 4x4 tokens per view
V = 3


pytestmark = pytest.mark.usefixtures("offline")


def _make_wan(root: Path) -> Path:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=Z,
        out_channels=Z,
        text_dim=16,
        freq_dim=32,
        ffn_dim=32,
        num_layers=1,
        rope_max_seq_len=32,
    ).save_pretrained(root / "transformer")
    AutoencoderKLWan(  # TI2V-style: residual blocks, 2x2 pixel patchify (12 channels in/out)
        base_dim=8,
        z_dim=Z,
        dim_mult=[1, 1],
        num_res_blocks=1,
        temperal_downsample=[False],
        is_residual=True,
        patch_size=2,
        in_channels=12,
        out_channels=12,
        scale_factor_spatial=4,
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[1.5, 2.0, 0.5, 1.0],
    ).save_pretrained(root / "vae")
    UMT5EncoderModel(
        UMT5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4, decoder_start_token_id=0)
    ).save_pretrained(root / "text_encoder")
    save_tiny_t5_tokenizer(root / "tokenizer")
    UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0, num_train_timesteps=1000
    ).save_pretrained(root / "scheduler")
    return root


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return _make_wan(tmp_path_factory.mktemp("wan"))


@pytest.fixture(scope="module")
def prior(wan_dir):
    return WanMultiViewPrior(wan_dir, device="cpu", image_size=IMG, n_views=V, max_text_length=16)


def _cameras(b: int = 1, v: int = V, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    viewmats = torch.eye(4).repeat(b, v, 1, 1)
    ang = torch.rand(b, v, generator=g) * 3.0
    c, s = torch.cos(ang), torch.sin(ang)
    viewmats[..., 0, 0], viewmats[..., 0, 2], viewmats[..., 2, 0], viewmats[..., 2, 2] = c, s, -s, c
    viewmats[..., 2, 3] = 2.0
    Ks = torch.tensor([[IMG, 0.0, IMG / 2], [0.0, IMG, IMG / 2], [0.0, 0.0, 1.0]]).repeat(b, v, 1, 1)
    return mv_pose(viewmats, Ks, IMG, IMG)


class _Timesteps:
    """Records the ``timestep`` argument the transformer receives."""

    def __init__(self, transformer):
        self.seen = []
        self.handle = transformer.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.seen.append(args[1] if len(args) > 1 else kwargs["timestep"])


def test_loads_schedule_and_latent_space(prior, wan_dir):
    assert isinstance(prior, MultiViewPrior)
    assert prior.model_dtype == torch.float32 and prior.transformer.dtype == torch.float32
    assert prior.vae.dtype == torch.float32 and prior.vae_scale_factor == 4
    assert prior.prediction_type == "flow" and prior.flow_shift == 5.0
    assert prior.image_size == IMG and prior.latent_shape == (V, Z, 8, 8)
    T = prior.num_train_timesteps
    assert T == 1000 and prior.alphas_cumprod.dtype == torch.float32
    s = torch.tensor([0.25, 0.5])
    t = (s * T).long() - 1
    assert torch.allclose(prior.alphas_cumprod[t], (1 - s) ** 2 / ((1 - s) ** 2 + s**2))
    x0, eps = torch.randn(2, V, Z, 8, 8), torch.randn(2, V, Z, 8, 8)
    assert torch.allclose(prior.add_noise(x0, eps, t), (1 - s.view(2, 1, 1, 1, 1)) * x0 + s.view(2, 1, 1, 1, 1) * eps)
    ts = prior.shifted_timesteps(4)
    assert ts[0] == T - 1 and bool((ts[1:] < ts[:-1]).all())

    torch.manual_seed(0)
    img = torch.rand(2, V, 3, IMG, IMG, requires_grad=True)
    mean_prior = WanMultiViewPrior(wan_dir, device="cpu", image_size=IMG, encode_mode="mean", max_text_length=16)
    lat = mean_prior.encode(img)
    assert lat.shape == (2, V, Z, 8, 8)
    with torch.no_grad():  # each view is a one-frame video, normalised with latents_mean/std
        raw = prior.vae.encode(img[:, 1, :, None] * 2 - 1).latent_dist.mean[:, :, 0]
        mean = torch.tensor(prior.vae.config.latents_mean).view(1, Z, 1, 1)
        std = torch.tensor(prior.vae.config.latents_std).view(1, Z, 1, 1)
    assert torch.allclose(lat[:, 1], (raw - mean) / std, atol=1e-5)
    lat.square().sum().backward()  # SDS needs gradients through the encoder
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert prior.encode(torch.rand(1, 2, 3, 64, 64)).shape == (1, 2, Z, 8, 8)  # resized to image_size
    with torch.no_grad():
        out = prior.decode(lat.detach())
    assert out.shape == (2, V, 3, IMG, IMG) and out.min() >= 0 and out.max() <= 1


def test_predict_views_as_frames_and_text(prior):
    cond = prior.condition(text="a red torus")
    assert cond.tensors["text"].shape == (1, 16, 16)
    unc = prior.unconditional(cond)
    assert not torch.allclose(cond.tensors["text"], unc.tensors["text"])
    torch.manual_seed(1)
    x_t, t = torch.randn(2, V, Z, 8, 8), torch.tensor([299, 799])
    rec = _Timesteps(prior.transformer)
    try:
        with torch.no_grad():
            out = prior.predict(x_t, t, cond)
            raw = prior.transformer(
                x_t.permute(0, 2, 1, 3, 4), (t + 1).float(), cond.tensors["text"].expand(2, -1, -1)
            ).sample
            out_u = prior.predict(x_t, t, unc)
            both = prior.predict(torch.cat([x_t, x_t]), torch.cat([t, t]), Condition.cat([cond, unc], [2, 2]))
    finally:
        rec.handle.remove()
    assert out.shape == (2, V, Z, 8, 8)
    assert torch.allclose(rec.seen[0], torch.tensor([300.0, 800.0]))  # sigma * T
    assert torch.allclose(out, raw.permute(0, 2, 1, 3, 4), atol=1e-6)
    assert not torch.allclose(out, out_u)
    assert torch.allclose(both, torch.cat([out, out_u]), atol=1e-5)


def test_camera_embedding_starts_at_zero_then_reads_each_view(wan_dir):
    prior = WanMultiViewPrior(wan_dir, device="cpu", image_size=IMG, n_views=V, max_text_length=16)
    rays = _cameras()
    assert rays.shape == (1, V, 6, IMG, IMG)
    assert set(prior.trainable_parameters()) == set(prior.camera_embedding.parameters())
    assert all(p.requires_grad for p in prior.trainable_parameters())
    cond, no_pose = prior.condition(text="a box", pose=rays), prior.condition(text="a box")
    torch.manual_seed(2)
    x_t, t = torch.randn(1, V, Z, 8, 8), torch.tensor([500])
    with torch.no_grad():
        assert torch.equal(prior.predict(x_t, t, cond), prior.predict(x_t, t, no_pose))
        torch.nn.init.normal_(prior.camera_embedding.weight, std=0.5)
        with_pose = prior.predict(x_t, t, cond)
        assert not torch.allclose(with_pose, prior.predict(x_t, t, no_pose), atol=1e-4)
        for k in range(V):  # every view's raymap is read
            other = rays.clone()
            other[:, k] = other[:, k].flip(-1)  # view k's rays mirrored left-right
            changed = prior.predict(x_t, t, prior.condition(text="a box", pose=other))
            assert not torch.allclose(changed, with_pose, atol=1e-4), k
        other = rays.clone()
        other[:, 1] = other[:, 1].flip(-1)
        diff = (prior._camera_tokens(other, 1, V, 8, 8) - prior._camera_tokens(rays, 1, V, 8, 8)).abs()
        assert diff[:, :, 1].sum() > 0 and diff[:, :, [0, 2]].sum() == 0  # per-view camera tokens
    # the embedding is trainable: gradients reach it through predict
    loss = prior.predict(x_t, t, cond).square().mean()
    loss.backward()
    assert prior.camera_embedding.weight.grad is not None and prior.camera_embedding.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="views"):
        prior.predict(torch.randn(1, 2, Z, 8, 8), t, cond)


def test_image_condition_fixes_view_zero(prior):
    torch.manual_seed(3)
    image = torch.rand(2, 3, IMG, IMG)
    cond = prior.condition(text="a blue sphere", image=image, pose=_cameras(b=2))
    assert cond.tensors["image"].shape == (2, Z, 8, 8)
    with torch.no_grad():
        want = WanMultiViewPrior._vae_encode(prior, image[:, None], "mean")[:, 0]
    assert torch.allclose(cond.tensors["image"], want, atol=1e-6)
    unc = prior.unconditional(cond)
    assert torch.equal(unc.tensors["image"], cond.tensors["image"]) and torch.equal(
        unc.tensors["pose"], cond.tensors["pose"]
    )

    x_t, t = torch.randn(2, V, Z, 8, 8), torch.tensor([400, 900])
    x_other = x_t.clone()
    x_other[:, 0] = torch.randn(2, Z, 8, 8) * 3
    rec = _Timesteps(prior.transformer)
    try:
        with torch.no_grad():
            out = prior.predict(x_t, t, cond)
            assert torch.equal(prior.predict(x_other, t, cond), out)  # view 0 of x_t is replaced
            assert not torch.allclose(prior.predict(x_t, t, prior.condition(text="a blue sphere")), out)
    finally:
        rec.handle.remove()
    ts = rec.seen[0]
    per_view = 4 * 4
    assert ts.shape == (2, V * per_view)  # official TI2V: per-token timesteps, clean view 0 at 0
    assert torch.count_nonzero(ts[:, :per_view]) == 0
    assert torch.allclose(ts[:, per_view:], torch.tensor([401.0, 901.0])[:, None].expand(2, (V - 1) * per_view))


def test_bf16_given_t_on_view_zero_and_no_text_encoder(wan_dir, prior):
    low = WanMultiViewPrior(
        wan_dir,
        dtype="bf16",
        device="cpu",
        image_size=IMG,
        reference_timestep="t",
        load_text_encoder=False,
    )
    assert low.transformer.patch_embedding.weight.dtype == torch.bfloat16 and low.text_encoder is None
    assert low.vae.dtype == torch.float32 and low.camera_embedding.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="text_embeddings"):
        low.condition(text="a box")
    text = prior.condition(text="a box").tensors["text"]
    cond = low.condition(text_embeddings=text, image=torch.rand(1, 3, IMG, IMG), pose=_cameras())
    assert low.unconditional(cond).tensors["text"].shape == (1, 16, 16)
    rec = _Timesteps(low.transformer)
    try:
        with torch.no_grad():
            out = low.predict(torch.randn(1, V, Z, 8, 8), torch.tensor([99]), cond)
    finally:
        rec.handle.remove()
    assert out.dtype == torch.float32 and out.shape == (1, V, Z, 8, 8) and torch.isfinite(out).all()
    assert torch.allclose(rec.seen[0].float(), torch.tensor([100.0]))  # the given t on every view


def test_lora_clone_shares_weights_and_trains(prior):
    rays = _cameras()
    cond = prior.condition(text="a torus", pose=rays)
    x_t, t = torch.randn(1, V, Z, 8, 8), torch.tensor([600])
    with torch.no_grad():
        before = prior.predict(x_t, t, cond)
    clone = prior.clone_trainable(lora_rank=2)
    params = clone.trainable_parameters()
    assert all(p.requires_grad and p.dtype == torch.float32 for p in params)
    lora = [n for n, p in clone.transformer.named_parameters() if any(p is q for q in params)]
    assert lora and all("lora_" in n for n in lora)
    assert clone.camera_embedding is not prior.camera_embedding
    assert clone.transformer.patch_embedding.weight.data_ptr() == prior.transformer.patch_embedding.weight.data_ptr()
    assert clone.vae is prior.vae and clone.text_encoder is prior.text_encoder
    with torch.no_grad():
        assert torch.allclose(clone.predict(x_t, t, cond), before, atol=1e-6)
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        clone.predict(x_t, t, cond).square().mean().backward()
        opt.step()
    with torch.no_grad():
        assert torch.allclose(prior.predict(x_t, t, cond), before, atol=1e-6)  # teacher untouched
        assert not torch.allclose(clone.predict(x_t, t, cond), before, atol=1e-5)
    assert not any("lora" in n for n in prior.transformer.state_dict())
    assert set(clone.lora_state_dict()) >= {"camera_embedding.weight", "camera_embedding.bias"}
    with pytest.raises(ValueError):
        clone.clone_trainable()


def test_missing_weights_one_clear_line(tmp_path, wan_dir):
    with pytest.raises(StudioInputError) as e:
        WanMultiViewPrior(device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and "Wan-AI/Wan2.2-TI2V-5B-Diffusers" in msg and "--prior-path" in msg
    with pytest.raises(StudioInputError, match="does not exist") as e:
        WanMultiViewPrior(str(tmp_path / "no" / "such" / "folder"), device="cpu", flag="--pipeline.model.prior")
    assert "\n" not in str(e.value)
    broken = tmp_path / "wan_broken"
    broken.mkdir()
    for sub in ("transformer", "text_encoder", "tokenizer", "scheduler"):
        (broken / sub).symlink_to(wan_dir / sub)
    with pytest.raises(StudioInputError, match="'vae/'") as e:
        WanMultiViewPrior(broken, device="cpu")
    assert "\n" not in str(e.value)
    (broken / "vae").symlink_to(wan_dir / "vae")
    (broken / "scheduler").unlink()
    (broken / "scheduler").mkdir()
    (broken / "scheduler" / "scheduler_config.json").write_text('{"prediction_type": "epsilon"}')
    with pytest.raises(StudioInputError, match="flow"):
        WanMultiViewPrior(broken, device="cpu")
