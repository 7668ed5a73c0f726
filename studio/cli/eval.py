"""``studio eval prd``, ``image-to-3d``, ``sparse-view``, ``text-to-3d``, ``attributes``, ``feature-lift`` and ``generate``.

``studio eval prd --load-config CFG [--data DIR] [--env NAME=PATH ...] [--envmap-dir DIR] --output metrics.json``:

Evaluates a trained ``prd`` run on its dataset's test split: novel-view PSNR/SSIM, scale-aligned
albedo PSNR, roughness MSE, normal angular error and relighting PSNR per ``test_<env>/`` split, over
the whole image and over the object's interior (a silhouette band of ``--interior-band-px`` left
out), and LPIPS when its weights are local (else one line says why; protocols: ``studio.eval.inverse``).
The run is loaded without executing anything from it
(restricted config loader, ``weights_only`` checkpoint). Writes the metrics as JSON (atomically)
and prints them as a table. The dataset is a NeRF-synthetic folder or a TensoIR-Synthetic scene
(relit images ``test_XXX/rgba_<env>.png``, env maps ``<env>.hdr`` in ``--envmap-dir``).

``studio eval image-to-3d --data DIR --view FRAME --output metrics.json [--method-args "..."]``:
reconstructs from one training view of a NeRF-synthetic-format dataset with an image-to-3D
method (``dreamcraft3d``), then scores the test views and the geometry
(``studio.eval.image_to_3d``).

``studio eval sparse-view --method sparse3d|sds --data DIR --views 0 3 6 --output metrics.json [--method-args "..."]``:
reconstructs with ``ns-train sparse3d`` from 2-3 training views of a NeRF-synthetic scene (a
sub-dataset of those frames and the test split; ``sds`` is the plain-SDS baseline: no epipolar
controller, no C-SDS), then scores the test views (PSNR, SSIM, mask IoU, depth MAE against the
depth AOVs) and the geometry (Chamfer distance to ``gt_mesh.obj``; ``studio.eval.sparse_view``).

``studio eval text-to-3d --method sds --prompts FILE --output metrics.json [--sheet sheet.png]``:
generates a result per caption of FILE (one a line; blank lines and ``#`` comments ignored) with a
text-to-3D method (``sds``, ``vp3d``), renders ``--views`` turntable views of it and scores them
with the ToyWorld attribute classifier (category, colour, material accuracy over views) and the
embedded image-text model toy-clip (``alignment`` of the views with the caption, ``consistency`` of
adjacent views; with ``--clip PATH`` a local CLIP's too; ``studio.eval.text_to_3d``); writes
per-caption rows and their means, and a render sheet (a row per caption).

``studio eval attributes --output metrics.json [--train] [--weights PATH]``: accuracy of the
ToyWorld attribute classifier (category, colour, material; ``studio.eval.classifier``) on held-out
renders of the test (0-899) and validation (900-999) seeds, with snowman, compositional and
held-out-caption rows; ``--train`` first trains one on training-split renders and writes it to
``--weights`` (default: the committed ``studio/eval/weights/toy-attributes.safetensors``).

``studio eval feature-lift --model MODEL --data DIR [--data DIR2 ...] --output metrics.json [--compare]``:
Probe3D-style 3D awareness of a frozen 2D feature model (``studio.eval.feature_lift``): depth and
normal probes trained on the train views of the scenes and scored on their test views (scale-aligned
depth RMSE / delta1, normal angular RMSE and recall at 11.25/22.5/30 degrees), multi-view
correspondence recall at 5/10/20 px from known geometry (also by viewing-angle difference), part
segmentation mIoU where id maps exist. DIR is a NeRF-synthetic scene with depth/normal EXRs (ToyWorld,
shared/tools/blender_scene.py) or a folder of them. MODEL is anything ``load_feature_model`` accepts (the
embedded ``toy-vit``, alias ``teacher``; a .safetensors file; a local DINOv2 folder). ``--compare`` takes
several --model values and prints them side by side (same probe settings for every model).

``studio eval generate --method flashworld --data DIR --output metrics.json``: a one-step 3D
generator on held-out posed scenes (``studio.eval.generate``): from training frame 0's image (and
``views - 1`` more cameras) it generates in 1 and 4 steps and with the multi-step teacher, then
scores the test views (PSNR, SSIM, mask IoU, LPIPS when local), the 3D consistency of the generated
views (reprojection error) and the seconds per scene. ``--method videoscene``
(``studio.eval.videoscene``): from pairs of test-ring views, the coarse feed-forward Gaussians, one
step at the fixed (validation-chosen) and at the policy's leap timestep, and the multi-step teacher,
scored at the test views between each pair; ``--timesteps`` adds one-step variants at given leap
timesteps (the validation sweep).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, List, Literal, Optional

import tyro

from studio.io import StudioInputError
from studio.io.inputs import Input, Kind, check_envmap


def nerf_synthetic_dataset(data: Path) -> None:
    """A valid NeRF-synthetic dataset folder (the evaluations need its test split and AOVs)."""
    from studio.data.formats import DatasetFormat, validate_dataset

    if validate_dataset(Path(data)) is not DatasetFormat.NERF_SYNTHETIC:
        raise StudioInputError(f"dataset {data} is not a NeRF-synthetic folder (transforms_train/test.json).")


def relighting_dataset(data: Path) -> None:
    """A valid NeRF-synthetic or TensoIR-Synthetic folder (``studio eval prd`` needs its test views and AOVs)."""
    from studio.data.formats import DatasetFormat, validate_dataset

    if validate_dataset(Path(data)) not in (DatasetFormat.NERF_SYNTHETIC, DatasetFormat.TENSOIR):
        raise StudioInputError(
            f"dataset {data} is neither a NeRF-synthetic folder (transforms_train/test.json) nor a "
            "TensoIR-Synthetic scene (train_XXX/ and test_XXX/ view folders)."
        )


def envmap_folder(folder: Path) -> None:
    """A folder holding at least one readable .hdr/.exr environment map (headers checked)."""
    from studio.pbr.envmap import envmaps_in

    folder = Path(folder)
    if not folder.is_dir():
        raise StudioInputError(f"{folder} is not a folder of .hdr/.exr environment maps.")
    maps = envmaps_in(folder)
    if not maps:
        raise StudioInputError(f"{folder} holds no .hdr or .exr environment map, so nothing can be relit.")
    for path in maps.values():
        check_envmap(path)


def env_paths(items: List[str]) -> dict[str, Path]:
    """``--env NAME=PATH`` items as {name: path}."""
    envs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise StudioInputError(f"--env {item!r} is not of the form NAME=PATH.")
        envs[name] = Path(path)
    return envs


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
    """Metrics JSON to write (studio.eval.inverse.METRIC_KEYS: nvs_psnr, nvs_ssim, nvs_lpips, albedo_psnr,
    roughness_mse, normal_mae_deg, relight_psnr, relight_psnr_interior, relight_lpips)."""
    data: Optional[Path] = None
    """Dataset folder (default: the run's own)."""
    env: List[str] = field(default_factory=list)
    """Environment maps NAME=PATH of relit splits test_NAME/ (override or add to meta.json's)."""
    envmap_dir: Optional[Path] = None
    """Folder of <env>.hdr/.exr maps for the relit splits without one (TensoIR's Environment_Maps/high_res_envmaps_1k)."""
    light_resolution: int = 64
    """Cube-face resolution of the relighting lights."""
    interior_band_px: Optional[int] = None
    """Silhouette band (pixels) relight_psnr_interior leaves out (default: 3 px per 128 px of the shorter side)."""
    split: Literal["test", "val"] = "test"
    """Views to score: test (reported) or val (for choosing settings; needs validation views distinct from the
    test views, e.g. `studio scenes make --n-val 8`, relit under the same environments as val_<env>/)."""

    def inputs(self) -> list[Input]:
        return [
            Input("--load-config", Kind.CONFIG, self.load_config, required=True),
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".json",), required=True),
            Input("--data", Kind.DATASET, self.data, check=relighting_dataset),
            Input(
                "--env",
                Kind.EXR,
                self.env,
                check=lambda items: [check_envmap(p) for p in env_paths(items).values()],
                pattern="NAME={}",
            ),
            Input("--envmap-dir", Kind.EXR, self.envmap_dir, check=envmap_folder),
        ]

    def main(self) -> None:
        import torch

        from studio.data.dataparser import StudioDataParserConfig
        from studio.eval.inverse import evaluate_inverse, load_test_truth
        from studio.io.atomic import atomic_write_text
        from studio.io.config_loader import load_trainer_config
        from studio.metrics import lpips_if_available, lpips_missing_reason
        from studio.models.registry import relighting_methods
        from studio.models.runs import load_run

        if self.interior_band_px is not None and self.interior_band_px < 1:
            raise StudioInputError(f"--interior-band-px {self.interior_band_px} must be at least 1.")
        envs = env_paths(self.env)
        config = load_trainer_config(self.load_config)
        if getattr(config, "method_name", None) not in relighting_methods():
            raise StudioInputError(
                f"{self.load_config} is a {config.method_name!r} run, not a run of a relighting method "
                f"({', '.join(relighting_methods())})."
            )
        data = Path(self.data if self.data is not None else config.pipeline.datamanager.dataparser.data)
        if self.data is None:
            relighting_dataset(data)
        held_out = getattr(config.pipeline.datamanager.dataparser, "val_from_train", 0)
        parser = StudioDataParserConfig(data=data, val_from_train=held_out).setup()
        outputs = parser.get_dataparser_outputs(self.split)
        if self.split == "val" and outputs.image_filenames == parser.get_dataparser_outputs("test").image_filenames:
            raise StudioInputError(
                f"--split val: {data} has no validation views of its own (its val split is the test split); "
                "make the scene with `studio scenes make --n-val N`, or train with "
                "`ns-train prd --data DIR ... studio-data-parser-config --val-from-train K`."
            )
        truth = load_test_truth(data, outputs.image_filenames, envs, self.envmap_dir, self.split)

        lpips = lpips_if_available()
        pipeline = load_run(self.load_config, with_data=True, data=data).pipeline
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
            lpips=lpips,
            interior_band_px=self.interior_band_px,
        )
        atomic_write_text(self.output, json.dumps(metrics, indent=1) + "\n")
        print_table(metrics, f"prd on {data.name} ({self.split} views)")
        if lpips is None:
            print(lpips_missing_reason())
        print(f"Wrote {self.output}")


