"""Perp-Neg: view-dependent negative prompts with perpendicular guidance (Armandpour et al. 2023,
"Re-imagine the Negative Prompt Algorithm: Transform 2D Diffusion into 3D, alleviate Janus problem
and Beyond", arXiv:2304.04968: its sampling rule with several negative prompts, and its text-to-3D
use with view-interpolated prompts).

Classifier-free guidance eps_u + s (eps_pos - eps_u) is extended by negative prompts whose
guidance directions are first made perpendicular to the positive one, so a negative that shares
the positive prompt's content (here: the same object, another view) cannot remove it:

    eps = eps_u + s [ d_pos - sum_k w_k perp(eps_neg_k - eps_u, d_pos) ],   d_pos = eps_pos - eps_u,
    perp(a, b) = a - (<a, b> / ||b||^2) b,

with the inner products per sample over every model-space entry (C, h, w). The paper writes the
positive and negative scales separately (w_pos = s, w_neg_k = s w_k here); threestudio, whose
layout DreamCraft3D's released configs use (``prompt_processor.use_perp_neg: true`` with DeepFloyd
IF), scales both by the CFG scale as above (``threestudio/models/guidance/deep_floyd_guidance.py``,
the ``use_perp_neg`` branch, and ``threestudio/utils/ops.py::perpendicular_component``; it stores
the weights negated and adds them, which is the same sum; read at threestudio commit 28d9d80,
whose Perp-Neg code DreamCraft3D's bundled copy repeats).

In 3D (threestudio's ``PromptProcessorOutput.get_text_embeddings_perp_neg``), the positive prompt
of a camera at azimuth phi (degrees, 0 = front, wrapped to [-180, 180)) is interpolated between
the view prompts' embeddings and the other views are the negatives, weighted by shifted
exponentials f(r) = a exp(-b r) + c of the interpolation factor r:

* overhead (elevation above the prompting's overhead threshold): positive = overhead prompt, no
  negatives (weights 0);
* |phi| < 90 (front to side): r = 1 - |phi| / 90 (1 = front), positive = r front + (1 - r) side,
  negatives (front, side) with weights (f_fs(r), f_sf(1 - r));
* |phi| >= 90 (side to back): r = 2 - |phi| / 90 (1 = side, 0 = back), positive =
  r side + (1 - r) back, negatives (side, front) with weights (f_sb(r), f_fsb(r)).

threestudio's defaults (``PromptProcessor.Config.perp_neg_f_*``), kept here: f_sb = (1, 0.5,
-0.606), f_fsb = (1, 0.5, 0.967), f_fs = f_sf = (4, 0.5, -2.426); each c is chosen so the weight
of the view being generated vanishes where the positive is that view (f_fs(1) ~ 0, f_sb(1) ~ 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from studio.guidance.prompting import VIEWS, ViewPrompting, batch_condition, wrap_azimuth
from studio.priors.base import Condition, DiffusionPrior

FRONT, SIDE, BACK, OVERHEAD = (VIEWS.index(v) for v in ("front", "side", "back", "overhead"))


def perpendicular(a: Tensor, b: Tensor) -> Tensor:
    """The component of ``a`` perpendicular to ``b``, a - (<a, b> / ||b||^2) b, per sample: both
    [B,...], inner products over all non-batch entries (in float32). A zero ``b`` leaves ``a``
    unchanged (threestudio clamps ||b||^2 at 1e-6, which agrees unless ||b||^2 < 1e-6)."""
    a32, b32 = a.flatten(1).float(), b.flatten(1).float()
    coef = (a32 * b32).sum(1) / (b32 * b32).sum(1).clamp_min(torch.finfo(torch.float32).tiny)
    return a - coef.to(a.dtype).view(-1, *[1] * (a.dim() - 1)) * b


def perp_neg_combine(eps_u: Tensor, eps_pos: Tensor, eps_neg: Tensor, weights: Tensor, guidance_scale: float) -> Tensor:
    """Perp-Neg's guided noise (module docstring), eps_u + s [d_pos - sum_k w_k perp(eps_neg_k -
    eps_u, d_pos)].

    Args:
        eps_u, eps_pos: unconditional and positive noise predictions [B,C,h,w].
        eps_neg: the negatives' noise predictions [B,K,C,h,w].
        weights: w_k [B,K] (0: that negative is ignored; all 0 gives plain CFG).
        guidance_scale: s.
    """
    d_pos = eps_pos - eps_u
    w = weights.to(eps_u).view(*weights.shape, *[1] * (eps_u.dim() - 1))
    perps = torch.stack([perpendicular(eps_neg[:, k] - eps_u, d_pos) for k in range(eps_neg.shape[1])], 1)
    return eps_u + guidance_scale * (d_pos - (w * perps).sum(1))


def shifted_exponential(abc: Tuple[float, float, float], r: Tensor) -> Tensor:
    """a exp(-b r) + c for ``abc`` = (a, b, c), elementwise in ``r`` (threestudio's
    ``shifted_expotional_decay``)."""
    a, b, c = abc
    return a * torch.exp(-b * r) + c


@dataclass
class Negatives:
    """Perp-Neg's negative conditions of a batch: ``conditions`` [B*K,...] (row b*K + k is
    negative k of sample b) and their weights [B,K]."""

    conditions: Condition
    weights: Tensor


@dataclass(frozen=True)
class PerpNegViews:
    """Which view prompts make each camera's positive and negatives (indices into ``VIEWS``):
    positive = r emb[positive[:, 0]] + (1 - r) emb[positive[:, 1]]; negatives ``negative`` [B,2]
    with ``weights`` [B,2]. ``r`` [B] and ``weights`` are float64 on the CPU."""

    positive: Tensor
    r: Tensor
    negative: Tensor
    weights: Tensor


@dataclass(frozen=True)
class PerpNeg:
    """View-dependent Perp-Neg (module docstring): the weight functions (a, b, c) of
    f(r) = a exp(-b r) + c, threestudio's defaults, and the view prompting (suffixes and the
    overhead threshold) the conditions were embedded with."""

    f_sb: Tuple[float, float, float] = (1.0, 0.5, -0.606)
    f_fsb: Tuple[float, float, float] = (1.0, 0.5, 0.967)
    f_fs: Tuple[float, float, float] = (4.0, 0.5, -2.426)
    f_sf: Tuple[float, float, float] = (4.0, 0.5, -2.426)
    prompting: ViewPrompting = field(default_factory=ViewPrompting)

    def views(self, azimuth_deg: Tensor, elevation_deg: Tensor) -> PerpNegViews:
        """The positive mix, negatives and weights of cameras at ``azimuth_deg`` relative to the
        front and ``elevation_deg`` (degrees, [B] or scalars; any azimuth range)."""
        az = wrap_azimuth(azimuth_deg).abs()
        overhead = self.prompting.view_index(azimuth_deg, elevation_deg) == OVERHEAD
        az, overhead = torch.broadcast_tensors(az, overhead)
        front = az < 90.0
        r = torch.where(front, 1.0 - az / 90.0, 2.0 - az / 90.0)
        front_weights = torch.stack([shifted_exponential(self.f_fs, r), shifted_exponential(self.f_sf, 1.0 - r)], 1)
        back_weights = torch.stack([shifted_exponential(self.f_sb, r), shifted_exponential(self.f_fsb, r)], 1)
        weights = torch.where(front[:, None], front_weights, back_weights)
        positive = torch.where(front[:, None], torch.tensor([FRONT, SIDE]), torch.tensor([SIDE, BACK]))
        negative = torch.where(front[:, None], torch.tensor([FRONT, SIDE]), torch.tensor([SIDE, FRONT]))
        # overhead: the overhead prompt alone; its two negatives (any views) get weight 0
        positive = torch.where(overhead[:, None], torch.tensor([OVERHEAD, OVERHEAD]), positive)
        r = torch.where(overhead, torch.ones_like(r), r)
        weights = torch.where(overhead[:, None], torch.zeros_like(weights), weights)
        return PerpNegViews(positive, r, negative, weights)

    def conditions(
        self, conditions: Dict[str, Condition], prompt: str, azimuth_deg: Tensor, elevation_deg: Tensor
    ) -> Tuple[Condition, Negatives]:
        """(positive condition [B,...], ``Negatives``) of cameras at ``azimuth_deg`` /
        ``elevation_deg`` (see :meth:`views`), from ``conditions``: the embedded conditions (batch
        1) of ``self.prompting.all_prompts(prompt)`` (other entries are ignored). Floating-point
        fields are interpolated; any other field must be equal in the views mixed."""
        table = Condition.cat([conditions[p] for p in self.prompting.all_prompts(prompt)], [1] * len(VIEWS))
        v = self.views(azimuth_deg, elevation_deg)
        positive = mix_conditions(table.index(v.positive[:, 0]), table.index(v.positive[:, 1]), v.r)
        negatives = Negatives(table.index(v.negative.reshape(-1)), v.weights)
        return positive, negatives


def view_conditions(
    conditions: Dict[str, Condition],
    prompt: str,
    azimuth_deg: Tensor,
    elevation_deg: Tensor,
    prompting: Optional[ViewPrompting] = None,
    perp_neg: bool = False,
) -> Tuple[Condition, Optional[Negatives]]:
    """The text condition [B,...] of cameras at ``azimuth_deg`` / ``elevation_deg`` [B] (degrees,
    0 = the front) from ``conditions``, the embedded conditions (batch 1) of the prompts: ``prompt``
    for every camera without ``prompting``; with it the prompt with each camera's view word, or
    with ``perp_neg`` Perp-Neg's interpolated positive (:meth:`PerpNeg.conditions`). The second
    value is Perp-Neg's negatives, else None."""
    if prompting is None:
        return batch_condition(conditions, [prompt] * azimuth_deg.reshape(-1).shape[0]), None
    if perp_neg:
        return PerpNeg(prompting=prompting).conditions(conditions, prompt, azimuth_deg, elevation_deg)
    return batch_condition(conditions, prompting.prompts(prompt, azimuth_deg, elevation_deg)), None


