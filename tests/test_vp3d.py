"""``vp3d``: visual-prompted SDS checked against closed-form Gaussian-mixture priors, and
``ns-train vp3d`` end to end on the embedded priors (tiny preset, a few steps)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_driver import run_folder, train
from PIL import Image
from safetensors.torch import load_file

from studio.guidance import SDS, VPSDS, UniformTimesteps, shares_model_space
from studio.priors.analytic import GaussianMixturePrior

MEANS = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * 0.6


def text_prior(prediction_type: str = "v") -> GaussianMixturePrior:
    """Class "right" = the two modes with x > 0, "left" the others."""
    return GaussianMixturePrior(
        MEANS, std=0.08, labels=[0, 0, 1, 1], class_names=["right", "left"], prediction_type=prediction_type
    )


def image_prior(prediction_type: str = "eps", means: torch.Tensor = MEANS) -> GaussianMixturePrior:
    """The visual-prompt prior: class "up" = the modes with y > 0, "down" the others."""
    return GaussianMixturePrior(
        means, std=0.08, labels=[0, 1, 0, 1], class_names=["up", "down"], prediction_type=prediction_type
    )


def test_vpsds_gradient_is_the_compositional_guidance_of_the_docstring():
    """g = w(t) (eps_u + s_t (eps_text - eps_u) + s_v (eps_img - eps_img_u) - eps) with the exact eps
    of both priors (one predicts v, the other eps); the loss's gradient is g / B."""
    text, image = text_prior("v"), image_prior("eps")
    assert shares_model_space(text, image)
    s_t, s_v = 3.0, 2.0
    schedule = UniformTimesteps(0.1, 0.9)
    guidance = VPSDS(text, image, text_scale=s_t, visual_scale=s_v, schedule=schedule)
    x = torch.randn(8, 2, 1, 1)
    c, u, ic, iu = text.condition("right"), text.condition(""), image.condition("up"), image.condition("")
    grad, visual, t, _ = guidance.gradient(x, c, u, ic, iu, step=0, generator=torch.Generator().manual_seed(5))
    assert visual is None  # one model space: one combined gradient

    gen = torch.Generator().manual_seed(5)  # the same draws: t, then eps
    t_ref = schedule.sample(0, 8, gen, text.num_train_timesteps)
    eps = torch.randn(x.shape, generator=gen)
    assert torch.equal(t, t_ref)
    x_t = text.add_noise(x, eps, t)
    eps_hat = text.eps(x_t, t, u) + s_t * (text.eps(x_t, t, c) - text.eps(x_t, t, u))
    eps_hat = eps_hat + s_v * (image.eps(x_t, t, ic) - image.eps(x_t, t, iu))
    expected = (1.0 - text.noise_schedule.abar(t, x)) * (eps_hat - eps)
    assert torch.allclose(grad, expected, atol=1e-5), (grad - expected).abs().max()

    xp = x.clone().requires_grad_(True)
    out = guidance(xp, c, u, ic, iu, step=0, generator=torch.Generator().manual_seed(5))
    out["loss_vpsds"].backward()
    assert torch.allclose(xp.grad, expected / 8, atol=1e-6)
    assert out["vpsds_visual_norm"] > 0 and not out["vpsds_grad_norm"].requires_grad


def test_vpsds_without_the_visual_prompt_is_sds():
    text, image = text_prior(), image_prior()
    c, u = text.condition("right"), text.condition("")
    x = torch.randn(6, 2, 1, 1)
    vp = VPSDS(text, image, text_scale=7.5, visual_scale=0.0)
    sds = SDS(text, guidance_scale=7.5)
    g_vp = vp.gradient(x, c, u, image.condition("up"), None, 3, torch.Generator().manual_seed(1))[0]
    g_sds = sds.gradient(x, c, u, 3, torch.Generator().manual_seed(1))[0]
    assert torch.equal(g_vp, g_sds)


