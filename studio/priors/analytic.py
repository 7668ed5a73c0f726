"""A diffusion prior with a closed-form denoiser: the data distribution is a Gaussian mixture.

The data distribution over the (small) model space of ``latent_shape`` (D = prod(latent_shape)
dimensions) is

    p_0(x) = sum_k pi_k N(x; mu_k, sigma_k^2 I).

Under the forward process x_t = a_t x_0 + s_t eps (``NoiseSchedule.alpha_sigma``) the marginal stays a
mixture, p_t(x) = sum_k pi_k N(x; a_t mu_k, v_k I) with v_k = a_t^2 sigma_k^2 + s_t^2, so its
score is exact:

    grad log p_t(x) = sum_k r_k(x) (a_t mu_k - x) / v_k,
    r_k(x) = softmax_k(log pi_k - D/2 log v_k - |x - a_t mu_k|^2 / (2 v_k)),

and the ideal noise prediction is eps(x_t) = -s_t grad log p_t(x_t) (Tweedie; Song et al. 2021,
Eq. 1 with the DDPM parameterisation). The network output is that eps converted to the prior's
``prediction_type`` ("eps", "v" or "flow"), so guidance code that goes through ``to_eps``/``to_x0``
is tested against exact values.

Class conditioning: each component carries a label; the condition ``{"label": LongTensor [B]}``
restricts the mixture to the components with that label (weights renormalised); label -1 (the
``condition(text="")`` null condition) is the whole mixture, so classifier-free guidance has an
exact conditional and unconditional branch. Other condition fields (e.g. a VSD ``camera``) are
accepted and ignored.

``mu``, ``log pi`` and ``log sigma`` are ``nn.Parameter`` s (frozen in the prior itself), so
``clone_trainable()`` gives a learnable mixture: fine-tuning it with the denoising loss
(``training_target``) is what VSD's fake score and BSD's bootstrapped prior do with a network.
This prior is a test bed for the guidance modules; it has no pixels, ``encode``/``decode`` are the
identity and ``image_size`` is the model space's width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from studio.priors.base import Condition, DiffusionPrior, PredictionType


def scaled_linear_alphas_cumprod(T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Tensor:
    """abar [T] of Stable Diffusion's "scaled_linear" schedule: betas = linspace(sqrt(b0), sqrt(b1), T)^2."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


def flow_alphas_cumprod(T: int = 1000) -> Tensor:
    """The variance-preserving abar with the SNR of rectified flow at s = (t+1)/T (see ``base``)."""
    s = (torch.arange(T, dtype=torch.float64) + 1.0) / T
    return ((1.0 - s) ** 2 / ((1.0 - s) ** 2 + s**2)).float()


