"""``studio generate flashworld``: a 3D Gaussian scene from one image and/or a caption, in 1-4 steps.

    studio generate flashworld --image view.png --output scene.ply [--cameras cams.json] [--steps 1]
    studio generate flashworld --prompt "a red cube" --output scene.ply

The first camera of ``--cameras`` (a transforms file; default: 4 views on a 60-degree arc at 20
degrees elevation) is the view of ``--image``. The PLY (standard 3DGS layout) is in the world of
the camera file, or, without one, in the normalised frame (scene at the origin, cameras at unit
distance). ``--teacher`` runs the multi-step teacher instead (MV mode with DDIM and CFG, then
reconstruction). This verb never imports Nerfstudio, so it starts fast.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from studio.io import StudioInputError
from studio.io.inputs import Input, Kind


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
        if self.weights is not None:
            checks.append(Input("--weights", Kind.SAFETENSORS, self.weights))
        if self.sheet is not None:
            checks.append(Input("--sheet", Kind.OUTPUT_FILE, self.sheet, suffixes=(".png",)))
        return checks

    def main(self) -> None:
        from rich.console import Console

        if self.image is None and not self.prompt:
            raise StudioInputError(
                "Give --image and/or --prompt: FlashWorld generates from an image, a caption or both."
            )
        if not 1 <= self.steps <= 8:
            raise StudioInputError(f"--steps {self.steps} must be in 1..8 (the student is distilled for 1-4).")
        console = Console(stderr=True)
        with console.status("FlashWorld: loading") as status:
            start = time.time()
            scene, renders = self.generate(lambda msg: status.update(f"FlashWorld: {msg}"))
        from studio.export.ply import save_gaussians_ply

        save_gaussians_ply(self.output, scene)
        if self.sheet is not None:
            from studio.cli.prior import write_png

            strip = renders.permute(2, 0, 3, 1).flatten(1, 2)  # [h, V*w, 3]
            write_png((strip.clamp(0, 1).numpy() * 255 + 0.5).astype("uint8"), self.sheet, scale=4)
        console.print(f"Wrote {self.output} ({len(scene)} Gaussians) in {time.time() - start:.2f} s")

    def generate(self, say):
        """(world Gaussians, renders [V,3,res,res] in [0,1]) of the command's inputs."""
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
        return world_gaussians(gaussians.map(lambda t: t.cpu()), frame), renders.cpu()


COMMANDS = {"flashworld": FlashWorldGenerate}
