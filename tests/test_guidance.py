"""Guidance (SDS, VSD, BSD), schedules and prompting, checked against the closed-form
Gaussian-mixture prior: particles in a 2-D model space play the role of renders."""

from __future__ import annotations

import pytest
import torch

from studio.guidance import (
    BSD,
    SDS,
    VSD,
    DreamCraft3DSchedule,
    DreamGaussianLinear,
    UniformTimesteps,
    ViewPrompting,
    augment_views,
    finetune,
    guided_output,
    sample,
    step_value,
    surrogate_loss,
    view_dependent_prompts,
    view_dependent_t_range,
)
from studio.priors.analytic import GaussianMixturePrior

MEANS = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * 0.6
SIGMA = 0.08


def make_prior(prediction_type="eps") -> GaussianMixturePrior:
    """Four modes at (+-0.6, +-0.6); class "a" = the two with x > 0, class "b" = the others."""
    return GaussianMixturePrior(
        MEANS, std=SIGMA, labels=[0, 0, 1, 1], class_names=["a", "b"], prediction_type=prediction_type
    )


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5):
    """torch.allclose with a message (torch.testing.assert_close takes 10+ s to import here)."""
    b = torch.as_tensor(b, dtype=a.dtype)
    assert torch.allclose(a, b, atol=atol, rtol=rtol), f"max |a-b| = {(a - b).abs().max().item():.3g}"


def nearest_mode(x: torch.Tensor, means: torch.Tensor = MEANS):
    """(distance to the nearest mode [N], index of that mode [N]) of particles [N,2,1,1]."""
    d = torch.cdist(x.detach().reshape(len(x), -1), means)
    return d.min(1).values, d.argmin(1)


def within_mode_rms(x: torch.Tensor) -> float:
    """Per-coordinate RMS distance to the nearest mode (sigma for exact samples)."""
    d, _ = nearest_mode(x)
    return float((d**2).mean().sqrt() / 2**0.5)


