"""``studio.mesh``: nvdiffrast-like differentiable triangle rasterization.

Pieces (each with a ``backend`` keyword, ``auto`` | ``torch`` | ``studio``; ``auto`` = ``studio``):

* ``rasterize(verts_clip [B,V,4], faces [F,3], width, height) -> (bary, tri_id, depth)``:
  per pixel, the nearest triangle's perspective-correct barycentrics (u, v) (vertex weights
  u, v, 1-u-v of the face's vertices 0, 1, 2), its id (int32, -1 = empty) and its NDC depth z/w
  (0 where empty). Clip space is OpenGL-style: a vertex (x, y, z, w) is inside when
  -w <= x, y, z <= w; pixel (row i, col j) has its centre at NDC ((2j+1)/W - 1, (2i+1)/H - 1),
  so row 0 is NDC y = -1 (``studio.cameras.clip_from_opencv`` makes that the top of the image).
  Both windings are drawn (no face culling); samples with z/w outside [-1, 1] are dropped
  (near/far clipping per pixel); triangles with a vertex at w <= 0 (behind the camera or crossing
  its plane) or a non-finite coordinate are culled whole, not clipped. The nearest sample wins,
  the lower triangle id on exactly equal depth. ``tri_id`` is not differentiable; ``bary`` and
  ``depth`` are, w.r.t. ``verts_clip`` (the barycentrics' derivatives at a fixed pixel, as
  nvdiffrast's rasterize op; silhouettes get position gradients only from ``antialias``).
* ``interpolate(attr [B,V,D] or [V,D], bary, tri_id, faces) -> [B,H,W,D]`` (0 where empty),
  differentiable in ``attr`` and ``bary``.
* ``antialias(color, tri_id, depth, verts_clip, faces)``: optional silhouette-edge blending
  (torch only, see its docstring), which also carries visibility gradients to positions.

Backends: ``torch`` (``_torch_impl.py``, readable reference used by tests) and ``studio``
(``cuda/mesh_*`` C++ kernels on CPU, CUDA kernels for CUDA tensors). The forward outputs of the
two are bit-identical (same float operations in the same order).
"""

from __future__ import annotations

import torch
from torch import Tensor

BACKENDS = ("auto", "torch", "studio")


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"Unknown mesh rasterizer backend {backend!r}; choose one of {BACKENDS}.")
    return "studio" if backend == "auto" else backend


def _check(verts_clip: Tensor, faces: Tensor) -> None:
    if verts_clip.ndim != 3 or verts_clip.shape[-1] != 4:
        raise ValueError(f"verts_clip must be [B,V,4]; got {tuple(verts_clip.shape)}.")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must be [F,3]; got {tuple(faces.shape)}.")


def rasterize(
    verts_clip: Tensor, faces: Tensor, width: int, height: int, backend: str = "auto"
) -> tuple[Tensor, Tensor, Tensor]:
    """Rasterize a triangle mesh given in clip space (see the module docstring).

    Args:
        verts_clip [B,V,4] float32 clip-space vertices (e.g. ``verts_h @ clip_from_opencv(...).mT``).
        faces [F,3] integer vertex indices. width, height: image size in pixels.
        backend: ``auto`` | ``torch`` | ``studio``.
    Returns:
        bary [B,H,W,2] (u, v), tri_id [B,H,W] int32 (-1 = empty), depth [B,H,W] = z/w.
    """
    _check(verts_clip, faces)
    if resolve_backend(backend) == "torch":
        from studio.mesh._torch_impl import rasterize_torch

        return rasterize_torch(verts_clip, faces, width, height)
    from studio.mesh._studio_impl import rasterize_studio

    return rasterize_studio(verts_clip, faces, width, height)


def interpolate(attr: Tensor, bary: Tensor, tri_id: Tensor, faces: Tensor, backend: str = "auto") -> Tensor:
    """Interpolate vertex attributes over the rasterized image.

    Args:
        attr [B,V,D] or [V,D] (shared by all images); bary, tri_id: from ``rasterize``; faces [F,3].
    Returns:
        [B,H,W,D] = u attr[f0] + v attr[f1] + (1 - u - v) attr[f2], 0 where tri_id = -1.
    """
    if attr.ndim not in (2, 3):
        raise ValueError(f"attr must be [B,V,D] or [V,D]; got {tuple(attr.shape)}.")
    if resolve_backend(backend) == "torch":
        from studio.mesh._torch_impl import interpolate_torch

        return interpolate_torch(attr, bary, tri_id, faces)
    from studio.mesh._studio_impl import interpolate_studio

    return interpolate_studio(attr, bary, tri_id, faces)


def _silhouette_edges(faces: Tensor, area_sign: Tensor) -> Tensor:
    """[B,F,3] bool: whether edge k of face f (vertices k -> k+1) is a silhouette in image b: a
    boundary or non-manifold edge, or one whose other face has the opposite screen orientation."""
    F = faces.shape[0]
    edges = faces.long()[:, [[0, 1], [1, 2], [2, 0]]]  # [F,3,2]
    key = edges.amin(-1) * (int(faces.max()) + 1 if F else 1) + edges.amax(-1)
    key = key.reshape(-1)
    order = torch.argsort(key, stable=True)
    sk = key[order]
    _, inverse, counts = torch.unique_consecutive(sk, return_inverse=True, return_counts=True)
    cnt = counts[inverse]  # per sorted slot
    pos = torch.arange(sk.numel(), device=sk.device)
    nxt = torch.clamp(pos + 1, max=max(sk.numel() - 1, 0))
    partner_sorted = torch.where((sk[nxt] == sk) & (nxt != pos), nxt, pos - 1)
    partner = torch.empty_like(order)
    partner[order] = order[partner_sorted.clamp_min(0)]
    manifold = torch.empty_like(cnt)
    manifold[order] = cnt
    other_face = partner // 3  # [3F]
    own_face = torch.arange(3 * F, device=faces.device) // 3
    sign = area_sign  # [B,F]
    differs = sign[:, own_face] != sign[:, other_face]
    return ((manifold != 2)[None] | differs).reshape(-1, F, 3)


