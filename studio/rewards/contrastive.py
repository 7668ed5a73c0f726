"""The embedded image-text model ``toy-clip``: a CLIP-style dual encoder trained on ToyWorld.

Contrastive language-image pre-training (CLIP, Radford et al. 2021) at toy scale:

* image tower (:class:`ImageTower`): a small CNN on 32x32 sRGB in [0,1] (normalised to [-1,1]):
  a 3x3 stem at full resolution, then per stage a stride-2 3x3 convolution and a 3x3
  convolution (GroupNorm + GELU after each; no BatchNorm, so a single image embeds the same in
  every batch and reward gradients do not mix images), global average pooling, LayerNorm and a
  linear projection to ``embed_dim``;
* text tower: the toy priors' word tokenizer and transformer (:class:`studio.priors.text.WordTokenizer`,
  :class:`studio.priors.text.TextEncoder`), its tokens averaged over the real words (mask) and
  projected linearly to ``embed_dim``;
* a learnable temperature: ``log_scale`` initialised to log(1/0.07) and clamped at log(100) as in
  CLIP (Sec. 2.5), ``logit_scale = exp(log_scale)``.

Loss (:func:`contrastive_loss`): CLIP's symmetric InfoNCE (Radford et al. 2021, Fig. 3's
pseudo-code: the mean of the image->text and text->image cross-entropies of the scaled cosine
logits), with one change because ToyWorld captions repeat across objects ("a matte red box" names
many seeds): the logits' text columns are the batch's *distinct* captions, so image->text is an
ordinary cross-entropy over them with no false negatives, and text->image has several positives,
its target uniform over the batch images that carry the caption (multi-positive targets).

Files: one fp16 ``.safetensors`` with the JSON config (kind, architecture, vocabulary, training
record) in its metadata under ``"studio_config"`` and a readable copy beside it as ``.json``, as the
toy priors store theirs (:func:`save_toy_clip` writes atomically; :func:`load_toy_clip` rebuilds the
model from the metadata alone).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.priors.text import TextEncoder, WordTokenizer
from studio.rewards.base import ImageTextModel

KIND = "toy-clip"
FORMAT_VERSION = 1
DEFAULT_ARCH = {
    "image_size": 32,
    "stem": 32,
    "channels": [64, 96, 128],
    "groups": 8,
    "embed_dim": 128,
    "text_dim": 96,
    "text_layers": 2,
    "heads": 4,
    "max_len": 16,
}
MAX_LOG_SCALE = math.log(100.0)


def _conv(c_in: int, c_out: int, groups: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(groups, c_out), nn.GELU()]


class ImageTower(nn.Module):
    """images ``[B,3,S,S]`` in [0,1] -> ``[B, embed_dim]`` (see the module docstring)."""

    def __init__(self, stem: int, channels: Sequence[int], groups: int, embed_dim: int):
        super().__init__()
        layers = _conv(3, stem, groups)
        c = stem
        for c_out in channels:
            layers += _conv(c, c_out, groups, stride=2) + _conv(c_out, c_out, groups)
            c = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(c))
        self.proj = nn.Linear(c, embed_dim, bias=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(self.body(images * 2.0 - 1.0))


class ToyCLIP(ImageTextModel):
    """The embedded contrastive model (see the module docstring); ``config["arch"]`` overrides
    :data:`DEFAULT_ARCH`, ``config["vocabulary"]`` fixes the tokenizer's words."""

    kind = KIND

    def __init__(self, config: dict | None = None, name: str = KIND):
        super().__init__()
        self.config = copy.deepcopy(config or {})
        arch = {**DEFAULT_ARCH, **self.config.get("arch", {})}
        unknown = set(arch) - set(DEFAULT_ARCH)
        if unknown:
            raise ValueError(f"unknown toy-clip arch fields {sorted(unknown)}; known: {sorted(DEFAULT_ARCH)}")
        self.config["arch"] = arch
        self.name, self.dim, self.image_size = name, arch["embed_dim"], arch["image_size"]
        self.tokenizer = WordTokenizer(self.config.get("vocabulary"), max_len=arch["max_len"])
        self.config["vocabulary"] = self.tokenizer.words
        self.image_tower = ImageTower(arch["stem"], arch["channels"], arch["groups"], arch["embed_dim"])
        self.text_encoder = TextEncoder(
            len(self.tokenizer), arch["max_len"], arch["text_dim"], arch["text_layers"], arch["heads"]
        )
        self.text_proj = nn.Linear(arch["text_dim"], arch["embed_dim"], bias=False)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / 0.07)))

    @property
    def logit_scale(self) -> Tensor:
        return self.log_scale.clamp(max=MAX_LOG_SCALE).exp()

    def encode_images(self, images: Tensor) -> Tensor:
        return self.image_tower(images)

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        ids, mask = self.tokenizer(list(texts))
        ids, mask = ids.to(self.device), mask.to(self.device)
        tokens = self.text_encoder(ids, mask)  # [N, L, text_dim], zero where masked
        pooled = tokens.sum(1) / mask.sum(1, keepdim=True).to(tokens.dtype)
        return self.text_proj(pooled)


