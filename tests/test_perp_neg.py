"""Perp-Neg (``studio.guidance.perp_neg``): the perpendicular combination on analytic vectors,
threestudio's azimuth weights from their formula, the conditions it builds, and SDS with Perp-Neg
on the closed-form Gaussian-mixture prior."""

from __future__ import annotations

import math

import pytest
import torch
from test_guidance import MEANS, SIGMA, assert_close

from studio.guidance import SDS, Negatives, PerpNeg, perp_neg_combine, sds_weight
from studio.priors.analytic import GaussianMixturePrior
from studio.priors.base import Condition


def cfg(eps_u, eps_pos, s):
    return eps_u + s * (eps_pos - eps_u)


def per_sample_dot(a, b):
    return (a * b).flatten(1).sum(1)


# ---- the perpendicular combination ------------------------------------------------------------
def test_perp_neg_combine_on_analytic_vectors():
    # eps_u = 0, d_pos = (1, 0), a negative (1, 1): its perpendicular part is (0, 1), so with
    # w = 1 and s = 2 the guided noise is 2 ((1, 0) - (0, 1)) = (2, -2)
    eps_u = torch.zeros(1, 2, 1, 1)
    eps_pos = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    eps_neg = torch.tensor([1.0, 1.0]).view(1, 1, 2, 1, 1)
    got = perp_neg_combine(eps_u, eps_pos, eps_neg, torch.tensor([[1.0]]), 2.0)
    assert_close(got.flatten(), torch.tensor([2.0, -2.0]))


def test_perp_neg_combine_departs_from_cfg_perpendicularly_and_ignores_parallel_negatives():
    g = torch.Generator().manual_seed(0)
    B, K, s = 3, 2, 7.5
    eps_u, eps_pos = torch.randn(B, 3, 4, 4, generator=g), torch.randn(B, 3, 4, 4, generator=g)
    eps_neg = torch.randn(B, K, 3, 4, 4, generator=g)
    weights = torch.rand(B, K, generator=g) * 2
    d_pos = eps_pos - eps_u
    plain = cfg(eps_u, eps_pos, s)
    got = perp_neg_combine(eps_u, eps_pos, eps_neg, weights, s)
    assert (got - plain).abs().max() > 0.1
    cos = per_sample_dot(got - plain, d_pos) / ((got - plain).flatten(1).norm(dim=1) * d_pos.flatten(1).norm(dim=1))
    assert_close(cos, torch.zeros(B), atol=1e-5)
    # zero weights: CFG
    assert_close(perp_neg_combine(eps_u, eps_pos, eps_neg, torch.zeros(B, K), s), plain, atol=1e-6)
    # a negative along the positive direction (any per-sample multiple) changes nothing
    parallel = (
        eps_u[:, None] + torch.tensor([[-2.0, 0.5], [3.0, 1.0], [0.3, -1.0]]).view(B, K, 1, 1, 1) * d_pos[:, None]
    )
    assert_close(perp_neg_combine(eps_u, eps_pos, parallel, weights, s), plain, atol=1e-5)


# ---- threestudio's view weights ---------------------------------------------------------------
def f(a, b, c, r):
    return a * math.exp(-b * r) + c


