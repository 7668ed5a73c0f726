"""The attribute classifier: a small CNN with a category, a colour and a material head.

Input: RGB images ``[B, 3, H, W]`` in [0, 1] composited on white (the priors' space); other sizes
are resized to 32x32 with antialiasing (:func:`prepare`). Body: ``len(channels)`` stages of two
3x3 conv + BatchNorm + ReLU, 2x2 max-pooling between stages, global average pooling, then a linear
layer + ReLU to ``feature_dim`` features (:meth:`AttributeClassifier.features`, the penultimate
layer, used for FID-style distances) and one linear head per attribute.

Files: fp16 ``.safetensors`` with the config (architecture, vocabulary, training record) in the
metadata under ``"studio_config"`` and a readable copy beside it as ``.json``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.eval.classifier.labels import ATTRIBUTES, VOCABULARY

INPUT_SIZE = 32
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "toy-attributes.safetensors"
DEFAULT_ARCH = {"channels": [32, 64, 128], "feature_dim": 128}


def prepare(images: Union[Tensor, np.ndarray]) -> Tensor:
    """Float ``[B, 3, 32, 32]`` in [0, 1] from float ``[B, 3, H, W]`` in [0, 1] or uint8 ``[B, H, W, 3]``
    (resized with antialiasing when ``H, W`` differ from 32)."""
    x = torch.as_tensor(images)
    x = x.permute(0, 3, 1, 2).float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    layers = []
    for c in (c_in, c_out):
        layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class AttributeClassifier(nn.Module):
    """CNN with heads ``category``, ``colour``, ``material`` (vocabularies in ``config["vocabulary"]``)."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        self.config = copy.deepcopy(config) if config else {"arch": dict(DEFAULT_ARCH)}
        self.config.setdefault("vocabulary", {a: list(VOCABULARY[a]) for a in ATTRIBUTES})
        arch = self.config["arch"]
        chans = [3] + list(arch["channels"])
        stages = []
        for k in range(1, len(chans)):
            stages += ([nn.MaxPool2d(2)] if k > 1 else []) + [_stage(chans[k - 1], chans[k])]
        self.body = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(chans[-1], arch["feature_dim"]), nn.ReLU(inplace=True))
        vocab = self.config["vocabulary"]
        self.heads = nn.ModuleDict({a: nn.Linear(arch["feature_dim"], len(vocab[a])) for a in ATTRIBUTES})

    @property
    def vocabulary(self) -> dict[str, list[str]]:
        return self.config["vocabulary"]

    def features(self, images: Union[Tensor, np.ndarray]) -> Tensor:
        """Penultimate-layer features ``[B, feature_dim]`` of images (any form :func:`prepare` takes)."""
        x = prepare(images).to(next(self.parameters()).device)
        return self.embed(self.body(x * 2.0 - 1.0))

    def forward(self, images: Union[Tensor, np.ndarray]) -> dict[str, Tensor]:
        """Logits per attribute: {name: [B, len(vocabulary[name])]}."""
        f = self.features(images)
        return {a: head(f) for a, head in self.heads.items()}

    @torch.no_grad()
    def predict_indices(self, images: Union[Tensor, np.ndarray], batch: int = 512) -> np.ndarray:
        """Arg-max class indices ``[B, 3]`` (category, colour, material), in batches of ``batch``."""
        out = []
        for i in range(0, len(images), batch):
            logits = self(images[i : i + batch])
            out.append(torch.stack([logits[a].argmax(-1) for a in ATTRIBUTES], -1).cpu())
        return torch.cat(out).numpy()

    def predict(self, images: Union[Tensor, np.ndarray]) -> list[dict[str, str]]:
        """Attribute names per image: ``[{category, colour, material}, ...]``."""
        return [
            {a: self.vocabulary[a][int(k)] for a, k in zip(ATTRIBUTES, row)} for row in self.predict_indices(images)
        ]


def save_attribute_classifier(model: AttributeClassifier, path: Union[str, Path], record: dict) -> Path:
    """Write fp16 weights + config (with ``record``: how it was trained and measured) to ``path``
    (.safetensors) and a copy of the config to ``path.with_suffix('.json')``, atomically."""
    from safetensors.torch import save_file

    from studio.io import atomic_path, atomic_write_text

    path = Path(path)
    config = {**model.config, "record": record}
    tensors = {
        k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous() for k, v in model.state_dict().items()
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"studio_config": json.dumps(config), "format": "pt"})
    atomic_write_text(path.with_suffix(".json"), json.dumps(config, indent=1) + "\n")
    return path


def load_attribute_classifier(
    path: Union[str, Path] = DEFAULT_WEIGHTS, device: Union[str, torch.device] = "cpu"
) -> AttributeClassifier:
    """The classifier of a .safetensors file (default: the committed one), float32, in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from studio.io import StudioInputError

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "studio_config" not in meta:
        raise StudioInputError(f"{path} is not an attribute-classifier file (no 'studio_config' metadata).")
    model = AttributeClassifier(json.loads(meta["studio_config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    model.load_state_dict(state)
    return model.to(device).eval()
