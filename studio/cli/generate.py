"""``studio generate flashworld|videoscene``: a 3D Gaussian scene in one step.

    studio generate flashworld --image view.png --output scene.ply [--cameras cams.json] [--steps 1]
    studio generate flashworld --prompt "a red cube" --output scene.ply
    studio generate videoscene --views a.png b.png --cameras cams.json --output scene.ply

The first camera of ``--cameras`` (a transforms file; default: 4 views on a 60-degree arc at 20
degrees elevation) is the view of ``--image``. The PLY (standard 3DGS layout) is in the world of
the camera file, or, without one, in the normalised frame (scene at the origin, cameras at unit
distance). ``--teacher`` runs the multi-step teacher instead (MV mode with DDIM and CFG, then
reconstruction).

videoscene: ``--cameras`` holds the two views' cameras (frames 0 and 1: ``--views`` in order); the
coarse feed-forward Gaussians of the two views are rendered along the trajectory between them,
noised to the leap timestep (the policy network's choice, ``--fixed`` for the fixed one or
``--timestep T``) and denoised by the distilled video model in one step; the Gaussians
reconstructed from those frames are written in the camera file's world. ``--teacher`` runs the
multi-step video model from noise instead.

This verb never imports Nerfstudio, so it starts fast.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from studio.io import StudioInputError
from studio.io.inputs import Input, Kind


def weight_inputs(command) -> list[Input]:
    """The given ``--weights``, ``--teacher-weights``, ``--policy-weights`` and
    ``--predictor-weights`` of ``command`` (those it has) as safetensors inputs."""
    names = ("weights", "teacher_weights", "policy_weights", "predictor_weights")
    return [
        Input("--" + n.replace("_", "-"), Kind.SAFETENSORS, getattr(command, n))
        for n in names
        if getattr(command, n, None) is not None
    ]


def run_and_write(name: str, output: Path, sheet: Optional[Path], generate) -> None:
    """Run ``generate(say) -> (world Gaussians, strips)`` under a rich status line, write the PLY
    (and the strips [V,3,h,w] in [0,1], one row each, as the ``sheet`` PNG), print the seconds."""
    import torch
    from rich.console import Console

    console = Console(stderr=True)
    with console.status(f"{name}: loading") as status:
        start = time.time()
        scene, strips = generate(lambda msg: status.update(f"{name}: {msg}"))
    from studio.export.ply import save_gaussians_ply

    save_gaussians_ply(output, scene)
    if sheet is not None:
        from studio.cli.prior import write_png

        rows = [s.permute(2, 0, 3, 1).flatten(1, 2) for s in strips]  # [h, V*w, 3] each
        write_png((torch.cat(rows, 0).clamp(0, 1).numpy() * 255 + 0.5).astype("uint8"), sheet, scale=4)
    console.print(f"Wrote {output} ({len(scene)} Gaussians) in {time.time() - start:.2f} s")


@dataclass
class FlashWorldGenerate:
    """Generate a 3D Gaussian scene (.ply) from an image and/or a caption with FlashWorld."""

    output: Path
    """The 3DGS .ply to write."""
    image: Optional[Path] = None
    """The input view (RGBA, or RGB on a plain background); the first camera's view."""
    prompt: Optional[str] = None
    """A caption (with or without --image)."""
    cameras: Optional[Path] = None
    """Transforms file of the views to generate (2-8 frames; frame 0 is the image's view)."""
    steps: int = 1
    """Generation steps (1-4; the distilled student's range)."""
    weights: Optional[Path] = None
    """FlashWorld weights (.safetensors; default: the embedded student studio/generators/weights/flashworld-toy,
    or with --teacher the embedded toy-mv)."""
    teacher: bool = False
    """Use the multi-step teacher (the dual-mode model's MV mode with DDIM, then reconstruction) instead of the student."""
    teacher_steps: int = 50
    guidance_scale: float = 3.0
    """Classifier-free guidance of the teacher."""
    border_ratio: Optional[float] = None
    """Recentre the object so it fills 1 - 2*ratio of the frame (default: keep the framing)."""
    sheet: Optional[Path] = None
    """Also write the renders at the cameras as a .png strip."""
    seed: int = 0
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""

    def inputs(self) -> list[Input]:
        checks = [Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".ply",))]
        if self.image is not None:
            checks.append(Input("--image", Kind.IMAGE, self.image))
        checks += weight_inputs(self)
        if self.sheet is not None:
            checks.append(Input("--sheet", Kind.OUTPUT_FILE, self.sheet, suffixes=(".png",)))
        return checks

    def main(self) -> None:
        if self.image is None and not self.prompt:
            raise StudioInputError(
                "Give --image and/or --prompt: FlashWorld generates from an image, a caption or both."
            )
        if not 1 <= self.steps <= 8:
            raise StudioInputError(f"--steps {self.steps} must be in 1..8 (the student is distilled for 1-4).")
        run_and_write("FlashWorld", self.output, self.sheet, self.generate)

    def generate(self, say):
        """(world Gaussians, [renders [V,3,res,res] in [0,1]]) of the command's inputs."""
        import torch

        from studio.cameras.normalize import scene_frame, to_frame
        from studio.cli.devices import chosen_device
        from studio.generators.flashworld import TEACHER_WEIGHTS, default_cameras, load_flashworld, world_gaussians

        device = chosen_device(self.device)
        torch.manual_seed(self.seed)
        model = load_flashworld(self.weights or (TEACHER_WEIGHTS if self.teacher else None), device=device)
        res = model.res
        frame = None
        if self.cameras is not None:
            from studio.data.camera_file import read_cameras

            viewmats, Ks = read_cameras(self.cameras, res)
            if not 2 <= len(viewmats) <= 8:
                raise StudioInputError(f"{self.cameras} has {len(viewmats)} cameras; FlashWorld takes 2 to 8.")
            frame = scene_frame(viewmats[None])
            viewmats = to_frame(viewmats[None], frame)[0]
        else:
            viewmats, Ks = default_cameras(model.prior.n_views, res)
        viewmats, Ks = viewmats[None].to(device), Ks[None].to(device)
        image = None
        if self.image is not None:
            from studio.data.single_image import load_reference

            ref = load_reference(self.image, size=res, border_ratio=self.border_ratio)
            image = torch.from_numpy(ref.rgb).float().permute(2, 0, 1)[None].to(device)
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            cond = model.condition(viewmats, Ks, image=image, text=self.prompt or "")
            say("teacher sampling" if self.teacher else f"{self.steps}-step generation")
            if self.teacher:
                gaussians, _ = model.teacher(cond, viewmats, Ks, self.teacher_steps, self.guidance_scale, generator)
            else:
                gaussians = model.generate(cond, viewmats, Ks, self.steps, generator)
            renders = model.render(gaussians, viewmats, Ks)[0]
        return world_gaussians(gaussians.map(lambda t: t.cpu()), frame), [renders.cpu()]


