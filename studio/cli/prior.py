"""``studio prior train|sample``: train the embedded ToyWorld priors and look at what a prior knows.

* ``studio prior train toy-t2i [--steps N] [--batch 32] [--data-seeds S --data-views V] [--output PATH]``
  renders (once, cached under ``~/.cache/distill-studio/priors-data``) ToyWorld training-split views,
  trains with AdamW + EMA and writes fp16 safetensors (+ a JSON copy of the config) atomically,
  by default to ``studio/priors/weights/<name>.safetensors`` (what ``load_prior(name)`` reads).
  ``--data-res 64 --init studio/priors/weights/toy-nvs.safetensors`` trains a 64x64 prior from the
  32x32 weights (progressive resolution; ``toy-nvs-64``).
* ``studio prior sample toy-t2i --prompt "a glossy red sphere" --output grid.png``: DDIM + CFG
  samples, one row per prompt. ``studio prior sample toy-nvs --scene-seed 5 --output grid.png``:
  a reference view (rendered from a ToyWorld scene, or ``--reference image.png``) followed by
  novel views around it, one row per ``--elevation-delta``.
* ``studio prior eval toy-t2i|toy-nvs|PATH --output metrics.json [--sheet samples.png]``: sample
  quality on held-out ToyWorld scenes (``studio.eval.priors``): toy-t2i samples of the held-out
  captions scored by the attribute classifier (category, colour, material accuracy per caption, an
  FID-style distance to real renders); toy-nvs novel views of held-out objects at +30/90/180 degrees
  of azimuth scored against the true views (PSNR, SSIM, mask IoU) and by the classifier.

Heavy imports (torch, the models) happen inside ``main`` so ``studio`` starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Tuple

import tyro

from studio.cli.toydata_options import ToyDataOptions
from studio.io import StudioInputError
from studio.io.headers import check_prompt
from studio.io.inputs import Input, Kind

TRAINABLE = ("toy-t2i", "toy-nvs", "toy-epipolar")
"""The embedded priors ``studio prior train`` makes."""


def write_png(image, path: Path, scale: int) -> None:
    """Write a uint8 image [H, W, 3] as a PNG, upscaled ``scale`` x (nearest), atomically."""
    import io

    from PIL import Image

    from studio.io import atomic_write_bytes

    img = Image.fromarray(image)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


@dataclass
class Train(ToyDataOptions):
    """Train an embedded toy prior on ToyWorld's training split (2-core CPU, one thread: ~70 min with the defaults; a GPU: minutes)."""

    name: tyro.conf.Positional[str]
    """Which prior: toy-t2i (text -> image), toy-nvs (reference image + relative camera -> view) or
    toy-epipolar (Sparse3D's epipolar controller on the frozen toy-nvs: 2-3 posed views -> view)."""
    steps: int = 6000
    """Optimiser steps (the committed weights: 6000)."""
    time_budget: float = 0.0
    """Seconds of training (0: no limit); the step count is cut to fit after 30 steps (e.g. on a lent GPU)."""
    stop_after: float = 0.0
    """Seconds of this sitting (0: no limit): then the training state is checkpointed, the EMA weights
    so far are written to --output, and the command ends; the same command with --resume continues."""
    resume: bool = False
    """Continue from --checkpoint (same settings required); without a checkpoint it starts afresh."""
    checkpoint: Optional[Path] = None
    """Training-state file (default: <output>.train-state.pt beside --output; written every 250 steps)."""
    batch: int = 32
    """Images per step."""
    lr: float = 5e-4
    """Peak learning rate (AdamW; 200-step warm-up, cosine decay to 10%); the committed toy-t2i used 1e-3."""
    ema_decay: float = 0.999
    """Decay of the weights' exponential moving average (the saved weights); runs of a few thousand
    steps or fewer want a shorter average (toy-epipolar: 0.995)."""
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
    channels: Tuple[int, ...] = (32, 64, 64)
    """UNet widths per resolution (32, 16, 8), those of the committed weights; (64, 128, 128) is ~3x
    slower per step on the CPU and was not measured."""
    data_res: int = 32
    """Image size (pixels, square, a multiple of 8) of the training renders and of the prior (its
    ``arch.image_size``); 64 costs about 4x per step."""
    init: Optional[Path] = None
    """Start from this toy-prior file of the same kind (every tensor of the same shape copied, the
    token-grid positions resized), e.g. the 32x32 studio/priors/weights/toy-nvs.safetensors for a
    --data-res 64 prior (progressive resolution); recorded as ``training.init``."""

    def inputs(self) -> list[Input]:
        return [
            Input("NAME", Kind.CHOICE, self.name, choices=TRAINABLE, required=True),
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".safetensors",)),
            Input("--preview", Kind.OUTPUT_FILE, self.preview, suffixes=(".png",)),
            Input("--cache-dir", Kind.OUTPUT_DIR, self.cache_dir),
            Input("--checkpoint", Kind.OUTPUT_FILE, self.checkpoint, suffixes=(".pt",)),
            Input("--init", Kind.SAFETENSORS, self.init, suffixes=(".safetensors",)),
        ]

    def main(self) -> None:
        import dataclasses
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

        from studio.io.training_state import CheckpointMismatchError
        from studio.priors.toy import read_toy_config, save_toy_prior
        from studio.priors.toydata import load_or_make
        from studio.priors.train import TrainConfig, default_output, resolve_device, train_prior

        output = self.output or default_output(self.name)
        checkpoint = self.checkpoint or output.with_suffix(".train-state.pt")
        if self.steps < 1 or self.batch < 1 or self.data_seeds < 1 or self.data_views < 2:
            raise StudioInputError("--steps, --batch and --data-seeds must be >= 1 and --data-views >= 2.")
        if self.data_res < 8 or self.data_res % 8:
            raise StudioInputError(f"--data-res must be a multiple of 8 (pixels), got {self.data_res}.")
        if self.init is not None:
            try:
                kind = read_toy_config(self.init)["kind"]
            except ValueError as err:
                raise StudioInputError(f"--init: {err}") from None
            if kind != self.name:
                raise StudioInputError(f"--init: {self.init} is a {kind} prior, not {self.name}.")
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        console = Console()
        dcfg = dataclasses.replace(self.data_config(), res=self.data_res)
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
            ema_decay=self.ema_decay,
            seed=self.seed,
            data=dcfg,
            time_budget=self.time_budget,
            arch={} if self.name == "toy-epipolar" else {"channels": list(self.channels), "image_size": self.data_res},
            checkpoint=str(checkpoint),
            stop_after=self.stop_after,
            init=None if self.init is None else str(self.init),
        )
        console.log(
            f"Training {self.name} on {data.n_seeds * data.n_views} views ({device}, {torch.get_num_threads()} threads)"
        )
        t0 = time.time()
        with Progress(*cols, console=console) as bar:
            task = bar.add_task(f"train {self.name}", total=self.steps, info="")
            try:
                prior, stats = train_prior(
                    cfg,
                    data,
                    device,
                    progress=lambda step, loss: bar.update(
                        task, completed=step, total=cfg.steps, info=f"loss {loss:.4f}"
                    ),
                    resume=self.resume,
                )
            except CheckpointMismatchError as err:
                raise StudioInputError(f"--resume: {err}") from None
        save_toy_prior(prior, output)
        size = output.stat().st_size / 2**20
        console.log(f"Wrote {output} ({size:.1f} MiB, {time.time() - t0:.0f}s, final loss {stats['final_loss']:.4f})")
        if not stats["finished"]:
            console.log(
                f"Stopped after step {stats['steps_done']} of {stats['steps']} (--stop-after); state in {checkpoint}. "
                "Run the same command with --resume to continue."
            )
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
    """toy-nvs: reference image (RGBA is composited on white; resized to the prior's size; object centred)."""
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
        import math

        import numpy as np
        import torch

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
            ref = self._reference(prior.image_size)  # [1,3,S,S] in [0,1]
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
        write_png((grid.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8), self.output, self.scale)
        print(f"Wrote {self.output}")

    def _reference(self, size: int):
        """The reference view [1, 3, size, size] in [0, 1]: --reference resized, or a ToyWorld render."""
        import math

        import numpy as np
        import torch

        if self.reference is not None:
            from PIL import Image

            im = Image.open(self.reference)
            rgba = np.asarray(im.convert("RGBA"), np.float32) / 255.0
            rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
            t = torch.from_numpy(rgb).permute(2, 0, 1)[None]
            return torch.nn.functional.interpolate(t, size=(size, size), mode="area") if t.shape[-1] != size else t
        from studio.priors.toydata import DataConfig, render_views

        cfg = DataConfig(res=size, aa=16, spp=64)
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