def contrastive_loss(image_emb: Tensor, text_emb: Tensor, labels: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric multi-positive InfoNCE (see the module docstring).

    ``image_emb`` [B,D] and ``text_emb`` [U,D] L2-normalised, U distinct captions; ``labels`` [B]
    long: the caption index of each image. Returns the mean of the image->text cross-entropy
    (target: its caption) and the text->image cross-entropy (target: uniform over the images of
    the caption), both over logits ``logit_scale * image_emb @ text_emb.T``."""
    logits = logit_scale * image_emb @ text_emb.t()  # [B, U]
    image_to_text = F.cross_entropy(logits, labels)
    positives = F.one_hot(labels, text_emb.shape[0]).t().to(logits.dtype)  # [U, B]
    text_to_image = F.cross_entropy(logits.t(), positives / positives.sum(1, keepdim=True))
    return 0.5 * (image_to_text + text_to_image)


# ---- files ------------------------------------------------------------------------------------


def save_toy_clip(model: ToyCLIP, path: Union[str, Path], training: dict | None = None) -> Path:
    """Write ``model``'s weights (fp16) and config (plus the ``training`` record) to ``path``
    (.safetensors) atomically, and a readable copy of the config as ``path.with_suffix('.json')``."""
    from safetensors.torch import save_file

    from studio.io import atomic_path, atomic_write_text

    path = Path(path)
    config = {**copy.deepcopy(model.config), "kind": KIND, "format_version": FORMAT_VERSION}
    if training:
        config["training"] = dict(training)
    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"studio_config": json.dumps(config), "format": "pt"})
    atomic_write_text(path.with_suffix(".json"), json.dumps(config, indent=1) + "\n")
    return path


def read_toy_clip_config(path: Union[str, Path]) -> dict:
    """The ``studio_config`` of a toy-clip file, checked (header, metadata, kind) without reading
    its tensors. Raises one StudioInputError line."""
    from safetensors import safe_open

    from studio.io.errors import StudioInputError
    from studio.io.headers import check_safetensors

    check_safetensors(Path(path), "image-text model file")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    try:
        config = json.loads(meta["studio_config"])
        ok = config["kind"] == KIND
    except (KeyError, TypeError, json.JSONDecodeError):
        ok = False
    if not ok:
        raise StudioInputError(
            f"{path} is not a toy-clip file (no 'studio_config' metadata of kind {KIND!r}); pass one written by "
            "`python -m studio.rewards.train`."
        )
    return config


def load_toy_clip(path: Union[str, Path], device: Union[str, torch.device] = "cpu", name: str | None = None) -> ToyCLIP:
    """Rebuild a toy-clip model from its .safetensors file: float32, eval mode, weights frozen."""
    from safetensors.torch import load_file

    from studio.io.errors import StudioInputError

    config = read_toy_clip_config(path)
    model = ToyCLIP(config, name=name or str(path))
    try:
        model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise StudioInputError(f"{path} does not match the model its config describes ({first}).") from None
    model.requires_grad_(False)
    return model.to(device).eval()
