"""C-SDS (Sparse3D's category score distillation) against the closed-form Gaussian-mixture prior,
in float64: both forms' gradients equal their documented formulas, neither carries SDS's "- eps"
term, mismatched priors are refused, and the classifier form moves a point toward its category."""

from __future__ import annotations

import pytest
import torch

from studio.guidance import CSDS, UniformTimesteps, category_prompt
from studio.priors.analytic import GaussianMixturePrior
from studio.priors.text import WordTokenizer
from studio.scenes.toyworld.scene import make_scene

MEANS = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * 0.6
CLASSES = ["a torus", "a box"]  # category prompts: class "a torus" = the two modes with x > 0


def text_prior(**kwargs) -> GaussianMixturePrior:
    """The category (text) prior in float64: labels are categories named by ``category_prompt``."""
    return GaussianMixturePrior(MEANS, std=0.08, labels=[0, 0, 1, 1], class_names=CLASSES, **kwargs).double()


def mv_prior(prediction_type="v") -> GaussianMixturePrior:
    """A second mixture playing the multiview prior: its own modes, each its own condition
    ("view evidence" label k), a v-prediction network, the same noise schedule as ``text_prior``."""
    means = torch.tensor([[0.7, 0.4], [0.5, -0.6], [-0.4, 0.2]])
    return GaussianMixturePrior(means, std=[0.1, 0.05, 0.2], prediction_type=prediction_type).double()


def assert_close(a, b, atol=1e-5):
    assert torch.allclose(a, b, rtol=0, atol=atol), f"max |a-b| = {(a - b).abs().max().item():.3g}"


def noised(prior, x, noise, t):
    """(x_t, w(t) = 1 - abar_t, s_t) computed here, independently of the guidance."""
    abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    return abar.sqrt() * x + (1 - abar).sqrt() * noise, 1 - abar, (1 - abar).sqrt()


def draw(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 1, 1, generator=g, dtype=torch.float64) * 0.7, torch.randn(
        n, 2, 1, 1, generator=g, dtype=torch.float64
    )


def test_category_prompt_and_toyworld_labels():
    assert category_prompt("torus") == "a torus" and category_prompt("apple") == "an apple"
    assert category_prompt(" toy_truck ") == "a toy truck" and category_prompt("a torus") == "a torus"
    for bad in ("", "  ", "multi"):
        with pytest.raises(ValueError):
            category_prompt(bad)
    # ToyWorld's label gives its caption without the material words, all known to the text prior
    vocab = set(WordTokenizer().words)
    for seed in (0, 1, 4):
        desc = make_scene(seed, "object")
        prompt = category_prompt(desc["category"])
        assert prompt.split()[-1] == desc["category"] and set(prompt.split()) <= set(desc["caption"].split())
        assert set(prompt.split()) <= vocab, prompt


def test_classifier_form_is_the_implicit_classifier_score():
    prior = text_prior()
    csds = CSDS(prior, form="classifier", scale=2.5)
    x, noise = draw()
    cat = prior.condition(category_prompt("torus"))
    for negative, neg_cond in ((None, prior.condition("")), (prior.condition("a box"), prior.condition("a box"))):
        g, t = csds.gradient(
            x, 0, cond_cat=cat, negative=negative, generator=torch.Generator().manual_seed(1), noise=noise
        )
        x_t, w, s = noised(prior, x, noise, t)
        expected = 2.5 * w * (-s) * (prior.score(x_t, t, cat) - prior.score(x_t, t, neg_cond))
        assert g.dtype == torch.float64 and len(t.unique()) > 1
        assert_close(g, expected)
        assert g.abs().max() > 1e-3  # not vacuous
    # forward: the surrogate loss's gradient is g / B, diagnostics are detached
    xp = x.clone().requires_grad_(True)
    out = csds(xp, 0, cond_cat=cat, generator=torch.Generator().manual_seed(5), as_latents=True)
    g, t = csds.gradient(x, 0, cond_cat=cat, generator=torch.Generator().manual_seed(5))
    out["loss_csds"].backward()
    assert set(out) == {"loss_csds", "csds_t", "csds_grad_norm"}
    assert_close(xp.grad, g / len(x), atol=1e-12)
    assert out["csds_t"] == t.double().mean() and not out["csds_grad_norm"].requires_grad
    assert out["csds_grad_norm"] == pytest.approx(g.flatten(1).norm(dim=1).mean().item())
    # with a separate category prior, the classifier form uses that prior alone
    both = CSDS(mv_prior(), prior, form="classifier", scale=2.5)
    g_both, _ = both.gradient(x, 0, cond_cat=cat, generator=torch.Generator().manual_seed(6))
    assert_close(g_both, csds.gradient(x, 0, cond_cat=cat, generator=torch.Generator().manual_seed(6))[0], atol=0)


def test_reference_form_replaces_the_noise_by_the_category_prediction_with_diffusers_cfg():
    mv, cat_prior = mv_prior("v"), text_prior()
    x, noise = draw(seed=2)
    cat = cat_prior.condition(category_prompt("torus"))
    view = mv.condition_labels(1)
    for scale, s_cfg, uncond, uncond_ref in (
        (1.0, 1.0, None, None),  # no CFG: the conditional prediction alone
        (1.0, 3.0, None, mv.condition("")),  # default uncond: the prior's unconditional
        (0.5, 7.5, mv.condition_labels(0), mv.condition_labels(0)),
    ):
        csds = CSDS(mv, cat_prior, form="reference", guidance_scale=s_cfg, scale=scale)
        g, t = csds.gradient(x, 0, cond_cat=cat, cond_mv=view, uncond_mv=uncond, noise=noise)
        x_t, w, _ = noised(cat_prior, x, noise, t)
        eps_mv = mv.eps(x_t, t, view)
        if uncond_ref is not None:  # diffusers: eps_u + s (eps_c - eps_u)
            eps_u = mv.eps(x_t, t, uncond_ref)
            eps_mv = eps_u + s_cfg * (eps_mv - eps_u)
        assert_close(g, scale * w * (eps_mv - cat_prior.eps(x_t, t, cat)))
        assert g.abs().max() > 1e-3
    with pytest.raises(ValueError):  # the reference form needs the multiview condition
        csds.gradient(x, 0, cond_cat=cat)
    with pytest.raises(ValueError):
        CSDS(text_prior(), form="classifier").gradient(x, 0, cond_cat=cat, cond_mv=view)