# ---- the analytic prior ---------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["eps", "v", "flow"])
def test_gmm_prior_is_the_exact_score_and_conversions_round_trip(prediction_type):
    torch.manual_seed(0)
    prior = make_prior(prediction_type)
    x0 = prior.sample(64)
    eps = torch.randn_like(x0)
    t = torch.randint(0, prior.num_train_timesteps, (64,))
    x_t = prior.add_noise(x0, eps, t)
    for cond in (prior.condition(""), prior.condition("a")):
        out = prior.predict(x_t, t, cond)
        xr = x_t.clone().requires_grad_(True)
        (score,) = torch.autograd.grad(prior.log_prob(xr, t, cond).sum(), xr)
        s = (1.0 - prior.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
        if prediction_type == "flow":
            s = ((t.float() + 1) / prior.num_train_timesteps).view(-1, 1, 1, 1)
        eps_hat = prior.to_eps(x_t, t, out)
        assert_close(eps_hat, -s * score, atol=1e-4, rtol=1e-4)
        # to_x0 and to_eps describe the same point: x_t = a x0_hat + s eps_hat
        assert_close(prior.add_noise(prior.to_x0(x_t, t, out), eps_hat, t), x_t, atol=1e-4, rtol=1e-4)
    # the training target of the true (x0, eps) converts back to them
    target = prior.training_target(x0, eps, t)
    assert_close(prior.to_eps(x_t, t, target), eps, atol=1e-4, rtol=1e-4)
    assert_close(prior.to_x0(x_t, t, target), x0, atol=1e-3, rtol=1e-3)


def test_gmm_prior_conditions_and_trainable_clone():
    prior = make_prior()
    assert prior.condition(["a", "b", ""]).tensors["label"].tolist() == [0, 1, -1]
    with pytest.raises(ValueError):
        prior.condition("c")
    # class "a" samples lie at the x > 0 modes; the frozen prior has no trainable parameter
    assert (prior.sample(100, label=0)[:, 0] > 0).all()
    assert not any(p.requires_grad for p in prior.parameters())
    clone = prior.clone_trainable()
    assert all(p.requires_grad for p in clone.trainable_parameters())
    # CFG: the guided output is eps_u + s (eps_c - eps_u), whatever the prediction type
    vprior = make_prior("v")
    x, t = torch.randn(8, 2, 1, 1), torch.full((8,), 500)
    c, u = vprior.condition("a"), vprior.condition("")
    eps_g = vprior.to_eps(x, t, guided_output(vprior, x, t, c, u, 7.5))
    eps_c, eps_u = vprior.eps(x, t, c), vprior.eps(x, t, u)
    assert_close(eps_g, eps_u + 7.5 * (eps_c - eps_u), atol=1e-4, rtol=1e-4)


# ---- schedules and prompting ----------------------------------------------------------------
def test_schedules():
    assert step_value(0.3, 10) == 0.3
    assert step_value([100, 0.9, 0.5, 200], 0) == 0.9
    assert step_value([100, 0.9, 0.5, 200], 150) == pytest.approx(0.7)
    assert step_value([100, 0.9, 0.5, 200], 1000) == 0.5
    assert step_value([100, 0.9, 0.5, 101], 101) == 0.5  # a jump
    g = torch.Generator().manual_seed(0)
    u = UniformTimesteps(0.02, [0, 0.98, 0.5, 100])
    t0, t1 = u.sample(0, 4000, g), u.sample(100, 4000, g)
    assert t0.dtype == torch.long and t0.shape == (4000,)
    assert t0.min() >= 20 and t0.max() <= 980 and t0.max() > 950
    assert t1.min() >= 20 and t1.max() <= 500 and t1.max() > 480
    assert UniformTimesteps(0.0, 1.0).sample(0, 1000, g, num_train_timesteps=10).max() <= 9
    dg = DreamGaussianLinear(total_steps=500)
    ts = [int(dg.sample(s, 3)[0]) for s in range(0, 600, 10)]
    assert all(a >= b for a, b in zip(ts, ts[1:])) and ts[0] == 980 and ts[-1] == 20
    assert (dg.sample(250, 3) == 500).all()
    coarse = DreamCraft3DSchedule("coarse")
    assert coarse.range(0) == pytest.approx((0.7, 0.85)) and coarse.range(200) == pytest.approx((0.2, 0.5))
    assert DreamCraft3DSchedule("texture").range(5000) == pytest.approx((0.05, 0.2))
    assert DreamCraft3DSchedule("geometry").range(0) == pytest.approx((0.02, 0.5))
    with pytest.raises(ValueError):
        DreamCraft3DSchedule("fine")


def test_view_dependent_prompts():
    az = torch.tensor([0.0, 30.0, 90.0, -90.0, 180.0, 200.0, 400.0, 10.0])
    el = torch.tensor([0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 70.0])
    got = view_dependent_prompts("a frog", az, el)
    views = [p.split(", ")[1] for p in got]
    assert views == [
        "front view",
        "front view",
        "side view",
        "side view",
        "back view",
        "back view",
        "front view",
        "overhead view",
    ]
    assert ViewPrompting(front_threshold=20.0).prompts("x", torch.tensor([30.0]), torch.tensor([0.0])) == [
        "x, side view"
    ]


# ---- SDS ------------------------------------------------------------------------------------
def test_surrogate_loss_gradient_is_exactly_the_guidance_gradient():
    prior = make_prior()
    sds = SDS(prior, guidance_scale=7.5)
    x = torch.randn(16, 2, 1, 1, requires_grad=True)
    c, u = prior.condition("a"), prior.condition("")
    grad, t = sds.gradient(x, c, u, step=0, generator=torch.Generator().manual_seed(3))
    out = sds(x, c, u, step=0, generator=torch.Generator().manual_seed(3))
    out["loss_sds"].backward()
    assert_close(x.grad, grad / 16, rtol=0, atol=0)
    assert out["sds_t"] == t.float().mean() and not out["sds_grad_norm"].requires_grad
    # the gradient is w(t) (eps_cfg - eps) with the exact eps of the prior
    y = torch.randn(4, 2, 1, 1)
    assert_close(surrogate_loss(y.requires_grad_(True), torch.ones_like(y)), torch.tensor(1.0))  # 0.5 * 8 / 4


def _run_particles(guidance, prior, cond, uncond, steps, lr=0.3, fake_lr=0.05, fake_cond=None, n=256):
    """SGD on particles [n,2,1,1] with the guidance's surrogate loss (lr per particle; the loss
    averages over the batch); VSD/BSD's fake score is trained with Adam on its own loss."""
    x = torch.nn.Parameter(torch.randn(n, 2, 1, 1) * 0.7)
    start = x.detach().clone()
    opt = torch.optim.SGD([x], lr=lr * n)
    fake_params = guidance.trainable_parameters() if hasattr(guidance, "trainable_parameters") else []
    opt_fake = torch.optim.Adam(fake_params, lr=fake_lr) if fake_params else None
    for step in range(steps):
        kwargs = (
            {}
            if fake_cond is None
            else ({"fake_cond": fake_cond} if isinstance(guidance, VSD) else {"lora_cond": fake_cond})
        )
        out = guidance(x, cond, uncond, step, **kwargs)
        loss = sum(v for k, v in out.items() if k.startswith("loss_"))
        opt.zero_grad()
        if opt_fake:
            opt_fake.zero_grad()
        loss.backward()
        opt.step()
        if opt_fake:
            opt_fake.step()
    return start, x.detach()


def test_sds_moves_particles_onto_the_modes_and_cfg_selects_the_class():
    torch.manual_seed(0)
    prior = make_prior()
    steps = 400
    schedule = UniformTimesteps(0.02, [0, 0.98, 0.06, steps // 2])  # anneal to small t
    u = prior.condition("")
    start, end = _run_particles(SDS(prior, guidance_scale=1.0, schedule=schedule), prior, u, None, steps, n=128)
    d0, d1 = nearest_mode(start)[0].mean(), nearest_mode(end)[0].mean()
    assert d1 < d0 / 10, (d0, d1)
    assert torch.bincount(nearest_mode(end)[1], minlength=4).min() > 15  # every mode keeps particles
    torch.manual_seed(0)
    _, end = _run_particles(
        SDS(prior, guidance_scale=7.5, schedule=schedule), prior, prior.condition("a"), u, steps, n=128
    )
    d, k = nearest_mode(end)
    assert (k <= 1).all() and d.mean() < 0.1, (torch.bincount(k, minlength=4), d.mean())


# ---- VSD ------------------------------------------------------------------------------------
def test_vsd_fake_score_learns_the_particle_distribution():
    torch.manual_seed(0)
    prior = make_prior()
    vsd = VSD(prior, guidance_scale=1.0, fake_timestep_samples=4)
    center, spread = torch.tensor([0.2, -0.9]), 0.15
    particles = (center + spread * torch.randn(256, 2)).reshape(256, 2, 1, 1)
    truth = GaussianMixturePrior(center[None], std=spread)  # the particles' distribution
    u = prior.condition("")
    opt = torch.optim.Adam(vsd.trainable_parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        vsd.fake_loss(particles, u).backward()
        opt.step()
    t = torch.randint(20, 700, (512,))
    x_t = prior.add_noise(particles.repeat(2, 1, 1, 1), torch.randn(512, 2, 1, 1), t)
    with torch.no_grad():
        eps_true = truth.eps(x_t, t)
        err_fake = (vsd.fake.to_eps(x_t, t, vsd.fake.predict(x_t, t, u)) - eps_true).pow(2).mean()
        err_pre = (prior.eps(x_t, t, u) - eps_true).pow(2).mean()
    assert err_fake < err_pre / 10, (err_fake, err_pre)


def test_vsd_particles_keep_the_mixture_spread_where_sds_collapses():
    steps = 400
    schedule = UniformTimesteps(0.02, [0, 0.98, 0.06, steps // 2])
    prior = make_prior()
    u = prior.condition("")
    torch.manual_seed(0)
    _, x_sds = _run_particles(SDS(prior, guidance_scale=1.0, schedule=schedule), prior, u, None, steps, n=128)
    torch.manual_seed(0)
    vsd = VSD(prior, guidance_scale=1.0, schedule=schedule, fake_timestep_samples=4)
    _, x_vsd = _run_particles(vsd, prior, u, None, steps, n=128)
    rms_sds, rms_vsd = within_mode_rms(x_sds), within_mode_rms(x_vsd)
    assert rms_sds < 0.3 * SIGMA and 0.6 * SIGMA < rms_vsd < 1.4 * SIGMA, (rms_sds, rms_vsd)
    assert torch.bincount(nearest_mode(x_vsd)[1], minlength=4).min() > 16  # all four modes occupied


def test_vsd_camera_condition_and_loss_keys():
    prior = make_prior()
    vsd = VSD(prior, guidance_scale=7.5)
    x = torch.randn(4, 2, 1, 1, requires_grad=True)
    out = vsd(x, prior.condition("a"), prior.condition(""), 0, camera=torch.randn(4, 16))
    assert {"loss_vsd", "loss_vsd_fake", "vsd_t", "vsd_grad_norm"} <= set(out)
    out["loss_vsd"].backward()
    assert x.grad is not None and all(p.grad is None for p in vsd.trainable_parameters())
    out["loss_vsd_fake"].backward()
    assert all(p.grad is not None for p in vsd.trainable_parameters()) and not any(
        p.grad is not None for p in prior.parameters()
    )


# ---- DDIM sampling ---------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["eps", "v"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_sample_of_the_exact_prior_lands_on_the_class_modes(prediction_type, eta):
    """With the exact score, DDIM (deterministic or ancestral) draws class "a" samples: every one on
    a mode with x > 0, both such modes populated, spread close to the mixture's sigma."""
    prior = make_prior(prediction_type)
    x = sample(
        prior, 256, prior.condition("a"), None, 1.0, num_steps=50, generator=torch.Generator().manual_seed(0), eta=eta
    )
    _, mode = nearest_mode(x)
    assert set(mode.tolist()) == {0, 1}
    assert 0.25 < float((mode == 0).float().mean()) < 0.75
    assert 0.5 * SIGMA < within_mode_rms(x) < 1.5 * SIGMA


# ---- BSD ------------------------------------------------------------------------------------
NEW_REGION = torch.tensor([0.0, 1.2])  # data the prior has never seen


def _x0_error(model, x0, t, cond):
    g = torch.Generator().manual_seed(1)
    eps = torch.randn(x0.shape, generator=g)
    x_t = model.add_noise(x0, eps, t)
    with torch.no_grad():
        return float((model.to_x0(x_t, t, model.predict(x_t, t, cond)) - x0).pow(2).mean())


def test_bsd_finetune_learns_new_data_and_prior_preservation_prevents_forgetting():
    torch.manual_seed(0)
    prior = make_prior()
    u = prior.condition("")
    new = (NEW_REGION + 0.05 * torch.randn(64, 2)).reshape(64, 2, 1, 1)
    old = prior.sample(256)
    class_latents = sample(prior, 64, u, None, 1.0, num_steps=25)
    assert nearest_mode(class_latents)[0].mean() < 3 * SIGMA  # DDIM samples of the prior land on its modes
    t = torch.full((256,), 300)
    new_t = new.repeat(4, 1, 1, 1)
    errors = {}
    for lam in (0.0, 1.0):
        torch.manual_seed(1)
        boot = prior.clone_trainable()
        finetune(
            boot,
            new,
            u,
            steps=300,
            lr=0.03,
            prior_preservation_weight=lam,
            class_images=class_latents,
            batch_size=16,
            as_latents=True,
        )
        errors[lam] = (_x0_error(boot, new_t, t, u), _x0_error(boot, old, t, u))
    base = (_x0_error(prior, new_t, t, u), _x0_error(prior, old, t, u))
    assert errors[1.0][0] < base[0] / 3 and errors[0.0][0] < base[0] / 3, (base, errors)  # learned the new region
    assert errors[1.0][1] < errors[0.0][1] / 2, (base, errors)  # ... and kept the old modes only with lambda > 0


def test_augment_views_pulls_renders_toward_the_prior():
    torch.manual_seed(0)
    prior = make_prior()
    renders = (MEANS[[0, 1, 2, 3]] * 1.4).reshape(4, 2, 1, 1)  # off-mode "renders"
    moved = {}
    for f in (0.0, 0.3):
        out = augment_views(
            prior, renders, prior.condition(""), (f, f), num_steps=10, guidance_scale=1.0, as_latents=True
        )
        moved[f] = (out - renders).norm(dim=1).mean()
    assert moved[0.0] < 0.1 < moved[0.3]  # t' = 0 keeps the render (up to one denoising step)
    assert nearest_mode(out)[0].mean() < nearest_mode(renders)[0].mean() / 2
    r = view_dependent_t_range(torch.tensor([0.0, 90.0, -180.0]), 0.1, 0.5)
    assert_close(r, torch.tensor([[0.0, 0.0], [0.05, 0.25], [0.1, 0.5]]))


def test_bsd_distillation_moves_particles_toward_the_bootstrapped_data():
    """The "scene" is mode 0: after a bootstrap round on its renders the bootstrapped prior favours
    it, and BSD sends most particles there while VSD with the original prior spreads them evenly."""
    torch.manual_seed(0)
    prior = make_prior()
    u = prior.condition("")
    steps = 300
    bsd = BSD(
        prior,
        guidance_scale=1.0,
        schedule=UniformTimesteps(0.02, [0, 0.98, 0.06, steps // 2]),
        bootstrap_every=10**9,
        augment_t_range=(0.02, 0.05),
        augment_steps=4,
        finetune_steps=200,
        finetune_lr=0.03,
        finetune_batch=16,
        prior_preservation_weight=0.1,
        num_class_images=32,
    )
    assert bsd.should_bootstrap(0) and not bsd.should_bootstrap(1)
    renders = (MEANS[0] + SIGMA * torch.randn(32, 2)).reshape(32, 2, 1, 1)
    stats = bsd.bootstrap(lambda cams: renders[cams], torch.arange(32), u)
    assert stats["augmented"].shape == renders.shape and stats["loss_prior"] > 0
    _, x = _run_particles(bsd, prior, u, None, steps, n=128)
    torch.manual_seed(0)
    _, x_vsd = _run_particles(VSD(prior, guidance_scale=1.0, schedule=bsd.schedule), prior, u, None, steps, n=128)
    share, share_vsd = [(nearest_mode(y)[1] == 0).float().mean() for y in (x, x_vsd)]
    assert share > 0.5 and share > 1.5 * share_vsd, (share, share_vsd)


def _mean_bsd_descent(bsd: BSD, x: torch.Tensor, cond, draws: int = 64) -> torch.Tensor:
    """-E[w(t) (eps_bootstrapped - eps_lora)] at the particles ``x`` [N,2,1,1] (the direction BSD moves them)."""
    g = torch.zeros_like(x)
    for _ in range(draws):
        xi = x.clone().requires_grad_(True)
        out = bsd(xi, cond, None, step=10**6, as_latents=True)
        (grad,) = torch.autograd.grad(out["loss_bsd"], xi)
        g -= grad * len(x) / draws
    return g


def test_bsd_render_score_finetuning_isolates_the_augmentation():
    """The renders sit off the prior's mode 0. Fine-tuning the render-score copy on the raw renders in
    the same round as the bootstrapped copy on their augmentations leaves only the augmentation's
    effect in eps_bootstrapped - eps_lora: with no augmentation (t' = 0) BSD barely moves the
    renders, while with the render-score copy left as the prior the bootstrapped copy's learned
    renders push them further from the mode; with augmentation (t' = 0.3) BSD moves them toward
    the augmented views, and away from them without the render-score fine-tuning."""
    prior = make_prior()
    u = prior.condition("")
    renders = (MEANS[0] * 1.5 + 0.03 * torch.randn(32, 2, generator=torch.Generator().manual_seed(0))).reshape(
        32, 2, 1, 1
    )
    away = (renders - MEANS[0].reshape(1, 2, 1, 1)).flatten()
    results = {}
    for t_aug in (0.0, 0.3):
        for symmetric in (False, True):
            torch.manual_seed(1)
            bsd = BSD(
                prior,
                guidance_scale=1.0,
                schedule=UniformTimesteps(0.02, 0.3),
                bootstrap_every=10**9,
                augment_t_range=(t_aug, t_aug),
                augment_steps=6,
                augment_guidance_scale=1.0,
                finetune_steps=200,
                finetune_lr=0.03,
                finetune_batch=16,
                prior_preservation_weight=0.1,
                num_class_images=32,
                finetune_render_score=symmetric,
            )
            stats = bsd.bootstrap(lambda cams: renders[cams], torch.arange(32), u)
            assert ("render_score_loss_instance" in stats) == symmetric
            results[t_aug, symmetric] = (_mean_bsd_descent(bsd, renders, u), stats["augmented"])
    still, _ = results[0.0, True]
    pushed, _ = results[0.0, False]
    assert torch.dot(pushed.flatten(), away) > 0  # the asymmetric pair reinforces the renders' offset
    assert still.norm() < 0.3 * pushed.norm(), (still.norm(), pushed.norm())
    for symmetric in (True, False):
        moved, aug = results[0.3, symmetric]
        toward = (aug - renders).flatten()
        cos = float(torch.dot(moved.flatten(), toward) / (moved.norm() * toward.norm()))
        assert (cos > 0.5) if symmetric else (cos < 0.0), (symmetric, cos)