def test_vpsds_in_separate_model_spaces_adds_the_visual_part_in_the_image_space():
    """A text prior over 2x2 'images' and an image prior over 1x1 ones (the renders average-pooled):
    the visual part is w(t) s_v (eps_img - eps_img_u) at the image prior's own noisy sample."""
    text = GaussianMixturePrior(MEANS.repeat(1, 4).reshape(4, 2, 2, 2), std=0.08, class_names=["a", "b", "c", "d"])
    image = image_prior()
    assert not shares_model_space(text, image)
    guidance = VPSDS(text, image, text_scale=1.0, visual_scale=4.0)
    images = torch.rand(5, 2, 2, 2)
    x_image = images.mean((2, 3), keepdim=True)
    c, ic, iu = text.condition("a"), image.condition("up"), image.condition("")
    _, visual, t, norm = guidance.gradient(images, c, None, ic, iu, 0, torch.Generator().manual_seed(2), x_image)
    gen = torch.Generator().manual_seed(2)
    UniformTimesteps().sample(0, 5, gen)
    torch.randn(images.shape, generator=gen)
    eps_img = torch.randn(x_image.shape, generator=gen)
    xi_t = image.add_noise(x_image, eps_img, t)
    w = 1.0 - image.noise_schedule.abar(t, x_image)
    expected = w * 4.0 * (image.eps(xi_t, t, ic) - image.eps(xi_t, t, iu))
    assert torch.allclose(visual, expected, atol=1e-5) and torch.allclose(norm, expected.flatten(1).norm(dim=1))


def _particles(guidance, conds, steps: int = 300, n: int = 128) -> torch.Tensor:
    """SGD on particles [n,2,1,1] with the guidance's loss; the final particles."""
    x = torch.nn.Parameter(torch.randn(n, 2, 1, 1) * 0.7)
    opt = torch.optim.SGD([x], lr=0.3 * n)
    for step in range(steps):
        out = guidance(x, *conds, step) if isinstance(guidance, SDS) else guidance(x, *conds, step=step)
        opt.zero_grad()
        out[next(k for k in out if k.startswith("loss_"))].backward()
        opt.step()
    return x.detach().reshape(n, 2)


def test_vpsds_particles_land_on_the_mode_both_prompts_name():
    """Text "right" alone keeps both right-hand modes; adding the visual prompt "up" (a prior that
    knows nothing of left/right) moves every particle to the one mode that is right AND up."""
    torch.manual_seed(0)
    text, image = text_prior(), image_prior()
    schedule = UniformTimesteps(0.02, [0, 0.98, 0.06, 150])
    c, u = text.condition("right"), text.condition("")
    sds_end = _particles(SDS(text, guidance_scale=5.0, schedule=schedule), (c, u))
    assert (sds_end[:, 0] > 0.3).all() and (sds_end[:, 1] < 0).sum() > 20  # both right-hand modes
    torch.manual_seed(0)
    vp = VPSDS(text, image, text_scale=5.0, visual_scale=5.0, schedule=schedule)
    end = _particles(vp, (c, u, image.condition("up"), image.condition("")))
    assert (end[:, 0] > 0.3).all() and (end[:, 1] > 0.3).all(), end[(end[:, 1] <= 0.3)]
    assert (end - torch.tensor([0.6, 0.6])).norm(dim=1).mean() < 0.15


# ---- the method ------------------------------------------------------------------------------
MUSHROOM = Path(__file__).resolve().parents[1] / "scenes" / "toyworld_mushroom" / "test" / "r_000.png"
FAST = ["--preset", "tiny", "--pipeline.model.stage-iters", "2", "2", "--pipeline.model.visual-prompt-steps", "4"]


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory) -> Path:
    """A randomly initialised toy-clip file: the runs test the plumbing, not the embedded weights."""
    from studio.rewards.contrastive import ToyCLIP, save_toy_clip

    torch.manual_seed(0)
    return save_toy_clip(ToyCLIP(), tmp_path_factory.mktemp("clip") / "clip.safetensors")


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float32) / 255.0


