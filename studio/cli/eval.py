"""``studio eval prd --load-config CFG [--data DIR] [--env NAME=PATH ...] --output metrics.json``.

Evaluates a trained ``prd`` run on its dataset's test split: novel-view PSNR/SSIM, scale-aligned
albedo PSNR, roughness MSE, normal angular error and relighting PSNR per ``test_<env>/`` split
(protocols: ``studio.eval.inverse``). The run is loaded without executing anything from it
(restricted config loader, ``weights_only`` checkpoint). Writes the metrics as JSON (atomically)
and prints them as a table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from studio.io import StudioInputError


def load_pipeline(config_path: Path, data: Optional[Path] = None, device: Optional[str] = None):
    """(trainer config, pipeline in eval mode) of a run, with its latest checkpoint loaded.

    ``data`` replaces the dataset folder of the run's config.
    """
    import torch

    from studio.io.config_loader import load_trainer_config
    from studio.io.runs import latest_checkpoint, load_checkpoint

    config = load_trainer_config(config_path)
    if data is not None:
        config.data = data
        config.pipeline.datamanager.data = data
        config.pipeline.datamanager.dataparser.data = data
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ckpt = load_checkpoint(latest_checkpoint(Path(config_path)))
    pipeline = config.pipeline.setup(device=device, test_mode="test")
    pipeline.eval()
    pipeline.load_pipeline(ckpt["pipeline"], int(ckpt.get("step", 0)))
    pipeline.eval()
    return config, pipeline


def print_table(metrics: dict, title: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")

    def fmt(v) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    for key, value in metrics.items():
        if isinstance(value, dict):
            for env, v in value.items():
                table.add_row(escape(f"{key}[{env}]"), fmt(v))
        else:
            table.add_row(key, fmt(value))
    Console().print(table)


@dataclass
class Prd:
    """Evaluate a trained prd run (NVS, albedo, roughness, normals, relighting) into metrics.json."""

    load_config: Path
    """config.yml of the trained run."""
    output: Path
    """Metrics JSON to write (nvs_psnr, nvs_ssim, albedo_psnr, roughness_mse, normal_mae_deg, relight_psnr)."""
    data: Optional[Path] = None
    """Dataset folder (default: the run's own)."""
    env: List[str] = field(default_factory=list)
    """Environment maps NAME=PATH of relit splits test_NAME/ (override or add to meta.json's)."""
    light_resolution: int = 64
    """Cube-face resolution of the relighting lights."""

    def main(self) -> None:
        import torch

        from studio.data.dataparser import StudioDataParserConfig
        from studio.data.formats import DatasetFormat, detect_format
        from studio.eval.inverse import evaluate_inverse, load_test_truth
        from studio.io.atomic import atomic_write_text
        from studio.io.config_loader import load_trainer_config

        if self.output.suffix.lower() != ".json":
            raise StudioInputError(f"--output {self.output} must end in .json.")
        envs = {}
        for item in self.env:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise StudioInputError(f"--env {item!r} is not of the form NAME=PATH.")
            if not Path(path).is_file():
                raise StudioInputError(f"--env {name}: environment map {path} does not exist.")
            envs[name] = Path(path)
        config = load_trainer_config(self.load_config)
        if getattr(config, "method_name", None) != "prd":
            raise StudioInputError(f"{self.load_config} is a {config.method_name!r} run, not a prd run.")
        data = Path(self.data if self.data is not None else config.pipeline.datamanager.dataparser.data)
        if not data.is_dir():
            raise StudioInputError(f"dataset folder {data} does not exist.")
        try:
            fmt = detect_format(data)
        except ValueError as err:
            raise StudioInputError(str(err)) from None
        if fmt is not DatasetFormat.NERF_SYNTHETIC:
            raise StudioInputError(f"dataset {data} is not a NeRF-synthetic folder (transforms_test.json with AOVs).")
        outputs = StudioDataParserConfig(data=data).setup().get_dataparser_outputs("test")
        truth = load_test_truth(data, outputs.image_filenames, envs)

        _, pipeline = load_pipeline(self.load_config, data=data)
        model = pipeline.model
        device = model.device
        white = torch.ones(3, device=device)
        metrics = evaluate_inverse(
            outputs.cameras,
            truth,
            render_gbuffers=lambda cam: model.render_gbuffers(cam, background=white),
            render_relit=model.render_relit,
            light_resolution=self.light_resolution,
            device=device,
        )
        atomic_write_text(self.output, json.dumps(metrics, indent=1) + "\n")
        print_table(metrics, f"prd on {data.name}")
        print(f"Wrote {self.output}")


COMMANDS = {"prd": Prd}