class GaussianMixturePrior(DiffusionPrior):
    """Exact denoiser of an isotropic Gaussian mixture (see the module docstring).

    Args:
        means: component means mu_k, [K, *latent_shape] or [K, D] (then ``latent_shape`` is
            (D, 1, 1) unless given).
        weights: mixture weights pi_k [K] (normalised here; default uniform).
        std: component standard deviations sigma_k, a float or [K] (> 0).
        labels: class label of each component [K] (default: component k has label k).
        class_names: names usable as ``condition(text=name)``; name i is label i.
        latent_shape: (C, h, w) of the model space.
        prediction_type: "eps", "v" or "flow".
        num_train_timesteps: T.
    """

    def __init__(
        self,
        means: Tensor,
        weights: Tensor | None = None,
        std: float | Tensor = 0.1,
        labels: Tensor | None = None,
        class_names: Sequence[str] | None = None,
        latent_shape: Sequence[int] | None = None,
        prediction_type: PredictionType = "eps",
        num_train_timesteps: int = 1000,
    ):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float32)
        K = means.shape[0]
        if latent_shape is None:
            latent_shape = tuple(means.shape[1:]) if means.dim() == 4 else (means[0].numel(), 1, 1)
        self.latent_shape = tuple(int(n) for n in latent_shape)
        self.dim = math.prod(self.latent_shape)
        if means[0].numel() != self.dim:
            raise ValueError(f"means {list(means.shape)} do not match latent_shape {self.latent_shape}")
        if prediction_type not in ("eps", "v", "flow"):
            raise ValueError(f"unknown prediction_type {prediction_type!r}")
        self.prediction_type = prediction_type
        self.image_size = self.latent_shape[-1]

        weights = torch.full((K,), 1.0 / K) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        std = torch.as_tensor(std, dtype=torch.float32).expand(K).clone()
        if (weights <= 0).any() or (std <= 0).any():
            raise ValueError("mixture weights and stds must be positive")
        self.means = nn.Parameter(means.reshape(K, self.dim).clone(), requires_grad=False)
        self.log_weights = nn.Parameter((weights / weights.sum()).log(), requires_grad=False)
        self.log_std = nn.Parameter(std.log(), requires_grad=False)
        self.register_buffer("labels", torch.arange(K) if labels is None else torch.as_tensor(labels, dtype=torch.long))
        self.class_names = list(class_names) if class_names is not None else []
        abar = (
            flow_alphas_cumprod(num_train_timesteps)
            if prediction_type == "flow"
            else scaled_linear_alphas_cumprod(num_train_timesteps)
        )
        self.register_buffer("alphas_cumprod", abar)

    # ---- conditions -------------------------------------------------------------------------
    def condition(self, text=None, image=None, pose=None) -> Condition:
        """``text``: "" (or None) for the whole mixture, or class name(s) from ``class_names``."""
        if image is not None or pose is not None:
            raise ValueError("GaussianMixturePrior is conditioned on class names only")
        texts = [text] if text is None or isinstance(text, str) else list(text)
        labels = []
        for name in texts:
            if not name:
                labels.append(-1)
            elif name in self.class_names:
                labels.append(self.class_names.index(name))
            else:
                raise ValueError(f"unknown class {name!r}; known: {self.class_names}")
        return self.condition_labels(torch.tensor(labels))

    def condition_labels(self, labels: int | Tensor) -> Condition:
        """The condition selecting the components of class ``labels`` (int or [B]; -1 = all)."""
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.labels.device).reshape(-1)
        known = set(self.labels.tolist()) | {-1}
        if any(int(label) not in known for label in labels):
            raise ValueError(f"labels {labels.tolist()} not among the components' labels {sorted(known)}")
        return Condition({"label": labels})

    # ---- model space: the identity ----------------------------------------------------------
    def encode(self, img: Tensor) -> Tensor:
        return img

    def decode(self, lat: Tensor) -> Tensor:
        return lat

    # ---- the closed-form marginal -------------------------------------------------------------
    def _component_terms(self, x_t: Tensor, t: Tensor, cond: Condition | None):
        """(log-responsibility numerators [B,K], a mu - x [B,K,D], v [B,K]) of p_t at x_t."""
        B = x_t.shape[0]
        x = x_t.reshape(B, 1, self.dim)
        a, s = self.noise_schedule.alpha_sigma(t.expand(B) if t.dim() == 0 else t, x_t.new_zeros(B))
        v = a[:, None] ** 2 * (2.0 * self.log_std).exp()[None] + s[:, None] ** 2  # [B,K]
        diff = a[:, None, None] * self.means[None] - x  # [B,K,D]
        log_w = self.log_weights[None].expand(B, -1)
        if cond is not None and "label" in cond.tensors:
            label = cond.expand(B).tensors["label"].to(self.labels.device)
            allowed = (label[:, None] < 0) | (label[:, None] == self.labels[None])
            log_w = log_w.masked_fill(~allowed, float("-inf"))
        log_w = log_w - torch.logsumexp(log_w, dim=1, keepdim=True)
        logits = log_w - 0.5 * self.dim * v.log() - (diff**2).sum(-1) / (2.0 * v)
        return logits, diff, v

    def log_prob(self, x_t: Tensor, t: Tensor, cond: Condition | None = None) -> Tensor:
        """log p_t(x_t) [B] of the noisy marginal at timesteps ``t`` [B] (per sample)."""
        logits = self._component_terms(x_t, t, cond)[0]
        return torch.logsumexp(logits, dim=1) - 0.5 * self.dim * math.log(2.0 * math.pi)

    def score(self, x_t: Tensor, t: Tensor, cond: Condition | None = None) -> Tensor:
        """grad_x log p_t(x_t), shaped like ``x_t``."""
        logits, diff, v = self._component_terms(x_t, t, cond)
        r = torch.softmax(logits, dim=1)
        return (r[..., None] * diff / v[..., None]).sum(1).reshape(x_t.shape)

    def eps(self, x_t: Tensor, t: Tensor, cond: Condition | None = None) -> Tensor:
        """The exact noise prediction E[eps | x_t] = -s_t grad log p_t(x_t)."""
        _, s = self.noise_schedule.alpha_sigma(t, x_t)
        return -s * self.score(x_t, t, cond)

    def predict(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        """The exact eps converted to ``prediction_type`` (v = a eps - s x0, u = eps - x0)."""
        eps = self.eps(x_t, t, cond)
        schedule = self.noise_schedule
        return schedule.training_target(schedule.eps_to_x0(x_t, t, eps), eps, t)

    def sample(self, n: int, label: int = -1, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples [n, *latent_shape] of p_0 (restricted to class ``label`` unless -1)."""
        dev = self.means.device
        log_w = self.log_weights.detach()
        if label >= 0:
            log_w = log_w.masked_fill(self.labels != label, float("-inf"))
        k = torch.multinomial(torch.softmax(log_w, 0).cpu(), n, replacement=True, generator=generator).to(dev)
        noise = torch.randn(n, self.dim, generator=generator).to(dev)
        x = self.means.detach()[k] + self.log_std.detach().exp()[k, None] * noise
        return x.reshape(n, *self.latent_shape)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.means, self.log_weights, self.log_std]