def test_view_weights_reproduce_threestudio():
    """threestudio's defaults: f_fs = f_sf = (4, 0.5, -2.426), f_sb = (1, 0.5, -0.606),
    f_fsb = (1, 0.5, 0.967); views 0 front, 1 side, 2 back, 3 overhead."""
    az = torch.tensor([0.0, 45.0, 90.0, 135.0, 180.0, -60.0, 405.0, 30.0])
    el = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 70.0])
    v = PerpNeg().views(az, el)
    expected = [
        # (positive views, r, negative views, weights)
        ((0, 1), 1.0, (0, 1), (f(4, 0.5, -2.426, 1.0), f(4, 0.5, -2.426, 0.0))),  # front
        ((0, 1), 0.5, (0, 1), (f(4, 0.5, -2.426, 0.5), f(4, 0.5, -2.426, 0.5))),
        ((1, 2), 1.0, (1, 0), (f(1, 0.5, -0.606, 1.0), f(1, 0.5, 0.967, 1.0))),  # side: back band
        ((1, 2), 0.5, (1, 0), (f(1, 0.5, -0.606, 0.5), f(1, 0.5, 0.967, 0.5))),
        ((1, 2), 0.0, (1, 0), (f(1, 0.5, -0.606, 0.0), f(1, 0.5, 0.967, 0.0))),  # back
        ((0, 1), 1 / 3, (0, 1), (f(4, 0.5, -2.426, 1 / 3), f(4, 0.5, -2.426, 2 / 3))),
        ((0, 1), 0.5, (0, 1), (f(4, 0.5, -2.426, 0.5), f(4, 0.5, -2.426, 0.5))),  # 405 = 45
        ((3, 3), 1.0, (0, 1), (0.0, 0.0)),  # overhead: no negatives
    ]
    for i, (pos, r, neg, w) in enumerate(expected):
        assert tuple(v.positive[i].tolist()) == pos and tuple(v.negative[i].tolist()) == neg, i
        assert abs(v.r[i].item() - r) < 1e-12, i
        assert_close(v.weights[i], torch.tensor(w, dtype=torch.float64), atol=1e-12, rtol=0)
    # the numbers themselves: the generated view's own weight nearly vanishes
    assert_close(
        v.weights[:5],
        torch.tensor(
            [[1.2264e-4, 1.574], [0.68920, 0.68920], [5.3066e-4, 1.57353], [0.17280, 1.74580], [0.394, 1.967]],
            dtype=torch.float64,
        ),
        atol=1e-4,
    )


def test_conditions_interpolate_the_view_embeddings():
    pn = PerpNeg()
    prompts = pn.prompting.all_prompts("a frog")
    g = torch.Generator().manual_seed(1)
    emb = {p: torch.randn(1, 3, 4, generator=g) for p in prompts}
    mask = torch.ones(1, 3, dtype=torch.long)
    conds = {p: Condition({"text": emb[p], "mask": mask}) for p in prompts}
    conds[""] = Condition({"text": torch.zeros(1, 3, 4), "mask": mask})
    front, side, back, overhead = (emb[p][0] for p in prompts)
    positive, negatives = pn.conditions(conds, "a frog", torch.tensor([-60.0, 135.0, 10.0]), torch.tensor([0, 0, 80]))
    assert_close(positive.tensors["text"], torch.stack([front / 3 + 2 * side / 3, (side + back) / 2, overhead]))
    assert torch.equal(positive.tensors["mask"], mask.expand(3, 3))
    # row b * K + k is negative k of camera b
    assert_close(negatives.conditions.tensors["text"], torch.stack([front, side, side, front, front, side]))
    assert negatives.weights.shape == (3, 2) and (negatives.weights[2] == 0).all()
    # a field that cannot be interpolated must agree between the mixed views
    conds[prompts[1]] = Condition({"text": emb[prompts[1]], "mask": torch.zeros(1, 3, dtype=torch.long)})
    with pytest.raises(ValueError, match="mask"):
        pn.conditions(conds, "a frog", torch.tensor([45.0]), torch.tensor([0.0]))


# ---- SDS with Perp-Neg ------------------------------------------------------------------------
def perp_2d(a, b):
    """The part of 2-D vectors a [B,2] perpendicular to b [B,2]: (a . n) n, n = b rotated by 90 deg."""
    n = torch.stack([-b[:, 1], b[:, 0]], 1) / b.norm(dim=1, keepdim=True)
    return (a * n).sum(1, keepdim=True) * n


