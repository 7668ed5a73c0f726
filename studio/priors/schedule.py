"""A prior's noise schedule as one object: the forward process and the conversions between the
network's output and (x_0, eps). Like a diffusers scheduler it is data (``alphas_cumprod``,
``prediction_type``), kept apart from the network.

The forward process is x_t = a_t x_0 + s_t eps with integer timesteps t in {0, ..., T-1}:

* ``"eps"`` and ``"v"`` (variance preserving, DDPM Eq. 4): a_t = sqrt(abar_t), s_t = sqrt(1 - abar_t)
  with abar = ``alphas_cumprod`` [T]. The network outputs eps, or v = a_t eps - s_t x_0
  (Salimans & Ho 2022).
* ``"flow"`` (rectified flow): s_t = (t + 1) / T, a_t = 1 - s_t; the network outputs the velocity
  u = eps - x_0. ``alphas_cumprod`` then holds the variance-preserving abar of the same
  signal-to-noise ratio, (1 - s)^2 / ((1 - s)^2 + s^2), so abar-based SDS weights stay comparable.

Every method takes timesteps ``t`` [B] (integer) and tensors [B, ...]; results are in the dtype and
on the device of the tensor arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

PredictionType = Literal["eps", "v", "flow"]
PREDICTION_TYPES = ("eps", "v", "flow")
DIFFUSERS_PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v"}  # scheduler_config.json name -> ours


@dataclass(frozen=True)
class NoiseSchedule:
    """``alphas_cumprod`` [T] (float32) and the network's ``prediction_type`` (see the module docs)."""

    alphas_cumprod: Tensor
    prediction_type: PredictionType = "eps"

    def __post_init__(self):
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {self.prediction_type!r}; one of {PREDICTION_TYPES}")

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def abar(self, t: Tensor, like: Tensor) -> Tensor:
        """abar_t shaped [B, 1, ...] to broadcast against ``like`` (whose dtype and device it takes)."""
        t = t.to(device=self.alphas_cumprod.device, dtype=torch.long)
        return self.alphas_cumprod[t].to(like).view(_broadcast_shape(like))

    def alpha_sigma(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(a_t, s_t) of x_t = a_t x_0 + s_t eps, each shaped [B, 1, ...] like ``abar``."""
        if self.prediction_type == "flow":
            t = t.to(device=self.alphas_cumprod.device, dtype=torch.long)
            s = ((t.to(like.dtype) + 1.0) / self.num_train_timesteps).view(_broadcast_shape(like))
            return (1.0 - s).to(like), s.to(like)
        abar = self.abar(t, like)
        return abar.sqrt(), (1.0 - abar).sqrt()

    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x_t from the clean sample ``x0`` and the noise ``eps``."""
        a, s = self.alpha_sigma(t, x0)
        return a * x0 + s * eps

    def eps_to_x0(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_0 = (x_t - s_t eps) / a_t."""
        a, s = self.alpha_sigma(t, x_t)
        return (x_t - s * eps) / a.clamp(min=1e-8)

    def x0_to_eps(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """eps = (x_t - a_t x_0) / s_t (s_t > 0 at every t)."""
        a, s = self.alpha_sigma(t, x_t)
        return (x_t - a * x0) / s

    def to_eps(self, x_t: Tensor, t: Tensor, out: Tensor) -> Tensor:
        """The noise implied by the network output ``out`` at (x_t, t)."""
        if self.prediction_type == "eps":
            return out
        a, s = self.alpha_sigma(t, x_t)
        if self.prediction_type == "v":  # eps = a v + s x_t (a^2 + s^2 = 1)
            return a * out + s * x_t
        return x_t + a * out  # flow: u = eps - x_0 and a + s = 1

    def to_x0(self, x_t: Tensor, t: Tensor, out: Tensor) -> Tensor:
        """The clean sample implied by the network output ``out`` at (x_t, t)."""
        if self.prediction_type == "eps":
            return self.eps_to_x0(x_t, t, out)
        a, s = self.alpha_sigma(t, x_t)
        if self.prediction_type == "v":  # x_0 = a x_t - s v
            return a * x_t - s * out
        return x_t - s * out  # flow

    def training_target(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """The network output that (x0, eps, t) implies: eps, v = a eps - s x_0, or u = eps - x_0. It is
        the denoising-loss target of prior training and of the copies VSD and BSD fine-tune."""
        if self.prediction_type == "eps":
            return eps
        if self.prediction_type == "v":
            a, s = self.alpha_sigma(t, x0)
            return a * eps - s * x0
        return eps - x0


def _broadcast_shape(like: Tensor) -> tuple:
    return (-1,) + (1,) * (like.dim() - 1)


__all__ = ["DIFFUSERS_PREDICTION_TYPES", "PREDICTION_TYPES", "NoiseSchedule", "PredictionType"]
