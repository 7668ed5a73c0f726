"""Reading ground-truth images: 8/16-bit PNG/JPEG as float arrays, RGBA composited over white."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studio.io.errors import StudioInputError


def read_image(path: Path) -> np.ndarray:
    """An 8/16-bit PNG/JPEG as float32 [H,W,C] in [0,1] (C = 1, 3 or 4)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, ValueError):
        raise StudioInputError(f"image {path} cannot be read.") from None
    scale = 65535.0 if arr.dtype == np.uint16 or arr.max(initial=0) > 255 else 255.0
    arr = arr.astype(np.float32) / scale
    return arr[..., None] if arr.ndim == 2 else arr


def over_white(rgba: np.ndarray) -> np.ndarray:
    """RGB(A) straight colour [H,W,C] composited over white -> [H,W,3]."""
    if rgba.shape[-1] < 4:
        return rgba[..., :3]
    a = rgba[..., 3:4]
    return rgba[..., :3] * a + (1.0 - a)