def antialias(color: Tensor, tri_id: Tensor, depth: Tensor, verts_clip: Tensor, faces: Tensor) -> Tensor:
    """Optional silhouette antialiasing (a simplified form of nvdiffrast's ``antialias``; torch only).

    For each pair of horizontally or vertically adjacent pixels with different ``tri_id``, the
    front one (the nearer, or the only covered one) owns triangle f. The segment between the two
    pixel centres leaves f through one of its edges at fraction ``a`` (screen space, from the
    front centre). Only when that edge is a silhouette (boundary or non-manifold edge, or its
    neighbour face has the opposite screen orientation) the two colours are blended as if the
    edge cut the pair's pixel boundary at ``a``: for a > 1/2 the back pixel gets
    (a - 1/2) (c_front - c_back) added, otherwise the front pixel gets (1/2 - a) (c_back - c_front).
    Contributions of all pairs add up. Differentiable in ``color`` and, through ``a``, in
    ``verts_clip`` (the gradients at silhouettes that ``rasterize`` alone does not give).

    Args:
        color [B,H,W,C] (e.g. from ``interpolate``); tri_id, depth: from ``rasterize``;
        verts_clip [B,V,4] and faces [F,3]: as given to ``rasterize``.
    Returns:
        [B,H,W,C] antialiased colour.
    """
    B, H, W, C = color.shape
    faces_l = faces.long()
    tri = verts_clip[:, faces_l]  # [B,F,3,4]
    half = torch.tensor([0.5 * W, 0.5 * H], dtype=verts_clip.dtype, device=verts_clip.device)
    screen = (tri[..., :2] / tri[..., 3:4] + 1.0) * half  # [B,F,3,2] in pixels (centres at +0.5)
    e1, e2 = screen[:, :, 1] - screen[:, :, 0], screen[:, :, 2] - screen[:, :, 0]
    area = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    area_sign = torch.sign(area.detach())
    sil = _silhouette_edges(faces, area_sign)  # [B,F,3]

    far = torch.where(tri_id >= 0, depth.detach(), torch.full_like(depth, float("inf")))
    flat = color.reshape(-1, C)
    delta = torch.zeros_like(flat)
    pix_ids = torch.arange(B * H * W, device=color.device).reshape(B, H, W)
    for axis in (2, 1):  # horizontal pairs, then vertical pairs
        n = W if axis == 2 else H
        sl_p = [slice(None)] * 3
        sl_q = [slice(None)] * 3
        sl_p[axis], sl_q[axis] = slice(0, n - 1), slice(1, n)
        tp, tq = tri_id[tuple(sl_p)], tri_id[tuple(sl_q)]
        pair = (tp != tq).nonzero()
        if pair.numel() == 0:
            continue
        b, i, j = pair.unbind(-1)
        i2, j2 = (i, j + 1) if axis == 2 else (i + 1, j)
        idx_p, idx_q = pix_ids[b, i, j], pix_ids[b, i2, j2]
        tpp, tqq = tri_id[b, i, j], tri_id[b, i2, j2]
        p_front = (tqq < 0) | ((tpp >= 0) & (far[b, i, j] <= far[b, i2, j2]))
        f = torch.where(p_front, tpp, tqq).long()
        idx_f, idx_b = torch.where(p_front, idx_p, idx_q), torch.where(p_front, idx_q, idx_p)
        cp = torch.stack([j.to(color.dtype) + 0.5, i.to(color.dtype) + 0.5], -1)
        cq = torch.stack([j2.to(color.dtype) + 0.5, i2.to(color.dtype) + 0.5], -1)
        c_front = torch.where(p_front[:, None], cp, cq)
        c_back = torch.where(p_front[:, None], cq, cp)
        s = screen[b, f]  # [P,3,2]
        sgn = area_sign[b, f]
        a_pts, b_pts = s, s[:, [1, 2, 0]]
        d = b_pts - a_pts

        def edge(c):
            rel = c[:, None, :] - a_pts
            return sgn[:, None] * (d[..., 0] * rel[..., 1] - d[..., 1] * rel[..., 0])  # [P,3], >= 0 inside

        ef, eb = edge(c_front), edge(c_back)
        crosses = (eb.detach() < 0) & (ef.detach() >= 0)
        alpha = torch.where(crosses, ef / torch.where(crosses, ef - eb, torch.ones_like(ef)), torch.full_like(ef, 2.0))
        alpha_min, k = alpha.min(-1)
        ok = (alpha_min.detach() <= 1.0) & sil[b, f, k]
        if not bool(ok.any()):
            continue
        alpha_min, idx_f, idx_b = alpha_min[ok], idx_f[ok], idx_b[ok]
        col_f, col_b = flat.index_select(0, idx_f), flat.index_select(0, idx_b)  # reproducible backward on the CPU
        beyond = (alpha_min > 0.5)[:, None]
        w_back = torch.where(beyond, alpha_min[:, None] - 0.5, torch.zeros_like(col_f[:, :1]))
        w_front = torch.where(beyond, torch.zeros_like(col_f[:, :1]), 0.5 - alpha_min[:, None])
        delta = delta.index_add(0, idx_b, w_back * (col_f - col_b))
        delta = delta.index_add(0, idx_f, w_front * (col_b - col_f))
    return (flat + delta).reshape(B, H, W, C)
