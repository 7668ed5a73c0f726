"""Image-text models by name or path: ``load_image_text_model(name_or_path)`` -> :class:`ImageTextModel`.

``name_or_path`` is one of

* ``"toy-clip"``: the embedded model, ``studio/rewards/weights/toy-clip.safetensors`` (package data,
  made by ``python -m studio.rewards.train``);
* a toy-clip ``.safetensors`` file written by :func:`studio.rewards.contrastive.save_toy_clip`;
* a local transformers CLIP folder (:mod:`studio.rewards.clip`).

Nothing touches the network. A missing or unusable ``name_or_path`` raises one
:class:`~studio.io.errors.StudioInputError` sentence saying what to put where. Loaded models are
float32, in eval mode, with frozen weights (rewards differentiate w.r.t. the images only).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from studio.io.pretrained import resolve_embedded_or_path
from studio.rewards.base import ImageTextModel
from studio.rewards.clip import CLIPImageTextModel
from studio.rewards.contrastive import load_toy_clip

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
EMBEDDED = {"toy-clip": WEIGHTS_DIR / "toy-clip.safetensors"}
"""Embedded model name -> its committed weights file."""


def available_image_text_models() -> list[str]:
    return sorted(EMBEDDED)


def _resolve(name_or_path: str | Path) -> tuple[str, Path]:
    """("file", path) of an embedded name or a file, ("folder", path) of a folder; else raises."""
    return resolve_embedded_or_path(
        name_or_path,
        EMBEDDED,
        "image-text model",
        "run `python -m studio.rewards.train` to make them",
        "pass a toy-clip .safetensors file or a local CLIP folder (CLIPModel.save_pretrained: config.json, "
        "model.safetensors, tokenizer)",
    )


def is_image_text_model(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` names an image-text model (an embedded name, a .safetensors file of
    kind toy-clip, a folder whose config.json has model_type "clip") rather than something else
    (e.g. a feature model); reads no weights and never raises."""
    key = str(name_or_path).strip()
    if key in EMBEDDED:
        return True
    path = Path(key).expanduser()
    try:
        if path.is_dir():
            return json.loads((path / "config.json").read_text()).get("model_type") == "clip"
        if path.is_file():
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return json.loads((f.metadata() or {}).get("studio_config", "{}")).get("kind") == "toy-clip"
    except Exception:  # unreadable or not JSON: not an image-text model
        return False
    return False


def load_image_text_model(name_or_path: str | Path = "toy-clip", device: str | torch.device = "cpu") -> ImageTextModel:
    """The image-text model ``name_or_path`` (see the module docstring), float32, eval mode, frozen,
    on ``device`` ("auto" = CUDA when available)."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind, path = _resolve(name_or_path)
    if kind == "folder":
        return CLIPImageTextModel(path).to(device).eval()
    key = str(name_or_path).strip()
    return load_toy_clip(path, device, name=key if key in EMBEDDED else str(path))
