"""Minimal OpenEXR writer (scanline, ZIP compression, half or float RGB), pure numpy + zlib.

The opencv wheel of the venv has no OpenEXR codec and imageio's freeimage plugin would download
a binary, so the project writes EXR itself (ToyWorld's float AOVs, environment maps). Files follow the OpenEXR 2 single-part
scanline layout (channels B, G, R; 16 scanlines per ZIP block; OpenEXR's byte interleave +
delta predictor before zlib) and read back with :func:`studio.pbr.envmap.read_envmap`
(FFmpeg's decoder through PyAV), Blender and OpenEXR. Single-channel data (depth) is written as
R = G = B, as Blender's compositor writes its Depth pass to an RGB EXR.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

HALF, FLOAT = 1, 2
_LINES = 16  # ZIP_COMPRESSION block height


def _attr(name: str, typ: str, data: bytes) -> bytes:
    return name.encode() + b"\0" + typ.encode() + b"\0" + struct.pack("<i", len(data)) + data


def _zip(raw: bytes) -> bytes:
    b = np.frombuffer(raw, np.uint8)
    t = np.concatenate([b[0::2], b[1::2]])
    p = t.copy()
    p[1:] = (t[1:].astype(np.int16) - t[:-1].astype(np.int16) + 128).astype(np.uint8)
    return zlib.compress(p.tobytes(), 6)


def encode_exr(image: np.ndarray, pixel_type: int = FLOAT, mantissa_bits: int = 23) -> bytes:
    """Bytes of an EXR file holding ``image`` ``[H, W]`` or ``[H, W, 3]`` (linear float).

    ``mantissa_bits < 23`` rounds float32 values to that many mantissa bits (relative error
    ``<= 2^-(bits+1)``) so ZIP compresses them far better; ToyWorld uses 16 for depth (< 8e-6) and 12 for normals (< 1.3e-4).
    """
    img = np.array(image, dtype=np.float32)
    if mantissa_bits < 23:
        drop = 23 - mantissa_bits
        bits = img.view(np.uint32)
        bits += np.uint32(1 << (drop - 1))  # round half up in magnitude
        bits &= np.uint32((0xFFFFFFFF >> drop) << drop)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"encode_exr expects [H, W] or [H, W, 3], got {img.shape}")
    H, W, _ = img.shape
    dtype = "<f2" if pixel_type == HALF else "<f4"
    chl = b"".join(c.encode() + b"\0" + struct.pack("<iB3xii", pixel_type, 0, 1, 1) for c in "BGR") + b"\0"
    box = struct.pack("<iiii", 0, 0, W - 1, H - 1)
    header = (
        b"\x76\x2f\x31\x01"
        + struct.pack("<i", 2)
        + _attr("channels", "chlist", chl)
        + _attr("compression", "compression", b"\x03")
        + _attr("dataWindow", "box2i", box)
        + _attr("displayWindow", "box2i", box)
        + _attr("lineOrder", "lineOrder", b"\0")
        + _attr("pixelAspectRatio", "float", struct.pack("<f", 1.0))
        + _attr("screenWindowCenter", "v2f", struct.pack("<ff", 0.0, 0.0))
        + _attr("screenWindowWidth", "float", struct.pack("<f", 1.0))
        + b"\0"
    )
    planar = np.ascontiguousarray(img[..., ::-1].transpose(0, 2, 1)).astype(dtype)  # [H, (B, G, R), W]
    blocks = []
    for y in range(0, H, _LINES):
        raw = planar[y : y + _LINES].tobytes()
        data = _zip(raw)
        if len(data) >= len(raw):
            data = raw  # stored uncompressed when zlib does not help (allowed by the format)
        blocks.append(struct.pack("<ii", y, len(data)) + data)
    n = len(blocks)
    offsets, pos = [], len(header) + 8 * n
    for blk in blocks:
        offsets.append(pos)
        pos += len(blk)
    return header + np.asarray(offsets, "<u8").tobytes() + b"".join(blocks)


def write_exr(path: str | os.PathLike, image: np.ndarray, pixel_type: int = FLOAT, mantissa_bits: int = 23) -> None:
    """Write ``image`` ``[H, W]`` or ``[H, W, 3]`` to ``path`` as an EXR (see ``encode_exr``), atomically."""
    from studio.io.atomic import atomic_write_bytes

    atomic_write_bytes(path, encode_exr(image, pixel_type, mantissa_bits))
