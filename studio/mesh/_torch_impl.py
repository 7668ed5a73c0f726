"""Readable pure-PyTorch reference of the triangle rasterizer (the ``torch`` backend).

Same semantics, and the same float operations in the same order, as the ``cuda/mesh_*`` kernels
(see ``cuda/mesh_rasterize.h``), so the forward outputs are bit-identical. For pixel (row i,
col j) with NDC centre px = (2j+1)/W - 1, py = (2i+1)/H - 1 and a triangle (p0, p1, p2) in clip
space, with X_k = x_k - px w_k, Y_k = y_k - py w_k:
    a0 = X1 Y2 - X2 Y1,  a1 = X2 Y0 - X0 Y2,  a2 = X0 Y1 - X1 Y0,  s = a0 + a1 + a2
    covered  <=>  (all a_k >= 0 and s > 0) or (all a_k <= 0 and s < 0)
    u = a0 / s,  v = a1 / s       (perspective-correct weights u, v, 1 - u - v of v0, v1, v2)
    depth = (a0 z0 + a1 z1 + a2 z2) / (a0 w0 + a1 w1 + a2 w2),  kept when -1 <= depth <= 1
Triangles with any w <= 0 or a non-finite coordinate are culled. The visible sample of a pixel
is the one with the smallest key (order-preserving int32 of depth) * 2^32 + triangle id.

The forward enumerates (triangle, pixel) candidates inside each triangle's pixel rectangle in
chunks (bounded memory), resolves visibility with ``scatter_reduce(amin)`` on the keys, then
recomputes (u, v, depth) of the winners with autograd on, which gives the gradients w.r.t. the
clip-space vertices.
"""

from __future__ import annotations

import torch
from torch import Tensor

EMPTY_KEY = torch.iinfo(torch.int64).max


def pixel_ndc(n: int, device: torch.device) -> Tensor:
    """[n] float32 NDC coordinates of the pixel centres along an axis of n pixels."""
    return (2.0 * torch.arange(n, device=device, dtype=torch.float32) + 1.0) / n - 1.0


