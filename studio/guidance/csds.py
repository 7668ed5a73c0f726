"""Category score distillation (C-SDS) of Sparse3D (Zou et al., AAAI 2024, arXiv 2308.14078).

What the paper says: SDS's target makes distilled results blurry, and C-SDS replaces that target
using the object's category to bring detail back. Its exact formula is not public in code, so two
readings are implemented, both as options of :class:`CSDS` (``form``). With SDS (``sds``) as

    g_SDS = w(t) (eps_hat(x_t; y, t) - eps),    x_t = a_t x + s_t eps,

* ``form="reference"`` (our reading of the paper's description; the default): the multiview
  (novel-view) prior's prediction, with optional classifier-free guidance in diffusers' convention
  eps_u + s (eps_c - eps_u), is kept, and SDS's sampled noise eps is replaced by the prediction of a
  text prior conditioned on the category prompt y_cat:

      g = scale w(t) (eps_hat_mv(x_t; c_mv, t) - eps_cat(x_t; y_cat, t))
        = -scale w(t) s_t (grad log p_mv,t(x_t | c_mv) - grad log p_cat,t(x_t | y_cat))

  (Tweedie, eps = -s_t grad log p_t; the second line without CFG). The category prediction is a
  fixed reference, like VSD's fake score (``vsd``) but not fine-tuned: the render moves toward what
  the input views predict beyond a generic member of the category. Both priors see the same x_t
  (one noise draw, one t), so they must share the model space and the forward process (checked at
  construction).
* ``form="classifier"``: the classifier-score form of Classifier Score Distillation (Yu et al.,
  arXiv 2310.19415, the CSD gradient), with one text prior:

      g = scale w(t) (eps_cat(x_t; y_cat, t) - eps_cat(x_t; y_neg, t))
        = -scale w(t) s_t grad_x log [p_t(y_cat | x_t) / p_t(y_neg | x_t)],

  y_neg a negative prompt or the empty text (then the implicit classifier log p_t(y_cat | x_t)).
  ``scale`` plays the role of SDS's CFG scale on the term CSD keeps (CSD uses the plain difference
  times w(t): scale 1).

Neither form has SDS's "- eps" term: the sampled noise reaches the gradient only through x_t. The
gradient is applied through ``surrogate_loss`` as in SDS, with the same timestep schedules
(``UniformTimesteps(0.02, 0.98)`` by default), weightings (``sds_weight``) and optional
elementwise clipping (``clip_gradient``). Everything the priors see runs under ``torch.no_grad``.

``category_prompt`` turns a category label (``--category``, ToyWorld's ``make_scene(...)
["category"]`` / meta.json's ``"category"``) into the prompt y_cat.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from studio.guidance.schedules import StepValue, TimestepSchedule, UniformTimesteps
from studio.guidance.sds import Weighting, clip_gradient, model_latents, sds_weight, surrogate_loss
from studio.priors.base import Condition, DiffusionPrior, freeze
from studio.priors.sampling import guided_output

Form = Literal["classifier", "reference"]
FORMS = ("classifier", "reference")


def category_prompt(category: str) -> str:
    """The category prompt y_cat: "a <category>" ("an" before a vowel), underscores as spaces
    ("torus" -> "a torus", "toy_truck" -> "a toy truck", "apple" -> "an apple"). This is ToyWorld's
    caption grammar without the material words ("a glossy red torus" -> "a torus"), so every word
    is in the embedded text prior's vocabulary. Text that already starts with an article is
    returned as given (stripped). ToyWorld's multi-object label ``"multi"`` names no category and
    raises, as does an empty string."""
    text = " ".join(category.replace("_", " ").split())
    if not text or text.lower() == "multi":
        raise ValueError(f"category {category!r} names no object category")
    if text.lower().split()[0] in ("a", "an", "the"):
        return text
    return f"{'an' if text[0].lower() in 'aeiou' else 'a'} {text}"


def _check_shared_space(prior: DiffusionPrior, other: DiffusionPrior) -> None:
    """Raise ValueError unless both priors have the same model space (``latent_shape``,
    ``image_size``) and forward process (``alphas_cumprod``, and both or neither rectified flow)."""
    if tuple(prior.latent_shape) != tuple(other.latent_shape) or prior.image_size != other.image_size:
        raise ValueError(
            f"C-SDS priors must share the model space: latent_shape {tuple(prior.latent_shape)} vs "
            f"{tuple(other.latent_shape)}, image_size {prior.image_size} vs {other.image_size}"
        )
    a, b = prior.alphas_cumprod.detach().double().cpu(), other.alphas_cumprod.detach().double().cpu()
    same = a.shape == b.shape and torch.allclose(a, b, rtol=0.0, atol=1e-6)
    if not same or (prior.prediction_type == "flow") != (other.prediction_type == "flow"):
        raise ValueError("C-SDS priors must share the noise schedule (alphas_cumprod and forward process)")


class CSDS(nn.Module):
    """Sparse3D's category score distillation with frozen priors (see the module docstring).

    Args:
        prior: the distilled prior: the multiview / novel-view prior of the ``"reference"`` form
            (its model space is the one renders are encoded to); in the ``"classifier"`` form also
            the text prior unless ``category_prior`` is given.
        category_prior: the text prior that takes the category prompt (default: ``prior``). It
            must share ``prior``'s model space and noise schedule (else ValueError).
        form: ``"reference"`` or ``"classifier"``.
        guidance_scale: CFG scale of ``prior`` in the ``"reference"`` form (1: no CFG; must be 1
            in the ``"classifier"`` form, whose strength is ``scale``).
        scale: factor on the whole gradient (CSD's plain difference: 1).
        weighting: w(t), see ``sds_weight``.
        schedule: timestep schedule (default U(0.02, 0.98)).
        grad_clip: optional elementwise clamp of the gradient (number or step value).
    """

    def __init__(
        self,
        prior: DiffusionPrior,
        category_prior: DiffusionPrior | None = None,
        form: Form = "reference",
        guidance_scale: float = 1.0,
        scale: float = 1.0,
        weighting: Weighting = "sds",
        schedule: TimestepSchedule | None = None,
        grad_clip: StepValue | None = None,
    ):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"unknown C-SDS form {form!r}; one of {FORMS}")
        if form == "classifier" and guidance_scale != 1.0:
            raise ValueError("the classifier form has no CFG of the prior: set its strength with scale")
        sds_weight(torch.zeros(1), weighting)  # validate
        if category_prior is not None:
            _check_shared_space(prior, category_prior)
        self.prior = freeze(prior)
        self.category_prior = freeze(category_prior) if category_prior is not None else None
        self.form = form
        self.guidance_scale = guidance_scale
        self.scale = scale
        self.weighting = weighting
        self.schedule = schedule if schedule is not None else UniformTimesteps(0.02, 0.98)
        self.grad_clip = grad_clip

    @property
    def text_prior(self) -> DiffusionPrior:
        """The prior conditioned on the category prompt: ``category_prior``, else ``prior``."""
        return self.category_prior if self.category_prior is not None else self.prior

    @torch.no_grad()
    def gradient(
        self,
        x: Tensor,
        step: int,
        *,
        cond_cat: Condition,
        cond_mv: Condition | None = None,
        uncond_mv: Condition | None = None,
        negative: Condition | None = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(g [B,C,h,w], t [B]) for model-space ``x`` [B,C,h,w] at t from the schedule and
        x_t = a_t x + s_t ``noise`` (default: drawn from ``generator``). Conditions have batch 1 or
        B: ``cond_cat`` of the text prior; ``"reference"``: ``cond_mv`` (required) and ``uncond_mv``
        (default ``prior.unconditional(cond_mv)`` when CFG is on) of ``prior``; ``"classifier"``:
        ``negative`` (default the text prior's ``unconditional(cond_cat)``)."""
        if self.form == "reference" and (cond_mv is None or negative is not None):
            raise ValueError("the reference form takes cond_mv (and uncond_mv), not negative")
        if self.form == "classifier" and (cond_mv is not None or uncond_mv is not None):
            raise ValueError("the classifier form takes cond_cat and negative, not cond_mv/uncond_mv")
        B, prior, text = x.shape[0], self.prior, self.text_prior
        t = self.schedule.sample(step, B, generator, prior.num_train_timesteps, x.device)
        if noise is None:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_t = prior.add_noise(x, noise, t)
        if self.form == "reference":
            if uncond_mv is None and self.guidance_scale != 1.0:
                uncond_mv = prior.unconditional(cond_mv)
            eps_mv = prior.to_eps(x_t, t, guided_output(prior, x_t, t, cond_mv, uncond_mv, self.guidance_scale))
            diff = eps_mv - text.to_eps(x_t, t, guided_output(text, x_t, t, cond_cat, None, 1.0))
        else:
            negative = text.unconditional(cond_cat) if negative is None else negative
            x2, t2 = torch.cat([x_t, x_t]), torch.cat([t, t])
            out = text.predict(x2, t2, Condition.cat([cond_cat, negative], [B, B]))
            eps_cat, eps_neg = text.to_eps(x2, t2, out).chunk(2)
            diff = eps_cat - eps_neg
        w = sds_weight(prior.noise_schedule.abar(t, x), self.weighting)
        return clip_gradient(self.scale * w * diff, self.grad_clip, step), t

    def forward(
        self,
        images: Tensor,
        step: int,
        *,
        cond_cat: Condition,
        cond_mv: Condition | None = None,
        uncond_mv: Condition | None = None,
        negative: Condition | None = None,
        generator: torch.Generator | None = None,
        as_latents: bool = False,
    ) -> dict[str, Tensor]:
        """``images`` [B,3,H,W] in [0,1] (or model-space latents with ``as_latents``), encoded by
        ``prior``; conditions as in ``gradient``.

        Returns {"loss_csds", "csds_t" (mean t), "csds_grad_norm" (mean per-image L2 norm)}."""
        x = model_latents(self.prior, images, as_latents)
        grad, t = self.gradient(
            x, step, cond_cat=cond_cat, cond_mv=cond_mv, uncond_mv=uncond_mv, negative=negative, generator=generator
        )
        return {
            "loss_csds": surrogate_loss(x, grad),
            "csds_t": t.float().mean(),
            "csds_grad_norm": grad.flatten(1).norm(dim=1).mean(),
        }
