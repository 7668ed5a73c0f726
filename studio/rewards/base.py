"""The one interface of image-text models used as differentiable rewards (VP3D, Chen et al. CVPR 2024).

An :class:`ImageTextModel` embeds sRGB images ``[B,3,H,W]`` (float in [0,1], any size) and texts
into one space of dimension ``dim``; both embeddings are L2-normalised, so their dot product is the
cosine similarity that CLIP-style rewards maximise (VP3D's human-feedback and visual-consistency
rewards back-propagate it through renders into the 3D representation).

* :meth:`ImageTextModel.embed_images`: differentiable w.r.t. the images (the weights are frozen by
  the loaders, not by this interface). Images are resized inside: the shorter side to
  ``image_size`` (bilinear with antialiasing), then centre-cropped to ``image_size`` squared, as
  CLIP's preprocessing does (with a differentiable resize instead of PIL's bicubic).
* :meth:`ImageTextModel.embed_texts`: no gradients; results are cached per text while the model
  is in eval mode (``train()`` clears the cache; training code calls :meth:`encode_texts`).
* :meth:`ImageTextModel.alignment`: per-image cosine similarity with its text, in [-1, 1].
* ``logit_scale``: the multiplier of cosine similarities in the contrastive logits (CLIP's
  ``exp(t)``; 100 for OpenAI CLIP), a scalar tensor.

Subclasses implement :meth:`encode_images` (model-size images -> unnormalised ``[B,D]``, pixel
normalisation included) and :meth:`encode_texts` (texts -> unnormalised ``[N,D]``).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Texts = Union[str, Sequence[str]]


def fit_square(images: Tensor, size: int) -> Tensor:
    """Images ``[B,3,H,W]`` -> ``[B,3,size,size]`` float: the shorter side resized to ``size``
    (bilinear, antialiased when shrinking), the longer one centre-cropped. Differentiable."""
    H, W = images.shape[-2:]
    x = images.float()
    if min(H, W) != size:
        scale = size / min(H, W)
        hw = (max(size, round(H * scale)), max(size, round(W * scale)))
        x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
        H, W = hw
    top, left = (H - size) // 2, (W - size) // 2
    return x[..., top : top + size, left : left + size]


class ImageTextModel(nn.Module):
    """Images and texts -> L2-normalised embeddings ``[*, dim]`` (see the module docstring)."""

    name: str = ""
    """e.g. "toy-clip", or the path the model was loaded from."""
    dim: int
    """Embedding dimension D."""
    image_size: int
    """Square input side in pixels the image tower takes."""

    def __init__(self):
        super().__init__()
        self._text_cache: dict[str, Tensor] = {}

    @property
    def logit_scale(self) -> Tensor:
        """Multiplier of the cosine similarities in the contrastive logits (scalar tensor)."""
        raise NotImplementedError

    def encode_images(self, images: Tensor) -> Tensor:
        """images ``[B,3,S,S]`` in [0,1], S = ``image_size`` -> unnormalised embeddings ``[B,D]``."""
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """N texts -> unnormalised embeddings ``[N,D]`` (with gradients into the text tower)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def train(self, mode: bool = True) -> "ImageTextModel":
        self._text_cache.clear()
        return super().train(mode)

    def embed_images(self, images: Tensor) -> Tensor:
        """images ``[B,3,H,W]`` float in [0,1] (sRGB, any H, W) -> ``[B,D]`` unit vectors,
        differentiable w.r.t. ``images``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name or type(self).__name__} takes images [B,3,H,W], got {list(images.shape)}")
        x = fit_square(images.to(self.device), self.image_size)
        return F.normalize(self.encode_images(x).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: Texts) -> Tensor:
        """texts (one string or N) -> ``[N,D]`` unit vectors (no gradients; cached in eval mode)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if self.training:
            return F.normalize(self.encode_texts(texts).float(), dim=-1)
        new = sorted({t for t in texts if t not in self._text_cache})
        if new:
            for t, e in zip(new, F.normalize(self.encode_texts(new).float(), dim=-1)):
                self._text_cache[t] = e
        return torch.stack([self._text_cache[t] for t in texts]).to(self.device)

    def alignment(self, images: Tensor, texts: Texts) -> Tensor:
        """Cosine similarity ``[B]`` of each image ``[B,3,H,W]`` with its text: ``texts`` is one
        string or a list of length B or 1. Differentiable w.r.t. ``images``."""
        t = self.embed_texts(texts)
        if t.shape[0] not in (1, images.shape[0]):
            raise ValueError(
                f"alignment takes 1 or {images.shape[0]} texts for {images.shape[0]} images, got {t.shape[0]}"
            )
        return (self.embed_images(images) * t).sum(-1)
