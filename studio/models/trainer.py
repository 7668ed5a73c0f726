"""``StudioTrainerConfig``: Nerfstudio's TrainerConfig plus the studio command-line conventions.

* ``--preset {auto,tiny,full}`` (top level): ``full`` on CUDA, ``tiny`` without; the preset's
  overrides (``configs/<method>.yaml``) apply to every field the command line left alone
  (``studio.models.presets``).
* The inputs are validated before Nerfstudio writes anything, so bad input stops the run with
  one sentence and leaves no output folder behind.
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
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Type

import numpy as np
import torch
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from studio.io.atomic import atomic_path
from studio.io.errors import StudioInputError
from studio.models.presets import SECTIONS, apply_overrides, command_line_fields, load_preset, resolve_preset
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


class StudioTrainer(Trainer):
    """Nerfstudio's Trainer with per-group learning-rate scales from the model."""

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
        """Nerfstudio's loading, then the optimizers follow the parameters the checkpoint replaced,
        and a resumed run (``--load-dir``) ends where the interrupted one would have ended
        (Nerfstudio would train ``max_num_iterations`` more steps after the loaded one)."""
        super()._load_checkpoint()
        rebind_optimizers(self.optimizers, self.pipeline.get_param_groups())
        if self._start_step > 0:
            self.config.max_num_iterations = max(int(self.config.max_num_iterations) - self._start_step, 0)

    def save_checkpoint(self, step: int) -> None:
        """Nerfstudio's checkpoint layout, written atomically and loadable with ``weights_only=True``."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        state = {
            "step": step,
            "pipeline": self.pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
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
    preset: Literal["auto", "tiny", "full"] = "auto"
    """Settings preset: full (paper settings) on CUDA, tiny (minutes on CPU) otherwise."""

    def set_timestamp(self) -> None:
        """Validate inputs and resolve the preset, then set the timestamp (called once by ns-train)."""
        try:
            self.resolve(command_line_fields(sys.argv[1:]))
        except StudioInputError as err:
            CONSOLE.print(f"[bold red]error:[/bold red] {err}", soft_wrap=True)
            sys.exit(2)
        super().set_timestamp()

    def resolve(self, explicit: Optional[Dict[str, set]] = None) -> None:
        """Validate the inputs and apply the preset to the fields not in ``explicit`` (per section:
        ``trainer``, ``model``, ``datamanager``) and still at the method's registered defaults."""
        self.validate_inputs()
        chosen = resolve_preset(self.preset)
        if self.preset == "auto":
            reason = "CUDA is available" if chosen == "full" else "no CUDA device"
            CONSOLE.print(f"Using the '{chosen}' preset ({reason}); --preset tiny|full forces one.")
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
        for section in SECTIONS:
            target, reference = targets[section]
            apply_overrides(
                target,
                reference,
                values[section],
                explicit.get(section, ()),
                f"configs/{method}.yaml {chosen}.{section}",
            )
        self.resolve_run_length()
        for group in self.optimizers.values():
            scheduler = group.get("scheduler")
            if scheduler is not None and hasattr(scheduler, "max_steps"):
                scheduler.max_steps = self.schedule_length()

    def resolve_run_length(self) -> None:
        """Hook for methods whose ``max_num_iterations`` follows from other settings (after the preset)."""

    def schedule_length(self) -> int:
        """Steps the learning-rate schedules span: the run's own (staged runs add the steps a stage file replaced)."""
        return int(self.max_num_iterations)

    def validate_inputs(self) -> None:
        """Check the dataset named by ``--data`` (NeRF-synthetic or Nerfstudio) before any output."""
        from studio.data.dataparser import StudioDataParserConfig
        from studio.data.formats import validate_dataset

        datamanager = self.pipeline.datamanager
        if hasattr(datamanager, "validate"):  # data managers without a dataparser check their own input
            datamanager.validate()
            return
        dataparser = getattr(datamanager, "dataparser", None)
        if isinstance(dataparser, StudioDataParserConfig):
            if datamanager.data is not None:
                dataparser.data = datamanager.data
            validate_dataset(dataparser.data)


@dataclass
class StagedTrainerConfig(StudioTrainerConfig):
    """StudioTrainerConfig for staged models (``studio.models.staged``) + ``--load-stage``.

    The model config provides ``stage_iters``, ``load_stage`` and ``stage_dir``; the run length is
    the sum of the stage lengths minus the steps a stage file replaces, and ``stage_dir`` is the
    run's folder.
    """

    load_stage: Optional[Path] = None
    """Start from a stage file written by an earlier run of the same method (skips its stages)."""

    def resolve_run_length(self) -> None:
        model = self.pipeline.model
        model.load_stage = self.load_stage
        if self.load_stage is not None and not Path(self.load_stage).is_file():
            raise StudioInputError(f"--load-stage {self.load_stage} is not a file.")
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