CAMERA_PROTOCOLS = ("default", "gt")
"""``studio eval image-to-3d --camera``: the released preprocessing, or the dataset's camera."""


GENERATORS = ("flashworld",)
"""Feed-forward generators ``studio eval image-to-3d --method`` also takes (no ns-train run)."""
GENERATE_METHODS = ("flashworld", "videoscene")
"""Generators ``studio eval generate --method`` scores."""
GENERATOR_VARIANTS = ("1-step", "4-step", "teacher")
"""What a generator is scored as (``studio.eval.generate.VARIANTS``; repeated so ``studio`` starts without torch)."""
VIDEOSCENE_VARIANTS = ("coarse", "fixed", "policy", "teacher", "teacher-leap")
"""What ``studio eval generate --method videoscene`` scores (``studio.eval.videoscene.VARIANTS``)."""


def generator_options(method_args: str) -> dict:
    """``--method-args`` of a generator: ``--variant 1-step|4-step|teacher``, ``--weights PATH``,
    ``--teacher-weights PATH``, ``--seed S``."""
    import argparse
    import shlex

    parser = argparse.ArgumentParser(prog="--method-args", add_help=False, exit_on_error=False)
    parser.add_argument("--variant", choices=GENERATOR_VARIANTS, default="1-step")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--teacher-weights", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    try:
        return vars(parser.parse_args(shlex.split(method_args)))
    except (argparse.ArgumentError, SystemExit):
        raise StudioInputError(
            f"--method-args {method_args!r}: a generator takes --variant 1-step|4-step|teacher, --weights PATH, --teacher-weights PATH, --seed S."
        ) from None


