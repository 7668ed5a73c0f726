"""``StudioTrainerConfig``: Nerfstudio's TrainerConfig plus the studio command-line conventions.

* ``--preset {auto,tiny,full}`` (top level): ``full`` on CUDA, ``tiny`` without; the preset's
  overrides (``configs/<method>.yaml``) apply to every field the command line left alone
  (``studio.models.presets``).
* The inputs (``inputs()``: the trainer's flags, then the data manager's and the model's) are
  validated by ``studio.io.inputs.validate`` before Nerfstudio writes anything, so bad input
  stops the run with exit status 2 and one ``error:`` line on stderr, and leaves no output folder
  behind; ``--load-config`` is read with the restricted loader before Nerfstudio's unsafe
  ``yaml.Loader`` sees it. An input error found later, while the trainer sets up, removes the
  folder the run had just created.
* Learning-rate schedulers span the whole run (their ``max_steps`` = the schedule length); a run
  that starts from a stage file continues the schedule where the full run would be.
* ``StudioTrainer`` scales each optimizer group's learning rate by the model's ``lr_scale(group)``
  (3DGS scales the position learning rate by the scene extent), writes checkpoints atomically and,
  when resuming (``--load-dir``), points the optimizers at the parameters the checkpoint resized.

Nerfstudio's ``ns-train`` calls ``set_timestamp()`` once, before printing and saving the config,
so that is where the resolution happens; ``config.yml`` then holds the resolved values.
"""

from __future__ import annotations

import copy
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Type

import numpy as np
import torch
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from studio.io.atomic import atomic_path
from studio.io.errors import StudioInputError, exit_with_input_error
from studio.io.headers import check_safetensors
from studio.io.inputs import Input, Kind, validate
from studio.models.checkpoints import restore_training_state, select_checkpoint, training_state
from studio.models.presets import (
    PRESET_CHOICES,
    apply_learning_rates,
    apply_overrides,
    command_line_fields,
    load_preset,
    resolve_preset,
)
from studio.models.registry import registered_config
from studio.models.staged import rebind_optimizers, stage_bounds, stage_file_index


def plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into Python numbers/tensors, recursively.

    Nerfstudio's schedulers return numpy floats, which land in the scheduler state; checkpoints
    must load with ``torch.load(weights_only=True)`` (ns-eval / ns-export under torch >= 2.6).
    """
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return value


CREATED_BY_SAVE_CONFIG: Dict[Path, Path] = {}
"""Run folder -> the outermost folder ``save_config`` created for it (in this process)."""


def remove_new_run_dir(run_dir: Path) -> None:
    """Delete the folders ``save_config`` created for ``run_dir`` when they hold nothing but ``config.yml``."""
    root = CREATED_BY_SAVE_CONFIG.pop(Path(run_dir), None)
    if root is None or not root.is_dir():
        return
    if all(p.is_dir() or p.name == "config.yml" for p in root.rglob("*")):
        shutil.rmtree(root)


class StudioTrainer(Trainer):
    """Nerfstudio's Trainer with per-group learning-rate scales from the model."""

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        """Nerfstudio's setup; an input error found here (after ``config.yml`` was written) removes
        the run folder this process created and ends the command with one ``error:`` line."""
        try:
            super().setup(test_mode)
        except StudioInputError as err:
            remove_new_run_dir(self.base_dir)
            exit_with_input_error(err)

    def setup_optimizers(self) -> Optimizers:
        """Optimizers whose ``lr`` (and scheduler ``lr_final``) are multiplied by ``model.lr_scale(group)``."""
        param_groups = self.pipeline.get_param_groups()
        model = self.pipeline.model
        configs = {}
        for group, cfg in self.config.optimizers.items():
            scale = model.lr_scale(group) if hasattr(model, "lr_scale") else 1.0
            cfg = copy.deepcopy(cfg)
            cfg["optimizer"].lr *= scale
            scheduler = cfg.get("scheduler")
            if scheduler is not None and getattr(scheduler, "lr_final", None) is not None:
                scheduler.lr_final *= scale
            configs[group] = cfg
        optimizers = Optimizers(configs, param_groups)
        offset = self.config.schedule_length() - int(self.config.max_num_iterations)
        if offset > 0:  # started from a stage file: the schedules continue at the skipped step
            for scheduler in optimizers.schedulers.values():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
                    scheduler.last_epoch = offset - 1
                    scheduler.step()
        return optimizers

    def _load_checkpoint(self) -> None:
        """Load the checkpoint that ``--load-dir`` (its last good one, or ``--load-step``'s) or
        ``--load-checkpoint`` names (``studio.models.checkpoints.select_checkpoint``) as Nerfstudio
        does, then: the optimizers follow the parameters the checkpoint replaced, the generators
        and the training state outside ``state_dict()`` continue where the checkpoint left them, and
        a resumed run ends where the interrupted one would have ended (Nerfstudio would train
        ``max_num_iterations`` more steps after the loaded one)."""
        found = select_checkpoint(self.config.load_dir, self.config.load_step, self.config.load_checkpoint)
        if found is None:
            CONSOLE.print("No Nerfstudio checkpoint to load, so training from scratch.")
            return
        path, state = found
        self._load_state(state)
        CONSOLE.print(f"Done loading Nerfstudio checkpoint from {path}")
        self.config.max_num_iterations = max(int(self.config.max_num_iterations) - self._start_step, 0)

    def _load_state(self, state: Dict[str, Any]) -> None:
        """Nerfstudio's checkpoint layout (``save_checkpoint``) into the pipeline, optimizers,
        schedulers and grad scaler; the ``resume`` entry when present."""
        self._start_step = int(state["step"]) + 1
        self.pipeline.load_pipeline(state["pipeline"], state["step"])
        self.optimizers.load_optimizers(state["optimizers"])
        if "schedulers" in state and self.config.load_scheduler:
            self.optimizers.load_schedulers(state["schedulers"])
        self.grad_scaler.load_state_dict(state["scalers"])
        rebind_optimizers(self.optimizers, self.pipeline.get_param_groups())
        restore_training_state(self.pipeline, state.get("resume"), self.device)

    def save_checkpoint(self, step: int) -> None:
        """Nerfstudio's checkpoint layout plus ``resume`` (generator states and the training state
        outside ``state_dict()``, ``studio.models.checkpoints.training_state``), written atomically
        (a killed write leaves the previous checkpoints intact) and loadable with ``weights_only=True``."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        state = {
            "step": step,
            "pipeline": self.pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
            "resume": training_state(self.pipeline),
        }
        with atomic_path(ckpt_path) as tmp:
            torch.save(plain(state), tmp)
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob("*.ckpt"):
                if old != ckpt_path:
                    old.unlink()


@dataclass
class StudioTrainerConfig(TrainerConfig):
    """TrainerConfig with presets and up-front input validation (see module docstring)."""

    _target: Type = field(default_factory=lambda: StudioTrainer)
    preset: str = "auto"
    """Settings preset: auto, tiny or full. auto: full (paper settings) on CUDA, tiny (minutes on CPU) otherwise."""

    def __post_init__(self) -> None:
        """Refuse a ``--load-config`` the restricted loader cannot read, before ns-train loads it."""
        if self.load_config is not None:
            try:
                validate([Input("--load-config", Kind.CONFIG, self.load_config)])
            except StudioInputError as err:
                exit_with_input_error(err)

    def set_timestamp(self) -> None:
        """Validate inputs and resolve the preset, then set the timestamp (called once by ns-train)."""
        try:
            self.resolve(command_line_fields(sys.argv[1:]))
        except StudioInputError as err:
            exit_with_input_error(err)
        super().set_timestamp()

    def save_config(self) -> None:
        """Nerfstudio's ``config.yml``, remembering the first folder it creates (``remove_new_run_dir``)."""
        base = self.get_base_dir()
        root = base
        while not root.parent.exists() and root.parent != root:
            root = root.parent
        if not root.exists():
            CREATED_BY_SAVE_CONFIG[base] = root
        super().save_config()

    def inputs(self) -> List[Input]:
        """The run's inputs in checking order: trainer flags, then the data manager's, its dataparser's
        and the model's (``inputs()`` of their configs, when they have one)."""
        items = [
            Input("--preset", Kind.CHOICE, self.preset, choices=PRESET_CHOICES),
            Input("--load-config", Kind.CONFIG, self.load_config),
            Input("--output-dir", Kind.OUTPUT_DIR, self.output_dir),
            Input("--load-dir", Kind.CHECKPOINT, self.load_dir),
            Input("--load-checkpoint", Kind.CHECKPOINT, self.load_checkpoint, suffixes=(".ckpt",)),
        ]
        datamanager = self.pipeline.datamanager
        for part in (datamanager, getattr(datamanager, "dataparser", None), self.pipeline.model):
            items += part.inputs() if hasattr(part, "inputs") else []
        return items

    def resolve(self, explicit: Optional[Dict[str, set]] = None) -> None:
        """Apply the preset (``apply_preset``), then validate the inputs (the preset may choose
        them, e.g. the embedded priors of ``tiny``)."""
        requested = self.preset
        chosen = self.apply_preset(explicit)
        self.validate_inputs()
        if requested == "auto":
            reason = "CUDA is available" if chosen == "full" else "no CUDA device"
            CONSOLE.print(f"Using the '{chosen}' preset ({reason}); --preset tiny|full forces one.")
        self.resolve_run_length()
        for group in self.optimizers.values():
            scheduler = group.get("scheduler")
            if scheduler is not None and hasattr(scheduler, "max_steps"):
                scheduler.max_steps = self.schedule_length()

    def apply_preset(self, explicit: Optional[Dict[str, set]] = None) -> str:
        """Apply the preset to the fields not in ``explicit`` (per section: ``trainer``, ``model``,
        ``datamanager``, ``optimizers``) and still at the method's registered defaults; returns the
        preset chosen (``auto`` resolved)."""
        chosen = resolve_preset(self.preset)
        self.preset = chosen
        method = self.method_name or ""
        values = load_preset(method, chosen)
        default = registered_config(method) or type(self)()
        explicit = explicit or {}
        targets = {
            "trainer": (self, default),
            "model": (self.pipeline.model, default.pipeline.model),
            "datamanager": (self.pipeline.datamanager, default.pipeline.datamanager),
        }
        apply_learning_rates(
            self.optimizers,
            values["optimizers"],
            explicit.get("optimizers", ()),
            f"configs/{method}.yaml {chosen}.optimizers",
        )
        for section in targets:
            target, reference = targets[section]
            apply_overrides(
                target,
                reference,
                values[section],
                explicit.get(section, ()),
                f"configs/{method}.yaml {chosen}.{section}",
            )
        return chosen

    def resolve_run_length(self) -> None:
        """Hook for methods whose ``max_num_iterations`` follows from other settings (after the preset)."""

    def schedule_length(self) -> int:
        """Steps the learning-rate schedules span: the run's own (staged runs add the steps a stage file replaced)."""
        return int(self.max_num_iterations)

    def validate_inputs(self) -> None:
        """Check every input (``inputs()``) before any output; the first bad one raises StudioInputError.

        ns-train's ``--prompt`` alias skips an empty prompt; it is passed on here so it is refused."""
        if self.prompt is not None and hasattr(self.pipeline.model, "prompt"):
            self.pipeline.model.prompt = self.prompt
        datamanager = self.pipeline.datamanager
        dataparser = getattr(datamanager, "dataparser", None)
        if dataparser is not None and getattr(datamanager, "data", None) is not None:
            dataparser.data = datamanager.data
        validate(self.inputs())


