"""Checkpoint helpers of ``StudioTrainer``: which checkpoint a resumed run loads, and the training
state outside ``state_dict()`` that it needs to continue as the uninterrupted run would.

Choosing (``select_checkpoint``): ``--load-checkpoint FILE`` and ``--load-dir DIR --load-step N``
load exactly that file. ``--load-dir DIR`` alone takes the newest ``step-<digits>.ckpt`` of ``DIR``
that loads, skipping (one line each, with the reason) files that do not, e.g. a truncated copy;
other names are ignored, and the temporary files that ``studio.io.atomic.atomic_path`` leaves
when a run is killed while writing a checkpoint (``.step-<digits>.<random>.tmp.ckpt``) are removed.
Every load is ``torch.load(weights_only=True)``.

Saved under the checkpoint key ``"resume"`` by ``training_state`` (tensors and Python primitives
only, so ``weights_only`` loading works) and restored by ``restore_training_state``:

* ``rng``: the global generators: ``torch`` (CPU state, uint8 tensor), ``cuda`` (one uint8 tensor per
  device, when CUDA is available), ``numpy`` (legacy MT19937: ``keys`` int64 [624], ``pos``,
  ``has_gauss``, ``cached_gaussian``) and ``random`` (``version``, ``keys`` int64 [625], ``gauss_next``).
* ``objects``: for each module of the pipeline (``named_modules`` names: ``datamanager``,
  ``_model``, ``_model.texture_guidance``, ...) that has any, the state of its own generator
  attributes (``torch.Generator``, ``random.Random``, ``numpy.random.Generator``: the orbit
  cameras' sequence, Nerfstudio's camera shuffling) and its attributes named in
  ``STATE_ATTRIBUTES``.

Checkpoints without ``"resume"`` (earlier versions, other trainers) load as before: the run then
continues from the seeded state instead.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from nerfstudio.utils.rich_utils import CONSOLE

from studio.io.errors import StudioInputError

CHECKPOINT_NAME = re.compile(r"step-(\d+)\.ckpt")
"""Names of Nerfstudio checkpoints (``step-000001000.ckpt``); group 1 is the step."""

TEMP_NAME = re.compile(r"\.step-\d+\..*\.tmp\.ckpt")
"""Names of ``atomic_path``'s temporary checkpoint files (left behind by a killed write)."""

STATE_ATTRIBUTES = (
    "train_unseen_cameras",  # FullImageDatamanager: training views left in this pass (list of indices)
    "eval_unseen_cameras",  # FullImageDatamanager: evaluation views left in this pass
    "eval_index",  # OrbitDataManager: the last evaluation ring view
    "strategy_state",  # SplatModel: densification accumulators (grad2d [N], count [N], radii [N])
    "class_latents",  # BSD: prior-preservation samples drawn at the first bootstrap round [K,C,H,W]
)
"""Attributes (of any pipeline module) that change during training and are not in ``state_dict()``."""

Loaded = Tuple[Path, Dict[str, Any]]


