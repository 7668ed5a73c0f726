"""One input image for image-to-3D: foreground mask, recentring, optional depth/normal maps.

* Mask: the alpha channel of an RGBA image; for RGB, a local method (no model download):
  the background colour is estimated from the image border; when the border is uniform the
  mask is the pixels far from that colour, else OpenCV's GrabCut initialised with a rectangle
  inset from the border. Both keep the largest connected component and fill its holes.
* Recentring (as threestudio/DreamCraft3D's preprocessing): the mask's bounding box is scaled so
  its longer side fills ``1 - 2 * border_ratio`` of a square ``size`` x ``size`` image, centred;
  colours are composited over white (the background the priors were trained with).
* Optional user depth (any monotonic scale: only used through a Pearson correlation) and
  normal maps (RGB-encoded, n = 2 c - 1, camera space) go through the same crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from studio.io.errors import StudioInputError


class Recentring(NamedTuple):
    """Where recentring puts the object: the mask's box, rows ``[y0, y1)`` x columns ``[x0, x1)``
    of the input (pixels), is resized to ``ch`` x ``cw`` pixels and pasted at row ``oy``, column
    ``ox`` of the square output (``size`` pixels)."""

    y0: int
    y1: int
    x0: int
    x1: int
    ch: int
    cw: int
    oy: int
    ox: int
    size: int

    def zoom(self) -> tuple[float, float]:
        """Output pixels per input pixel along x and along y (equal up to the rounding of ``cw``, ``ch``)."""
        return self.cw / (self.x1 - self.x0), self.ch / (self.y1 - self.y0)

    def apply(self, uv: np.ndarray) -> np.ndarray:
        """Input pixel coordinates [..., 2] (u right, v down; continuous, pixel edges at integers,
        as ``cv2.resize`` maps them) -> output pixel coordinates [..., 2]."""
        zx, zy = self.zoom()
        uv = np.asarray(uv, dtype=np.float64)
        return np.stack([self.ox + zx * (uv[..., 0] - self.x0), self.oy + zy * (uv[..., 1] - self.y0)], -1)


def recentring(mask: np.ndarray, size: int, border_ratio: float) -> Recentring:
    """The :class:`Recentring` of a [H,W] ``mask`` (foreground > 0.5): its bounding box scaled so
    its longer side fills ``1 - 2 * border_ratio`` of ``size``, centred."""
    ys, xs = np.nonzero(mask > 0.5)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    scale = (1.0 - 2.0 * border_ratio) * size / max(y1 - y0, x1 - x0)
    ch, cw = max(1, round((y1 - y0) * scale)), max(1, round((x1 - x0) * scale))
    return Recentring(y0, y1, x0, x1, ch, cw, (size - ch) // 2, (size - cw) // 2, size)


@dataclass
class ReferenceView:
    """A preprocessed reference image: ``rgb`` [S,S,3] in [0,1] over white, ``mask`` [S,S] in
    [0,1], ``depth`` [S,S] or None, ``normal`` [S,S,3] unit vectors or None; ``recentring``: where
    the input's pixels went (the whole image resized to S x S when the framing was kept)."""

    rgb: np.ndarray
    mask: np.ndarray
    depth: Optional[np.ndarray] = None
    normal: Optional[np.ndarray] = None
    recentring: Optional[Recentring] = None


def _read(path: Path, what: str) -> np.ndarray:
    import imageio.v3 as iio

    if not path.is_file():
        raise StudioInputError(f"{what} {path} does not exist.")
    try:
        img = np.asarray(iio.imread(path))
    except Exception as err:  # imageio raises many types for unreadable files
        raise StudioInputError(f"{what} {path} is not a readable image ({type(err).__name__}).") from None
    if img.ndim not in (2, 3):
        raise StudioInputError(f"{what} {path} has shape {img.shape}, expected an H x W (x C) image.")
    return img


def _to_float(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    return img.astype(np.float32)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.astype(bool)
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    comp = (labels == keep).astype(np.uint8)
    # fill holes: flood the (padded) background from a corner; what it does not reach is inside
    padded = np.pad(comp, 1)
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8), (0, 0), 1)
    return (padded | (1 - flood)).astype(bool)[1:-1, 1:-1]


