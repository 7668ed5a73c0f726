"""The staged-model base: a model as a sequence of stage objects over consecutive step ranges.

Stage ``k`` (0-based) covers the global steps ``[sum(iters[:k]), sum(iters[:k+1]))``; steps past
the end belong to the last stage. Each ``Stage`` owns what differs between stages: its optimiser
groups' parameters, its render, its losses, its per-step work (densification) and the tensors it
saves at its end (``<run>/<name>.safetensors``, which ``--load-stage`` starts a later run from).

The index of the last entered stage is a persistent buffer (``stage_index``), so a run resumed
with ``--load-dir`` continues in its stage without entering it again (entering a stage changes
state once: prd resets its progress, scales a learning rate, bakes visibility); what entering set
up that a checkpoint does not hold (a frozen parameter) the stage re-applies in ``on_load``.
Parameters that a stage replaces are swapped together with their optimiser state (``swap_param``,
as gsplat's ``strategy/ops._update_param_with_optimizer``).
"""

from __future__ import annotations

from itertools import accumulate
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from torch import Tensor, nn

from studio.io.atomic import atomic_path
from studio.io.errors import StudioInputError


def stage_bounds(iters: Sequence[int]) -> List[int]:
    """Cumulative end step of each stage."""
    return list(accumulate(int(n) for n in iters))


def stage_at(step: int, iters: Sequence[int]) -> int:
    """Index (0-based) of the stage that global step ``step`` belongs to (0 without stages)."""
    for k, end in enumerate(stage_bounds(iters)):
        if step < end:
            return k
    return max(len(iters) - 1, 0)


