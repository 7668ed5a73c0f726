"""Priors by name: ``load_prior("toy-t2i")`` -> a :class:`~studio.priors.base.DiffusionPrior`.

``LOADERS`` maps each name to a loader ``fn(device) -> DiffusionPrior``:

* ``toy-t2i``, ``toy-nvs``, ``toy-nvs-64`` (64x64, trained from ``toy-nvs``), ``toy-mv`` (multi-view),
  ``toy-epipolar`` (Sparse3D's epipolar controller on ``toy-nvs``): the embedded priors, from the committed files ``studio/priors/weights/<name>.safetensors`` (package data);
* ``sd-2.1-base``, ``if-i``, ``zero123``, ``stable-zero123``, ``wan2.2-ti2v`` (multi-view): the diffusers adapters
  (:mod:`studio.priors.diffusers`) with their default repositories, from the local Hugging Face
  cache only. They load offline (``local_files_only=True``) and raise one
  :class:`~studio.io.StudioInputError` line saying what to put where when the weights are absent;
* ``zero123-epipolar``, ``stable-zero123-epipolar``: Sparse3D's epipolar controller on a Zero123 /
  Stable Zero123 snapshot (:mod:`studio.priors.diffusers.zero123_epipolar`; its trained
  ``controlnet/`` + ``epipolar/`` in the same folder, else a fresh one: exactly Zero123).

``load_prior`` also takes a toy-prior ``.safetensors`` path, a diffusers folder (Zero123 if it
has ``cc_projection``, with the epipolar controller if it also has ``epipolar/``, DeepFloyd IF if
its text encoder is T5, else Stable Diffusion), or
``<name>:<folder>`` to say which adapter reads a folder (``stable-zero123:/models/sz123``: a
Stable Zero123 snapshot has the same layout as a Zero123 one but another pose convention);
:func:`register_prior` adds names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from studio.io.errors import StudioInputError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

Loader = Callable[..., "object"]  # (device, dtype=None) -> DiffusionPrior


def _toy_loader(name: str, make: str = "") -> Loader:
    """Loader of the embedded prior ``name``; ``make``: the command that trains it (default
    ``studio prior train <name>``)."""

    def load(device: str = "cpu", dtype=None):  # the small embedded priors stay float32
        path = WEIGHTS_DIR / f"{name}.safetensors"
        if not path.is_file():
            how = make or f"studio prior train {name}"
            raise StudioInputError(f"The embedded prior {name!r} has no weights at {path}; run `{how}` to make them.")
        from studio.priors.toy import load_toy_prior

        return load_toy_prior(path, device)

    load.__doc__ = f"The embedded {name} prior from {WEIGHTS_DIR / (name + '.safetensors')}."
    load.weights_file = WEIGHTS_DIR / f"{name}.safetensors"
    return load


def _diffusers_loader(class_name: str, path: str | Path | None = None) -> Loader:
    """Loader of the adapter ``studio.priors.diffusers.<class_name>``: ``path`` a local folder, or
    None for the class's default repository in the local Hugging Face cache."""

    def load(device: str = "cpu", dtype=None):
        from studio.priors import diffusers

        return getattr(diffusers, class_name)(path, dtype=dtype, device=device)

    load.adapter, load.weights_folder = class_name, path
    return load


def _folder_class(folder: Path) -> str:
    """The adapter for a diffusers folder: Zero123 has ``cc_projection`` (+ ``epipolar/``: with
    Sparse3D's controller), IF a T5 text encoder."""
    if (folder / "cc_projection").exists() or any(folder.glob("cc_projection*")):
        return "Zero123EpipolarPrior" if (folder / "epipolar").is_dir() else "Zero123Prior"
    config = folder / "text_encoder" / "config.json"
    if config.is_file() and "T5" in config.read_text(errors="ignore"):
        return "DeepFloydIFPrior"
    return "StableDiffusionPrior"


