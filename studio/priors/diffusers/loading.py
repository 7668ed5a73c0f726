"""Loading a diffusers snapshot folder under the offline rule.

``snapshot_folder`` finds the folder: a local path, or a repo id already in the Hugging Face cache
(:mod:`studio.io.pretrained`; nothing is downloaded). Every ``from_pretrained`` here runs with
``local_files_only=True``. Missing weights, a missing sub-folder or an unreadable component raise
one :class:`~studio.io.errors.StudioInputError` line saying what to put where.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from studio.io.errors import StudioInputError
from studio.io.pretrained import require_components, resolve_pretrained
from studio.priors.schedule import DIFFUSERS_PREDICTION_TYPES

_DTYPES = {
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


def snapshot_folder(path, default_repo: str | None, components: Sequence[str], what: str, flag: str) -> Path:
    """The local snapshot folder of ``path`` (a folder or a cached repo id; None: ``default_repo``),
    checked to hold the sub-folders ``components``. ``what``: the model's human name, ``flag``: the
    command-line option the error messages name."""
    name = path if path is not None else default_repo
    if name is None:
        raise StudioInputError(f"{what}: no weights given (pass a local folder with {flag})")
    folder = resolve_pretrained(name, what, flag=flag)
    repo = None if Path(str(name)).expanduser().is_dir() else str(name)  # a repo id from the cache
    require_components(folder, components, what, repo_id=repo, example_repo=default_repo)
    return folder


def default_device(device) -> torch.device:
    """``device``, or CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_dtype(dtype, device: torch.device) -> torch.dtype:
    """``dtype`` (a torch dtype or a name such as "fp16"), or float16 on CUDA and float32 on CPU."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype] if isinstance(dtype, str) else dtype


def _dtype_kwarg(cls) -> str:
    """``torch_dtype`` for diffusers models and old transformers, ``dtype`` for transformers >= 4.56."""
    try:
        import transformers

        if issubclass(cls, transformers.PreTrainedModel):
            major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
            return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    except ImportError:  # pragma: no cover
        pass
    return "torch_dtype"


def _first_line(err: BaseException | None) -> str:
    text = str(err).strip() if err is not None else ""
    return text.splitlines()[0] if text else type(err).__name__


def load_component(cls, folder: Path, sub: str, what: str, dtype: torch.dtype | None = None):
    """``cls.from_pretrained(folder/sub, local_files_only=True)``, trying the fp16 variant files too.
    ``what`` is the model's human name used in the error."""
    d = folder / sub
    variants: list[str | None] = [None]
    if any(".fp16." in f.name for f in d.iterdir()):
        variants.append("fp16")
    err: BaseException | None = None
    for variant in variants:
        kwargs = {"local_files_only": True}
        if variant:
            kwargs["variant"] = variant
        if dtype is not None:
            kwargs[_dtype_kwarg(cls)] = dtype
        try:
            return cls.from_pretrained(str(d), **kwargs)
        except (OSError, ValueError, RuntimeError, KeyError) as e:  # missing/corrupt files
            err = err or e
    raise StudioInputError(f"{what}: could not load '{sub}/' from '{folder}' ({_first_line(err)})")


def load_tokenizer(folder: Path, sub: str, what: str):
    """``AutoTokenizer`` from ``folder/sub``, offline."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder / sub), local_files_only=True)
    except ImportError as e:  # e.g. a sentencepiece-only T5 tokenizer without sentencepiece
        raise ImportError(
            f"{what}: loading '{sub}/' needs an extra package ({e}); pip install sentencepiece protobuf"
        ) from e
    except (OSError, ValueError, KeyError) as e:
        raise StudioInputError(f"{what}: could not load '{sub}/' from '{folder}' ({_first_line(e)})") from e


def read_scheduler_config(folder: Path, what: str) -> dict:
    """``scheduler/scheduler_config.json`` of a snapshot; one StudioInputError line when it is
    missing or unreadable."""
    cfg_file = folder / "scheduler" / "scheduler_config.json"
    if not cfg_file.is_file():
        raise StudioInputError(f"{what}: '{cfg_file}' is missing (the scheduler config holds the noise schedule)")
    try:
        return json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise StudioInputError(f"{what}: '{cfg_file}' is not valid JSON ({e})") from e


def load_scheduler(folder: Path, what: str) -> tuple[Tensor, str, dict]:
    """(alphas_cumprod float32 [T], our prediction type, the raw config) from
    ``scheduler/scheduler_config.json``: only the noise schedule is read, no scheduler object is kept."""
    from diffusers import DDPMScheduler

    cfg = read_scheduler_config(folder, what)
    pred = cfg.get("prediction_type", "epsilon")
    if pred not in DIFFUSERS_PREDICTION_TYPES:
        raise StudioInputError(f"{what}: scheduler prediction_type '{pred}' is not supported (epsilon or v_prediction)")
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "rescale_betas_zero_snr")
    sched = DDPMScheduler(**{k: cfg[k] for k in keys if k in cfg})
    return sched.alphas_cumprod.detach().clone().float(), DIFFUSERS_PREDICTION_TYPES[pred], cfg


def load_state_dict(d: Path) -> dict[str, Tensor]:
    """The tensors of the single weights file in ``d`` (safetensors preferred, else a torch .bin)."""
    for name in (
        "diffusion_pytorch_model.safetensors",
        "model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
    ):
        if (d / name).is_file():
            from safetensors.torch import load_file

            return load_file(str(d / name))
    for name in ("diffusion_pytorch_model.bin", "pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"):
        if (d / name).is_file():
            return torch.load(str(d / name), map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no weights file in '{d}'")


__all__ = [
    "default_device",
    "default_dtype",
    "load_component",
    "load_scheduler",
    "load_state_dict",
    "load_tokenizer",
    "snapshot_folder",
]