def stage_file_index(path: Path, names: Sequence[str]) -> int:
    """Index of the stage that wrote the stage file ``path`` (its ``stage`` metadata; files without
    it, as first-stage files of earlier versions, count as the first stage). A file of the last
    stage, of another method or not in safetensors format is one clear error."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            name = (f.metadata() or {}).get("stage", names[0])
    except Exception:  # safetensors raises its own error types for non-safetensors files
        raise StudioInputError(f"--load-stage {path} is not a safetensors stage file.") from None
    if name not in names[:-1]:
        raise StudioInputError(f"--load-stage {path} is not a stage file of this method ({', '.join(names[:-1])}).")
    return list(names).index(name)


def swap_param(optimizer: torch.optim.Optimizer, old: Tensor, new: nn.Parameter, keep_state: bool = True) -> None:
    """Replace ``old`` by ``new`` in ``optimizer``'s groups; its state (Adam moments) moves along
    when shapes match and ``keep_state``, else it restarts."""
    for group in optimizer.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    state = optimizer.state.pop(old, None)
    if keep_state and state is not None:
        shapes_match = all(v.shape == new.shape for k, v in state.items() if torch.is_tensor(v) and k != "step")
        if shapes_match:
            optimizer.state[new] = state


def rebind_optimizers(optimizers, param_groups: Dict[str, List[nn.Parameter]]) -> None:
    """Point each group of Nerfstudio ``optimizers`` at the model's current parameters (they are
    replaced when a checkpoint with another Gaussian count or mesh is loaded), keeping state."""
    for name, optimizer in optimizers.optimizers.items():
        params = param_groups.get(name)
        if params is None:
            continue
        current = [p for group in optimizer.param_groups for p in group["params"]]
        for old, new in zip(current, params):
            if old is not new:
                swap_param(optimizer, old, new)
        optimizers.parameters[name] = list(params)


class Stage:
    """One stage of a ``StagedModel``; subclasses override what their stage does differently."""

    name: str = ""

    def __init__(self, model: "StagedModel"):
        self.model = model

    def enter(self) -> None:
        """One-time changes when training reaches this stage (not when a run resumes inside it)."""

    def on_load(self) -> None:
        """Re-apply what ``enter`` set up that a checkpoint does not hold (e.g. a parameter's
        ``requires_grad``); called after a checkpoint taken in this stage is loaded."""

    def get_outputs(self, camera: Cameras) -> Dict[str, Tensor]:
        """Training render of this stage (default: the model's own)."""
        return self.model.render_outputs(camera)

    def get_loss_dict(self, outputs, batch) -> Dict[str, Tensor]:
        """Losses of this stage (default: the model's own)."""
        return self.model.base_losses(outputs, batch)

    def after_step(self, step: int) -> None:
        """Work after each optimiser step of this stage (e.g. densification); ``step`` is global."""

    def saved_tensors(self) -> Optional[Dict[str, Tensor]]:
        """Tensors written to ``<run>/<name>.safetensors`` at the end of the stage (None: no file)."""
        return None

    def load_tensors(self, tensors: Dict[str, Tensor]) -> None:
        """Restore what ``saved_tensors`` wrote (a run started with ``--load-stage``)."""


class StagedModel:
    """Mixin for a Nerfstudio model made of stages (see module docstring).

    The model calls ``init_stages`` in ``populate_modules`` and provides ``render_outputs`` (its
    render outside training) and ``base_losses``; its config provides ``stage_names`` (ClassVar),
    ``stage_iters``, ``load_stage`` and ``stage_dir``. Training renders and losses are the current
    stage's.
    """

    stages: List[Stage]
    step: int

    def init_stages(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)
        iters = self.stage_iters()
        if [st.name for st in self.stages] != self.stage_names() or len(self.stages) != max(len(iters), 1):
            raise ValueError(f"stages {[st.name for st in self.stages]} do not match the config's {self.stage_names()}")
        self.register_buffer("stage_index", torch.tensor(0, dtype=torch.long))
        self.step_offset = 0
        load_stage = getattr(self.config, "load_stage", None)
        if load_stage is not None and Path(load_stage).is_file():
            # a training run from a stage file (the trainer checked it); an evaluation takes
            # everything from its checkpoint, with or without the file
            self.load_stage_file(Path(load_stage))

    # ---- where we are ------------------------------------------------------------------------
    def stage_iters(self) -> List[int]:
        """Steps per stage; a model of one open-ended stage has no ``stage_iters`` (empty list)."""
        return [int(n) for n in getattr(self.config, "stage_iters", ())]

    def stage_names(self) -> List[str]:
        return list(self.config.stage_names)

    def stage_start(self, name: str) -> int:
        """First global step of stage ``name``."""
        return ([0] + stage_bounds(self.stage_iters()))[self.stage_names().index(name)]

    @property
    def stage(self) -> Stage:
        """The last entered stage (the stage training is in; the final stage of a loaded run)."""
        return self.stages[int(self.stage_index)]

    def advance_to(self, step: int) -> None:
        """Enter every stage up to the one of global step ``step`` (each once, in order)."""
        target = stage_at(step, self.stage_iters())
        while int(self.stage_index) < target:
            self.stage_index.fill_(int(self.stage_index) + 1)
            self.stage.enter()

    def get_outputs(self, camera: Cameras) -> Dict[str, Tensor]:
        """The current stage's render in training, ``render_outputs`` otherwise."""
        return self.stage.get_outputs(camera) if self.training else self.render_outputs(camera)

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        return self.stage.get_loss_dict(outputs, batch)

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        """Checkpoints of earlier versions lack ``stage_index``: they are finished runs (last stage)."""
        state_dict = dict(state_dict)
        state_dict.setdefault("stage_index", torch.tensor(len(self.stages) - 1, dtype=torch.long))
        result = super().load_state_dict(state_dict, strict=strict, **kwargs)
        self.stage.on_load()
        return result

    # ---- stage files -------------------------------------------------------------------------
    def save_stage_file(self, stage: Stage) -> None:
        """Write ``stage.saved_tensors()`` to the run folder (atomically), tagged with the stage name."""
        from safetensors.torch import save_file

        tensors = stage.saved_tensors()
        stage_dir = getattr(self.config, "stage_dir", None)
        if tensors is None or stage_dir is None:
            return
        path = Path(stage_dir) / f"{stage.name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"stage": stage.name})

    def load_stage_file(self, path: Path) -> None:
        from safetensors.torch import load_file

        index = stage_file_index(path, self.stage_names())
        self.stages[index].load_tensors(load_file(str(path)))
        self.stage_index.fill_(index)
        self.step_offset = stage_bounds(self.stage_iters())[index]

    # ---- training hooks ----------------------------------------------------------------------
    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        optimizers = attrs.optimizers
        self.nerfstudio_optimizers = optimizers
        ends = stage_bounds(self.stage_iters())

        def before(step: int) -> None:
            self.step = step + self.step_offset
            self.optimizers = optimizers.optimizers
            self.advance_to(self.step)

        def after(step: int) -> None:
            gstep = step + self.step_offset
            self.stage.after_step(gstep)
            if gstep + 1 in ends[:-1]:
                self.save_stage_file(self.stage)
            if ends and gstep + 1 == ends[-1]:
                self.on_train_end()

        return [
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], before),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], after),
        ]

    def on_train_end(self) -> None:
        """Work after the last step (e.g. exports)."""

    def replace_param(self, container: nn.ParameterDict, name: str, value: Tensor) -> nn.Parameter:
        """Install ``value`` as ``container[name]`` and in the optimiser group of the same name, with
        fresh state."""
        old = container[name]
        param = nn.Parameter(value.detach().to(old.device).contiguous())
        container[name] = param
        optimizers = getattr(self, "nerfstudio_optimizers", None)
        if optimizers is not None and name in optimizers.optimizers:
            swap_param(optimizers.optimizers[name], old, param, keep_state=False)
            optimizers.parameters[name] = [param]
        return param
