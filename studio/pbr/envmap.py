"""Equirectangular environment maps in Blender's world convention, and .exr/.hdr file I/O.

Convention (DESIGN.md, "Data formats read"; checked against Blender 3.4's Cycles): world Z up,
for a unit direction ``d`` (pointing from the scene out to the environment)

    u = 0.5 - atan2(d.y, d.x) / (2 pi),    v = 0.5 + asin(d.z) / pi,

``u`` grows with the image column, ``v = 1`` at the image's *top* row (row 0 of the array). So
``+X`` is the image centre ``(0.5, 0.5)``, ``+Y`` is ``u = 0.25``, ``-Y`` is ``u = 0.75``, ``-X``
is the left/right seam, ``+Z`` the top row and ``-Z`` the bottom row. Pixel ``(row i, col j)``
of an ``H x W`` image has its centre at ``u = (j + 0.5) / W``, ``v = 1 - (i + 0.5) / H``.

Reading files: ``read_envmap`` decodes .exr (all OpenEXR compressions that FFmpeg supports,
including the DWAB files of Blender's studio lights, half or float) and Radiance .hdr through
PyAV (``av``, FFmpeg's decoders; no network, no extra install — it comes with the venv). The
opencv-python 5.0 wheel in this venv is built *without* OpenEXR (``cv2.imread`` returns None
for .exr even with ``OPENCV_IO_ENABLE_OPENEXR=1``), and imageio's freeimage plugin would
download a binary, so neither is used for EXR; cv2 is a fallback for .hdr only.
Writing: ``write_exr`` (from ``studio.io.exr``: ZIP scanline float32 RGB, pure numpy) and ``write_hdr``
(flat RGBE, pure numpy), used for tests and for exporting learned lights.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from studio.io.exr import write_exr

__all__ = [
    "dir_to_uv",
    "uv_to_dir",
    "equirect_directions",
    "equirect_solid_angles",
    "sample_equirect",
    "read_envmap",
    "envmaps_in",
    "write_exr",
    "write_hdr",
]


# --------------------------------------------------------------------------- directions <-> uv
def dir_to_uv(d: torch.Tensor) -> torch.Tensor:
    """Unit directions ``[..., 3]`` -> ``(u, v)`` ``[..., 2]`` in ``[0, 1]`` (Blender convention)."""
    d = d / d.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    u = 0.5 - torch.atan2(d[..., 1], d[..., 0]) / (2.0 * math.pi)
    v = 0.5 + torch.asin(d[..., 2].clamp(-1.0, 1.0)) / math.pi
    return torch.stack([u, v], -1)


def uv_to_dir(uv: torch.Tensor) -> torch.Tensor:
    """``(u, v)`` ``[..., 2]`` -> unit directions ``[..., 3]`` (inverse of ``dir_to_uv``)."""
    phi = (0.5 - uv[..., 0]) * (2.0 * math.pi)  # atan2(y, x)
    lat = (uv[..., 1] - 0.5) * math.pi  # asin(z)
    c = torch.cos(lat)
    return torch.stack([c * torch.cos(phi), c * torch.sin(phi), torch.sin(lat)], -1)


def _pixel_uv(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    j = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    i = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    v, u = torch.meshgrid(1.0 - i, j, indexing="ij")
    return torch.stack([u, v], -1)


def equirect_directions(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Direction of each pixel centre of an ``H x W`` equirect image -> ``[H, W, 3]``."""
    return uv_to_dir(_pixel_uv(height, width, device, dtype))


