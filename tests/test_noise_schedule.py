"""NoiseSchedule: the forward process and the output conversions round-trip for every prediction type."""

from __future__ import annotations

import pytest
import torch

from studio.priors.analytic import flow_alphas_cumprod, scaled_linear_alphas_cumprod
from studio.priors.schedule import NoiseSchedule


@pytest.mark.parametrize("prediction_type", ["eps", "v", "flow"])
def test_conversions_of_add_noise_recover_x0_and_noise(prediction_type):
    abar = flow_alphas_cumprod(1000) if prediction_type == "flow" else scaled_linear_alphas_cumprod(1000)
    schedule = NoiseSchedule(abar, prediction_type)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, 4, 4, generator=g), torch.randn(6, 3, 4, 4, generator=g)
    t = torch.tensor([0, 10, 250, 500, 900, 999])
    x_t = schedule.add_noise(x0, eps, t)
    out = schedule.training_target(x0, eps, t)
    torch.testing.assert_close(schedule.to_x0(x_t, t, out), x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(schedule.to_eps(x_t, t, out), eps, atol=1e-5, rtol=1e-5)
    x0_64, eps_64 = x0.double(), eps.double()  # float64: dividing by a small s_t amplifies float32 rounding
    x_t64 = schedule.add_noise(x0_64, eps_64, t)
    torch.testing.assert_close(schedule.x0_to_eps(x_t64, t, x0_64), eps_64)
    keep = slice(0, 5)  # flow's last step is pure noise (a_t = 0): eps says nothing about x0 there
    torch.testing.assert_close(schedule.eps_to_x0(x_t64[keep], t[keep], eps_64[keep]), x0_64[keep])
    a, s = schedule.alpha_sigma(t, x0)
    assert a.shape == s.shape == (6, 1, 1, 1)
    if prediction_type == "flow":
        torch.testing.assert_close(a + s, torch.ones_like(a))
    else:
        torch.testing.assert_close(a**2 + s**2, torch.ones_like(a))
        torch.testing.assert_close(schedule.abar(t, x0), a**2)


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="prediction_type"):
        NoiseSchedule(scaled_linear_alphas_cumprod(10), "epsilon")
