"""Visual-prompted score distillation (VP-SDS; VP3D, Chen et al. CVPR 2024): SDS whose noise
prediction is conditioned on the text prompt AND on a visual prompt image.

VP3D conditions one diffusion model on both prompts. Where no single prior takes both, we compose
two priors that share the forward process with compositional classifier-free guidance (Liu et al.
2022, "Compositional Visual Generation with Composable Diffusion Models", Eq. 10: a sum of the
conditions' guidance directions on one unconditional prediction):

    eps_hat = eps_u + s_t (eps_text - eps_u) + s_v (eps_img - eps_img_u),

with ``eps_u`` / ``eps_text`` the text prior's unconditional / prompt-conditioned predictions and
``eps_img`` / ``eps_img_u`` the image prior's predictions with the visual prompt (a novel-view prior:
the prompt image at its camera and each render's relative pose) and with its null condition.
Both are converted to eps (``to_eps``), so each prior may predict eps, v or flow. The SDS gradient
(DreamFusion Eq. 3) is then

    g = w(t) (eps_hat - eps),   x_t = a_t x + s_t eps,

applied through ``surrogate_loss`` (gradient g / B on the model-space image). ``s_v = 0`` is SDS
with CFG s_t (the image prior is not run), with the same random draws as ``SDS``.

**Shared model space** (``shares_model_space``: the same pixel/latent space, latent shape and forward
process, e.g. the embedded toy-t2i and toy-nvs, both 32x32 pixels with v-prediction on one cosine
schedule): one x_t, one eps, the sum above exactly. **Separate spaces** (e.g. Stable Diffusion 2.1 at
512 px = 64x64 latents and Zero123 at 256 px = 32x32 latents): the text part is SDS in the text prior's
space; the visual part w(t) s_v (eps_img - eps_img_u) is evaluated in the image prior's space at the
same fraction of T with its own noise draw, and its surrogate loss is added. The two parts' gradients
reach the renders through each prior's own ``encode``; in one space the sum is the same as above.

Returns the usual loss dict (``loss_vpsds``; detached diagnostics ``vpsds_t`` and the mean per-image
L2 norms ``vpsds_grad_norm`` of g (separate spaces: of both parts together) and ``vpsds_visual_norm``
of its visual part w(t) s_v (eps_img - eps_img_u)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from studio.guidance.schedules import StepValue, TimestepSchedule, UniformTimesteps
from studio.guidance.sds import Weighting, clip_gradient, model_latents, sds_weight, surrogate_loss
from studio.priors.base import Condition, DiffusionPrior, freeze
from studio.priors.sampling import guided_output


def shares_model_space(a: DiffusionPrior, b: DiffusionPrior) -> bool:
    """Whether priors ``a`` and ``b`` see the same x_t for the same image and noise: the same
    ``encode`` implementation (and the very same VAE, or none), latent shape, pixel size and forward
    process (``alphas_cumprod``, and both variance-preserving or both flow)."""
    same_encoder = type(a).encode is type(b).encode and getattr(a, "vae", None) is getattr(b, "vae", None)
    same_shape = tuple(a.latent_shape) == tuple(b.latent_shape) and int(a.image_size) == int(b.image_size)
    abar_a, abar_b = a.alphas_cumprod.float().cpu(), b.alphas_cumprod.float().cpu()
    same_process = (
        (a.prediction_type == "flow") == (b.prediction_type == "flow")
        and abar_a.shape == abar_b.shape
        and bool(torch.allclose(abar_a, abar_b, atol=1e-6))
    )
    return same_encoder and same_shape and same_process


def visual_direction(prior: DiffusionPrior, x_t: Tensor, t: Tensor, cond: Condition, uncond: Condition) -> Tensor:
    """eps_img(x_t; cond) - eps_img(x_t; uncond) [B,C,h,w] of ``prior``, both branches in one batched
    ``predict`` (``cond`` and ``uncond`` of batch 1 or B)."""
    B = x_t.shape[0]
    xx, tt = torch.cat([x_t, x_t]), torch.cat([t, t])
    out_c, out_u = prior.predict(xx, tt, Condition.cat([cond, uncond], [B, B])).chunk(2)
    return prior.to_eps(x_t, t, out_c) - prior.to_eps(x_t, t, out_u)


class VPSDS(nn.Module):
    """Visual-prompted SDS with a text prior and an image prior (see the module docstring).

    Args:
        text_prior: the text-conditioned teacher (frozen here).
        image_prior: the visual-prompt-conditioned teacher (frozen here), e.g. a novel-view prior.
        text_scale: s_t, the CFG scale of the text direction.
        visual_scale: s_v, the scale of the visual-prompt direction (0: plain SDS).
        weighting: w(t) (``studio.guidance.sds_weight``).
        schedule: timestep schedule (default U(0.02, 0.98)); fractions of the text prior's T.
        grad_clip: optional elementwise clamp of each part's gradient (number or step value).
    """

    def __init__(
        self,
        text_prior: DiffusionPrior,
        image_prior: DiffusionPrior,
        text_scale: float = 100.0,
        visual_scale: float = 1.0,
        weighting: Weighting = "sds",
        schedule: TimestepSchedule | None = None,
        grad_clip: StepValue | None = None,
    ):
        super().__init__()
        sds_weight(torch.zeros(1), weighting)  # validate
        self.text_prior = freeze(text_prior)
        self.image_prior = freeze(image_prior)
        self.text_scale, self.visual_scale = float(text_scale), float(visual_scale)
        self.weighting = weighting
        self.schedule = schedule if schedule is not None else UniformTimesteps(0.02, 0.98)
        self.grad_clip = grad_clip
        self.shared_space = shares_model_space(text_prior, image_prior)

    def _image_timesteps(self, t: Tensor) -> Tensor:
        """``t`` of the text prior as the same fraction of the image prior's T."""
        T_text, T_img = self.text_prior.num_train_timesteps, self.image_prior.num_train_timesteps
        if T_text == T_img:
            return t
        return (t.float() * (T_img - 1) / (T_text - 1)).round().long()

    @torch.no_grad()
    def gradient(
        self,
        x: Tensor,
        cond: Condition,
        uncond: Condition | None,
        image_cond: Condition,
        image_uncond: Condition,
        step: int,
        generator: torch.Generator | None = None,
        x_image: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """(g in the text space [B,C,h,w], the visual part in the image space or None, t [B], the
        visual part's per-image norm [B]) for the text-space image ``x``; ``x_image`` is the same
        images in the image prior's space (only used when the spaces differ)."""
        B, text, image = x.shape[0], self.text_prior, self.image_prior
        t = self.schedule.sample(step, B, generator, text.num_train_timesteps, x.device)
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_t = text.add_noise(x, eps, t)
        eps_hat = text.to_eps(x_t, t, guided_output(text, x_t, t, cond, uncond, self.text_scale))
        w = sds_weight(text.noise_schedule.abar(t, x), self.weighting)
        if self.visual_scale == 0.0:
            return clip_gradient(w * (eps_hat - eps), self.grad_clip, step), None, t, x.new_zeros(B)
        if self.shared_space:
            visual = self.visual_scale * visual_direction(image, x_t, t, image_cond, image_uncond)
            grad = clip_gradient(w * (eps_hat + visual - eps), self.grad_clip, step)
            return grad, None, t, (w * visual).flatten(1).norm(dim=1)
        t_img = self._image_timesteps(t).to(x_image.device)
        eps_img = torch.randn(x_image.shape, generator=generator, device=x_image.device, dtype=x_image.dtype)
        xi_t = image.add_noise(x_image, eps_img, t_img)
        w_img = sds_weight(image.noise_schedule.abar(t_img, x_image), self.weighting)
        visual = w_img * self.visual_scale * visual_direction(image, xi_t, t_img, image_cond, image_uncond)
        visual = clip_gradient(visual, self.grad_clip, step)
        return clip_gradient(w * (eps_hat - eps), self.grad_clip, step), visual, t, visual.flatten(1).norm(dim=1)

    def forward(
        self,
        images: Tensor,
        cond: Condition,
        uncond: Condition | None,
        image_cond: Condition,
        image_uncond: Condition | None,
        step: int,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """``images`` [B,3,H,W] in [0,1]; ``cond`` / ``uncond``: the text prior's prompt and null
        conditions (batch 1 or B; ``uncond=None``: ``text_prior.unconditional(cond)``);
        ``image_cond`` / ``image_uncond``: the image prior's visual-prompt condition for each image
        and its null condition (``None``: ``image_prior.unconditional(image_cond)``).

        Returns {"loss_vpsds", "vpsds_t", "vpsds_grad_norm", "vpsds_visual_norm"}."""
        x = model_latents(self.text_prior, images)
        if uncond is None and self.text_scale != 1.0:
            uncond = self.text_prior.unconditional(cond)
        if image_uncond is None and self.visual_scale != 0.0:
            image_uncond = self.image_prior.unconditional(image_cond)
        x_image = None
        if self.visual_scale != 0.0 and not self.shared_space:
            x_image = model_latents(self.image_prior, images)
        grad, visual, t, visual_norm = self.gradient(
            x, cond, uncond, image_cond, image_uncond, step, generator, x_image
        )
        loss = surrogate_loss(x, grad)
        total_norm = grad.flatten(1).norm(dim=1)
        if visual is not None:
            loss = loss + surrogate_loss(x_image, visual)
            total_norm = (total_norm**2 + visual_norm**2).sqrt()
        return {
            "loss_vpsds": loss,
            "vpsds_t": t.float().mean(),
            "vpsds_grad_norm": total_norm.mean(),
            "vpsds_visual_norm": visual_norm.mean(),
        }
