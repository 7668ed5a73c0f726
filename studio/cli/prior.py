"""``studio prior train|sample``: train the embedded ToyWorld priors and look at what a prior knows.

* ``studio prior train toy-t2i [--steps N] [--batch 32] [--data-seeds S --data-views V] [--output PATH]``
  renders (once, cached under ``~/.cache/distill-studio/priors-data``) ToyWorld training-split views,
  trains with AdamW + EMA and writes fp16 safetensors (+ a JSON copy of the config) atomically,
  by default to ``studio/priors/weights/<name>.safetensors`` (what ``load_prior(name)`` reads).
* ``studio prior sample toy-t2i --prompt "a glossy red sphere" --output grid.png``: DDIM + CFG
  samples, one row per prompt. ``studio prior sample toy-nvs --scene-seed 5 --output grid.png``:
  a reference view (rendered from a ToyWorld scene, or ``--reference image.png``) followed by
  novel views around it, one row per ``--elevation-delta``.

Heavy imports (torch, the models) happen inside ``main`` so ``studio`` starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import tyro

from studio.io import StudioInputError
from studio.io.headers import check_prompt
from studio.io.inputs import Input, Kind

TRAINABLE = ("toy-t2i", "toy-nvs")
"""The embedded priors ``studio prior train`` makes."""


@dataclass
class Train:
    """Train an embedded toy prior on ToyWorld's training split (CPU: ~30-45 min with the defaults)."""

    name: tyro.conf.Positional[str]
    """Which prior: toy-t2i (text -> image) or toy-nvs (reference image + relative camera -> view)."""
    steps: int = 4000
    """Optimiser steps."""
    time_budget: float = 0.0
    """Seconds of training (0: no limit); the step count is cut to fit after 30 steps (e.g. on a lent GPU)."""
    batch: int = 32
    """Images per step."""
    lr: float = 5e-4
    """Peak learning rate (AdamW; 200-step warm-up, cosine decay to 10%)."""
    data_seeds: int = 2000
    """ToyWorld training seeds to render (single objects; held-out seeds/captions are skipped)."""
    data_views: int = 8
    """Random views per seed (toy-nvs pairs two views of one seed)."""
    data_spp: int = 16
    """Light samples per pixel of the training renders."""
    data_aa: int = 4
    """Primary rays per pixel of the training renders."""
    workers: int = 2
    """Processes that render the data."""
    cache_dir: Optional[Path] = None
    """Folder of the rendered data (default ~/.cache/distill-studio/priors-data)."""
    output: Optional[Path] = None
    """Weights file (.safetensors; default studio/priors/weights/<name>.safetensors)."""
    preview: Optional[Path] = None
    """Also write a sample grid PNG of the trained prior here."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    seed: int = 0
    """Seed of initialisation, batches and noise."""
    channels: Tuple[int, ...] = (64, 128, 128)
    """UNet widths per resolution (32, 16, 8); the committed CPU-trained weights use (32, 64, 64)."""

    def inputs(self) -> list[Input]:
        return [
            Input("NAME", Kind.CHOICE, self.name, choices=TRAINABLE, required=True),
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".safetensors",)),
            Input("--preview", Kind.OUTPUT_FILE, self.preview, suffixes=(".png",)),
            Input("--cache-dir", Kind.OUTPUT_DIR, self.cache_dir),
        ]

    def main(self) -> None:
        import time

        import torch
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from studio.priors.toy import save_toy_prior
        from studio.priors.toydata import DataConfig, load_or_make
        from studio.priors.train import TrainConfig, default_output, resolve_device, train_prior

        output = self.output or default_output(self.name)
        if self.steps < 1 or self.batch < 1 or self.data_seeds < 1 or self.data_views < 2:
            raise StudioInputError("--steps, --batch and --data-seeds must be >= 1 and --data-views >= 2.")
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        console = Console()
        dcfg = DataConfig(n_seeds=self.data_seeds, views=self.data_views, spp=self.data_spp, aa=self.data_aa)
        cols = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        with Progress(*cols, console=console) as bar:
            task = bar.add_task("render data", total=self.data_seeds, info="")
            data = load_or_make(
                dcfg,
                self.cache_dir,
                workers=self.workers,
                log=console.log,
                progress=lambda done, total: bar.update(task, completed=done),
            )
            bar.update(task, completed=self.data_seeds)
        device = resolve_device(self.device)
        cfg = TrainConfig(
            name=self.name,
            steps=self.steps,
            batch=self.batch,
            lr=self.lr,
            seed=self.seed,
            data=dcfg,
            time_budget=self.time_budget,
            arch={"channels": list(self.channels)},
        )
        console.log(
            f"Training {self.name} on {data.n_seeds * data.n_views} views ({device}, {torch.get_num_threads()} threads)"
        )
        t0 = time.time()
        with Progress(*cols, console=console) as bar:
            task = bar.add_task(f"train {self.name}", total=self.steps, info="")
            prior, stats = train_prior(
                cfg,
                data,
                device,
                progress=lambda step, loss: bar.update(task, completed=step, total=cfg.steps, info=f"loss {loss:.4f}"),
            )
        save_toy_prior(prior, output)
        size = output.stat().st_size / 2**20
        console.log(f"Wrote {output} ({size:.1f} MiB, {time.time() - t0:.0f}s, final loss {stats['final_loss']:.4f})")
        if self.preview is not None:
            Sample(name=str(output), output=self.preview, device=str(device), seed=self.seed).main()


@dataclass
class Sample:
    """Sample a prior (DDIM + classifier-free guidance) into a PNG grid."""

    name: tyro.conf.Positional[str]
    """Prior name (toy-t2i, toy-nvs) or a toy-prior .safetensors path."""
    output: Path
    """PNG grid to write."""
    prompt: Tuple[str, ...] = (
        "a matte red sphere",
        "a glossy blue box",
        "a polished gold torus",
        "a mushroom with a glossy red cap",
    )
    """toy-t2i: one row per prompt."""
    n: int = 8
    """Samples per row (toy-nvs: novel views at azimuth steps of 360/n degrees)."""
    steps: int = 50
    """DDIM steps."""
    guidance: float = 3.0
    """Classifier-free guidance scale (1: none)."""
    eta: float = 0.0
    """DDIM eta (0: deterministic)."""
    reference: Optional[Path] = None
    """toy-nvs: reference image (RGBA is composited on white; resized to 32x32; object centred)."""
    scene_seed: int = 0
    """toy-nvs without --reference: render the reference from this ToyWorld seed (any split)."""
    elevation: float = 20.0
    """toy-nvs: elevation (degrees) of the rendered reference view."""
    elevation_delta: Tuple[float, ...] = (0.0, 20.0)
    """toy-nvs: one row per elevation change (degrees) of the novel views."""
    scale: int = 4
    """Pixel upscaling of the PNG (nearest)."""
    device: str = "auto"
    """auto, cpu or cuda."""
    seed: int = 0
    """Noise seed (the grid is a function of it)."""

    def inputs(self) -> list[Input]:
        from studio.priors import check_prior

        return [
            Input("NAME", Kind.PRIOR, self.name, check=check_prior, required=True),
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".png",), required=True),
            Input("--prompt", Kind.PROMPT, self.prompt, check=lambda prompts: [check_prompt(p) for p in prompts]),
            Input("--reference", Kind.IMAGE, self.reference),
        ]

    def main(self) -> None:
        if self.n < 1 or self.steps < 1 or self.scale < 1:
            raise StudioInputError("--n, --steps and --scale must be >= 1.")
        import io
        import math

        import numpy as np
        import torch
        from PIL import Image

        from studio.io import atomic_write_bytes
        from studio.priors import load_prior
        from studio.priors.sampling import sample
        from studio.priors.toy import ToyNVSPrior

        prior = load_prior(self.name, device=self.device)
        gen = torch.Generator().manual_seed(self.seed)

        def draw(cond):  # [n,3,H,W] in [0,1]
            return prior.decode(
                sample(prior, self.n, cond, None, self.guidance, self.steps, gen, self.eta, clamp_x0=True)
            )

        rows = []
        if isinstance(prior, ToyNVSPrior):
            ref = self._reference()  # [1,3,32,32] in [0,1]
            az = torch.arange(self.n, dtype=torch.float32) * (2 * math.pi / self.n)
            for de in self.elevation_delta:
                pose = ToyNVSPrior.relative_pose(0.0, 0.0, 0.0, math.radians(de), az, 0.0)
                cond = prior.condition(image=ref.to(prior.device), pose=pose)
                imgs = draw(cond)
                rows.append(torch.cat([ref.cpu(), imgs.cpu()]))
            print(
                f"toy-nvs: reference, then azimuth +0..{360 - 360 / self.n:.0f} deg; rows: elevation delta "
                f"{', '.join(f'{d:g}' for d in self.elevation_delta)} deg"
            )
        else:
            for p in self.prompt:
                cond = prior.condition(text=p)
                rows.append(draw(cond).cpu())
                print(f"row {len(rows)}: {p!r}")
        grid = torch.stack([torch.cat(list(r), 2) for r in rows])  # [R,3,H,W*n]
        grid = torch.cat(list(grid), 1)  # [3, R*H, W*n]
        arr = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        img = img.resize((img.width * self.scale, img.height * self.scale), Image.NEAREST)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        atomic_write_bytes(self.output, buf.getvalue())
        print(f"Wrote {self.output}")

    def _reference(self):
        import math

        import numpy as np
        import torch

        if self.reference is not None:
            from PIL import Image

            im = Image.open(self.reference)
            rgba = np.asarray(im.convert("RGBA"), np.float32) / 255.0
            rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
            t = torch.from_numpy(rgb).permute(2, 0, 1)[None]
            return torch.nn.functional.interpolate(t, size=(32, 32), mode="area") if t.shape[-1] != 32 else t
        from studio.priors.toydata import DataConfig, render_views

        cfg = DataConfig(aa=16, spp=64)
        out = render_views(
            self.scene_seed,
            math.radians(self.elevation),
            0.0,
            1.1,
            cfg,
            np.random.default_rng(self.scene_seed),
            training=False,
        )
        print(f"reference: ToyWorld seed {self.scene_seed} ({out['caption']!r})")
        return torch.from_numpy(out["images"]).permute(0, 3, 1, 2).float() / 255.0


COMMANDS = {"train": Train, "sample": Sample}