def _train(tmp_path: Path, reward_model: Path, *args: str):
    out = tmp_path / "runs"
    result = train(
        ["vp3d", "--prompt", "a matte red cone", *FAST, "--pipeline.model.reward-model", str(reward_model), *args], out
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_folder(out)


def test_vp3d_samples_a_visual_prompt_trains_both_stages_and_saves_gaussians(tmp_path, reward_model):
    from studio.export.runs import read_run_scene

    run = _train(tmp_path, reward_model)
    prompt = _png(run / "visual_prompt.png")
    assert prompt.shape == (32, 32, 3) and prompt.std() > 0.02  # a sampled image, not the blank buffer
    stage = load_file(str(run / "geometry.safetensors"))
    assert np.abs(stage["visual_prompt_image"][0].permute(1, 2, 0).numpy() - prompt).max() <= 1 / 255 + 1e-6
    ckpt = next((run / "nerfstudio_models").glob("*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["pipeline"]
    assert state["_model.visual_prompt_ready"] and not any("vp_sds" in k for k in state)  # no frozen prior weights
    gaussians = read_run_scene(run / "config.yml")
    assert len(gaussians.means) == 3000 and torch.isfinite(gaussians.means).all()


def test_vp3d_takes_the_users_visual_prompt(tmp_path, reward_model):
    from studio.data.single_image import load_reference

    run = _train(tmp_path, reward_model, "--visual-prompt", str(MUSHROOM))
    expected = load_reference(MUSHROOM, 32, 0.2).rgb
    assert np.abs(_png(run / "visual_prompt.png") - expected).max() <= 1 / 255 + 1e-6


def test_vp3d_refuses_a_missing_visual_prompt_with_one_line_and_no_folder(tmp_path, monkeypatch, capsys):
    import nerfstudio.scripts.train as ns_train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ns_train, "launch", lambda **kw: pytest.fail("a missing visual prompt passed validation"))
    argv = ["ns-train", "vp3d", "--prompt", "a red cone", "--preset", "tiny", "--visual-prompt", "no.png"]
    monkeypatch.setattr(sys, "argv", argv + ["--output-dir", "runs", "--vis", "tensorboard"])
    with pytest.raises(SystemExit) as stop:
        ns_train.entrypoint()
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert (
        stop.value.code == 2
        and len(errors) == 1
        and errors[0].startswith("error: --visual-prompt")
        and "no.png does not exist" in errors[0]
    ), err
    assert "Traceback" not in err and not any(tmp_path.iterdir())


def test_rewards_move_the_gaussians_toward_higher_rewards(reward_model):
    """Both rewards back-propagate through the rasterizer into the Gaussians' positions, colours,
    scales and opacities, and a few Adam steps on the Gaussians raise them."""
    from studio.cameras.nerfstudio import cameras_to_viewmats
    from studio.cameras.sampling import OrbitSampler, orbit_cameras
    from studio.gaussians.init import initial_params
    from studio.gaussians.trainable import TrainableGaussians
    from studio.guidance.rewards import RewardGuidance
    from studio.models.generation import random_ball
    from studio.render import rasterize
    from studio.rewards import VisualConsistency, load_image_text_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    gaussians = TrainableGaussians(
        initial_params(random_ball(500, 0.5, gen), torch.full((500, 3), 0.5), 0, opacity=0.5)
    )
    viewmats, Ks, w, h = cameras_to_viewmats(orbit_cameras(OrbitSampler().ring(2), 32))
    prompt_image = torch.ones(1, 3, 32, 32)
    prompt_image[:, :, 8:24, 8:24] = torch.tensor([0.8, 0.1, 0.1])[:, None, None]
    rewards = RewardGuidance(load_image_text_model(reward_model), VisualConsistency("toy-vit"), 1.0, 1.0)

    def evaluate():
        g = gaussians.activated()
        out = rasterize(
            g.means, g.quats, g.scales, g.opacities, g.sh, viewmats, Ks, w, h, background=torch.ones(3), sh_degree=0
        )
        return rewards(out.color.permute(0, 3, 1, 2).clamp(0, 1), "a matte red cone", prompt_image)

    first = evaluate()
    sum(v for k, v in first.items() if k.startswith("loss_")).backward()
    for name in ("means", "features_dc", "scales", "opacities"):  # quats: the initial Gaussians are isotropic
        grad = gaussians.params[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    opt = torch.optim.Adam(gaussians.params.parameters(), lr=0.02)
    for _ in range(15):
        opt.zero_grad()
        out = evaluate()
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        opt.step()
    last = evaluate()
    assert (
        last["reward_alignment"] > first["reward_alignment"]
        and last["reward_consistency"] > first["reward_consistency"]
    )