@dataclass
class ImageTo3D:
    """Reconstruct from one posed view with an image-to-3D method; score test views and geometry."""

    data: Path
    """NeRF-synthetic-format dataset (transforms_train/test.json, RGBA images, optional gt_mesh.obj)."""
    output: Path
    """Metrics JSON to write (psnr, ssim, mask_iou, chamfer; camera, alignment)."""
    view: int = 0
    """Index of the reference frame in transforms_train.json."""
    camera: str = "default"
    """default: the released preprocessing (the object recentred in the image, the method's default
    reference camera), the result mapped into the dataset's frame by a weak-perspective similarity
    (studio.eval.image_to_3d.default_camera_alignment); gt: the dataset's reference camera and the
    image's own framing (favourable: the released code cannot know the camera)."""
    method: str = "dreamcraft3d"
    """The ns-train method to run, or a feed-forward generator (flashworld: embedded weights, 1 step)."""
    method_args: str = ""
    """Extra ns-train arguments, one string; write it as --method-args="--pipeline.model.texture-guidance sds"
    (with "=": a separate value that starts with "--" would be read as an option)."""
    work_dir: Optional[Path] = None
    """Where the run goes (default: next to --output, <output stem>_run/)."""
    n_points: int = 20000
    """Surface samples per mesh for the Chamfer distance."""

    def inputs(self) -> list[Input]:
        from studio.models.registry import image_to_3d_methods

        return [
            Input("--data", Kind.DATASET, self.data, check=nerf_synthetic_dataset, required=True),
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".json",), required=True),
            Input("--camera", Kind.CHOICE, self.camera, choices=CAMERA_PROTOCOLS),
            Input("--method", Kind.CHOICE, self.method, choices=(*image_to_3d_methods(), *GENERATORS)),
            Input("--work-dir", Kind.OUTPUT_DIR, self.work_dir),
        ]

    def main(self) -> None:
        import math

        from studio.data.nerf_synthetic import read_nerf_synthetic
        from studio.eval.image_to_3d import orbit_of_c2w
        from studio.io.atomic import atomic_write_text

        train, test = read_nerf_synthetic(self.data, "train"), read_nerf_synthetic(self.data, "test")
        if not 0 <= self.view < len(train.image_paths):
            raise StudioInputError(
                f"--view {self.view} is not a frame of the training split (0..{len(train.image_paths) - 1})."
            )
        elev, az, dist = orbit_of_c2w(train.camera_to_worlds[self.view])
        orbit = (elev, az, dist, math.degrees(2.0 * math.atan(0.5 * train.width / train.fx)))
        print(
            f"Reference view {self.view}: elevation {elev:.1f}, azimuth {az:.1f}, distance {dist:.3f}, fov {orbit[3]:.1f}"
        )
        if self.method in GENERATORS:
            from studio.eval.generate import image_to_3d_generated

            options = generator_options(self.method_args)
            metrics = image_to_3d_generated(train, test, self.view, orbit, camera=self.camera, **options)
        else:
            metrics = self.reconstructed(train, test, orbit)
        atomic_write_text(self.output, json.dumps(metrics, indent=1) + "\n")
        scores = {k: v for k, v in metrics.items() if k not in ("camera", "alignment")}
        print_table(scores, f"{self.method} from view {self.view} of {self.data.name}, {self.camera} camera")
        print(f"Wrote {self.output}")

    def reconstructed(self, train, test, orbit: tuple) -> dict:
        """Metrics of an ns-train run of the method from the reference view (``orbit``: its elevation,
        azimuth, distance and field of view; given to the method with ``--camera gt``): test views,
        the exported mesh's Chamfer distance, ``camera`` and ``alignment``
        (:func:`studio.eval.image_to_3d.protocol_record`)."""
        import shlex
        import subprocess
        import sys

        import numpy as np
        import torch

        from studio.eval.image_to_3d import (
            frame_camera,
            mesh_chamfer,
            protocol_record,
            reference_alignment,
            score_views,
        )
        from studio.eval.inverse import read_image
        from studio.models.runs import load_run

        work = self.work_dir or self.output.with_name(self.output.stem + "_run")
        cmd = [
            str(Path(sys.executable).with_name("ns-train")),
            self.method,
            "--data",
            str(train.image_paths[self.view]),
            "--output-dir",
            str(work),
            "--vis",
            "tensorboard",
        ]
        if self.camera == "gt":
            cmd += ["--pipeline.datamanager.recentre", "False", "--pipeline.datamanager.reference-view"]
            cmd += [f"{v:.6f}" for v in orbit]
        cmd += shlex.split(self.method_args)
        if subprocess.run(cmd).returncode != 0:
            raise StudioInputError(f"the {self.method} run failed (command: {shlex.join(cmd)}).")
        config = max(work.glob(f"*/{self.method}/*/config.yml"), key=lambda p: p.stat().st_mtime)
        pipeline = load_run(config, with_data=True).pipeline
        render = pipeline.model.render_any
        similarity = None
        if self.camera == "default":
            data = pipeline.datamanager
            ref = data.reference_camera
            similarity = reference_alignment(
                train, self.view, ref.camera_to_worlds[0].numpy(), float(ref.fx[0, 0]), data.reference.recentring
            )

        def render_fn(c2w: np.ndarray):
            c2w = c2w if similarity is None else similarity.camera_in_method(c2w)
            with torch.no_grad():
                rgb, alpha, _, _ = render(frame_camera(test, c2w))
            return rgb[0].cpu(), alpha[0, ..., 0].cpu()

        metrics = score_views(render_fn, test, [read_image(p) for p in test.image_paths])
        metrics["chamfer"] = mesh_chamfer(
            config.parent / "export" / "mesh.glb",
            self.data / "gt_mesh.obj",
            self.n_points,
            pred_to_gt=None if similarity is None else similarity.matrix(),
        )
        return {**metrics, **protocol_record(self.camera, similarity)}