# ---- choosing the checkpoint --------------------------------------------------------------------
def checkpoint_files(folder: Path) -> List[Path]:
    """The ``step-<digits>.ckpt`` files of ``folder``, newest (highest step) first."""
    found = [(int(m.group(1)), p) for p in Path(folder).iterdir() if (m := CHECKPOINT_NAME.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def remove_stale_temp_files(folder: Path) -> List[Path]:
    """Remove the temporary checkpoint files of writes that never finished; returns their paths."""
    stale = [p for p in Path(folder).iterdir() if TEMP_NAME.fullmatch(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
        CONSOLE.print(f"Removed {path.name}: an unfinished checkpoint write.")
    return stale


def read_checkpoint(path: Path) -> Dict[str, Any]:
    """A checkpoint loaded on the CPU with ``weights_only=True``; ``ValueError`` if it is not a
    Nerfstudio checkpoint (a dict with ``step`` and ``pipeline``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "step" not in state or "pipeline" not in state:
        raise ValueError("not a Nerfstudio checkpoint (no 'step' / 'pipeline')")
    return state


def _reason(err: Exception) -> str:
    """One line saying why a checkpoint did not load."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def last_good_checkpoint(folder: Path) -> Loaded:
    """(path, state) of the newest checkpoint of ``folder`` that loads; each skipped file gets one line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StudioInputError(f"--load-dir {folder} is not a folder.")
    remove_stale_temp_files(folder)
    for path in checkpoint_files(folder):
        try:
            return path, read_checkpoint(path)
        except Exception as err:  # noqa: BLE001 - any failure to read the file means: use the previous one
            CONSOLE.print(f"[bold yellow]Skipping checkpoint {path.name}[/bold yellow] ({_reason(err)}).")
    raise StudioInputError(f"--load-dir {folder} holds no loadable step-<n>.ckpt checkpoint.")


def _named_checkpoint(path: Path, flag: str) -> Loaded:
    """(path, state) of the checkpoint a flag names explicitly (no fallback: one clear error)."""
    if not path.is_file():
        raise StudioInputError(f"{flag} {path} does not exist.")
    try:
        return path, read_checkpoint(path)
    except Exception as err:  # noqa: BLE001
        raise StudioInputError(f"{flag} {path} cannot be loaded ({_reason(err)}).") from None


def select_checkpoint(
    load_dir: Optional[Path], load_step: Optional[int], load_checkpoint: Optional[Path]
) -> Optional[Loaded]:
    """(path, state) of the checkpoint that the trainer flags name (see module docstring), or None
    when none is given. ``load_dir`` wins over ``load_checkpoint``, as in Nerfstudio."""
    if load_dir is not None:
        if load_step is None:
            return last_good_checkpoint(Path(load_dir))
        remove_stale_temp_files(Path(load_dir))
        return _named_checkpoint(Path(load_dir) / f"step-{int(load_step):09d}.ckpt", "--load-step")
    if load_checkpoint is not None:
        return _named_checkpoint(Path(load_checkpoint), "--load-checkpoint")
    return None


# ---- generator states ---------------------------------------------------------------------------
def global_rng_state() -> Dict[str, Any]:
    """The ``rng`` entry: torch CPU (and CUDA) states, numpy's and ``random``'s global states."""
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, mt, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "random": {"version": version, "keys": torch.tensor(mt, dtype=torch.int64), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: Dict[str, Any]) -> None:
    """Restore what ``global_rng_state`` saved (CUDA only where the device count matches)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    rs = state["random"]
    random.setstate((rs["version"], tuple(int(k) for k in rs["keys"].tolist()), rs["gauss_next"]))


def generator_state(gen: Any) -> Optional[Dict[str, Any]]:
    """State of a ``torch.Generator``, ``random.Random`` or ``numpy.random.Generator``; None for other values."""
    if isinstance(gen, torch.Generator):
        return {"torch": gen.get_state()}
    if isinstance(gen, random.Random):
        version, mt, gauss_next = gen.getstate()
        return {"random": torch.tensor(mt, dtype=torch.int64), "version": version, "gauss_next": gauss_next}
    if isinstance(gen, np.random.Generator):
        return {"numpy": gen.bit_generator.state}
    return None


def set_generator_state(gen: Any, state: Dict[str, Any]) -> None:
    """Restore what ``generator_state`` saved into the generator ``gen`` (of the same kind)."""
    if "torch" in state:
        gen.set_state(state["torch"])
    elif "random" in state:
        gen.setstate((state["version"], tuple(int(k) for k in state["random"].tolist()), state["gauss_next"]))
    else:
        gen.bit_generator.state = state["numpy"]


# ---- per-module state ---------------------------------------------------------------------------
def _to(value: Any, device: Optional[torch.device]) -> Any:
    """``value`` (tensors, lists, tuples, dicts of them, primitives) with every tensor detached and
    moved to ``device`` (None: the CPU, cloned)."""
    if torch.is_tensor(value):
        return value.detach().to(device) if device is not None else value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    return value


def module_state(module: torch.nn.Module) -> Dict[str, Any]:
    """``{"generators": {attr: state}, "attributes": {attr: value}}`` of one module (empty parts omitted)."""
    own = vars(module)
    generators = {k: s for k, v in own.items() if (s := generator_state(v)) is not None}
    attributes = {k: _to(own[k], None) for k in STATE_ATTRIBUTES if k in own}
    return {name: part for name, part in (("generators", generators), ("attributes", attributes)) if part}


def training_state(pipeline: torch.nn.Module) -> Dict[str, Any]:
    """The checkpoint's ``resume`` entry for ``pipeline`` (see module docstring)."""
    objects = {name: s for name, module in pipeline.named_modules() if (s := module_state(module))}
    return {"rng": global_rng_state(), "objects": objects}


def restore_training_state(pipeline: torch.nn.Module, state: Optional[Dict[str, Any]], device: Any) -> None:
    """Restore ``training_state``'s entry into ``pipeline`` (tensors onto ``device``); None: nothing to do."""
    if state is None:
        return
    modules = dict(pipeline.named_modules())
    for name, saved in state.get("objects", {}).items():
        module = modules.get(name)
        if module is None:
            CONSOLE.print(f"Checkpoint state of '{name}' has no module in this pipeline; ignored.")
            continue
        for attr, gen_state in saved.get("generators", {}).items():
            if hasattr(module, attr):
                set_generator_state(getattr(module, attr), gen_state)
        for attr, value in saved.get("attributes", {}).items():
            setattr(module, attr, _to(value, torch.device(device)))
    set_global_rng_state(state["rng"])
