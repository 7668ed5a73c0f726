"""NeRF-synthetic reader: ``transforms_{train,val,test}.json`` + RGBA PNGs (Mildenhall et al. 2020).

Each file has ``camera_angle_x`` (horizontal field of view, radians) and ``frames`` with
``file_path`` (relative, extension optional: ``.png`` is appended when missing) and a 4x4
camera-to-world ``transform_matrix`` in OpenGL axes. The principal point is the image centre.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studio.data.checks import check_same_size, frames_of, pose_of, read_json
from studio.io.errors import StudioInputError

SPLITS = ("train", "val", "test")


@dataclass
class FrameSet:
    """One split: image paths, camera-to-world [N,4,4] (OpenGL axes), shared pinhole intrinsics."""

    image_paths: list[Path]
    camera_to_worlds: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def centred_pinhole(cls, paths: list[Path], camera_to_worlds: np.ndarray, width: int, height: int, angle_x: float):
        """Frames of one pinhole camera with its principal point at the image centre and the horizontal
        field of view ``angle_x`` (radians); ``camera_to_worlds`` [N,4,4]."""
        focal = 0.5 * width / math.tan(0.5 * angle_x)
        return cls(
            image_paths=paths,
            camera_to_worlds=np.asarray(camera_to_worlds, np.float32),
            fx=focal,
            fy=focal,
            cx=width / 2.0,
            cy=height / 2.0,
            width=width,
            height=height,
        )

    def subset(self, indices: list[int]) -> "FrameSet":
        """The frames ``indices`` of this split (same intrinsics)."""
        return dataclasses.replace(
            self, image_paths=[self.image_paths[i] for i in indices], camera_to_worlds=self.camera_to_worlds[indices]
        )


def split_file(root: Path, split: str) -> Path:
    """The transforms file of ``split``; ``val`` falls back to ``test`` (as many datasets ship)."""
    path = root / f"transforms_{split}.json"
    if not path.exists() and split == "val":
        path = root / "transforms_test.json"
    if not path.exists() and split != "train":
        path = root / "transforms_train.json"
    return path


def _image_path(root: Path, file_path: str) -> Path:
    rel = Path(file_path)
    path = (root / rel).resolve()
    return path if path.suffix.lower() in (".png", ".jpg", ".jpeg") else path.with_name(path.name + ".png")


def read_nerf_synthetic(root: Path, split: str) -> FrameSet:
    """Read and validate one split of a NeRF-synthetic folder."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    source = split_file(root, split)
    meta = read_json(source)
    frames = frames_of(meta, source)
    try:
        angle_x = float(meta["camera_angle_x"])
    except (KeyError, TypeError, ValueError):
        raise StudioInputError(f"{source} has no numeric 'camera_angle_x'.") from None
    if not (math.isfinite(angle_x) and 0.0 < angle_x < math.pi):
        raise StudioInputError(f"{source}: camera_angle_x = {angle_x} is not a field of view in (0, pi) radians.")
    paths, poses = [], []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise StudioInputError(f"{source}: frame {i} has no 'file_path' string.")
        paths.append(_image_path(root, frame["file_path"]))
        poses.append(pose_of(frame, i, source))
    width, height = check_same_size(paths)
    return FrameSet.centred_pinhole(paths, np.stack(poses), width, height, angle_x)