@dataclass
class SparseView:
    """Reconstruct from 2-3 posed views with sparse3d (or its plain-SDS baseline); score test views and geometry."""

    data: Path
    """NeRF-synthetic scene (transforms_train/test.json, RGBA images; optional depth_XXXX.exr beside the test
    images and gt_mesh.obj), e.g. `studio scenes make --path ring --n-train 9`."""
    output: Path
    """Metrics JSON to write (psnr, ssim, mask_iou, lpips, depth_mae, chamfer; geometry, views, settings)."""
    views: List[int] = field(default_factory=lambda: [0, 3, 6])
    """The input frames: 2 or 3 distinct indices into transforms_train.json."""
    method: str = "sparse3d"
    """sparse3d (as configured) or sds (the baseline: --pipeline.model.controller False --pipeline.model.csds none)."""
    method_args: str = ""
    """Extra ns-train arguments, one string (after the method's flags, so they win); write it as
    --method-args="--pipeline.model.csds classifier" (with "=": a value starting with "--" is read as an option)."""
    work_dir: Optional[Path] = None
    """Where the sub-dataset and the run go (default: next to --output, <output stem>_run/)."""
    n_points: int = 20000
    """Surface samples per mesh for the Chamfer distance."""

    def inputs(self) -> list[Input]:
        from studio.eval.sparse_view import VARIANTS

        return [
            Input("--data", Kind.DATASET, self.data, check=nerf_synthetic_dataset, required=True),
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".json",), required=True),
            Input("--method", Kind.CHOICE, self.method, choices=tuple(VARIANTS)),
            Input("--work-dir", Kind.OUTPUT_DIR, self.work_dir),
        ]

    def main(self) -> None:
        import shlex
        import subprocess
        import sys
        import time

        from studio.data.nerf_synthetic import read_nerf_synthetic
        from studio.eval import sparse_view as sv
        from studio.io.atomic import atomic_write_text
        from studio.models.registry import sparse_view_methods

        if not (self.data / "transforms_test.json").is_file():
            raise StudioInputError(
                f"--data {self.data} has no transforms_test.json: the test views are what is scored."
            )
        train, test = read_nerf_synthetic(self.data, "train"), read_nerf_synthetic(self.data, "test")
        views = sv.check_views(self.views, len(train.image_paths))
        if sv.METHOD not in sparse_view_methods():
            raise StudioInputError(f"the {sv.METHOD} method is not installed as a sparse-view method.")
        work = self.work_dir or self.output.with_name(self.output.stem + "_run")
        name = f"{self.data.resolve().name}_views{'-'.join(map(str, views))}"
        sub = sv.write_subset(self.data, views, work / name)
        ns_train = str(Path(sys.executable).with_name("ns-train"))
        cmd = sv.train_command(ns_train, self.method, sub, work / "runs", shlex.split(self.method_args))
        print("$", shlex.join(cmd), flush=True)
        t0 = time.time()
        if subprocess.run(cmd).returncode != 0:
            raise StudioInputError(f"the {self.method} run failed (command: {shlex.join(cmd)}).")
        seconds = time.time() - t0
        configs = list((work / "runs").glob(f"*/{sv.METHOD}/*/config.yml"))
        if not configs:
            raise StudioInputError(f"the {self.method} run wrote no config.yml under {work / 'runs'}.")
        config = max(configs, key=lambda p: p.stat().st_mtime)
        metrics = {**self.scores(config, test), "views": views, "method": self.method, "config": str(config)}
        metrics["settings"] = {
            "command": shlex.join(cmd),
            "method_args": self.method_args,
            "train_seconds": round(seconds, 1),
            "n_points": self.n_points,
            "mesh_extraction": sv.MESH_EXTRACTION,
            "n_test_views": len(test.image_paths),
        }
        atomic_write_text(self.output, json.dumps(metrics, indent=1) + "\n")
        print_table(
            {k: metrics[k] for k in sv.METRIC_KEYS},
            f"{self.method}, views {' '.join(map(str, views))}, {self.data.name}",
        )
        print(f"Wrote {self.output}")

    def scores(self, config: Path, test) -> dict:
        """The test-view scores of the run ``config`` and its Chamfer distance (``geometry``: "mesh",
        "centres" when no surface could be extracted, None without gt_mesh.obj)."""
        import numpy as np
        import torch

        from studio.eval import sparse_view as sv
        from studio.eval.image_to_3d import frame_camera, mesh_chamfer
        from studio.export import extract_mesh, save_mesh
        from studio.export.runs import load_gaussians_from_config
        from studio.metrics import lpips_if_available
        from studio.models.runs import load_run

        model = load_run(config, with_data=True).pipeline.model

        def render(c2w: np.ndarray):
            with torch.no_grad():
                rgb, alpha, depth, _ = model.render_any(frame_camera(test, c2w))
            return rgb[0].cpu(), alpha[0, ..., 0].cpu(), depth[0, ..., 0].cpu()

        metrics = sv.score_test_views(render, test, lpips=lpips_if_available())
        gt_mesh = self.data / "gt_mesh.obj"
        metrics.update(chamfer=None, geometry=None)
        if gt_mesh.is_file():
            gaussians = load_gaussians_from_config(config, device=str(model.device))
            try:
                mesh = extract_mesh(gaussians, **sv.MESH_EXTRACTION)
            except StudioInputError as err:
                print(f"No mesh extracted ({err}); Chamfer distance of the Gaussian centres instead.")
                metrics.update(
                    chamfer=sv.centre_chamfer(gaussians.means, gaussians.opacities, gt_mesh, self.n_points),
                    geometry="centres",
                )
            else:
                path = config.parent / "export" / "sparse_view_mesh.ply"
                path.parent.mkdir(parents=True, exist_ok=True)
                save_mesh(path, mesh)
                metrics.update(chamfer=mesh_chamfer(path, gt_mesh, self.n_points), geometry="mesh")
        return metrics


