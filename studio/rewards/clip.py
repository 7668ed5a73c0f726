"""Real CLIP (Radford et al. 2021) as an :class:`~studio.rewards.base.ImageTextModel`, from a local folder only.

A folder written by transformers' ``CLIPModel.save_pretrained`` (``config.json`` with ``model_type``
"clip", ``model.safetensors`` or ``pytorch_model.bin``) plus its tokenizer files (``vocab.json`` +
``merges.txt`` or ``tokenizer.json``), e.g. ``huggingface-cli download openai/clip-vit-base-patch32
--local-dir PATH``. It loads with ``local_files_only=True``; nothing is downloaded.

Preprocessing is done in torch so it stays differentiable: the shorter side resized to the vision
tower's ``image_size`` (224 for the OpenAI models; bilinear with antialiasing where CLIP's
processor uses PIL bicubic), centre crop, then ``(x - mean) / std`` with the folder's
``preprocessor_config.json`` mean/std when present, else OpenAI CLIP's.

open_clip checkpoints (``open_clip_config.json``) are not supported: the ``open_clip`` package is
not installed here; convert such a model to the transformers layout first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from studio.io.errors import StudioInputError
from studio.rewards.base import ImageTextModel

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def check_clip_folder(folder: Path) -> None:
    """Check, without reading weights, that ``folder`` holds a transformers CLIP model with a
    tokenizer. Raises one StudioInputError line."""
    put = (
        "put a CLIP model saved with CLIPModel.save_pretrained (config.json, model.safetensors, tokenizer files) there"
    )
    if not folder.is_dir():
        raise StudioInputError(f"CLIP folder {folder} does not exist; {put}.")
    if (folder / "open_clip_config.json").is_file() and not (folder / "config.json").is_file():
        raise StudioInputError(f"{folder} is an open_clip checkpoint; open_clip is not installed here, {put}.")
    config = folder / "config.json"
    if not config.is_file():
        raise StudioInputError(f"{folder} is not a CLIP snapshot (it has no config.json); {put}.")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise StudioInputError(f"{config} is not a JSON object; {put}.") from None
    if model_type != "clip":
        raise StudioInputError(f"{config} has model_type {model_type!r}, not 'clip'; {put}.")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise StudioInputError(f"{folder} has a config.json but no weights; copy the model's model.safetensors there.")
    if not any(all((folder / f).is_file() for f in files) for files in TOKENIZER_FILES):
        raise StudioInputError(
            f"{folder} has no CLIP tokenizer (tokenizer.json, or vocab.json and merges.txt); copy the snapshot's tokenizer files there."
        )


def _preprocessing(folder: Path) -> dict:
    """``{mean, std}`` from ``preprocessor_config.json`` when present, else OpenAI CLIP's."""
    path = folder / "preprocessor_config.json"
    pre = {}
    if path.is_file():
        try:
            pre = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise StudioInputError(f"{path} is not valid JSON; fix or delete it.") from None
    return {"mean": list(pre.get("image_mean", CLIP_MEAN)), "std": list(pre.get("image_std", CLIP_STD))}


class CLIPImageTextModel(ImageTextModel):
    """A transformers ``CLIPModel`` with its tokenizer (see the module docstring)."""

    def __init__(self, path: str | Path):
        super().__init__()
        from transformers import CLIPModel, CLIPTokenizerFast

        folder = Path(path).expanduser()
        check_clip_folder(folder)
        try:
            self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True).float().eval()
            self.tokenizer = CLIPTokenizerFast.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, RuntimeError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise StudioInputError(f"{folder} holds a CLIP model that does not load ({first}).") from None
        self.model.requires_grad_(False)
        cfg = self.model.config
        self.name, self.dim, self.image_size = str(folder), cfg.projection_dim, cfg.vision_config.image_size
        self.max_len = cfg.text_config.max_position_embeddings
        pre = _preprocessing(folder)
        self.register_buffer("pixel_mean", torch.tensor(pre["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pre["std"]).view(1, 3, 1, 1), persistent=False)

    @property
    def logit_scale(self) -> Tensor:
        return self.model.logit_scale.exp()

    @staticmethod
    def _features(out) -> Tensor:
        """transformers >= 5 returns a model output with the projection in ``pooler_output``."""
        return out if isinstance(out, Tensor) else out.pooler_output

    def encode_images(self, images: Tensor) -> Tensor:
        return self._features(self.model.get_image_features(pixel_values=(images - self.pixel_mean) / self.pixel_std))

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        return self._features(
            self.model.get_text_features(
                input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)
            )
        )