def mix_conditions(a: Condition, b: Condition, r: Tensor) -> Condition:
    """r a + (1 - r) b per sample for conditions ``a``, ``b`` [B,...] and ``r`` [B] (threestudio's
    interpolation of text embeddings between two view prompts). Non-floating-point fields (token
    masks, labels) cannot be interpolated and must be equal in ``a`` and ``b``."""
    out = {}
    for k, va in a.tensors.items():
        vb = b.tensors[k]
        if va.is_floating_point():
            rk = r.to(va).view(-1, *[1] * (va.dim() - 1))
            out[k] = rk * va + (1.0 - rk) * vb
        elif torch.equal(va, vb):
            out[k] = va
        else:
            raise ValueError(f"condition field {k!r} ({va.dtype}) differs between the views and cannot be interpolated")
    return Condition(out)


def perp_neg_eps(
    prior: DiffusionPrior,
    x_t: Tensor,
    t: Tensor,
    cond: Condition,
    uncond: Condition,
    negatives: Negatives,
    guidance_scale: float,
) -> Tensor:
    """Perp-Neg's guided noise prediction [B,C,h,w] at (``x_t`` [B,C,h,w], ``t`` [B]): the
    positive ``cond``, the null ``uncond`` (batch 1 or B) and the B*K negatives in one batched
    ``predict``, each output converted with ``to_eps``, combined by ``perp_neg_combine``."""
    B, K = x_t.shape[0], negatives.weights.shape[1]
    x_in = torch.cat([x_t, x_t, x_t.repeat_interleave(K, 0)])
    t_in = torch.cat([t, t, t.repeat_interleave(K, 0)])
    conds = Condition.cat([cond, uncond, negatives.conditions], [B, B, B * K])
    eps_pos, eps_u, eps_neg = prior.to_eps(x_in, t_in, prior.predict(x_in, t_in, conds)).split([B, B, B * K])
    return perp_neg_combine(eps_u, eps_pos, eps_neg.unflatten(0, (B, K)), negatives.weights, guidance_scale)