@dataclass
class TextTo3D:
    """Generate from each caption of a prompt file with a text-to-3D method; score turntable views with
    the classifier and image-text models."""

    prompts: Path
    """Text file of captions, one a line (blank lines and # comments ignored; at most 100)."""
    output: Path
    """Metrics JSON to write: per caption {n, category, colour, material, most_often, alignment,
    consistency, config} and overall means."""
    method: str = "sds"
    """The ns-train method to run."""
    method_args: str = ""
    """Extra ns-train arguments, one string; write it as --method-args="--preset tiny" (with "=": a
    separate value that starts with "--" would be read as an option)."""
    sheet: Optional[Path] = None
    """Render sheet PNG, a row of views per caption (default: <output stem>_sheet.png beside --output)."""
    views: int = 8
    """Turntable views per result (azimuths evenly spaced from 0)."""
    size: int = 64
    """Side of the rendered views in pixels (the classifier resizes them to 32 x 32)."""
    elevation: float = 20.0
    """Elevation of the turntable views in degrees."""
    work_dir: Optional[Path] = None
    """Where the runs go, one folder per caption (default: next to --output, <output stem>_runs/)."""
    clip: Optional[Path] = None
    """A local CLIP folder (transformers CLIPModel.save_pretrained) or toy-clip file: adds
    alignment_clip and consistency_clip, the same scores under that model."""

    def inputs(self) -> list[Input]:
        from studio.guidance.rewards import check_image_text_model
        from studio.models.registry import text_to_3d_methods

        return [
            Input("--prompts", Kind.PROMPT_FILE, self.prompts, required=True),
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".json",), required=True),
            Input("--sheet", Kind.OUTPUT_FILE, self.sheet, suffixes=(".png",)),
            Input("--method", Kind.CHOICE, self.method, choices=tuple(text_to_3d_methods())),
            Input("--work-dir", Kind.OUTPUT_DIR, self.work_dir),
            Input("--clip", Kind.PRIOR, self.clip, check=check_image_text_model),
        ]

    def image_text_models(self) -> dict:
        """{"": toy-clip, "_clip": the --clip model}: the models of the alignment/consistency
        columns, by column suffix (loaded before any run, so a missing model fails first)."""
        from studio.eval.text_to_3d import IMAGE_TEXT_MODEL
        from studio.guidance.rewards import check_image_text_model
        from studio.rewards import load_image_text_model

        check_image_text_model(IMAGE_TEXT_MODEL)
        models = {"": load_image_text_model(IMAGE_TEXT_MODEL)}
        if self.clip is not None:
            models["_clip"] = load_image_text_model(self.clip)
        return models

    def generate(self, caption: str, work: Path) -> Path:
        """Run ``ns-train <method> --prompt caption`` into ``work``; the run's config.yml."""
        import shlex
        import subprocess
        import sys

        cmd = [str(Path(sys.executable).with_name("ns-train")), self.method, "--prompt", caption]
        cmd += ["--output-dir", str(work), "--vis", "tensorboard", *shlex.split(self.method_args)]
        if subprocess.run(cmd).returncode != 0:
            raise StudioInputError(f"the {self.method} run of {caption!r} failed (command: {shlex.join(cmd)}).")
        return max(work.glob(f"*/{self.method}/*/config.yml"), key=lambda p: p.stat().st_mtime)

    def main(self) -> None:
        import numpy as np
        from PIL import Image

        from studio.eval.classifier import load_attribute_classifier
        from studio.eval.priors import weighted_means
        from studio.eval.text_to_3d import caption_views, embedding_scores, score_caption
        from studio.export.runs import load_gaussians_from_config
        from studio.io.atomic import atomic_path, atomic_write_text
        from studio.io.headers import check_prompt_file
        from studio.render.turntable import make_sheet

        if not (1 <= self.views <= 360 and 16 <= self.size <= 1024):
            raise StudioInputError(f"--views {self.views} / --size {self.size}: need 1..360 views of 16..1024 pixels.")
        captions = check_prompt_file(self.prompts)
        work = self.work_dir or self.output.with_name(self.output.stem + "_runs")
        sheet = self.sheet or self.output.with_name(self.output.stem + "_sheet.png")
        classifier = load_attribute_classifier()
        models = self.image_text_models()
        rows, frames = {}, []
        for k, caption in enumerate(captions):
            config = self.generate(caption, work / f"{k:03d}")
            views = caption_views(load_gaussians_from_config(config), self.views, self.size, self.elevation)
            row = score_caption(classifier, views, caption)
            for suffix, model in models.items():
                row.update({name + suffix: v for name, v in embedding_scores(model, views, caption).items()})
            rows[caption] = {**row, "config": str(config)}
            frames.append(views)
        settings = {"method": self.method, "method_args": self.method_args, "views": self.views}
        settings.update(size=self.size, elevation=self.elevation)
        settings.update({f"alignment{s}_model": m.name for s, m in models.items()})
        overall = weighted_means(list(rows.values()))
        for suffix in models:
            for name in ("alignment", "consistency"):
                values = [r[name + suffix] for r in rows.values() if r[name + suffix] is not None]
                overall[name + suffix] = sum(values) / len(values) if values else None
        metrics = {"captions": rows, "overall": overall, "settings": settings}
        with atomic_path(sheet) as tmp:
            Image.fromarray(make_sheet(np.concatenate(frames), self.views)).save(tmp, format="PNG")
        atomic_write_text(self.output, json.dumps(metrics, indent=1) + "\n")
        table = {"caption": rows, "overall": {"all": metrics["overall"]}}
        print_accuracy_table(table, f"{self.method}: classifier on {self.views} turntable views per result")
        for suffix, model in models.items():
            a, c = overall["alignment" + suffix], overall["consistency" + suffix]
            print(f"{model.name}: alignment {a:.4f}, adjacent-view consistency " + ("-" if c is None else f"{c:.4f}"))
        print(f"Wrote {self.output} and {sheet}")


