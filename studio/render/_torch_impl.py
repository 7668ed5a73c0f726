"""Readable pure-PyTorch reference of per-tile alpha compositing (the ``torch`` backend).

Same semantics as gsplat 1.4's ``rasterize_to_pixels`` and our ``cuda/`` kernels; tests compare
them. For pixel p and its tile's depth-sorted Gaussians k = 1..K:
    sigma_k = 0.5 (a dx^2 + c dy^2) + b dx dy,   (dx, dy) = mean2d_k - p,  conic (a, b, c)
    alpha_k = min(0.999, o_k exp(-sigma_k)),  skipped when sigma_k < 0 or alpha_k < 1/255
    T_k     = prod_{j<k} (1 - alpha_j)
    compositing stops before the first k whose T_k (1 - alpha_k) <= 1e-4
    color   = sum_k T_k alpha_k c_k,   alpha = 1 - T_final
Tiles are processed in batches, padding each batch's lists to its longest one, so memory stays
bounded; autograd provides the backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from studio.render.tiles import TILE_SIZE, TileIntersections

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4


def rasterize_to_pixels_torch(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    width: int,
    height: int,
    isect: TileIntersections,
    max_batch_elements: int = 1 << 22,
) -> tuple[Tensor, Tensor]:
    """Composite projected Gaussians front to back.

    Args:
        means2d [C,N,2], conics [C,N,3], colors [C,N,D], opacities [C,N]: per-camera 2D Gaussians.
        width, height: image size. isect: tile lists from ``isect_tiles``.
    Returns:
        colors [C,H,W,D] (no background), alphas [C,H,W,1].
    """
    n_cams, n, dim = colors.shape
    th, tw = isect.tile_height, isect.tile_width
    n_tiles = n_cams * th * tw
    offsets = isect.isect_offsets.reshape(-1).long()
    ends = torch.cat([offsets[1:], offsets.new_tensor([isect.flatten_ids.numel()])])
    counts = ends - offsets
    flat_means = means2d.reshape(-1, 2)
    flat_conics = conics.reshape(-1, 3)
    flat_colors = colors.reshape(-1, dim)
    flat_opac = opacities.reshape(-1)
    flat_ids = isect.flatten_ids.long()

    pix = torch.arange(TILE_SIZE, device=means2d.device, dtype=means2d.dtype) + 0.5
    local_y, local_x = torch.meshgrid(pix, pix, indexing="ij")
    local = torch.stack([local_x.reshape(-1), local_y.reshape(-1)], dim=-1)  # [256,2] (x, y)
    tile_index = torch.arange(th * tw, device=means2d.device)
    tile_origin = torch.stack([tile_index % tw, tile_index // tw], -1).to(means2d.dtype) * TILE_SIZE  # [T,2]

    out_colors, out_alphas = [], []
    start = 0
    while start < n_tiles:
        # grow the batch while it stays within the element budget
        stop = start + 1
        kmax = int(counts[start])
        while stop < n_tiles:
            k_next = max(kmax, int(counts[stop]))
            if (stop + 1 - start) * TILE_SIZE * TILE_SIZE * max(k_next, 1) > max_batch_elements:
                break
            kmax, stop = k_next, stop + 1
        c, a = _composite_tiles(
            offsets[start:stop],
            counts[start:stop],
            max(kmax, 1),
            flat_ids,
            flat_means,
            flat_conics,
            flat_colors,
            flat_opac,
            tile_origin[torch.arange(start, stop, device=means2d.device) % (th * tw)],
            local,
        )
        out_colors.append(c)
        out_alphas.append(a)
        start = stop
    colors_img = torch.cat(out_colors).reshape(n_cams, th, tw, TILE_SIZE, TILE_SIZE, dim)
    alphas_img = torch.cat(out_alphas).reshape(n_cams, th, tw, TILE_SIZE, TILE_SIZE, 1)
    colors_img = colors_img.permute(0, 1, 3, 2, 4, 5).reshape(n_cams, th * TILE_SIZE, tw * TILE_SIZE, dim)
    alphas_img = alphas_img.permute(0, 1, 3, 2, 4, 5).reshape(n_cams, th * TILE_SIZE, tw * TILE_SIZE, 1)
    return colors_img[:, :height, :width], alphas_img[:, :height, :width]


def _composite_tiles(
    starts: Tensor,
    counts: Tensor,
    kmax: int,
    flat_ids: Tensor,
    flat_means: Tensor,
    flat_conics: Tensor,
    flat_colors: Tensor,
    flat_opac: Tensor,
    origins: Tensor,
    local: Tensor,
) -> tuple[Tensor, Tensor]:
    """Composite B tiles. Returns colors [B,256,D] and alphas [B,256,1]."""
    k = torch.arange(kmax, device=starts.device)
    valid = k[None] < counts[:, None]  # [B,K]
    hit = torch.where(valid, starts[:, None] + k[None], torch.zeros_like(k[None]))
    g = flat_ids[hit] if flat_ids.numel() else torch.zeros_like(hit)  # [B,K]
    pixels = origins[:, None, :] + local[None]  # [B,P,2]
    delta = flat_means[g][:, None, :, :] - pixels[:, :, None, :]  # [B,P,K,2]
    sigma = _sigma(flat_conics[g][:, None], delta)  # [B,P,K]
    alpha = torch.clamp(flat_opac[g][:, None] * torch.exp(-sigma), max=ALPHA_MAX)  # [B,P,K]
    keep = valid[:, None] & (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    with torch.no_grad():
        include = torch.cumprod(1.0 - alpha, dim=-1) > T_MIN  # a prefix: stop at the first failure
    alpha = alpha * include
    one_minus = 1.0 - alpha
    trans = torch.cumprod(torch.cat([torch.ones_like(one_minus[..., :1]), one_minus[..., :-1]], -1), -1)
    weights = alpha * trans  # [B,P,K]
    colors = weights @ flat_colors[g]  # [B,P,D]
    alphas = 1.0 - trans[..., -1:] * one_minus[..., -1:]
    return colors, alphas


def _sigma(conics: Tensor, delta: Tensor) -> Tensor:
    """0.5 (a dx^2 + c dy^2) + b dx dy for conics [...,3] (a, b, c) and offsets [...,2] (dx, dy)."""
    return (
        0.5 * (conics[..., 0] * delta[..., 0] ** 2 + conics[..., 2] * delta[..., 1] ** 2)
        + conics[..., 1] * delta[..., 0] * delta[..., 1]
    )


@torch.no_grad()
def count_pairs(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    width: int,
    height: int,
    isect: TileIntersections,
    hits_per_chunk: int = 1 << 14,
) -> int:
    """Number of (pixel, Gaussian) pairs of the tile lists with sigma >= 0 and alpha >= 1/255: the
    pairs a compositing kernel evaluates and composites unless the pixel is already saturated.

    Args:
        means2d [C,N,2], conics [C,N,3], opacities [C,N]; width, height: image size in pixels;
        isect: tile lists from ``isect_tiles``; hits_per_chunk: tile hits evaluated at once (memory).
    """
    th, tw = isect.tile_height, isect.tile_width
    n_hits = isect.flatten_ids.numel()
    offsets = isect.isect_offsets.reshape(-1).long()
    counts = torch.diff(offsets, append=offsets.new_tensor([n_hits]))
    tile_of_hit = torch.repeat_interleave(torch.arange(offsets.numel(), device=offsets.device), counts) % (th * tw)
    pix = torch.arange(TILE_SIZE, device=means2d.device, dtype=means2d.dtype) + 0.5
    local_y, local_x = torch.meshgrid(pix, pix, indexing="ij")
    local = torch.stack([local_x.reshape(-1), local_y.reshape(-1)], dim=-1)  # [256,2] (x, y)
    flat_ids = isect.flatten_ids.long()
    total = 0
    for start in range(0, n_hits, hits_per_chunk):
        g = flat_ids[start : start + hits_per_chunk]
        tile = tile_of_hit[start : start + hits_per_chunk]
        origin = torch.stack([tile % tw, tile // tw], -1).to(means2d.dtype) * TILE_SIZE  # [K,2]
        pixels = origin[:, None] + local[None]  # [K,256,2]
        inside = (pixels[..., 0] < width) & (pixels[..., 1] < height)
        sigma = _sigma(conics.reshape(-1, 3)[g][:, None], means2d.reshape(-1, 2)[g][:, None] - pixels)
        alpha = torch.clamp(opacities.reshape(-1)[g][:, None] * torch.exp(-sigma), max=ALPHA_MAX)
        total += int((inside & (sigma >= 0) & (alpha >= ALPHA_MIN)).sum())
    return total