@pytest.mark.parametrize("form", ["classifier", "reference"])
def test_no_sds_noise_term(form):
    """The sampled noise enters only through x_t: two (x, noise) pairs with the same x_t give the
    same gradient, where SDS's would differ by w(t) (noise_1 - noise_2)."""
    cat_prior = text_prior()
    csds = (
        CSDS(cat_prior, form="classifier")
        if form == "classifier"
        else CSDS(mv_prior(), cat_prior, guidance_scale=3.0, form="reference")
    )
    kwargs = {"cond_cat": cat_prior.condition("a torus")}
    if form == "reference":
        kwargs["cond_mv"] = csds.prior.condition_labels(0)
    csds.schedule = UniformTimesteps(0.3, 0.3)
    x1, n1 = draw(seed=3)
    n2 = draw(seed=5)[1]
    t = torch.full((len(x1),), 300)
    x_t, w, s = noised(cat_prior, x1, n1, t)
    x2 = (x_t - s * n2) / (1 - w).sqrt()  # same x_t from the second noise draw
    g1, _ = csds.gradient(x1, 0, noise=n1, **kwargs)
    g2, _ = csds.gradient(x2, 0, noise=n2, **kwargs)
    assert_close(g1, g2, atol=1e-10)
    assert (w * (n1 - n2)).abs().max() > 0.1
    if form == "classifier":
        # well-separated classes at the schedule's smallest t: x at the category's modes, two noise
        # draws -> two x_t, each near its own mode, and the gradient ~ 0 for both, where SDS's
        # w(t) (eps_c - eps) is not: no -eps term survives
        csds.schedule = UniformTimesteps(0.02, 0.02)
        x = MEANS[[0, 1, 0, 1]].double().view(4, 2, 1, 1)
        gen = torch.Generator().manual_seed(4)
        n1, n2 = (torch.randn(x.shape, generator=gen, dtype=torch.float64) for _ in range(2))
        ga, t = csds.gradient(x, 0, noise=n1, **kwargs)
        gb, _ = csds.gradient(x, 0, noise=n2, **kwargs)
        w = 1 - cat_prior.alphas_cumprod[t].view(-1, 1, 1, 1)
        assert (ga - gb).abs().max() < 1e-2 * (w * (n1 - n2)).abs().max()
        sds = w * (cat_prior.eps(cat_prior.add_noise(x, n1, t), t, kwargs["cond_cat"]) - n1)
        assert ga.abs().max() < 1e-2 * sds.abs().max()


def test_mismatched_priors_are_refused():
    prior = text_prior()
    with pytest.raises(ValueError, match="noise schedule"):
        CSDS(mv_prior(), text_prior(num_train_timesteps=500))
    flow = text_prior(prediction_type="flow")
    with pytest.raises(ValueError, match="noise schedule"):
        CSDS(mv_prior(), flow)
    flow.alphas_cumprod = prior.alphas_cumprod.clone()  # same abar, different forward process
    with pytest.raises(ValueError, match="noise schedule"):
        CSDS(mv_prior(), flow)
    wide = GaussianMixturePrior(torch.zeros(2, 3), labels=[0, 1], class_names=CLASSES).double()
    with pytest.raises(ValueError, match="model space"):
        CSDS(mv_prior(), wide)
    with pytest.raises(ValueError):
        CSDS(prior, form="sds")
    with pytest.raises(ValueError):
        CSDS(prior, form="classifier", guidance_scale=3.0)
    CSDS(mv_prior("eps"), prior)  # same schedule and space, different prediction types: accepted
    CSDS(mv_prior("v"), prior)


def test_classifier_descent_moves_points_toward_the_category():
    prior = text_prior()
    csds = CSDS(prior, form="classifier", schedule=UniformTimesteps(0.02, 0.5))
    cat = prior.condition(category_prompt("torus"))
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([[-0.3, 0.2], [-0.1, -0.5], [0.0, 0.0], [-0.5, 0.6]]).double().view(4, 2, 1, 1)
    t0 = torch.zeros(4, dtype=torch.long)

    def log_ratio(x):  # log p(x | torus) - log p(x) of the (nearly) clean distribution, at most log 2
        return prior.log_prob(x, t0, cat) - prior.log_prob(x, t0, prior.condition(""))

    def torus_distance(x):
        return torch.cdist(x.view(4, 2), MEANS[:2].double()).min(1).values

    start = x.clone()
    for step in range(40):  # gradient descent on the surrogate loss, step 0.05 per point
        x.requires_grad_(True)
        csds(x, step, cond_cat=cat, generator=g, as_latents=True)["loss_csds"].backward()
        x = (x - 0.05 * len(x) * x.grad).detach()
    assert (log_ratio(x) > log_ratio(start) + 0.5).all() and (log_ratio(x) > 0.69).all(), log_ratio(x)
    # closer to a torus mode; the classifier score alone has no pull back toward the mode, so long
    # runs go past it (what keeps renders on the data is the rest of the objective)
    assert (torus_distance(x) < torus_distance(start) - 0.2).all()
