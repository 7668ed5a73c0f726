"""Feature models by name or path: ``load_feature_model(spec)`` -> :class:`FeatureModel`.

``spec`` is one of

* ``"toy-vit"``: the embedded model, ``studio/features/weights/toy-vit.safetensors`` (package data,
  made by ``studio features train``);
* a ``.safetensors`` file written by :func:`save_feature_model` (e.g. a fine-tuned student): fp16
  weights, the JSON config in the metadata under ``"studio_config"`` (``kind``, ``format_version``,
  the model's ``config``, optional ``training`` record), as the toy priors store theirs;
* a local transformers DINOv2 / DINOv2-with-registers / DINOv3 folder (:mod:`studio.features.dinov2`).

Nothing touches the network. A missing or unusable ``spec`` raises one
:class:`~studio.io.errors.StudioInputError` sentence saying what to put where;
:func:`check_feature_model` runs the same checks without reading weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from studio.features.base import FeatureModel
from studio.features.dinov2 import HFDinoFeatures, check_folder
from studio.features.vit import ToyViT
from studio.io.errors import StudioInputError
from studio.io.pretrained import resolve_embedded_or_path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
EMBEDDED = {"toy-vit": WEIGHTS_DIR / "toy-vit.safetensors"}
"""Embedded model name -> its committed weights file."""
MODEL_CLASSES: dict[str, type] = {ToyViT.kind: ToyViT, HFDinoFeatures.kind: HFDinoFeatures}
"""File ``kind`` -> FeatureModel class with ``from_config(config, name)``."""
FORMAT_VERSION = 1


def available_feature_models() -> list[str]:
    return sorted(EMBEDDED)


def _resolve(spec: str | Path) -> tuple[str, Path]:
    """("file", path) of an embedded name or a file, ("folder", path) of a folder; else raises."""
    return resolve_embedded_or_path(
        spec,
        EMBEDDED,
        "feature model",
        "run `studio features train` to make them",
        "pass a .safetensors file written by `studio features train` or a local DINOv2 folder "
        "(config.json + model.safetensors)",
    )


def read_feature_config(path: Path) -> dict:
    """The ``studio_config`` of a feature-model file, checked (header, metadata, known kind) without
    reading its tensors."""
    from safetensors import safe_open

    from studio.io.headers import check_safetensors

    check_safetensors(path, "feature model file")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    try:
        config = json.loads(meta["studio_config"])
        known = config["kind"] in MODEL_CLASSES
    except (KeyError, TypeError, json.JSONDecodeError):
        known = False
    if not known:
        raise StudioInputError(
            f"{path} is not a feature-model file (no valid 'studio_config' metadata); pass one written by `studio features train`."
        )
    return config


def check_feature_model(spec: str | Path) -> None:
    """Check, without reading any weights, that ``load_feature_model(spec)`` finds a model: the
    embedded file or a model file's header and config, or a DINO folder's config.json and weight
    file. Raises one StudioInputError line."""
    kind, path = _resolve(spec)
    if kind == "folder":
        check_folder(path)
    else:
        read_feature_config(path)


def load_feature_model(spec: str | Path, device: str | torch.device = "cpu") -> FeatureModel:
    """The feature model ``spec`` (see the module docstring), float32, in eval mode on ``device``
    ("auto" = CUDA when available)."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind, path = _resolve(spec)
    if kind == "folder":
        return HFDinoFeatures.from_folder(path).to(device).eval()
    from safetensors.torch import load_file

    config = read_feature_config(path)
    key = str(spec).strip()
    model = MODEL_CLASSES[config["kind"]].from_config(config, name=key if key in EMBEDDED else str(path))
    try:
        model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise StudioInputError(f"{path} does not match the model its config describes ({first}).") from None
    return model.to(device).eval()


def save_feature_model(model: FeatureModel, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``model``'s weights (fp16) and config (plus ``extra`` as the ``training`` record) to the
    .safetensors file ``path``, atomically."""
    from safetensors.torch import save_file

    from studio.io import atomic_path

    if model.kind not in MODEL_CLASSES:
        raise ValueError(f"{type(model).__name__} has no registered kind and cannot be saved")
    config = {"kind": model.kind, "format_version": FORMAT_VERSION, **model.config}
    if extra:
        config["training"] = dict(extra)
    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"studio_config": json.dumps(config), "format": "pt"})
    return path