def foreground_mask(rgb: np.ndarray, uniform_tol: float = 0.06, threshold: float = 0.12) -> np.ndarray:
    """[H,W] bool foreground of an RGB image [H,W,3] in [0,1] (see module docstring)."""
    import cv2

    h, w = rgb.shape[:2]
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    bg = np.median(border, axis=0)
    spread = np.median(np.abs(border - bg).max(-1))
    if spread < uniform_tol:
        mask = np.abs(rgb - bg).max(-1) > threshold
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
    else:
        img8 = (rgb * 255).astype(np.uint8)[..., ::-1].copy()
        gc = np.zeros((h, w), np.uint8)
        inset = max(1, int(0.05 * min(h, w)))
        rect = (inset, inset, w - 2 * inset, h - 2 * inset)
        cv2.grabCut(
            img8, gc, rect, np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64), 5, cv2.GC_INIT_WITH_RECT
        )
        mask = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    if mask.sum() < 16:
        raise StudioInputError(
            "no foreground object was found in the input image (give an RGBA image with an alpha mask)."
        )
    return _largest_component(mask)


def _recentre(
    img: np.ndarray, mask: np.ndarray, size: int, border_ratio: Optional[float], fill: float, interp: int
) -> np.ndarray:
    """``img`` cropped to the mask's box and centred with ``border_ratio`` margins in a square of
    ``size`` (:func:`recentring`); ``border_ratio=None`` keeps the framing (a plain resize of a
    square image)."""
    import cv2

    if border_ratio is None:
        return (
            cv2.resize(img, (size, size), interpolation=interp).reshape((size, size) + img.shape[2:]).astype(np.float32)
        )
    r = recentring(mask, size, border_ratio)
    resized = cv2.resize(img[r.y0 : r.y1, r.x0 : r.x1], (r.cw, r.ch), interpolation=interp)
    out = np.full((size, size) + img.shape[2:], fill, dtype=np.float32)
    out[r.oy : r.oy + r.ch, r.ox : r.ox + r.cw] = resized.reshape((r.ch, r.cw) + img.shape[2:])
    return out


def load_reference(
    path: Path,
    size: int = 256,
    border_ratio: Optional[float] = 0.2,
    depth_path: Optional[Path] = None,
    normal_path: Optional[Path] = None,
) -> ReferenceView:
    """Read, segment and recentre one image (and its optional depth / normal maps);
    ``border_ratio=None`` keeps the image's framing (it must then be square)."""
    import cv2

    if border_ratio is not None and not 0.0 <= border_ratio < 0.5:
        raise StudioInputError(f"border ratio {border_ratio} must be in [0, 0.5).")
    img = _to_float(_read(Path(path), "input image"))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    if border_ratio is None and img.shape[0] != img.shape[1]:
        raise StudioInputError(
            f"input image {path} is {img.shape[1]}x{img.shape[0]}; without recentring it must be square."
        )
    if img.shape[-1] == 4 and img[..., 3].min() < 0.99:
        rgb, alpha = img[..., :3], img[..., 3]
        mask = alpha > 0.5
    else:
        rgb = img[..., :3]
        mask = foreground_mask(rgb)
        alpha = mask.astype(np.float32)
    rgb_white = rgb * alpha[..., None] + (1.0 - alpha[..., None])
    out = ReferenceView(
        rgb=_recentre(rgb_white, mask, size, border_ratio, 1.0, cv2.INTER_AREA).clip(0, 1),
        mask=_recentre(alpha, mask, size, border_ratio, 0.0, cv2.INTER_AREA).clip(0, 1),
        recentring=(
            Recentring(0, img.shape[0], 0, img.shape[1], size, size, 0, 0, size)
            if border_ratio is None
            else recentring(mask, size, border_ratio)
        ),
    )
    for extra, what in ((depth_path, "depth map"), (normal_path, "normal map")):
        if extra is None:
            continue
        arr = _to_float(_read(Path(extra), what))
        if arr.shape[:2] != img.shape[:2]:
            raise StudioInputError(
                f"{what} {extra} is {arr.shape[1]}x{arr.shape[0]}, the image {img.shape[1]}x{img.shape[0]}."
            )
        if what == "depth map":
            out.depth = _recentre(
                arr if arr.ndim == 2 else arr[..., 0], mask, size, border_ratio, 0.0, cv2.INTER_NEAREST
            )
        else:
            n = _recentre(arr[..., :3] * 2.0 - 1.0, mask, size, border_ratio, 0.0, cv2.INTER_NEAREST)
            out.normal = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
    return out
