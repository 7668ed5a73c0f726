"""``vp3d``: visual-prompted SDS checked against closed-form Gaussian-mixture priors, and
``ns-train vp3d`` end to end on the embedded priors (tiny preset, a few steps)."""

from __future__ import annotations

import torch

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