@pytest.mark.parametrize("prediction_type", ["eps", "v"])
def test_sds_gradient_with_perp_neg_is_the_documented_formula(prediction_type):
    """grad = w(t) (eps_u + s [d_pos - sum_k w_k perp(eps_neg_k - eps_u, d_pos)] - eps) with the
    exact eps of the prior: one class per mode, positive "a", negatives "b" and "c"."""
    prior = GaussianMixturePrior(MEANS, std=SIGMA, class_names=["a", "b", "c", "d"], prediction_type=prediction_type)
    s, B = 7.5, 6
    sds = SDS(prior, guidance_scale=s)
    x = torch.randn(B, 2, 1, 1, generator=torch.Generator().manual_seed(0))
    c, u = prior.condition("a"), prior.condition("")
    weights = torch.rand(B, 2, generator=torch.Generator().manual_seed(1)) * 2
    negatives = Negatives(prior.condition_labels(torch.tensor([1, 2] * B)), weights)
    grad, t = sds.gradient(x, c, u, 0, torch.Generator().manual_seed(3), negatives)

    g = torch.Generator().manual_seed(3)  # SDS.gradient's draws, in its order: t, then eps
    t_ref = sds.schedule.sample(0, B, g, prior.num_train_timesteps)
    eps = torch.randn(x.shape, generator=g)
    assert torch.equal(t, t_ref)
    x_t = prior.add_noise(x, eps, t)
    e_u, e_a, e_b, e_c = (prior.eps(x_t, t, prior.condition(name)).reshape(B, 2) for name in ("", "a", "b", "c"))
    d_pos = e_a - e_u
    eps_hat = e_u + s * (
        d_pos - weights[:, :1] * perp_2d(e_b - e_u, d_pos) - weights[:, 1:] * perp_2d(e_c - e_u, d_pos)
    )
    expected = sds_weight(prior.noise_schedule.abar(t, x), "sds") * (eps_hat.view(B, 2, 1, 1) - eps)
    assert_close(grad, expected, atol=1e-5, rtol=1e-4)

    # zero weights: the CFG gradient; the surrogate loss carries grad / B
    zero = Negatives(negatives.conditions, torch.zeros(B, 2))
    plain, _ = sds.gradient(x, c, u, 0, torch.Generator().manual_seed(3))
    assert_close(sds.gradient(x, c, u, 0, torch.Generator().manual_seed(3), zero)[0], plain, atol=1e-5)
    xg = x.clone().requires_grad_(True)
    sds(xg, c, None, 0, torch.Generator().manual_seed(3), negatives=negatives)["loss_sds"].backward()
    assert_close(xg.grad, grad / B, atol=1e-6)


def test_perp_neg_sds_on_a_tiny_deepfloyd_if(tmp_path, offline):
    """The wiring a method uses, on a tiny random IF: the view prompts and "" embedded once,
    ``PerpNeg.conditions`` from the batch's azimuths, SDS with ``negatives``; the batched
    prediction matches the positive, null and negative rows predicted one by one."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from tiny_snapshots import make_if

    from studio.priors.diffusers import DeepFloydIFPrior

    prior = DeepFloydIFPrior(make_if(tmp_path), device="cpu")
    pn = PerpNeg()
    conds = {p: prior.condition(text=p) for p in [*pn.prompting.all_prompts("a red torus"), ""]}
    az, el = torch.tensor([20.0, -120.0, 170.0]), torch.tensor([10.0, 5.0, 75.0])
    positive, negatives = pn.conditions(conds, "a red torus", az, el)
    sds = SDS(prior, guidance_scale=20.0)
    images = torch.rand(3, 3, 16, 16, requires_grad=True)
    out = sds(images, positive, conds[""], 0, torch.Generator().manual_seed(0), negatives=negatives)
    out["loss_sds"].backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0

    x = prior.encode(images.detach())
    grad, t = sds.gradient(x, positive, conds[""], 0, torch.Generator().manual_seed(0), negatives)
    g = torch.Generator().manual_seed(0)
    sds.schedule.sample(0, 3, g, prior.num_train_timesteps)
    eps = torch.randn(x.shape, generator=g)
    x_t = prior.add_noise(x, eps, t)
    with torch.no_grad():
        eps_pos, eps_u = prior.predict(x_t, t, positive), prior.predict(x_t, t, conds[""])
        rows = negatives.conditions.index
        eps_neg = torch.stack([prior.predict(x_t, t, rows(torch.arange(k, 6, 2))) for k in range(2)], 1)
    eps_hat = perp_neg_combine(eps_u, eps_pos, eps_neg, negatives.weights, 20.0)
    assert_close(grad, sds_weight(prior.noise_schedule.abar(t, x)) * (eps_hat - eps), atol=1e-4, rtol=1e-4)