@dataclass
class VideoSceneGenerate:
    """Generate a 3D Gaussian scene (.ply) from two posed views with VideoScene (one step)."""

    views: list[Path]
    """The two input views (RGBA, or RGB on white; square), in the order of the camera file's frames."""
    cameras: Path
    """Transforms file with the two views' cameras (frames 0 and 1)."""
    output: Path
    """The 3DGS .ply to write."""
    timestep: Optional[int] = None
    """Leap timestep (1-999; default: the policy network's choice). With --teacher: the teacher
    starts from the coarse video noised to it (default: from pure noise)."""
    fixed: bool = False
    """Use the fixed leap timestep chosen on validation scenes instead of the policy's."""
    teacher: bool = False
    """Use the multi-step video model from noise (DDIM with CFG) instead of the one-step student."""
    teacher_steps: int = 50
    guidance_scale: float = 3.0
    weights: Optional[Path] = None
    """One-step student (default: the embedded studio/generators/weights/videoscene-toy)."""
    teacher_weights: Optional[Path] = None
    """Interpolation teacher and reconstructor (default: the embedded videoscene-teacher)."""
    policy_weights: Optional[Path] = None
    """Policy network and fixed timestep (default: the embedded videoscene-policy)."""
    predictor_weights: Optional[Path] = None
    """Coarse feed-forward predictor (default: the embedded mvsplat-toy)."""
    sheet: Optional[Path] = None
    """Also write a .png: the coarse video (top) and the generated frames (bottom) along the trajectory."""
    seed: int = 0
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""

    def inputs(self) -> list[Input]:
        from studio.data.camera_file import check_camera_file
        from studio.io.headers import check_image

        def check_images(paths) -> None:
            for path in paths:
                check_image(Path(path))

        checks = [
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".ply",), required=True),
            Input("--views", Kind.IMAGE, list(self.views), check=check_images, required=True),
            Input("--cameras", Kind.CAMERAS, self.cameras, check=check_camera_file, required=True),
        ]
        checks += weight_inputs(self)
        if self.sheet is not None:
            checks.append(Input("--sheet", Kind.OUTPUT_FILE, self.sheet, suffixes=(".png",)))
        return checks

    def main(self) -> None:
        if len(self.views) != 2:
            raise StudioInputError(f"--views takes exactly two images, got {len(self.views)}.")
        if self.timestep is not None and not 0 < self.timestep < 1000:
            raise StudioInputError(f"--timestep {self.timestep} must be in 1..999.")
        run_and_write("VideoScene", self.output, self.sheet, self.generate)

    def generate(self, say):
        """(world Gaussians, [coarse video, generated frames] [V,3,res,res] each) of the inputs."""
        import torch

        from studio.cameras.normalize import SceneFrame
        from studio.cli.devices import chosen_device
        from studio.data.camera_file import read_cameras
        from studio.data.single_image import load_reference
        from studio.eval.videoscene import INPUT_RES
        from studio.generators.flashworld import world_gaussians
        from studio.generators.videoscene import POLICY_WEIGHTS, load_videoscene

        device = chosen_device(self.device)
        viewmats, Ks = read_cameras(self.cameras, INPUT_RES)
        if len(viewmats) != 2:
            raise StudioInputError(
                f"{self.cameras} has {len(viewmats)} cameras; videoscene takes the two views' cameras."
            )
        images = [load_reference(v, size=INPUT_RES, border_ratio=None).rgb for v in self.views]
        images = torch.stack([torch.from_numpy(i).float().permute(2, 0, 1) for i in images])[None].to(device)
        use_policy = not (self.fixed or self.teacher or self.timestep is not None)
        model = load_videoscene(
            self.weights, self.teacher_weights, self.predictor_weights, self.policy_weights or POLICY_WEIGHTS,
            device, use_policy=use_policy,
        )  # fmt: skip
        inputs = model.prepare(images, viewmats[None].to(device), Ks[None].to(device))
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            if self.teacher:
                say(f"teacher sampling ({self.teacher_steps} steps)")
                out = model.teacher_generate(inputs, self.teacher_steps, self.guidance_scale, generator, self.timestep)
            else:
                say("one-step generation")
                out = model.generate(inputs, self.timestep, generator)
        frame = SceneFrame(inputs.frame.center.cpu(), inputs.frame.scale.cpu())
        gaussians = world_gaussians(out.gaussians.map(lambda t: t.cpu()), frame)
        return gaussians, [out.coarse_video[0].cpu(), out.video[0].cpu()]


COMMANDS = {"flashworld": FlashWorldGenerate, "videoscene": VideoSceneGenerate}
