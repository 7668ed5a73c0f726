"""DINOv2 / DINOv3 feature models through transformers, from a local folder only.

A folder written by ``save_pretrained`` (``config.json`` + ``model.safetensors`` or
``pytorch_model.bin``) with ``model_type`` one of :data:`MODEL_TYPES`: DINOv2 (Oquab et al. 2024,
patch 14), DINOv2 with registers (Darcet et al. 2024) and DINOv3 (Simeoni et al. 2025, patch 16).
It loads with ``local_files_only=True``; nothing is downloaded. The model's last hidden state
(after its final LayerNorm) is ``[CLS, registers..., patches...]``: the CLS and register tokens are
dropped and the patch tokens reshaped to ``[B,D,H/p,W/p]``. Pixels are normalised with the folder's
``preprocessor_config.json`` mean/std when present, else ImageNet's; the preferred input side is its
crop size (else ``config.image_size``), rounded to a multiple of the patch size.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from studio.features.base import IMAGENET_MEAN, IMAGENET_STD, FeatureModel
from studio.io.errors import StudioInputError

MODEL_TYPES = {
    "dinov2": "Dinov2Model",
    "dinov2_with_registers": "Dinov2WithRegistersModel",
    "dinov3_vit": "DINOv3ViTModel",
}
"""config.json ``model_type`` -> transformers model class."""
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_folder(folder: Path) -> str:
    """The ``model_type`` of the transformers folder ``folder``, checked without reading weights:
    ``config.json`` names a supported type and a weights file is there. Raises one StudioInputError line."""
    from studio.io.headers import check_safetensors

    config = folder / "config.json"
    put = "put a DINOv2/DINOv3 model saved with save_pretrained (config.json and model.safetensors) there"
    if not config.is_file():
        raise StudioInputError(f"{folder} is not a transformers model folder (it has no config.json); {put}.")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise StudioInputError(f"{config} is not a JSON object; {put}.") from None
    if model_type not in MODEL_TYPES:
        raise StudioInputError(
            f"{config} has model_type {model_type!r}; feature models are one of {', '.join(MODEL_TYPES)}."
        )
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if weights is None:
        raise StudioInputError(f"{folder} has a config.json but no weights; copy the model's model.safetensors there.")
    if weights.name == "model.safetensors":
        check_safetensors(weights, "feature model weights")
    return model_type


def model_class(model_type: str):
    import transformers

    return getattr(transformers, MODEL_TYPES[model_type])


def _preprocessing(folder: Path, hf_config) -> dict:
    """mean, std and preferred side from ``preprocessor_config.json`` (if any) and the model config."""
    pre = {}
    path = folder / "preprocessor_config.json"
    if path.is_file():
        try:
            pre = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise StudioInputError(f"{path} is not valid JSON; fix or delete it.") from None
    crop = pre.get("crop_size") or hf_config.image_size
    side = min(crop.values()) if isinstance(crop, dict) else int(crop)
    p = hf_config.patch_size
    return {
        "mean": list(pre.get("image_mean", IMAGENET_MEAN)),
        "std": list(pre.get("image_std", IMAGENET_STD)),
        "image_size": max(p, round(side / p) * p),
    }


class HFDinoFeatures(FeatureModel):
    """A transformers DINOv2/DINOv3 backbone as a :class:`FeatureModel` (see the module docstring).
    ``model``: the transformers model; ``preprocessing``: mean, std, image_size."""

    kind = "hf-dino"

    def __init__(self, model, preprocessing: dict, name: str):
        super().__init__(preprocessing["mean"], preprocessing["std"])
        self.model, self.preprocessing, self.name = model, dict(preprocessing), name
        cfg = model.config
        self.dim, self.patch_size, self.image_size = cfg.hidden_size, cfg.patch_size, preprocessing["image_size"]
        self.prefix_tokens = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)

    @classmethod
    def from_folder(cls, folder: str | Path) -> "HFDinoFeatures":
        """Load the model in ``folder`` (checked with :func:`check_folder` first), float32, eval."""
        folder = Path(folder).expanduser()
        model_type = check_folder(folder)
        try:
            model = model_class(model_type).from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, RuntimeError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise StudioInputError(f"{folder} holds a {model_type} model that does not load ({first}).") from None
        return cls(model.float().eval(), _preprocessing(folder, model.config), str(folder))

    @property
    def config(self) -> dict:
        return {"hf_config": self.model.config.to_dict(), "preprocessing": dict(self.preprocessing)}

    @classmethod
    def from_config(cls, config: dict, name: str) -> "HFDinoFeatures":
        hf = dict(config["hf_config"])
        model_cls = model_class(hf["model_type"])
        return cls(model_cls(model_cls.config_class.from_dict(hf)), config["preprocessing"], name)

    def forward(self, images: Tensor) -> Tensor:
        """images [B,3,H,W] in [0,1] (H, W multiples of the patch size) -> [B,D,H/p,W/p] float32."""
        x = self.normalize(images).to(next(self.model.parameters()).dtype)
        B, _, H, W = x.shape
        hidden = self.model(pixel_values=x).last_hidden_state  # [B, prefix + h*w, D]
        patches = hidden[:, self.prefix_tokens :]
        h, w = H // self.patch_size, W // self.patch_size
        return patches.reshape(B, h, w, self.dim).permute(0, 3, 1, 2).to(torch.float32)
