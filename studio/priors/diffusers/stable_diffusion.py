"""Stable Diffusion behind the :class:`~studio.priors.base.DiffusionPrior` interface."""

from __future__ import annotations

import torch
from torch import Tensor

from studio.priors.base import Condition
from studio.priors.diffusers.base import DiffusersPrior, LatentVAEMixin, TextCFGMixin
from studio.priors.diffusers.loading import load_component, load_tokenizer
from studio.priors.diffusers.lora import camera_tensor


class StableDiffusionPrior(TextCFGMixin, LatentVAEMixin, DiffusersPrior):
    """Stable Diffusion (default ``stabilityai/stable-diffusion-2-1-base``: 512 px, eps).

    Model space: VAE latents ``(4, H/8, W/8)`` times ``vae.config.scaling_factor``.
    ``condition(text=..., pose=None)``: CLIP text tokens ``{"text": [B,77,D]}``; with ``pose``
    (a camera, [B,4,4] or [B,16]) also ``{"camera": [B,16]}``, read only by LoRA clones that have a
    camera MLP (VSD); the pretrained UNet ignores it. ``unconditional(like)``: the empty prompt and,
    if ``like`` has a camera, a zero camera. Clones get ``camera_dim=16`` by default.
    """

    what = "Stable Diffusion 2.1-base"
    default_repo = "stabilityai/stable-diffusion-2-1-base"
    components = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
    default_camera_dim = 16

    def _load(self) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        p, what, dt = self.path, self.what, self.model_dtype
        self.vae = load_component(AutoencoderKL, p, "vae", what, dt)
        self.unet = load_component(UNet2DConditionModel, p, "unet", what, dt)
        self.text_encoder = load_component(CLIPTextModel, p, "text_encoder", what, dt)
        self.tokenizer = load_tokenizer(p, "tokenizer", what)
        f = self.vae_scale_factor
        self.image_size = int(self.unet.config.sample_size) * f
        self.latent_shape = (int(self.unet.config.in_channels), self.image_size // f, self.image_size // f)

    @torch.no_grad()
    def _embed_text(self, texts: list[str]) -> Tensor:
        def run():
            encoder = self._text_encoder_or_raise()
            tok = self.tokenizer(
                texts,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            mask = None
            if getattr(encoder.config, "use_attention_mask", False):
                mask = tok.attention_mask.to(self.device)
            emb = encoder(tok.input_ids.to(self.device), attention_mask=mask)[0]
            return {"text": emb}

        return self._cached(("text",) + tuple(texts), run)["text"]

    def condition(self, text=None, image=None, pose=None) -> Condition:
        if image is not None:
            raise ValueError("StableDiffusionPrior is text-conditioned: pass text=..., not image=")
        if text is None:
            raise ValueError('StableDiffusionPrior.condition needs text ("" for the unconditional)')
        texts = [text] if isinstance(text, str) else list(text)
        tensors = {"text": self._embed_text(texts)}
        if pose is not None:
            tensors["camera"] = camera_tensor(pose).to(self.device)
        return Condition(tensors)

    def predict(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        cond = cond.expand(x_t.shape[0])
        return self._run_unet(x_t, t, cond.tensors["text"], cond).to(x_t.dtype)


__all__ = ["StableDiffusionPrior"]