def print_accuracy_table(report: dict, title: str) -> None:
    """Rows ``report[split][row]`` = {n, category, colour, material} (None: no known label) as one table."""
    from rich.console import Console
    from rich.table import Table

    heads = ("category", "colour", "material")
    table = Table(title=title)
    for name in ("split", "row", "n", *heads):
        table.add_column(name, justify="left" if name in ("split", "row") else "right")
    for split, rows in report.items():
        for name, row in rows.items():
            if "n" in row:
                cells = ["-" if row[h] is None else f"{100 * row[h]:.1f}%" for h in heads]
                table.add_row(split, name, str(row["n"]), *cells)
    Console().print(table)


@dataclass
class Attributes:
    """Held-out accuracy of the ToyWorld attribute classifier (train it first with --train) into metrics.json."""

    output: Path
    """Metrics JSON to write: accuracy rows per split (test, validation) and the classifier's record."""
    weights: Optional[Path] = None
    """Classifier .safetensors to evaluate, or to write with --train (default: the committed one)."""
    train: bool = False
    """Train a classifier on ToyWorld training-split renders first (then evaluate it)."""
    seeds: int = 3000
    """Training seeds (with --train; the first trainable ones, rendered once and cached)."""
    views: int = 6
    """Random views per training seed."""
    steps: int = 3000
    """Optimiser steps (with --train)."""
    workers: int = 1
    """Processes that render the training data."""
    eval_views: int = 4
    """Random views per held-out seed."""
    eval_res: int = 32
    """Resolution of the held-out renders (the classifier resizes them to 32x32)."""
    threads: int = 1
    """torch CPU threads (0: torch's default; one trains fastest on a CPU shared with other jobs)."""

    def inputs(self) -> list[Input]:
        if self.train:
            weights = Input("--weights", Kind.OUTPUT_FILE, self.weights, suffixes=(".safetensors",))
        else:
            weights = Input("--weights", Kind.SAFETENSORS, self.weights, suffixes=(".safetensors",))
        return [Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".json",), required=True), weights]

    def main(self) -> None:
        import dataclasses
        import time

        import torch

        from studio.eval import classifier as clf
        from studio.io.atomic import atomic_write_text

        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.weights or clf.DEFAULT_WEIGHTS
        if self.train:
            cfg = clf.ClassifierTrainConfig(steps=self.steps)
            cfg.data = dataclasses.replace(cfg.data, n_seeds=self.seeds, views=self.views)
            t0 = time.time()
            views = clf.training_views(cfg.data, workers=self.workers)
            data_seconds = time.time() - t0
            model, record = clf.train_classifier(views, cfg)
            record.update(data_seconds=round(data_seconds, 1), train_views=len(views))
            clf.save_attribute_classifier(model, path, record)
        model = clf.load_attribute_classifier(path)  # what is measured is the saved (fp16) file
        record = model.config.get("record", {})
        report = {
            split: clf.accuracy_table(model, clf.heldout_views(split, self.eval_views, self.eval_res))
            for split in ("test", "validation")
        }
        if self.train:
            record.update(eval_views=self.eval_views, eval_res=self.eval_res, accuracy=report)
            clf.save_attribute_classifier(model, path, record)
            print(f"Wrote {path}")
        training = {k: v for k, v in record.items() if k not in ("accuracy", "losses")}
        metrics = {**report, "weights": str(path), "training": training}
        atomic_write_text(self.output, json.dumps(metrics, indent=1) + "\n")
        print_accuracy_table(report, f"attribute classifier {Path(path).name} on held-out ToyWorld renders")
        print(f"Wrote {self.output}")


MODEL_ALIASES = {"teacher": "toy-vit"}
"""--model aliases of feature-lift: ``teacher`` is the embedded default (pass ./teacher for a folder so named)."""

Repeatable = tyro.conf.UseAppendAction
"""``--flag A B`` and ``--flag A --flag B`` both give [A, B] (flattened by :func:`flat_values`)."""


def flat_values(values) -> list:
    """The values of a repeatable list flag ([[A, B], [C]] -> [A, B, C]); a single value as [value]."""
    if isinstance(values, (list, tuple)):
        return [v for item in values for v in flat_values(item)]
    return [values]


def feature_model_spec(spec: str) -> str:
    """What ``load_feature_model`` gets for a --model value (aliases resolved)."""
    return MODEL_ALIASES.get(str(spec).strip(), str(spec))


def feature_lift_data(paths: List[Path]) -> None:
    """--data values: NeRF-synthetic scene folders or folders of them (AOVs are checked in main). A
    dataset of another format (a Nerfstudio transforms.json) is refused, not searched for scenes."""
    from studio.eval.feature_lift import find_scenes

    for path in map(Path, paths):
        if (path / "transforms.json").is_file():
            nerf_synthetic_dataset(path)
    for scene in find_scenes([Path(p) for p in paths]):
        nerf_synthetic_dataset(scene)


