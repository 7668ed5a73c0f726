"""The ``studio`` backend of the triangle rasterizer: C++/CUDA kernels (``cuda/mesh_*``, loaded by
``studio.ext`` as the "mesh" extension) with hand-written backward passes.

Same contract and maths as ``_torch_impl.py`` (bit-identical forward). The rasterize backward
recomputes, per covered pixel, the edge functions of its triangle and chains the gradients of
(u, v, depth) back to the clip-space vertices; interpolate's backward scatters to the vertex
attributes and gives the gradients of (u, v).
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from studio.ext import load_extension

_modules: dict[bool, object] = {}


def _ext(t: Tensor):
    """The extension module for ``t``'s device, looked up once per process (``load_extension``
    costs about 10 us a call, four calls per forward + backward)."""
    module = _modules.get(t.is_cuda)
    if module is None:
        module = _modules[t.is_cuda] = load_extension("mesh", with_cuda=True if t.is_cuda else None)
    return module


_faces_cache: dict[int, tuple["weakref.ref[Tensor]", int, Tensor]] = {}
_FACES_CACHE_SIZE = 8


def _faces_int32(faces: Tensor) -> Tensor:
    """Contiguous int32 faces; the conversion of an unchanged (same object, same version) int64
    faces tensor is cached (a few entries), as meshes are usually rendered many times."""
    if faces.dtype == torch.int32 and faces.is_contiguous():
        return faces
    cached = _faces_cache.get(id(faces))
    if cached is not None and cached[0]() is faces and cached[1] == faces._version:
        return cached[2]
    converted = faces.to(torch.int32).contiguous()
    if len(_faces_cache) >= _FACES_CACHE_SIZE:
        _faces_cache.pop(next(iter(_faces_cache)))
    _faces_cache[id(faces)] = (weakref.ref(faces), faces._version, converted)
    return converted


def rasterize_studio(verts_clip: Tensor, faces: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor]:
    """See ``rasterize_torch``: (bary [B,H,W,2], tri_id [B,H,W] int32, depth [B,H,W])."""
    return _Rasterize.apply(verts_clip, _faces_int32(faces), int(width), int(height))


def interpolate_studio(attr: Tensor, bary: Tensor, tri_id: Tensor, faces: Tensor) -> Tensor:
    """See ``interpolate_torch``: attr [B,V,D] or [V,D] -> [B,H,W,D]."""
    squeeze = attr.ndim == 2
    attr3 = attr[None] if squeeze else attr
    return _Interpolate.apply(attr3, bary, tri_id.to(torch.int32).contiguous(), _faces_int32(faces))


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, verts_clip, faces, width, height):
        verts = verts_clip.contiguous().float()
        bary, tri_id, depth = _ext(verts).rasterize_fwd(verts, faces, width, height)
        ctx.save_for_backward(verts, faces, bary, tri_id, depth)
        ctx.in_dtype = verts_clip.dtype
        ctx.mark_non_differentiable(tri_id)
        ctx.set_materialize_grads(False)  # no zero gradients made for tri_id (or an unused output)
        return bary, tri_id, depth

    @staticmethod
    def backward(ctx, g_bary, _g_tri, g_depth):
        verts, faces, bary, tri_id, depth = ctx.saved_tensors
        if g_bary is None:
            g_bary = torch.zeros_like(bary)
        if g_depth is None:
            g_depth = torch.zeros_like(depth)
        g_verts = _ext(verts).rasterize_bwd(
            verts, faces, bary, tri_id, depth, g_bary.contiguous().float(), g_depth.contiguous().float()
        )
        return g_verts.to(ctx.in_dtype), None, None, None


class _Interpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attr, bary, tri_id, faces):
        a = attr.contiguous().float()
        b = bary.contiguous().float()
        out = _ext(a).interpolate_fwd(a, b, tri_id, faces)
        ctx.save_for_backward(a, b, tri_id, faces)
        ctx.attr_batch = attr.shape[0]
        return out

    @staticmethod
    def backward(ctx, g_out):
        a, b, tri_id, faces = ctx.saved_tensors
        g_attr, g_bary = _ext(a).interpolate_bwd(a, b, tri_id, faces, g_out.contiguous().float())
        if ctx.attr_batch == 1 and g_attr.shape[0] != 1:
            g_attr = g_attr.sum(0, keepdim=True)
        return g_attr, g_bary, None, None
