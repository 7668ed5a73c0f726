"""Input validation shared by the readers: each failure is one sentence naming the bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from studio.io.errors import StudioInputError


def read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object file or raise StudioInputError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudioInputError(f"{path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StudioInputError(f"{path} is not valid JSON ({err}).") from None
    if not isinstance(data, dict):
        raise StudioInputError(f"{path} must hold a JSON object at the top level.")
    return data


def frames_of(meta: dict[str, Any], source: Path) -> list[dict[str, Any]]:
    """The non-empty ``frames`` list of a transforms file."""
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise StudioInputError(f"{source} has no frames (its 'frames' list is missing or empty).")
    return frames


def pose_of(frame: dict[str, Any], index: int, source: Path) -> np.ndarray:
    """A frame's finite 4x4 camera-to-world matrix (a 3x4 one gets the [0,0,0,1] row)."""
    try:
        mat = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise StudioInputError(f"{source}: frame {index} has no numeric 'transform_matrix'.") from None
    if mat.shape == (3, 4):
        mat = np.vstack([mat, [0.0, 0.0, 0.0, 1.0]])
    if mat.shape != (4, 4):
        raise StudioInputError(f"{source}: frame {index} 'transform_matrix' has shape {mat.shape}, expected 4x4.")
    if not np.all(np.isfinite(mat)):
        raise StudioInputError(f"{source}: frame {index} 'transform_matrix' contains NaN or infinite values.")
    if abs(np.linalg.det(mat[:3, :3])) < 1e-6:
        raise StudioInputError(f"{source}: frame {index} 'transform_matrix' has a degenerate rotation.")
    return mat


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of a readable image; raises for a missing or corrupt file."""
    if not path.is_file():
        raise StudioInputError(f"Image {path} does not exist.")
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise StudioInputError(f"Image {path} is corrupt or not an image ({err}).") from None


def check_same_size(paths: Sequence[Path], expected: Sequence[tuple[int, int]] | None = None) -> tuple[int, int]:
    """Check every image is readable and of the expected (width, height); returns the first size.

    ``expected`` gives one size per image (e.g. per-frame intrinsics); without it all images must
    share the first image's size.
    """
    first = None
    for i, path in enumerate(paths):
        size = image_size(path)
        want = expected[i] if expected is not None else (first or size)
        if size != tuple(want):
            raise StudioInputError(
                f"Image {path} is {size[0]}x{size[1]} but {want[0]}x{want[1]} was expected (mismatched image sizes)."
            )
        first = first or size
    assert first is not None
    return first