def eval_sheet(kind: str, images: dict):
    """The ``--sheet`` of ``studio prior eval``, uint8 [rows * H, columns * W, 3], from the ``images``
    of ``evaluate_t2i``/``evaluate_nvs``: toy-t2i one row per caption (a real render, then the
    samples); toy-nvs one row per object (the reference, then the true and the first sampled view
    of each azimuth)."""
    import numpy as np

    if kind == "toy-nvs":
        true, sampled = images["true"], images["samples"][:, :, 0]  # [S, A, H, W, 3]
        pairs = np.stack([true, sampled], 2).reshape(true.shape[0], -1, *true.shape[2:])
        rows = np.concatenate([images["reference"][:, None], pairs], 1)
    else:
        rows = [np.concatenate([v["real"][:1], v["samples"]]) for v in images.values()]
    return np.concatenate([np.concatenate(list(r), 1) for r in rows])


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def print_t2i_table(metrics: dict) -> None:
    """``evaluate_t2i``'s metrics as two tables: per caption (the classifier's accuracy on the
    samples, its most frequent answers, its accuracy on real renders of the caption) and per split
    (accuracy and the FID-style distance to the real renders)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    heads = ("category", "colour", "material")
    s = metrics["settings"]
    title = (
        f"{metrics['prior']}: {s['n_per_caption']} samples/caption, {s['steps']} DDIM steps, guidance {s['guidance']:g}"
    )
    captions = Table(title=escape(title))
    for col in ("caption", "split", "n", *heads, "most often", "real renders"):
        captions.add_column(col, justify="left" if col in ("caption", "split", "most often") else "right")
    for caption, row in metrics["captions"].items():
        real = "/".join(_pct(row["real"][h]) for h in heads)
        most = "/".join(row["most_often"].values())
        captions.add_row(caption, row["split"], str(row["n"]), *(_pct(row[h]) for h in heads), most, real)
    splits = Table(title="per split (FID-style: Fréchet distance of classifier features to real renders)")
    for col in ("split", "captions", "n", *heads, "FID-style"):
        splits.add_column(col, justify="left" if col == "split" else "right")
    for split, row in metrics["splits"].items():
        cells = [str(row["captions"]), str(row["n"]), *(_pct(row[h]) for h in heads), f"{row['fid']:.2f}"]
        splits.add_row(split, *cells)
    console = Console()
    console.print(captions)
    console.print(splits)


def print_nvs_table(metrics: dict) -> None:
    """One row per azimuth of ``evaluate_nvs``'s metrics: PSNR (dB), SSIM, mask IoU and the classifier's
    category/colour agreement of the samples, the classifier on the true views, and PSNR/SSIM/mask IoU
    of the reference view copied (the baseline); a second table at 32x32 for a prior of another size."""
    from rich.console import Console
    from rich.markup import escape

    s = metrics["settings"]
    title = (
        f"{metrics['prior']}: {s['objects']} objects (seeds {s['seeds'][0]}-{s['seeds'][-1]}) x {s['n_per_view']} "
        f"samples, elevation {s['elevation']:g} deg, {s['steps']} DDIM steps, guidance {s['guidance']:g}"
    )
    for key in ("azimuths", "azimuths_32"):
        if key in metrics:
            res = s.get("res", 32) if key == "azimuths" else 32
            Console().print(_nvs_rows(metrics[key], escape(f"{title}, at {res}x{res}")))


def _nvs_rows(rows: dict, title: str):
    """The rich table of one set of ``score_nvs`` rows."""
    from rich.table import Table

    table = Table(title=title)
    cols = ("azimuth", "n", "PSNR", "SSIM", "mask IoU", "category", "colour", "true views", "reference copied")
    for col in cols:
        table.add_column(col, justify="right")
    for az, row in rows.items():
        ref = row["copy_reference"]
        table.add_row(
            az if az == "all" else f"+{az} deg",
            str(row["n"]),
            f"{row['psnr']:.2f} dB",
            f"{row['ssim']:.3f}",
            f"{row['mask_iou']:.3f}",
            _pct(row["category"]),
            _pct(row["colour"]),
            f"{_pct(row['category_true'])}/{_pct(row['colour_true'])}",
            f"{ref['psnr']:.2f}/{ref['ssim']:.3f}/{ref['mask_iou']:.3f}",
        )
    return table


@dataclass
class Eval:
    """Measure a toy prior's samples on held-out ToyWorld scenes into metrics.json (and a PNG sheet)."""

    name: tyro.conf.Positional[str]
    """Prior: toy-t2i, toy-nvs, toy-nvs-64 or a toy-prior .safetensors path."""
    output: Path
    """Metrics JSON to write."""
    split: Optional[Literal["test", "validation"]] = None
    """toy-t2i: the held-out captions of this split (default: test and validation); toy-nvs: objects
    of this split's seeds (default: test, 0-899; validation: 900-999)."""
    n: Optional[int] = None
    """Samples per caption (toy-t2i; default 16) or per object and azimuth (toy-nvs; default 2)."""
    prompts: Optional[Path] = None
    """toy-t2i: score the captions of this text file (one a line, # comments) instead of the held-out
    captions of splits.json; each must be held out of prior training (a held-out caption or one with
    a held-out caption-word combination), e.g. benchmarks/prompts/heldout_test.txt."""
    objects: int = 32
    """toy-nvs: objects, the first seeds of the split."""
    azimuth: Tuple[float, ...] = (30.0, 90.0, 180.0)
    """toy-nvs: azimuth changes (degrees) of the novel views from the reference view."""
    elevation: float = 20.0
    """toy-nvs: elevation (degrees) of the reference and true views."""
    steps: int = 50
    """DDIM steps."""
    guidance: Optional[float] = None
    """Classifier-free guidance scale (default: the one chosen on the validation split, see
    studio/priors/weights/README.md)."""
    seed: int = 0
    """Noise seed (the metrics are a function of it)."""
    sheet: Optional[Path] = None
    """Also write a PNG sheet: toy-t2i one row per caption (a real render, then the samples);
    toy-nvs one row per object (the reference, then the true and the first sampled view per azimuth)."""
    scale: int = 4
    """Pixel upscaling of the sheet (nearest)."""
    device: str = "auto"
    """auto, cpu or cuda."""
    threads: int = 1
    """torch CPU threads (0: torch's default; one is fastest on a CPU shared with other jobs)."""

    def inputs(self) -> list[Input]:
        from studio.priors import check_prior

        return [
            Input("NAME", Kind.PRIOR, self.name, check=check_prior, required=True),
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".json",), required=True),
            Input("--sheet", Kind.OUTPUT_FILE, self.sheet, suffixes=(".png",)),
            Input("--prompts", Kind.PROMPT_FILE, self.prompts),
        ]

    def t2i_captions(self) -> list[str]:
        """The captions to score: splits.json's held-out ones, or --prompts (all held out), of --split."""
        from studio.eval import priors as ep
        from studio.io.headers import check_prompt_file
        from studio.scenes.toyworld import splits

        if self.prompts is None:
            return list(ep.heldout_captions(self.split))
        captions = check_prompt_file(self.prompts)
        seen = [c for c in captions if splits.caption_split(c) == "train"]
        if seen:
            raise StudioInputError(f"--prompts: {seen[0]!r} is a training caption; score held-out captions only.")
        chosen = [c for c in captions if self.split in (None, splits.caption_split(c))]
        if not chosen:
            raise StudioInputError(f"--prompts: no caption of the {self.split} split in {self.prompts}.")
        return chosen

    def main(self) -> None:
        if (self.n is not None and self.n < 1) or self.steps < 1 or self.objects < 1 or self.scale < 1:
            raise StudioInputError("--n, --steps, --objects and --scale must be >= 1.")
        import json

        import torch

        from studio.eval import priors as ep
        from studio.eval.classifier import DEFAULT_WEIGHTS, load_attribute_classifier
        from studio.io import atomic_write_text
        from studio.priors import load_prior
        from studio.priors.toy import ToyNVSPrior, ToyT2IPrior

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        prior = load_prior(self.name, device=self.device)
        classifier = load_attribute_classifier(device=prior.device)
        if isinstance(prior, ToyNVSPrior):
            guidance = ep.NVS_GUIDANCE if self.guidance is None else self.guidance
            seeds = ep.split_seeds(self.split or "test", self.objects)
            result = ep.evaluate_nvs(
                prior, classifier, seeds, self.azimuth, self.n or 2, self.seed, self.steps, guidance, self.elevation
            )
        elif isinstance(prior, ToyT2IPrior):
            guidance = ep.T2I_GUIDANCE if self.guidance is None else self.guidance
            captions = self.t2i_captions()
            result = ep.evaluate_t2i(prior, classifier, captions, self.n or 16, self.seed, self.steps, guidance)
        else:
            raise StudioInputError(f"{self.name}: studio prior eval measures the toy priors (toy-t2i, toy-nvs).")
        images = result.pop("images")
        training = {k: v for k, v in prior.config.get("training", {}).items() if k in ("steps", "seconds", "device")}
        arch = prior.config["arch"]
        made = {"channels": arch["channels"], "image_size": prior.image_size, **training}  # which weights were measured
        metrics = {"prior": str(self.name), "kind": prior.kind, "prior_training": made, **result}
        metrics["classifier"] = str(DEFAULT_WEIGHTS)
        atomic_write_text(self.output, json.dumps(metrics, indent=1) + "\n")
        (print_nvs_table if prior.kind == "toy-nvs" else print_t2i_table)(metrics)
        print(f"Wrote {self.output}")
        if self.sheet is not None:
            write_png(eval_sheet(prior.kind, images), self.sheet, self.scale)
            print(f"Wrote {self.sheet}")


COMMANDS = {"train": Train, "sample": Sample, "eval": Eval}
