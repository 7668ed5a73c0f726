"""The one validation step every command runs before it writes anything.

A command (an ``ns-train`` method's config, a ``studio`` verb) declares its inputs as a list of
:class:`Input` (the flag the user typed, the input's :class:`Kind`, its value) and
:func:`validate` checks them all: a bad one raises one :class:`StudioInputError` sentence that
names the flag, the value and what is wrong. Headers are checked before any data is allocated
(:mod:`studio.io.headers`). The kinds whose checks need higher layers (datasets, priors, scenes)
get their check function from the declaring command.

The kinds are also the classes of the bad-input test matrix (``tests/test_bad_inputs.py``), which
builds its cases from these declarations, so a new method or verb joins it by declaring inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from studio.io import headers
from studio.io.errors import StudioInputError


class Kind(str, Enum):
    """Classes of user input (the rows of the bad-input matrix)."""

    DATASET = "dataset folder"
    """A posed dataset: NeRF-synthetic or Nerfstudio folder, with its camera (transforms) files."""
    CAMERAS = "camera file"
    """A transforms file without images (``studio.data.camera_file``); its check is given by the command."""
    IMAGE = "image"
    PROMPT = "prompt"
    PROMPT_FILE = "prompt file"
    """A UTF-8 text file of captions, one a line (``headers.check_prompt_file``)."""
    PLY = "PLY file"
    SCENE = "scene file"
    """What ``studio view``/``render`` open: a Gaussian PLY, a mesh or a run's config.yml."""
    EXR = "environment map"
    """An .exr or .hdr (Radiance) image."""
    SAFETENSORS = "safetensors file"
    CONFIG = "run config"
    """A run's ``config.yml`` (read with the restricted loader)."""
    CHECKPOINT = "checkpoint"
    """A checkpoint folder (``--load-dir``) or file (``--load-checkpoint``)."""
    PRIOR = "prior"
    """A prior name, a local diffusers folder or a toy-prior .safetensors file."""
    CHOICE = "choice"
    """A name from a fixed list (presets, methods, prior names of a verb)."""
    OUTPUT_DIR = "output folder"
    OUTPUT_FILE = "output file"


@dataclass(frozen=True)
class Input:
    """One user input of a command.

    ``flag``: the option as typed (``--data``, ``PATH``); ``value``: None means not given;
    ``check``: a function ``value -> None`` raising StudioInputError (default: the kind's own);
    ``suffixes``: accepted file suffixes (lower case, with the dot); ``choices``: accepted names
    of a CHOICE; ``required``: the command needs a value; ``pattern``: how one value is written
    on the command line (``{}`` stands for it, e.g. ``NAME={}`` for ``--env NAME=PATH``).
    """

    flag: str
    kind: Kind
    value: Any
    check: Optional[Callable[[Any], Any]] = None
    suffixes: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    required: bool = False
    pattern: str = "{}"


def validate(inputs: Sequence[Input]) -> None:
    """Check every input in order; the first bad one raises StudioInputError naming its flag."""
    for item in inputs:
        try:
            _check(item)
        except StudioInputError as err:
            message = str(err)
            raise StudioInputError(message if message.startswith(item.flag) else f"{item.flag}: {message}") from None


def _check(item: Input) -> None:
    if item.value is None or (isinstance(item.value, (list, tuple)) and not item.value):
        if item.required:
            raise StudioInputError(f"a {item.kind.value} is required.")
        return
    if item.kind is Kind.CHOICE:
        if str(item.value) not in item.choices:
            raise StudioInputError(f"{item.value!r} is not one of {', '.join(item.choices)}.")
        return
    if item.suffixes and Path(str(item.value)).suffix.lower() not in item.suffixes:
        raise StudioInputError(f"{item.value} must end in {' or '.join(item.suffixes)}.")
    check = item.check or _DEFAULT_CHECKS.get(item.kind)
    if check is None:
        raise TypeError(f"input {item.flag} of kind {item.kind.name} needs a check function")
    check(item.value)


def check_mesh(path: Path, what: str = "mesh file") -> None:
    """Header check of a mesh file (.glb/.gltf/.ply/.obj/.off/.stl) by suffix (OBJ has no header: only existence)."""
    path = Path(path)
    suffix = path.suffix.lower()
    per_suffix = {
        ".ply": headers.check_ply,
        ".glb": headers.check_glb,
        ".gltf": headers.check_gltf,
        ".stl": headers.check_stl,
        ".off": headers.check_off,
    }
    if suffix in per_suffix:
        per_suffix[suffix](path, what)
    else:
        headers.require_file(path, what)


MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".off", ".stl")
CONFIG_SUFFIXES = (".yml", ".yaml")


def check_scene(path: Path) -> None:
    """A Gaussian PLY, a mesh or a run's config.yml (what ``studio view``/``render`` open), by header."""
    path = Path(path)
    headers.require_file(path, "scene file")
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES + CONFIG_SUFFIXES:
        kinds = ", ".join(MESH_SUFFIXES + CONFIG_SUFFIXES)
        raise StudioInputError(f"scene file {path} has an unsupported extension; expected one of {kinds}.")
    if suffix in CONFIG_SUFFIXES:
        check_run_config(path)
    else:
        check_mesh(path, "scene file")


def check_envmap(path: Path) -> None:
    """Header check of an .exr or .hdr environment map."""
    path = Path(path)
    if path.suffix.lower() == ".hdr":
        headers.check_hdr(path, "environment map")
    else:
        headers.check_exr(path, "environment map")


def check_run_config(path: Path) -> Any:
    """The TrainerConfig in a run's ``config.yml``, read with the restricted loader."""
    from studio.io.config_loader import load_trainer_config

    path = Path(path)
    size = headers.require_file(path, "run config")
    if size > headers.SAFETENSORS_HEADER_LIMIT:
        raise StudioInputError(f"run config {path} is {size:,} bytes, too large for a config.yml.")
    return load_trainer_config(path)


CHECKPOINT_GLOB = "step-*.ckpt"
ZIP_MAGIC = b"PK\x03\x04"


def check_checkpoint(path: Path) -> None:
    """A ``--load-dir`` folder holding ``step-*.ckpt`` files, or one .ckpt file (a torch zip archive)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob(CHECKPOINT_GLOB))
        if not files:
            raise StudioInputError(f"checkpoint folder {path} holds no {CHECKPOINT_GLOB} file.")
        return
    headers.require_file(path, "checkpoint")
    with open(path, "rb") as f:
        if f.read(4) != ZIP_MAGIC:
            raise StudioInputError(f"checkpoint {path} is not a PyTorch checkpoint (not a zip archive).")


def check_output_dir(path: Path) -> None:
    headers.writable_location(Path(path), "output folder", is_dir=True)


def check_output_file(path: Path) -> None:
    headers.writable_location(Path(path), "output file", is_dir=False)


_DEFAULT_CHECKS: dict[Kind, Callable[[Any], Any]] = {
    Kind.IMAGE: lambda v: headers.check_image(Path(v)),
    Kind.PROMPT: headers.check_prompt,
    Kind.PROMPT_FILE: lambda v: headers.check_prompt_file(Path(v)),
    Kind.PLY: lambda v: headers.check_ply(Path(v)),
    Kind.SCENE: check_scene,
    Kind.EXR: check_envmap,
    Kind.SAFETENSORS: lambda v: headers.check_safetensors(Path(v)),
    Kind.CONFIG: check_run_config,
    Kind.CHECKPOINT: check_checkpoint,
    Kind.OUTPUT_DIR: check_output_dir,
    Kind.OUTPUT_FILE: check_output_file,
}