def equirect_solid_angles(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Exact solid angle of each pixel -> ``[H, W]`` (sums to ``4 pi``)."""
    i = torch.arange(height + 1, device=device, dtype=torch.float64)
    z = torch.sin((0.5 - i / height) * math.pi)  # sin(latitude) at row edges, top first
    band = (z[:-1] - z[1:]) * (2.0 * math.pi / width)
    return band[:, None].expand(height, width).to(dtype)


def sample_equirect(image: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of an equirect ``image`` ``[H, W, C]`` in directions ``d`` ``[..., 3]``.

    Wraps around in ``u``, clamps in ``v``. Differentiable in ``image`` -> ``[..., C]``.
    """
    H, W, C = image.shape
    uv = dir_to_uv(d.to(image.dtype))
    x = uv[..., 0] * W - 0.5
    y = (1.0 - uv[..., 1]) * H - 0.5
    x0 = torch.floor(x)
    y0 = torch.floor(y)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    x0 = x0.long()
    y0 = y0.long()
    xs = (x0 % W, (x0 + 1) % W)
    ys = (y0.clamp(0, H - 1), (y0 + 1).clamp(0, H - 1))
    flat = image.reshape(H * W, C)

    def g(yy, xx):
        return flat[(yy * W + xx).reshape(-1)].reshape(*yy.shape, C)

    top = g(ys[0], xs[0]) * (1 - fx) + g(ys[0], xs[1]) * fx
    bot = g(ys[1], xs[0]) * (1 - fx) + g(ys[1], xs[1]) * fx
    return top * (1 - fy) + bot * fy


# --------------------------------------------------------------------------- file I/O
def _half_planes_rgb(frame) -> np.ndarray:
    """[H, W, 3] float32 RGB of a PyAV frame in FFmpeg's planar half-float G, B, R(, A) layout."""
    H, W = frame.height, frame.width
    planes = []
    for plane in frame.planes[:3]:
        rows = np.frombuffer(memoryview(plane), dtype="<f2")[: H * plane.line_size // 2]
        planes.append(rows.reshape(H, plane.line_size // 2)[:, :W])
    g, b, r = planes
    return np.ascontiguousarray(np.stack([r, g, b], -1), dtype=np.float32)


def _read_av(path: Path) -> np.ndarray:
    import av  # PyAV: FFmpeg's exr / hdr decoders

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        fmt = frame.format.name
        if fmt in ("gbrpf16le", "gbrapf16le"):  # half-float EXR: read the planes (swscale would clamp to [0, 1])
            return _half_planes_rgb(frame)
        if fmt not in ("gbrpf32le", "gbrapf32le", "gbrpf32be", "gbrapf32be"):
            frame = frame.reformat(format="gbrapf32le" if "a" in fmt.replace("gbrp", "") else "gbrpf32le")
        arr = frame.to_ndarray()  # PyAV stacks the G, B, R planes back into R, G, B order
    return np.ascontiguousarray(arr[..., :3], dtype=np.float32)


def _read_cv2(path: Path) -> np.ndarray:
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise OSError(f"cv2 could not read {path}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, -1)
    return np.ascontiguousarray(arr[..., 2::-1], dtype=np.float32)  # BGR(A) -> RGB


def read_envmap(path: str | os.PathLike) -> np.ndarray:
    """Read an equirect .exr / .hdr -> linear float32 ``[H, W, 3]`` RGB, row 0 = top (v = 1)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"environment map not found: {path}")
    errors = []
    readers = [_read_av] + ([_read_cv2] if path.suffix.lower() in (".hdr", ".pic", ".exr") else [])
    for reader in readers:
        try:
            return reader(path)
        except Exception as e:  # noqa: BLE001 - try the next decoder, report all
            errors.append(f"{reader.__name__[1:]}: {e}")
    raise OSError(f"cannot read environment map {path} ({'; '.join(errors)})")


ENVMAP_SUFFIXES = (".hdr", ".exr")


def envmaps_in(folder: str | os.PathLike) -> dict[str, Path]:
    """``{name: path}`` of the .hdr / .exr files directly in ``folder`` (name = file stem; .hdr wins a tie)."""
    found: dict[str, Path] = {}
    for path in sorted(Path(folder).iterdir(), key=lambda p: (p.suffix.lower() != ".hdr", p.name)):
        if path.is_file() and path.suffix.lower() in ENVMAP_SUFFIXES:
            found.setdefault(path.stem, path)
    return found


def write_hdr(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write ``image`` ``[H, W, 3]`` as a flat (non-RLE) Radiance RGBE .hdr file."""
    img = np.clip(np.asarray(image, dtype=np.float32), 0.0, None)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"write_hdr expects [H, W, 3], got {img.shape}")
    H, W, _ = img.shape
    m = img.max(-1)
    mant, exp = np.frexp(m)
    scale = np.where(m > 1e-32, mant * 256.0 / np.maximum(m, 1e-32), 0.0)
    rgbe = np.zeros((H, W, 4), np.uint8)
    rgbe[..., :3] = np.clip(img * scale[..., None], 0, 255).astype(np.uint8)
    rgbe[..., 3] = np.where(m > 1e-32, exp + 128, 0).astype(np.uint8)
    head = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {H} +X {W}\n".encode()
    from studio.io.atomic import atomic_write_bytes

    atomic_write_bytes(path, head + rgbe.tobytes())