LOADERS: dict[str, Loader] = {
    "toy-t2i": _toy_loader("toy-t2i"),
    "toy-nvs": _toy_loader("toy-nvs"),
    "toy-nvs-64": _toy_loader(
        "toy-nvs-64",
        "studio prior train toy-nvs --data-res 64 --init studio/priors/weights/toy-nvs.safetensors "
        "--output studio/priors/weights/toy-nvs-64.safetensors",
    ),
    "toy-mv": _toy_loader("toy-mv", "python -m studio.generators.train --phase dual"),
    "toy-epipolar": _toy_loader(
        "toy-epipolar", "studio prior train toy-epipolar --batch 16 --lr 3e-4 --ema-decay 0.995 --threads 1"
    ),
    "wan2.2-ti2v": _diffusers_loader("WanMultiViewPrior"),
    "sd-2.1-base": _diffusers_loader("StableDiffusionPrior"),
    "if-i": _diffusers_loader("DeepFloydIFPrior"),
    "zero123": _diffusers_loader("Zero123Prior"),
    "stable-zero123": _diffusers_loader("StableZero123Prior"),
    "zero123-epipolar": _diffusers_loader("Zero123EpipolarPrior"),
    "stable-zero123-epipolar": _diffusers_loader("StableZero123EpipolarPrior"),
}


def register_prior(name: str, loader: Loader) -> None:
    """Add (or replace) the loader of prior ``name``."""
    LOADERS[name] = loader


def available_priors() -> list[str]:
    return sorted(LOADERS)


def _loader_of(key: str) -> Loader | None:
    """The loader of a registered name, of ``<name>:<folder>`` (a diffusers name's adapter on that
    folder) or of a diffusers folder; None for anything else (a toy-prior file or an unknown name)."""
    if key in LOADERS:
        return LOADERS[key]
    name, sep, folder = key.partition(":")
    if sep and name in LOADERS:
        adapter = getattr(LOADERS[name], "adapter", None)
        if adapter is None:
            raise StudioInputError(f"prior {key!r}: only the pretrained priors take a folder after {name!r}:.")
        if not Path(folder).expanduser().is_dir():
            raise StudioInputError(f"prior {key!r}: the folder {folder!r} does not exist.")
        return _diffusers_loader(adapter, Path(folder).expanduser())
    path = Path(key).expanduser()
    if path.is_dir():
        return _diffusers_loader(_folder_class(path), path)
    return None


def check_prior(name_or_path: str | Path) -> None:
    """Check, without reading any weights, that ``load_prior(name_or_path)`` finds its files: the
    embedded file's header, a diffusers snapshot's sub-folders and scheduler config (local path or
    Hugging Face cache), or a toy-prior .safetensors header. Raises one StudioInputError line."""
    from studio.io.headers import check_safetensors

    key = str(name_or_path).strip()
    loader = _loader_of(key)
    if loader is None:
        path = Path(key).expanduser()
        if path.suffix == ".safetensors" or path.exists():
            check_safetensors(path, "prior file")
            return
        else:
            raise StudioInputError(
                f"unknown prior {key!r}; use one of {', '.join(available_priors())}, a diffusers folder or a .safetensors path."
            )
    if getattr(loader, "weights_file", None) is not None:
        if not loader.weights_file.is_file():
            loader("cpu")  # raises the message that says how to make the embedded weights
        check_safetensors(loader.weights_file, f"embedded prior {key}")
    elif getattr(loader, "adapter", None) is not None:
        from studio.priors import diffusers
        from studio.priors.diffusers.loading import snapshot_folder

        cls = getattr(diffusers, loader.adapter)
        folder = snapshot_folder(loader.weights_folder, cls.default_repo, cls.components, cls.what, "--prior-path")
        if not (folder / "scheduler" / "scheduler_config.json").is_file():
            raise StudioInputError(f"{cls.what}: {folder / 'scheduler' / 'scheduler_config.json'} is missing.")


def load_prior(name_or_path: str | Path, device: str = "cpu", dtype=None):
    """The prior called ``name_or_path`` (a registered name, ``<name>:<folder>``, a toy-prior
    .safetensors path or a diffusers folder), in eval mode on ``device`` ("auto" = CUDA when
    available). ``dtype`` (a torch dtype or "fp16"/"bf16"/"fp32") applies to pretrained priors, which
    load straight onto ``device`` in it (default: float16 on CUDA, float32 on the CPU); the small
    embedded priors stay float32."""
    if str(device) == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    key = str(name_or_path)
    loader = _loader_of(key)
    if loader is not None:
        return loader(device, dtype)
    path = Path(key).expanduser()
    if path.suffix == ".safetensors" or path.exists():
        if not path.is_file():
            raise StudioInputError(f"Prior file {path} does not exist.")
        from studio.priors.toy import load_toy_prior

        try:
            return load_toy_prior(path, device)
        except (ValueError, OSError) as err:
            raise StudioInputError(f"{path} is not a readable toy-prior file ({err}).") from None
    raise StudioInputError(f"Unknown prior {key!r}; use one of {', '.join(available_priors())} or a .safetensors path.")
