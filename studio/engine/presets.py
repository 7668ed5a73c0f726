"""``tiny`` / ``full`` presets, stored as YAML in ``configs/<method>.yaml`` (package ``studio.configs``).

Convention for every method: ``full`` (paper settings) on CUDA, ``tiny`` (minutes on 2 CPU
cores) without CUDA; ``--preset`` forces one. A preset file has up to three sections per preset,
``trainer`` (fields of the TrainerConfig), ``model`` (fields of the method's model config) and
``datamanager`` (fields of its data manager config);
a preset only fills fields that are still ``None``, so explicit command-line values win.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from typing import Any, Literal

import torch
import yaml

PresetName = Literal["auto", "tiny", "full"]


def resolve_preset(preset: PresetName) -> Literal["tiny", "full"]:
    """``auto`` -> ``full`` when CUDA is available, else ``tiny``."""
    if preset == "auto":
        return "full" if torch.cuda.is_available() else "tiny"
    if preset not in ("tiny", "full"):
        raise ValueError(f"Unknown preset {preset!r}; choose auto, tiny or full.")
    return preset


def load_preset(method: str, preset: Literal["tiny", "full"]) -> dict[str, dict[str, Any]]:
    """The ``{trainer: {...}, model: {...}, datamanager: {...}}`` values of ``method``'s preset."""
    text = resources.files("studio.configs").joinpath(f"{method}.yaml").read_text(encoding="utf-8")
    presets = yaml.safe_load(text)
    values = presets[preset]
    return {section: dict(values.get(section) or {}) for section in ("trainer", "model", "datamanager")}


def fill_unset(target: object, values: dict[str, Any]) -> list[str]:
    """Set each attribute of ``target`` that is None to its preset value; returns the names set.

    A field of a dataclass ``target`` whose declared default is not None could never take its
    preset value, so naming it in a preset is an error (ValueError), not a silent no-op."""
    defaults = {f.name: f.default for f in dataclasses.fields(target)} if dataclasses.is_dataclass(target) else {}
    filled = []
    for name, value in values.items():
        if not hasattr(target, name):
            raise AttributeError(f"preset field {name!r} does not exist on {type(target).__name__}")
        if defaults.get(name) is not None:
            raise ValueError(f"preset field {name!r} of {type(target).__name__} defaults to {defaults[name]!r}, not None, "
                             "so a preset value would never apply")
        if getattr(target, name) is None:
            setattr(target, name, value)
            filled.append(name)
    return filled