def check_feature_models(specs: List[str]) -> None:
    from studio.features import check_feature_model

    for spec in specs:
        check_feature_model(feature_model_spec(spec))


def print_comparison(results: dict, title: str) -> None:
    """``results`` {model name: feature-lift metrics} as one table, a column per model."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from studio.eval.feature_lift import METRIC_KEYS

    def fmt(v) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    table = Table(title=title)
    table.add_column("metric")
    for name in results:
        table.add_column(escape(name), justify="right")
    rows = list(results.values())
    for key in METRIC_KEYS:
        table.add_row(key, *(fmt(r[key]) for r in rows))
    for angle in rows[0]["corr_recall_10px_by_angle"]:
        table.add_row(
            escape(f"corr_recall_10px[{angle} deg]"), *(fmt(r["corr_recall_10px_by_angle"][angle]) for r in rows)
        )
    table.add_row("test views", *(str(r["n_test_views"]) for r in rows))
    Console().print(table)


@dataclass
class FeatureLift:
    """3D awareness of frozen 2D features (Probe3D protocol: depth, normals, correspondence, parts) into metrics.json."""

    data: Annotated[List[List[Path]], Repeatable, tyro.conf.arg(metavar="DIR [DIR ...]")]
    """NeRF-synthetic scene folders (or folders of them) with depth_XXXX.exr and normal_XXXX.exr in their
    train and test splits (id_XXXX.png optional), e.g. from `studio scenes make`; --data A --data B or --data A B."""
    output: Path
    """Metrics JSON to write: depth_rmse, depth_delta1, normal_rmse_deg, normal_recall_{11,22,30},
    corr_recall_{5,10,20}px, corr_recall_10px_by_angle, seg_miou, n_scenes, n_test_views, settings
    (with --compare: {"models": {MODEL: metrics}})."""
    model: Annotated[List[List[str]], Repeatable, tyro.conf.arg(metavar="MODEL [MODEL ...]")] = field(
        default_factory=list
    )
    """Feature model (default: the embedded toy-vit; "teacher" is an alias of it): an embedded name,
    a .safetensors file written by `studio features train` (e.g. a splat-distill student) or a local
    DINOv2 folder; several (--model A --model B) with --compare."""
    compare: bool = False
    """Evaluate every --model with the same settings and print them side by side."""
    steps: Optional[int] = None
    """Optimiser steps of each probe (default: the protocol's PROBE_STEPS); recorded in settings."""
    resolution: Optional[int] = None
    """Longer image side of the evaluation (default: the protocol's EVAL_RESOLUTION); recorded in settings."""
    device: str = "auto"
    """Where the models and probes run: auto (CUDA when available), cpu or cuda."""

    @property
    def models(self) -> List[str]:
        return flat_values(self.model) or ["toy-vit"]

    @property
    def scene_paths(self) -> List[Path]:
        return [Path(p) for p in flat_values(self.data)]

    def inputs(self) -> list[Input]:
        return [
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".json",), required=True),
            Input("--device", Kind.CHOICE, self.device, choices=("auto", "cpu", "cuda")),
            Input("--model", Kind.SAFETENSORS, self.models, check=check_feature_models),
            Input("--data", Kind.DATASET, self.scene_paths, check=feature_lift_data, required=True),
        ]

    def main(self) -> None:
        import dataclasses

        from studio.cli.devices import chosen_device
        from studio.eval import feature_lift as fl
        from studio.features import load_feature_model
        from studio.io.atomic import atomic_write_text

        models = self.models
        if len(models) != 1 and not self.compare:
            raise StudioInputError(f"--model: {len(models)} models given; pass one, or several with --compare.")
        if len(set(models)) != len(models):
            raise StudioInputError(f"--model: {', '.join(models)} names a model twice; pass each once.")
        if (self.steps is not None and self.steps < 1) or (
            self.resolution is not None and not 16 <= self.resolution <= 2048
        ):
            raise StudioInputError(
                f"--steps {self.steps} / --resolution {self.resolution}: need >= 1 step and 16..2048 pixels."
            )
        device = chosen_device(self.device)
        scenes = fl.find_scenes(self.scene_paths)
        try:
            for scene in scenes:
                fl.check_scene_aovs(scene)
        except StudioInputError as err:
            raise StudioInputError(f"--data: {err}") from None
        settings = fl.ProbeSettings()
        if self.steps is not None:
            settings = dataclasses.replace(settings, steps=self.steps)
        if self.resolution is not None:
            settings = dataclasses.replace(settings, resolution=self.resolution)
        results = {}
        for spec in models:
            model = load_feature_model(feature_model_spec(spec), device=device)
            print(f"{spec}: {model.name} (dim {model.dim}, patch {model.patch_size}, {model.image_size} px)")
            results[spec] = fl.evaluate_feature_lift(
                model, scenes, settings, device=device, progress=lambda msg: print(f"  {msg}", flush=True)
            )
            del model
        metrics = {"models": results} if self.compare else results[models[0]]
        atomic_write_text(self.output, json.dumps(metrics, indent=1) + "\n")
        names = ", ".join(p.name for p in scenes[:3]) + (" ..." if len(scenes) > 3 else "")
        print_comparison(results, f"feature-lift on {len(scenes)} scene(s) ({names})")
        print(f"Wrote {self.output}")


