"""Named presets (``tiny``, ``full``) as overrides of a method's defaults, from ``configs/<method>.yaml``.

The dataclass fields (and the values a method's ``MethodSpecification`` sets) are the defaults;
a preset file holds, per preset, up to four sections of overrides: ``trainer`` (fields of the
TrainerConfig), ``model`` (the method's model config), ``datamanager`` and ``optimizers``
(``{group: learning rate}``, e.g. the VSD fake score's rate that differs between a small embedded
prior and a LoRA of a pretrained one). Each override is
checked against the dataclass when loaded: an unknown field or a value of the wrong type is one
error (``StudioInputError``). An override applies to a field the user left alone: one whose value
still equals the method's registered default and that was not named on the command line, so
command-line values always win. ``auto`` is ``full`` on CUDA and ``tiny`` without.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from pathlib import Path
from typing import Any, Dict, Iterable, List, Literal, Sequence

import torch
import yaml

from studio.io.errors import StudioInputError

SECTIONS = ("trainer", "model", "datamanager", "optimizers")
PRESET_DIRS: List[Path] = [Path(__file__).resolve().parents[2] / "configs"]
"""Folders searched for ``<method>.yaml`` (the repository's ``configs/``; see ``preset_file``)."""


PRESET_CHOICES = ("auto", "tiny", "full")
"""Values of ``--preset``."""


def resolve_preset(preset: str) -> Literal["tiny", "full"]:
    """``auto`` -> ``full`` when CUDA is available, else ``tiny``."""
    if preset == "auto":
        return "full" if torch.cuda.is_available() else "tiny"
    if preset not in PRESET_CHOICES:
        raise StudioInputError(f"--preset {preset!r} is not one of {', '.join(PRESET_CHOICES)}.")
    return preset  # type: ignore[return-value]


def preset_file(method: str) -> Path:
    """``<method>.yaml`` in the installed ``studio.configs`` package or one of ``PRESET_DIRS``."""
    from importlib import resources

    packaged = resources.files("studio.configs").joinpath(f"{method}.yaml")
    candidates = [Path(str(packaged))] + [d / f"{method}.yaml" for d in PRESET_DIRS]
    for path in candidates:
        if path.is_file():
            return path
    raise StudioInputError(f"method {method!r} has no preset file configs/{method}.yaml.")


def load_preset(method: str, preset: Literal["tiny", "full"]) -> Dict[str, Dict[str, Any]]:
    """The ``{trainer: {...}, model: {...}, datamanager: {...}, optimizers: {...}}`` overrides of
    ``method``'s preset."""
    path = preset_file(method)
    try:
        presets = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise StudioInputError(f"{path} is not valid YAML ({err.__class__.__name__}).") from None
    if preset not in presets:
        raise StudioInputError(f"{path} has no '{preset}' preset.")
    values = presets[preset] or {}
    unknown = set(values) - set(SECTIONS)
    if unknown:
        raise StudioInputError(
            f"{path}: preset '{preset}' has unknown section(s) {sorted(unknown)}; use {list(SECTIONS)}."
        )
    return {section: dict(values.get(section) or {}) for section in SECTIONS}


def _matches(value: Any, hint: Any) -> bool:
    """Whether a YAML ``value`` fits the type annotation ``hint`` (ints count as floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return True
    if origin is typing.Union:
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is Path:
        return isinstance(value, str)
    if origin in (tuple, list, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return all(_matches(v, args[0]) for v in value) if args else True
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return value in {m.value for m in hint}
    return True  # nested configs and other types are not preset material; accept as written


def _convert(value: Any, hint: Any) -> Any:
    """YAML lists become tuples for tuple-typed fields; strings become paths for ``Path`` fields."""
    hints = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
    if isinstance(value, list) and any(typing.get_origin(h) is tuple for h in hints):
        return tuple(value)
    if isinstance(value, str) and Path in hints:
        return Path(value)
    return value


def check_overrides(target: object, values: Dict[str, Any], where: str) -> Dict[str, Any]:
    """``values`` converted to ``target``'s field types; one ``StudioInputError`` for an unknown
    field or a mistyped value (``where`` names the preset in the message)."""
    cls = type(target)
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    hints = typing.get_type_hints(cls) if fields else {}
    out = {}
    for name, value in values.items():
        if name not in fields:
            raise StudioInputError(f"{where}: {cls.__name__} has no field {name!r}.")
        if not _matches(value, hints.get(name, Any)):
            raise StudioInputError(f"{where}: {cls.__name__}.{name} = {value!r} does not match its type {hints[name]}.")
        out[name] = _convert(value, hints.get(name, Any))
    return out


def apply_overrides(
    target: object, default: object, values: Dict[str, Any], explicit: Iterable[str] = (), where: str = "preset"
) -> List[str]:
    """Set each field of ``target`` named in ``values`` that the user left alone (equal to its value
    in ``default``, the registered method config, and not in ``explicit``); returns the names set."""
    applied = []
    explicit = set(explicit)
    for name, value in check_overrides(target, values, where).items():
        if name in explicit or getattr(target, name) != getattr(default, name):
            continue
        setattr(target, name, value)
        applied.append(name)
    return applied


def apply_learning_rates(
    optimizers: Dict[str, Dict[str, Any]], rates: Dict[str, Any], explicit: Iterable[str] = (), where: str = "preset"
) -> List[str]:
    """Set the learning rate of each optimiser group named in ``rates`` (``{group: lr}``) unless the
    command line set it (``explicit``: group names); returns the groups set. An unknown group or a
    non-number is one ``StudioInputError``."""
    applied = []
    for group, lr in rates.items():
        if group not in optimizers:
            raise StudioInputError(f"{where}: no optimiser group {group!r}; the method has {sorted(optimizers)}.")
        if not _matches(lr, float) or lr <= 0:
            raise StudioInputError(f"{where}: the learning rate of {group!r} must be a positive number, not {lr!r}.")
        if group not in set(explicit):
            optimizers[group]["optimizer"].lr = float(lr)
            applied.append(group)
    return applied


def command_line_fields(argv: Sequence[str]) -> Dict[str, set]:
    """Field names given as ``--flag`` on a tyro command line, per section: ``trainer`` (top-level
    flags), ``model`` (``--pipeline.model.*``), ``datamanager`` (``--pipeline.datamanager.*``),
    ``optimizers`` (the group of ``--optimizers.<group>.optimizer.lr``)."""
    out: Dict[str, set] = {section: set() for section in SECTIONS}
    prefixes = {"pipeline.model.": "model", "pipeline.datamanager.": "datamanager"}
    for token in argv:
        if not token.startswith("--"):
            continue
        name = token[2:].split("=", 1)[0].replace("-", "_")
        if name.startswith("optimizers.") and name.endswith(".optimizer.lr"):
            out["optimizers"].add(name[len("optimizers.") : -len(".optimizer.lr")])
            continue
        for prefix, section in prefixes.items():
            if name.startswith(prefix):
                out[section].add(name[len(prefix) :])
                break
        else:
            if "." not in name:
                out["trainer"].add(name)
    return out