def triangle_samples(
    p0: Tensor, p1: Tensor, p2: Tensor, px: Tensor, py: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Barycentrics of triangles [N,4] x 3 at NDC points px, py [N].

    Returns (covered [N] bool (coverage and -1 <= depth <= 1), u, v, depth [N]).
    """
    X0, Y0 = p0[:, 0] - px * p0[:, 3], p0[:, 1] - py * p0[:, 3]
    X1, Y1 = p1[:, 0] - px * p1[:, 3], p1[:, 1] - py * p1[:, 3]
    X2, Y2 = p2[:, 0] - px * p2[:, 3], p2[:, 1] - py * p2[:, 3]
    a0 = X1 * Y2 - X2 * Y1
    a1 = X2 * Y0 - X0 * Y2
    a2 = X0 * Y1 - X1 * Y0
    s = a0 + a1 + a2
    pos = (a0 >= 0) & (a1 >= 0) & (a2 >= 0) & (s > 0)
    neg = (a0 <= 0) & (a1 <= 0) & (a2 <= 0) & (s < 0)
    u = a0 / s
    v = a1 / s
    zc = a0 * p0[:, 2] + a1 * p1[:, 2] + a2 * p2[:, 2]
    wc = a0 * p0[:, 3] + a1 * p1[:, 3] + a2 * p2[:, 3]
    depth = zc / wc
    covered = (pos | neg) & (depth >= -1.0) & (depth <= 1.0)
    return covered, u, v, depth


def depth_key(depth: Tensor, ids: Tensor) -> Tensor:
    """int64 keys ordered by (depth, id): order-preserving int32 of the float32 depth, times 2^32, plus id."""
    bits = depth.contiguous().view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return ordered.to(torch.int64) * (1 << 32) + ids.to(torch.int64)


def _pixel_range(lo_ndc: Tensor, hi_ndc: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Conservative inclusive pixel index range whose centres may fall in [lo_ndc, hi_ndc] (0.01 px margin)."""
    half = 0.5 * size
    lo = torch.floor((lo_ndc + 1.0) * half - 0.51) + 1.0
    hi = torch.floor((hi_ndc + 1.0) * half - 0.49)
    lo = lo.clamp(0, size).nan_to_num(float(size)).long()
    hi = hi.clamp(-1, size - 1).nan_to_num(-1.0).long()
    return lo, hi


def rasterize_torch(
    verts_clip: Tensor, faces: Tensor, width: int, height: int, max_candidates: int = 1 << 22
) -> tuple[Tensor, Tensor, Tensor]:
    """Rasterize triangles given in clip space.

    Args:
        verts_clip [B,V,4] float32 (x, y, z, w) clip-space vertices; faces [F,3] integer indices.
        width, height: image size. max_candidates: (triangle, pixel) pairs tested per chunk.
    Returns:
        bary [B,H,W,2] (u, v), tri_id [B,H,W] int32 (-1 = empty), depth [B,H,W] (z/w; 0 where
        empty). bary and depth are differentiable w.r.t. verts_clip.
    """
    B, V, _ = verts_clip.shape
    F = faces.shape[0]
    device = verts_clip.device
    faces = faces.long()
    n_pix = B * height * width
    px_all, py_all = pixel_ndc(width, device), pixel_ndc(height, device)
    flat = verts_clip.detach().reshape(B * V, 4)
    vidx = (faces[None] + (torch.arange(B, device=device) * V)[:, None, None]).reshape(B * F, 3)  # [B*F,3]
    tri = flat[vidx]  # [B*F,3,4]
    visible = torch.isfinite(tri).all(-1).all(-1) & (tri[..., 3] > 0).all(-1)
    ndc = tri[..., :2] / tri[..., 3:4]
    j0, j1 = _pixel_range(ndc[..., 0].amin(-1), ndc[..., 0].amax(-1), width)
    i0, i1 = _pixel_range(ndc[..., 1].amin(-1), ndc[..., 1].amax(-1), height)
    nw, nh = (j1 - j0 + 1).clamp_min(0), (i1 - i0 + 1).clamp_min(0)
    counts = torch.where(visible, nw * nh, torch.zeros_like(nw))

    keys = torch.full((n_pix,), EMPTY_KEY, dtype=torch.int64, device=device)
    ends = counts.cumsum(0)
    start = 0
    while start < B * F:
        # the largest chunk of triangles [start, stop) with at most max_candidates pairs (at least one triangle)
        base = int(ends[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(ends, base + max_candidates, right=True))
        stop = min(max(stop, start + 1), B * F)
        sel = torch.arange(start, stop, device=device)
        cnt = counts[sel]
        tri_idx = torch.repeat_interleave(sel, cnt)
        if tri_idx.numel():
            first = torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
            local = torch.arange(tri_idx.numel(), device=device) - first
            cols = j0[tri_idx] + local % nw[tri_idx]
            rows = i0[tri_idx] + local // nw[tri_idx]
            t = tri[tri_idx]
            covered, _, _, depth = triangle_samples(t[:, 0], t[:, 1], t[:, 2], px_all[cols], py_all[rows])
            b = tri_idx // F
            pix = (b * height + rows) * width + cols
            key = depth_key(depth[covered], (tri_idx % F)[covered])
            keys.scatter_reduce_(0, pix[covered], key, reduce="amin")
        start = stop

    hit = keys != EMPTY_KEY
    tri_id = torch.where(hit, keys & 0xFFFFFFFF, torch.full_like(keys, -1)).to(torch.int32)
    # differentiable recomputation of the visible samples
    pix = hit.nonzero()[:, 0]
    b = pix // (height * width)
    rows = (pix // width) % height
    cols = pix % width
    f = tri_id.reshape(-1)[pix].long()
    t = verts_clip.reshape(B * V, 4)[faces[f] + (b * V)[:, None]]  # [P,3,4]
    _, u, v, depth = triangle_samples(t[:, 0], t[:, 1], t[:, 2], px_all[cols], py_all[rows])
    bary = verts_clip.new_zeros(n_pix, 2).index_put((pix,), torch.stack([u, v], -1))
    depth_img = verts_clip.new_zeros(n_pix).index_put((pix,), depth)
    return bary.reshape(B, height, width, 2), tri_id.reshape(B, height, width), depth_img.reshape(B, height, width)


def interpolate_torch(attr: Tensor, bary: Tensor, tri_id: Tensor, faces: Tensor) -> Tensor:
    """Barycentric interpolation of vertex attributes (0 where tri_id = -1).

    Args:
        attr [B,V,D] or [V,D]; bary [B,H,W,2]; tri_id [B,H,W]; faces [F,3].
    Returns:
        [B,H,W,D] = u a(f0) + v a(f1) + (1 - u - v) a(f2); differentiable in attr and bary.
    """
    B = tri_id.shape[0]
    mask = tri_id >= 0
    fidx = faces.long()[tri_id.long().clamp_min(0)]  # [B,H,W,3]
    if attr.ndim == 2:
        a = attr[fidx]  # [B,H,W,3,D]
    else:
        if attr.shape[0] == 1:
            attr = attr.expand(B, -1, -1)
        a = attr[torch.arange(B, device=attr.device)[:, None, None, None], fidx]
    u, v = bary[..., 0:1], bary[..., 1:2]
    t = 1.0 - u - v
    out = u * a[..., 0, :] + v * a[..., 1, :] + t * a[..., 2, :]
    return torch.where(mask[..., None], out, torch.zeros_like(out))
