"""DeepFloyd IF stage I behind the :class:`~studio.priors.base.DiffusionPrior` interface."""

from __future__ import annotations

import torch
from torch import Tensor

from studio.priors.base import Condition
from studio.priors.diffusers.base import DiffusersPrior, TextCFGMixin, resize_square
from studio.priors.diffusers.loading import load_component, load_tokenizer
from studio.priors.diffusers.lora import camera_tensor


class DeepFloydIFPrior(TextCFGMixin, DiffusersPrior):
    """DeepFloyd IF stage I (default ``DeepFloyd/IF-I-XL-v1.0``): 64x64 pixel space in [-1,1].

    Text: T5 encoder tokens ``{"text": [B,77,4096]}`` (no caption cleaning); ``pose`` adds a LoRA
    clone's ``"camera"`` [B,16] as for Stable Diffusion. The UNet outputs eps and a learned variance
    (6 channels); ``predict`` returns the first 3 (eps), as DDPM's ``learned_range`` step does.
    Memory: T5-XXL is about 4.8B parameters (~9.5 GB in fp16); pass ``load_text_encoder=False`` and
    ``text_embeddings=...`` to :meth:`condition` to skip it, or call :meth:`release_text_encoder`
    once the prompts are embedded (embeddings are cached).
    """

    what = "DeepFloyd IF stage I"
    default_repo = "DeepFloyd/IF-I-XL-v1.0"
    components = ("unet", "text_encoder", "tokenizer", "scheduler")

    def __init__(
        self,
        path=None,
        dtype=None,
        device=None,
        *,
        load_text_encoder: bool = True,
        lora_rank: int = 4,
        camera_dim: int = 0,
        flag: str = "--prior-path",
    ):
        self._want_text_encoder = load_text_encoder
        if not load_text_encoder:
            self.components = ("unet", "scheduler")
        super().__init__(path, dtype, device, lora_rank=lora_rank, camera_dim=camera_dim, flag=flag)

    def _load(self) -> None:
        from diffusers import UNet2DConditionModel

        p, what, dt = self.path, self.what, self.model_dtype
        self.unet = load_component(UNet2DConditionModel, p, "unet", what, dt)
        self.text_encoder = None
        self.tokenizer = None
        if self._want_text_encoder:
            from transformers import T5EncoderModel

            self.text_encoder = load_component(T5EncoderModel, p, "text_encoder", what, dt)
            self.tokenizer = load_tokenizer(p, "tokenizer", what)
        self.image_size = int(self.unet.config.sample_size)
        self.latent_shape = (3, self.image_size, self.image_size)
        self._max_length = 77

    @torch.no_grad()
    def _embed_text(self, texts: list[str]) -> Tensor:
        def run():
            encoder = self._text_encoder_or_raise()
            tok = self.tokenizer(
                texts,
                padding="max_length",
                max_length=self._max_length,
                truncation=True,
                add_special_tokens=True,
                return_tensors="pt",
            )
            emb = encoder(tok.input_ids.to(self.device), attention_mask=tok.attention_mask.to(self.device))[0]
            return {"text": emb}

        return self._cached(("text",) + tuple(texts), run)["text"]

    def condition(self, text=None, image=None, pose=None, *, text_embeddings: Tensor | None = None) -> Condition:
        if image is not None:
            raise ValueError("DeepFloydIFPrior is text-conditioned: pass text=..., not image=")
        if text_embeddings is not None:
            tensors = {"text": text_embeddings.to(self.device)}
        elif text is None:
            raise ValueError('DeepFloydIFPrior.condition needs text ("" for the unconditional)')
        else:
            tensors = {"text": self._embed_text([text] if isinstance(text, str) else list(text))}
        if pose is not None:
            tensors["camera"] = camera_tensor(pose).to(self.device)
        return Condition(tensors)

    def predict(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        cond = cond.expand(x_t.shape[0])
        out = self._run_unet(x_t, t, cond.tensors["text"], cond)
        return out[:, : x_t.shape[1]].to(x_t.dtype)

    def encode(self, img: Tensor) -> Tensor:
        """[B,3,H,W] in [0,1] (resized to ``image_size`` if needed) -> [-1,1]."""
        return resize_square(img, self.image_size) * 2.0 - 1.0


__all__ = ["DeepFloydIFPrior"]