@dataclass
class StagedTrainerConfig(StudioTrainerConfig):
    """StudioTrainerConfig for staged models (``studio.models.staged``) + ``--load-stage``.

    The model config provides ``stage_iters``, ``load_stage`` and ``stage_dir``; the run length is
    the sum of the stage lengths minus the steps a stage file replaces, and ``stage_dir`` is the
    run's folder.
    """

    load_stage: Optional[Path] = None
    """Start from a stage file written by an earlier run of the same method (skips its stages)."""

    def inputs(self) -> List[Input]:
        stage = Input("--load-stage", Kind.SAFETENSORS, self.load_stage, check=self._check_stage_file)
        return super().inputs() + [stage]

    def _check_stage_file(self, path: Path) -> None:
        """A safetensors file whose metadata names a stage of this method."""
        check_safetensors(Path(path), "stage file")
        stage_file_index(Path(path), self.pipeline.model.stage_names)

    def resolve_run_length(self) -> None:
        self.pipeline.model.load_stage = self.load_stage
        self.max_num_iterations = self.schedule_length() - self.steps_skipped()

    def steps_skipped(self) -> int:
        """Steps of the stages that ``load_stage`` replaces (0 without one)."""
        if self.load_stage is None:
            return 0
        index = stage_file_index(Path(self.load_stage), self.pipeline.model.stage_names)
        return stage_bounds(self.pipeline.model.stage_iters)[index]

    def schedule_length(self) -> int:
        """All stages' steps: the schedules of a run from a stage file match the full run's."""
        return sum(int(n) for n in self.pipeline.model.stage_iters)

    def setup(self, **kwargs):
        self.pipeline.model.stage_dir = self.get_base_dir()
        return super().setup(**kwargs)


EVAL_NEVER = 1_000_000
"""``steps_per_eval_batch`` / ``steps_per_eval_all_images`` of every method: no periodic full
evaluation during training (``ns-eval`` and ``studio eval`` do it on the finished run)."""


def method_specification(
    method_name: str,
    pipeline: Any,
    optimizers: Dict[str, Any],
    description: str,
    trainer: Type[StudioTrainerConfig] = StudioTrainerConfig,
    **trainer_fields: Any,
):
    """A Nerfstudio ``MethodSpecification`` with the studio conventions: CUDA when available, else
    CPU; viewer bound to 127.0.0.1; training ends by itself; fp32; ``trainer_fields`` the method's
    own trainer defaults (the ``full`` settings; ``configs/<method>.yaml`` holds the overrides)."""
    from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
    from nerfstudio.plugins.types import MethodSpecification

    fields = {"steps_per_eval_batch": EVAL_NEVER, "steps_per_eval_all_images": EVAL_NEVER, **trainer_fields}
    config = trainer(
        method_name=method_name,
        mixed_precision=False,
        pipeline=pipeline,
        optimizers=optimizers,
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        viewer=ViewerConfig(websocket_host="127.0.0.1", quit_on_train_completion=True, num_rays_per_chunk=1 << 15),
        vis="viewer",
        **fields,
    )
    return MethodSpecification(config=config, description=description)
