"""Where pretrained prior weights come from, under the offline rule.

Nothing here downloads. A prior's weights are either

* a local folder (a diffusers snapshot: ``unet/``, ``vae/``, ``scheduler/`` ...), used as is, or
* a Hugging Face repo id (``"stabilityai/stable-diffusion-2-1-base"``) that must already be in the
  local Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``), looked up with ``local_files_only=True``.

Everything else raises :class:`studio.io.errors.StudioInputError` with one sentence that says what
is missing and how to get it. Because every look-up is local, ``HF_HUB_OFFLINE=1`` changes nothing
here (it is honoured trivially); the cache folder is read from the environment at call time, so
``HF_HUB_CACHE``/``HF_HOME`` set after import are respected too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Optional, Union

from studio.io.errors import StudioInputError

__all__ = [
    "KNOWN_MODELS",
    "hf_cache_dir",
    "resolve_pretrained",
    "require_components",
    "download_hint",
    "resolve_embedded_or_path",
]

# repo id -> (human name, extra advice for getting it)
KNOWN_MODELS = {
    "stabilityai/stable-diffusion-2-1-base": ("Stable Diffusion 2.1-base", ""),
    "stabilityai/stable-diffusion-2-1": ("Stable Diffusion 2.1 (768, v-prediction)", ""),
    "DeepFloyd/IF-I-XL-v1.0": ("DeepFloyd IF stage I (XL)", " after accepting its license on huggingface.co"),
    "DeepFloyd/IF-I-L-v1.0": ("DeepFloyd IF stage I (L)", " after accepting its license on huggingface.co"),
    "DeepFloyd/IF-I-M-v1.0": ("DeepFloyd IF stage I (M)", " after accepting its license on huggingface.co"),
    "ashawkey/zero123-xl-diffusers": ("Zero-1-to-3 XL (diffusers layout)", ""),
}

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, read from the environment now (not at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def download_hint(repo_id: str, flag: str = "--prior-path") -> str:
    """The "how to get it" half of the missing-weights sentence."""
    extra = KNOWN_MODELS.get(repo_id, ("", ""))[1]
    return (
        f"download '{repo_id}' on a machine with internet{extra} "
        f"(`huggingface-cli download {repo_id}`) into the Hugging Face cache ({hf_cache_dir()}) "
        f"and copy that cache here, or pass a local folder with {flag}"
    )


def _looks_like_path(s: str) -> bool:
    return (
        s.startswith(("/", "./", "../", "~", "\\"))
        or s in (".", "..")
        or s.count("/") > 1
        or "\\" in s
        or not _REPO_ID.match(s)
    )


def _snapshot_in_cache(repo_id: str, cache_dir: Path) -> Optional[Path]:
    """The cached snapshot folder of ``repo_id`` or None; never touches the network."""
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo_id, cache_dir=str(cache_dir), local_files_only=True)
        if path and Path(path).is_dir():
            return Path(path)
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        pass
    except Exception:  # LocalEntryNotFoundError, missing refs/main, ...
        pass
    # A cache copied without refs/ (or with a stale ref): take the newest snapshot folder.
    snaps = cache_dir / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    if snaps.is_dir():
        cands = [p for p in snaps.iterdir() if p.is_dir() and any(p.iterdir())]
        if cands:
            return max(cands, key=lambda p: p.stat().st_mtime)
    return None


def resolve_pretrained(name_or_path: Union[str, os.PathLike], what: str, flag: str = "--prior-path") -> Path:
    """The local folder holding ``name_or_path``'s weights.

    ``name_or_path``: a local folder (used as is) or a Hugging Face repo id looked up only in the
    existing cache. ``what``: the human name used in the error message (e.g. "Stable Diffusion
    2.1-base"). ``flag``: the command-line option named in the error message.
    Raises :class:`StudioInputError` (one sentence) when nothing local is found.
    """
    s = os.fspath(name_or_path).strip()
    if not s:
        raise StudioInputError(f"{what} weights: empty model name or path")
    p = Path(s).expanduser()
    if p.is_dir():
        return p.resolve()
    if p.exists():
        raise StudioInputError(f"{what} weights: '{s}' is a file, but a folder (a diffusers snapshot) is expected")
    if _looks_like_path(s):
        raise StudioInputError(
            f"{what} weights not found: the folder '{s}' does not exist (pass an existing local folder "
            f"with {flag} or a Hugging Face repo id that is in the local cache)"
        )
    snap = _snapshot_in_cache(s, hf_cache_dir())
    if snap is None:
        raise StudioInputError(f"{what} weights not found: {download_hint(s, flag)}.")
    return snap


def require_components(
    folder: Path,
    components: Iterable[str],
    what: str,
    repo_id: Optional[str] = None,
    example_repo: Optional[str] = None,
) -> None:
    """Raise one StudioInputError when ``folder`` lacks any of the sub-folders ``components``.

    ``repo_id``: the cached repo the folder came from (its download hint is added);
    ``example_repo``: for a local folder, a repo whose snapshot has the expected layout."""
    folder = Path(folder)
    components = list(components)
    missing = [c for c in components if not (folder / c).is_dir()]
    if not missing:
        return
    names = ", ".join(f"'{m}/'" for m in missing)
    if repo_id:
        how = f"; {download_hint(repo_id)}"
    elif example_repo:
        how = f", e.g. `huggingface-cli download {example_repo} --local-dir {folder}`"
    else:
        how = ""
    raise StudioInputError(
        f"{what} weights at '{folder}' are incomplete: missing {names} "
        f"(a complete diffusers snapshot has {', '.join(c + '/' for c in components)}){how}."
    )


def resolve_embedded_or_path(
    spec: Union[str, os.PathLike], embedded: dict, what: str, make_hint: str, path_hint: str
) -> tuple[str, Path]:
    """Where a model named by ``spec`` lives: ``("file", path)`` for an embedded name (a key of
    ``embedded``, mapping to its committed weights file) or an existing file, ``("folder", path)`` for
    an existing folder. Otherwise one StudioInputError sentence: ``what`` names the kind of model,
    ``make_hint`` says how to make missing embedded weights, ``path_hint`` what path to pass."""
    key = str(spec).strip()
    if key in embedded:
        path = Path(embedded[key])
        if not path.is_file():
            raise StudioInputError(f"The embedded {what} {key!r} has no weights at {path}; {make_hint}.")
        return "file", path
    path = Path(key).expanduser()
    if path.is_dir():
        return "folder", path
    if path.is_file():
        return "file", path
    names = " nor ".join(map(repr, embedded))
    raise StudioInputError(
        f"{what[0].upper() + what[1:]} {key!r} is neither {names} nor an existing path; {path_hint}."
    )
