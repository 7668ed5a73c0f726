"""Restricted loader for Nerfstudio ``config.yml`` files.

Nerfstudio saves configs with PyYAML's Python tags and reads them with ``yaml.Loader``, which
can build any object (and so run code) from a file. This loader accepts only what a config
needs: ``python/object`` for config dataclasses of Nerfstudio or studio, ``python/name`` for
classes under those packages or ``torch.optim``, ``python/object/apply`` for ``pathlib`` paths
and Enum members of those packages, and ``python/tuple``. Anything else is refused with one
sentence.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import pathlib
from pathlib import Path
from typing import Any

import yaml

from studio.io.errors import StudioInputError

ALLOWED_PREFIXES = ("nerfstudio.", "studio.", "torch.optim.")
MOVED_MODULES = {
    "studio.engine.trainer": "studio.models.trainer",
    "studio.engine.splat_model": "studio.models.splat",
    "studio.engine.generation_model": "studio.models.generation",
    "studio.engine.prd_model": "studio.methods.prd.model",
    "studio.engine.sds_model": "studio.methods.sds.model",
    "studio.engine.dreamcraft3d_model": "studio.methods.dreamcraft3d.model",
    "studio.engine.orbit_datamanager": "studio.data.orbit",
    "studio.engine.reference_datamanager": "studio.data.reference",
}
"""Modules of earlier versions -> where their classes live now (runs trained before the move load)."""
RENAMED_FIELDS = {
    "lambda_rgb": "rgb_weight",
    "lambda_mask": "mask_weight",
    "lambda_depth_rel": "depth_rel_weight",
    "lambda_3d_sd": "nvs_sds_weight",
    "lambda_sd": "text_sds_weight",
    "lambda_normal_consistency": "normal_consistency_weight",
    "lambda_texture_sd": "texture_guidance_weight",
    "lambda_lora": "render_score_weight",
}
"""Config fields of earlier versions -> their current names."""
PATH_TYPES = {
    f"pathlib.{n}": getattr(pathlib, n)
    for n in ("Path", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath")
}


def _resolve(dotted: str, what: str) -> Any:
    module, _, name = dotted.rpartition(".")
    dotted = f"{MOVED_MODULES.get(module, module)}.{name}"
    if not dotted.startswith(ALLOWED_PREFIXES):
        raise StudioInputError(f"config refers to {dotted!r}, which is not an allowed {what}.")
    module_name, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        raise StudioInputError(f"config refers to {dotted!r}, which cannot be found.") from None


class RestrictedConfigLoader(yaml.SafeLoader):
    """SafeLoader plus the few Python tags of Nerfstudio configs (see module docstring)."""


def _object(loader: RestrictedConfigLoader, suffix: str, node: yaml.Node) -> Any:
    cls = _resolve(suffix, "config class")
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise StudioInputError(f"config refers to {suffix!r}, which is not a config dataclass.")
    instance = cls.__new__(cls)
    yield instance
    state = loader.construct_mapping(node, deep=True) if isinstance(node, yaml.MappingNode) else {}
    state = {RENAMED_FIELDS.get(key, key): value for key, value in state.items()}
    for f in dataclasses.fields(cls):  # fields added since the file was written take their defaults
        if f.name not in state and f.default is not dataclasses.MISSING:
            state[f.name] = f.default
        elif f.name not in state and f.default_factory is not dataclasses.MISSING:
            state[f.name] = f.default_factory()
    instance.__dict__.update(state)


def _name(loader: RestrictedConfigLoader, suffix: str, node: yaml.Node) -> Any:
    obj = _resolve(suffix, "class")
    if not isinstance(obj, type):
        raise StudioInputError(f"config refers to {suffix!r}, which is not a class.")
    return obj


def _apply(loader: RestrictedConfigLoader, suffix: str, node: yaml.Node) -> Any:
    args = loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode) else []
    if suffix in PATH_TYPES:
        return Path(*args)
    cls = _resolve(suffix, "enum")
    if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
        raise StudioInputError(f"config applies {suffix!r}, which is neither a path nor an enum.")
    return cls(*args)


RestrictedConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/object:", _object)
RestrictedConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", _name)
RestrictedConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/object/apply:", _apply)
RestrictedConfigLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node, deep=True))
)


def load_trainer_config(path: str | Path) -> Any:
    """Read a Nerfstudio ``config.yml`` with the restricted loader; returns the TrainerConfig."""
    path = Path(path)
    if not path.is_file():
        raise StudioInputError(f"config file {path} does not exist.")
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=RestrictedConfigLoader)  # noqa: S506
    except yaml.YAMLError as err:
        raise StudioInputError(f"{path} is not a valid config.yml ({err.__class__.__name__}).") from None
    if not hasattr(config, "pipeline") or not hasattr(config, "method_name"):
        raise StudioInputError(f"{path} is not a Nerfstudio trainer config.")
    return config
