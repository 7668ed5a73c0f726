"""``studio features train``: train the embedded 2D feature model ``toy-vit`` (DINO self-distillation).

* ``studio features train [--steps 10000] [--time-budget S] [--output PATH]`` renders (once, cached
  under ``~/.cache/distill-studio/priors-data``, shared with ``studio prior train``) ToyWorld
  training-split views, trains the patch-8 ViT by DINO (:mod:`studio.features.dino`) and writes the
  teacher's backbone as fp16 safetensors, by default to ``studio/features/weights/toy-vit.safetensors``
  (what ``load_feature_model("toy-vit")`` reads).

Heavy imports (torch, the models) happen inside ``main`` so ``studio`` starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from studio.cli.toydata_options import ToyDataOptions
from studio.io import StudioInputError
from studio.io.inputs import Input, Kind


@dataclass
class Train(ToyDataOptions):
    """Train the embedded feature model toy-vit by DINO on ToyWorld's training split (2-core CPU: ~1 h; a GPU: minutes)."""

    steps: int = 10000
    """Optimiser steps (the schedule's length)."""
    time_budget: float = 0.0
    """Seconds of training (0: no limit); the step count is cut to fit after 20 steps."""
    batch: int = 64
    """Images per step (each gives 2 global + 4 local crops)."""
    output: Optional[Path] = None
    """Weights file (.safetensors; default studio/features/weights/toy-vit.safetensors)."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    seed: int = 0
    """Seed of initialisation, crops and batches."""

    def inputs(self) -> list[Input]:
        return [
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".safetensors",)),
            Input("--cache-dir", Kind.OUTPUT_DIR, self.cache_dir),
        ]

    def main(self) -> None:
        import torch
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from studio.cli.devices import chosen_device
        from studio.features.dino import DinoConfig, train_dino
        from studio.features.registry import EMBEDDED, save_feature_model
        from studio.priors.toydata import load_or_make

        if self.steps < 1 or self.batch < 2 or self.data_seeds < 1 or self.data_views < 1:
            raise StudioInputError("--steps, --data-seeds and --data-views must be >= 1 and --batch >= 2.")
        device = chosen_device(self.device)
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        output = self.output or EMBEDDED["toy-vit"]
        console = Console()
        dcfg = self.data_config()
        data = load_or_make(dcfg, self.cache_dir, workers=self.workers, log=console.log)
        cfg = DinoConfig(steps=self.steps, batch=self.batch, seed=self.seed, time_budget=self.time_budget)
        console.log(f"DINO on {data.images.shape[0] * data.images.shape[1]} ToyWorld views ({device})")
        cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*cols, TextColumn("{task.fields[info]}"), console=console) as bar:
            task = bar.add_task("train toy-vit", total=self.steps, info="")
            model, stats = train_dino(
                cfg,
                data.images,
                device,
                progress=lambda step, loss: bar.update(task, completed=step, info=f"loss {loss:.3f}"),
            )
        stats["data"] = {"n_seeds": dcfg.n_seeds, "views": dcfg.views, "res": dcfg.res, "aa": dcfg.aa, "spp": dcfg.spp}
        stats["device"] = device
        save_feature_model(model, output, stats)
        console.log(
            f"Wrote {output} ({output.stat().st_size / 2**20:.1f} MiB; {stats['steps']} steps in {stats['seconds']:.0f}s, "
            f"loss {stats['loss_first']:.3f} -> {stats['loss_last']:.3f})"
        )


COMMANDS = {"train": Train}