@dataclass
class Generate:
    """Score a one-step 3D generator on held-out posed scenes against its multi-step teacher.

    flashworld: from training frame 0's image, 1 step, 4 steps and the teacher. videoscene: from
    pairs of test-ring views, the coarse feed-forward Gaussians, one step at the fixed and at the
    policy's leap timestep, and the teacher, scored at the views between each pair."""

    data: Annotated[List[List[Path]], Repeatable, tyro.conf.arg(metavar="DIR [DIR ...]")]
    """Held-out scenes (NeRF-synthetic folders, e.g. `studio scenes make` of test-split seeds; videoscene:
    with a test ring, --n-test 24), or folders of them; --data A --data B or --data A B."""
    output: Path
    """Metrics JSON to write: per variant psnr, ssim, mask_iou, (lpips), reprojection_error, seconds;
    per_scene (per_pair) rows; speedup_1step_vs_teacher; settings."""
    method: str = "flashworld"
    """The generator: flashworld or videoscene."""
    weights: Optional[Path] = None
    """Generator weights (default: the embedded student)."""
    teacher_weights: Optional[Path] = None
    """The teacher's weights (default: the embedded toy-mv / videoscene-teacher)."""
    policy_weights: Optional[Path] = None
    """videoscene: the policy network and fixed timestep (default: the embedded videoscene-policy)."""
    predictor_weights: Optional[Path] = None
    """videoscene: the coarse feed-forward predictor (default: the embedded mvsplat-toy)."""
    views: int = 4
    """flashworld: cameras generated per scene: training frame 0 (the input image) and views - 1 more."""
    condition: str = "image"
    """flashworld: image, caption (meta.json's) or both."""
    variants: List[str] = field(default_factory=list)
    """What to score (default: flashworld 1-step 4-step teacher; videoscene coarse fixed policy teacher teacher-leap)."""
    timesteps: List[int] = field(default_factory=list)
    """videoscene: also one step at each of these leap timesteps (variants t=N; the validation sweep)."""
    gap: int = 3
    """videoscene: test-ring steps between the two input views."""
    pairs: int = 3
    """videoscene: input pairs per scene."""
    teacher_steps: int = 50
    guidance_scale: float = 3.0
    seed: int = 0
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    device: str = "auto"

    @property
    def scene_paths(self) -> List[Path]:
        return [Path(p) for p in flat_values(self.data)]

    @property
    def all_variants(self) -> List[str]:
        base = VIDEOSCENE_VARIANTS if self.method == "videoscene" else GENERATOR_VARIANTS
        return list(self.variants or base) + [f"t={t}" for t in self.timesteps]

    def inputs(self) -> list[Input]:
        checks = [
            Input("--data", Kind.DATASET, self.scene_paths, check=feature_lift_data, required=True),
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".json",), required=True),
            Input("--method", Kind.CHOICE, self.method, choices=GENERATE_METHODS),
            Input("--condition", Kind.CHOICE, self.condition, choices=("image", "caption", "both")),
        ]
        choices = VIDEOSCENE_VARIANTS if self.method == "videoscene" else GENERATOR_VARIANTS
        checks += [Input("--variants", Kind.CHOICE, v, choices=choices) for v in self.variants]
        from studio.cli.generate import weight_inputs

        return checks + weight_inputs(self)

    def main(self) -> None:
        import torch

        from studio.cli.devices import chosen_device
        from studio.eval.feature_lift.data import find_scenes
        from studio.eval.generate import print_generate_table
        from studio.io.atomic import atomic_write_text

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        folders = find_scenes(self.scene_paths)
        device = chosen_device(self.device)
        if self.method == "videoscene":
            result, settings = self.evaluate_videoscene(folders, device)
        else:
            result, settings = self.evaluate_flashworld(folders, device)
        result["settings"] = {
            "method": self.method,
            "weights": str(self.weights or "embedded"),
            "teacher_weights": str(self.teacher_weights or "embedded"),
            "teacher_steps": self.teacher_steps,
            "guidance_scale": self.guidance_scale,
            "seed": self.seed,
            **settings,
        }
        atomic_write_text(self.output, json.dumps(result, indent=1) + "\n")
        print_generate_table(result, f"{self.method} on {', '.join(p.name for p in folders[:3])}")
        print(f"Wrote {self.output}")

    def evaluate_flashworld(self, folders: List[Path], device) -> tuple[dict, dict]:
        from studio.eval.generate import GenerateEvalConfig, VariantModels, evaluate

        models = VariantModels.load(self.weights, self.teacher_weights, device)
        cfg = GenerateEvalConfig(
            views=self.views,
            condition=self.condition,
            teacher_steps=self.teacher_steps,
            guidance_scale=self.guidance_scale,
            seed=self.seed,
            variants=tuple(self.all_variants),
        )
        return evaluate(models, folders, cfg), {"views": self.views, "condition": self.condition}

    def evaluate_videoscene(self, folders: List[Path], device) -> tuple[dict, dict]:
        from studio.eval.videoscene import VideoSceneEvalConfig, evaluate
        from studio.generators.videoscene import POLICY_WEIGHTS, load_videoscene

        needs_policy = {"fixed", "policy", "teacher-leap"} & set(self.all_variants)
        policy = self.policy_weights or (POLICY_WEIGHTS if needs_policy else None)
        model = load_videoscene(self.weights, self.teacher_weights, self.predictor_weights, policy, device)
        cfg = VideoSceneEvalConfig(
            gap=self.gap,
            pairs=self.pairs,
            teacher_steps=self.teacher_steps,
            guidance_scale=self.guidance_scale,
            seed=self.seed,
            variants=tuple(self.all_variants),
        )
        settings = {"gap": self.gap, "pairs": self.pairs, "policy": str(policy)}
        if policy is not None:
            settings["fixed_timestep"] = model.timestep
        return evaluate(model, folders, cfg), settings


COMMANDS = {
    "prd": Prd,
    "generate": Generate,
    "image-to-3d": ImageTo3D,
    "sparse-view": SparseView,
    "text-to-3d": TextTo3D,
    "attributes": Attributes,
    "feature-lift": FeatureLift,
}
