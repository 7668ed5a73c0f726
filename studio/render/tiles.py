"""Tile intersection: which Gaussians touch which 16x16 pixel tile, front to back.

gsplat 1.4's layout (``isect_tiles`` + ``isect_offset_encode``), so its rasterizer, ours and the
torch reference all consume the same lists:
  * a Gaussian with radius r > 0 covers tiles [floor((m - r)/16), ceil((m + r)/16)) per axis,
    clamped to the tile grid; r is one radius (gsplat 1.4's ``radii`` [C,N]) or one per axis
    ([C,N,2], x then y, as gsplat 1.5), e.g. ``tile_extents``: the 3-sigma square shrunk to the box
    where the Gaussian reaches alpha >= 1/255 at all (opacity-aware, as gsplat's tight boxes);
  * each (camera, tile, Gaussian) hit gets a 64-bit key ``camera << (32 + tile_bits) |
    tile << 32 | float_bits(depth)``; sorting the keys orders hits by camera, tile, then view-space
    z (positive floats sort like their bit patterns);
  * ``flatten_ids`` [M] maps each sorted hit to ``camera * N + gaussian``;
  * ``isect_offsets`` [C, tile_h, tile_w] is where each tile's run starts in ``flatten_ids``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

TILE_SIZE = 16


class TileIntersections(NamedTuple):
    """Sorted tile hits (see module docstring). ``tiles_per_gauss`` [C,N] int32; ``isect_ids`` [M]
    int64; ``flatten_ids`` [M] int32; ``isect_offsets`` [C, tile_h, tile_w] int32."""

    tiles_per_gauss: Tensor
    isect_ids: Tensor
    flatten_ids: Tensor
    isect_offsets: Tensor
    tile_width: int
    tile_height: int


ALPHA_MIN = 1.0 / 255.0


@torch.no_grad()
def tile_extents(radii: Tensor, conics: Tensor, opacities: Tensor, fused: bool = False) -> Tensor:
    """Per-axis half-sizes of the box where a Gaussian can composite at all, within its radius.

    alpha = o exp(-sigma) >= 1/255 needs sigma = 0.5 d^T conic d <= t = log(255 o): an ellipse whose
    bounding box has half-sizes sqrt(2 t cov_xx) and sqrt(2 t cov_yy) (cov = conic^-1). Each gets a
    pixel of margin (float rounding; the CPU kernels bound their pixel loops by the same box) and
    stays within the radius, so the tile lists only lose hits whose alpha stays below 1/255 in the
    whole tile. Gaussians with o < 1/255 get 0 (culled); non-positive-definite conics keep the radius.

    Args:
        radii [C,N] pixels (0 = culled), conics [C,N,3] (a, b, c) of inv(cov2d), opacities [C,N] or [N].
        fused: float32 CPU tensors go to the extension's ``tile_extents_cpu`` (the same arithmetic in
            C++; others always take this PyTorch code).
    Returns:
        [C,N,2] float32 half-sizes (x, y) in pixels, 0 where culled.
    """
    if fused and not (conics.is_cuda or opacities.is_cuda) and conics.dtype == opacities.dtype == torch.float32:
        from studio.ext import load_extension

        ext = load_extension("gauss")
        return ext.tile_extents_cpu(
            radii.int().contiguous(), conics.detach().contiguous(), opacities.detach().contiguous()
        )
    a, b, c = conics.detach().float().unbind(-1)
    opac = opacities.detach().float().expand(radii.shape)
    det = a * c - b * b
    t = torch.log(torch.clamp(255.0 * opac, min=1.0)) + 1e-3
    positive = (a > 0) & (det > 0)
    det_safe = torch.where(positive, det, torch.ones_like(det))
    box = torch.sqrt(2.0 * t[..., None] * torch.stack([c, a], -1) / det_safe[..., None]) + 1.0
    r = radii.float()[..., None].expand(box.shape)
    box = torch.where(positive[..., None], torch.minimum(box, r), r)
    return torch.where(((radii > 0) & (opac >= ALPHA_MIN))[..., None], box, torch.zeros_like(box))


@torch.no_grad()
def isect_tiles(means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int) -> TileIntersections:
    """Build depth-sorted per-tile Gaussian lists.

    Args:
        means2d [C,N,2] pixels, radii [C,N] int pixels or [C,N,2] per-axis half-sizes (x, y) in pixels
        (0 = culled), depths [C,N] view-space z. width, height: image size in pixels.
    """
    n_cams, n = radii.shape[:2]
    device = means2d.device
    tile_w = (width + TILE_SIZE - 1) // TILE_SIZE
    tile_h = (height + TILE_SIZE - 1) // TILE_SIZE
    r = (radii.float() if radii.ndim == 3 else radii.float()[..., None].expand(n_cams, n, 2)) / TILE_SIZE
    t = means2d.detach() / TILE_SIZE
    x0 = torch.clamp(torch.floor(t[..., 0] - r[..., 0]), 0, tile_w).long()
    x1 = torch.clamp(torch.ceil(t[..., 0] + r[..., 0]), 0, tile_w).long()
    y0 = torch.clamp(torch.floor(t[..., 1] - r[..., 1]), 0, tile_h).long()
    y1 = torch.clamp(torch.ceil(t[..., 1] + r[..., 1]), 0, tile_h).long()
    visible = (r[..., 0] > 0) & (r[..., 1] > 0)
    nx = torch.where(visible, x1 - x0, 0)
    ny = torch.where(visible, y1 - y0, 0)
    counts = (nx * ny).reshape(-1)  # [C*N]
    total = int(counts.sum())

    gauss = torch.repeat_interleave(torch.arange(n_cams * n, device=device), counts)  # [M] flat ids
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=device) - starts[gauss]  # index within the Gaussian's rect
    nx_g = nx.reshape(-1)[gauss]
    tx = x0.reshape(-1)[gauss] + local % nx_g.clamp(min=1)
    ty = y0.reshape(-1)[gauss] + local // nx_g.clamp(min=1)
    tile_id = ty * tile_w + tx
    cam = gauss // n
    tile_bits = max(1, int(tile_w * tile_h).bit_length())
    depth_bits = depths.detach().float().contiguous().view(torch.int32).reshape(-1)[gauss].long() & 0xFFFFFFFF
    keys = (cam << (32 + tile_bits)) | (tile_id << 32) | depth_bits
    isect_ids, order = torch.sort(keys, stable=True)
    flatten_ids = gauss[order].to(torch.int32)

    tile_keys = cam[order] * (tile_w * tile_h) + tile_id[order]  # [M] global tile index, sorted
    n_tiles = n_cams * tile_w * tile_h
    isect_offsets = torch.searchsorted(tile_keys, torch.arange(n_tiles, device=device)).to(torch.int32)
    return TileIntersections(
        tiles_per_gauss=(nx * ny).to(torch.int32),
        isect_ids=isect_ids,
        flatten_ids=flatten_ids,
        isect_offsets=isect_offsets.reshape(n_cams, tile_h, tile_w),
        tile_width=tile_w,
        tile_height=tile_h,
    )
