"""``studio render PATH --output turntable.mp4|turntable.gif|sheet.png``: turntables of a result.

PATH is a Gaussian PLY, a mesh (.ply/.glb/.gltf/.obj/.off/.stl) or a trained run's config.yml.
The camera orbits the scene centre about ``--up`` (world +Z by default, the Blender /
NeRF-synthetic convention; use ``--up 0 1 0`` for Y-up scenes). Videos (.mp4 through the ffmpeg
of ``imageio-ffmpeg``, or .gif) hold every frame; a .png is a contact sheet of the frames.
Outputs are written atomically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from studio.io import StudioInputError, atomic_path
from studio.io.inputs import Input, Kind

OUTPUT_SUFFIXES = (".mp4", ".gif", ".png")


@dataclass
class Render:
    """Render a turntable video (.mp4/.gif) or a contact sheet (.png) of a result."""

    path: tyro.conf.Positional[Path]
    """Gaussian PLY, mesh file, or a trained run's config.yml."""
    output: Path
    """Output file: .mp4 or .gif (video) or .png (sheet of all frames)."""
    frames: int = 60
    """Number of views on the orbit."""
    size: int = 256
    """Width and height of each frame in pixels."""
    elevation: float = 20.0
    """Camera elevation above the plane orthogonal to --up, in degrees."""
    fov: float = 40.0
    """Field of view of the (square) frames, in degrees."""
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """World up axis the orbit turns about."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background RGB in [0, 1]."""
    fps: int = 30
    """Frame rate of videos."""
    cols: int = 0
    """Columns of a .png sheet; 0 picks ceil(sqrt(frames))."""
    backend: Literal["auto", "torch", "studio"] = "auto"
    """Gaussian rasterizer backend (meshes are ray cast on the CPU)."""

    def inputs(self) -> list[Input]:
        """The scene file and the output file."""
        return [
            Input("PATH", Kind.SCENE, self.path, required=True),
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=OUTPUT_SUFFIXES, required=True),
        ]

    def main(self) -> None:
        """Validate the arguments, render, and write the output."""
        from studio.export.scene import load_scene

        suffix = self.output.suffix.lower()
        if self.frames < 1 or self.fps < 1 or self.size < 8:
            raise StudioInputError("--frames and --fps must be at least 1, and --size at least 8.")
        if not any(self.up):
            raise StudioInputError("--up must be a non-zero vector.")

        from studio.render.turntable import make_sheet, turntable

        frames = turntable(
            load_scene(self.path),
            n_frames=self.frames,
            size=self.size,
            elevation_deg=self.elevation,
            fov_deg=self.fov,
            up=self.up,
            background=self.background,
            backend=self.backend,
        )
        if suffix == ".png":
            cols = self.cols if self.cols > 0 else math.ceil(math.sqrt(self.frames))
            _write_image(self.output, make_sheet(frames, cols))
        else:
            _write_video(self.output, frames, self.fps)
        print(f"Wrote {self.output} ({len(frames)} frames of {self.size}x{self.size}).")


def _write_image(path: Path, image) -> None:
    """Write one uint8 image atomically (format from the suffix)."""
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=path.suffix.lower())


def _write_video(path: Path, frames, fps: int) -> None:
    """Write uint8 frames [F,H,W,3] as a looping .gif or an H.264 .mp4 (yuv420p), atomically."""
    import imageio.v2 as imageio
    import imageio.v3 as iio
    import numpy as np

    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".gif":
            iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
        else:
            # yuv420p needs even sizes: repeat the last row / column where a side is odd.
            _, h, w, _ = frames.shape
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            imageio.mimwrite(
                tmp,
                list(frames),
                format="FFMPEG",
                fps=fps,
                codec="libx264",
                quality=8,
                pixelformat="yuv420p",
                macro_block_size=2,
            )
