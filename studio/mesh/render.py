"""Differentiable rendering of a triangle mesh from OpenCV cameras: colour, coverage, depth, normals.

``render_mesh`` chains ``studio.cameras.clip_from_opencv`` -> ``rasterize`` -> ``interpolate`` ->
``antialias``. The colour is composited over the background with the antialiased coverage, so
the silhouette gets gradients w.r.t. the vertex positions (``rasterize`` alone gives none).

Texture convention: ``studio.mesh.uv``'s (so a texture baked there renders as baked): ``uv`` in
[0,1] with u to the right and v up; texture row i, column j holds the value at uv
((j + 0.5) / T_w, (i + 0.5) / T_h), i.e. row 0 is v = 0. Sampling is bilinear with texel centres
as above, clamped at the border.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from studio.cameras.clip import clip_from_opencv
from studio.mesh.rasterize import antialias, interpolate, rasterize

RESERVED_KEYS = ("rgb", "alpha", "depth", "normal")


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted vertex normals (differentiable in ``verts``).

    Args:
        verts [V,3]; faces [F,3] int (counter-clockwise winding seen from the outside gives
        outward normals).
    Returns:
        [V,3] unit normals: the normalised sum of the adjacent faces' ``(v1 - v0) x (v2 - v0)``
        (length = twice the face area); zero for vertices in no (non-degenerate) face.
    """
    f = faces.long()
    # index_select, not x[idx]: a reproducible backward on the CPU (see studio.pbr.cubemap.cube_lookup)
    v0, v1, v2 = (verts.index_select(0, f[:, k]) for k in range(3))
    face_n = torch.linalg.cross(v1 - v0, v2 - v0)  # [F,3]
    acc = torch.zeros_like(verts)
    for k in range(3):
        acc = acc.index_add(0, f[:, k], face_n)
    return F.normalize(acc, dim=-1, eps=1e-12)


def _sample_texture(texture: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of ``texture`` [Th,Tw,D] (row 0 = v = 0) at ``uv`` [C,H,W,2] -> [C,H,W,D]."""
    C = uv.shape[0]
    tex = texture.permute(2, 0, 1)[None].expand(C, -1, -1, -1).to(uv.dtype)  # [C,D,Th,Tw]
    # grid_sample (align_corners=False): x = -1 / y = -1 are the left / top edge of column / row 0,
    # i.e. u = 0 / v = 0 in this module's convention.
    out = F.grid_sample(tex, uv * 2.0 - 1.0, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def render_mesh(
    verts: Tensor,
    faces: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    vertex_attrs: Optional[dict[str, Tensor]] = None,
    uv: Optional[Tensor] = None,
    texture: Optional[Tensor] = None,
    background: Optional[Tensor] = None,
    near: float = 0.01,
    far: float = 100.0,
    backend: str = "auto",
) -> dict[str, Tensor]:
    """Render a mesh from C cameras (see the module docstring for the texture convention).

    Args:
        verts [V,3] world positions; faces [F,3] int vertex indices.
        viewmats [C,4,4] world-to-camera (OpenCV axes: x right, y down, z forward);
        Ks [C,3,3] pinhole intrinsics, pixels (pixel (row i, col j) centred at (j + 0.5, i + 0.5)).
        width, height: image size, pixels.
        vertex_attrs: name -> [V,D] per-vertex attributes, each interpolated into the output;
            ``"color"`` [V,3] is the surface colour when no texture is given.
        uv [V,2], texture [Th,Tw,3]: texture-mapped colour (both or neither); takes precedence
            over ``vertex_attrs["color"]``. Without either the surface is white (silhouette).
        background [3] or [C,3]: colour behind the mesh (default black).
        near, far: clipping distances along the view axis (world units).
        backend: ``studio.mesh.rasterize`` backend (``auto`` | ``torch`` | ``studio``).
    Returns:
        dict with
          ``rgb`` [C,H,W,3]: ``antialias([colour * mask, mask])`` composited as
            ``premultiplied colour + (1 - alpha) * background``;
          ``alpha`` [C,H,W,1]: the antialiased coverage, clamped to [0,1];
          ``depth`` [C,H,W,1]: view-space z of the visible surface (world units), 0 where empty;
          ``normal`` [C,H,W,3]: interpolated world-space vertex normals (``vertex_normals``),
            renormalised, 0 where empty;
          one [C,H,W,D] entry per ``vertex_attrs`` key (interpolated, 0 where empty, not
            antialiased).
        Everything is differentiable w.r.t. ``verts`` (and the attributes / texture); the
        silhouette only through ``alpha`` and ``rgb``.
    """
    vertex_attrs = dict(vertex_attrs or {})
    clash = [k for k in vertex_attrs if k in RESERVED_KEYS]
    if clash:
        raise ValueError(f"vertex_attrs keys {clash} clash with the outputs {RESERVED_KEYS}.")
    if (uv is None) != (texture is None):
        raise ValueError("uv and texture must be given together.")
    if viewmats.ndim != 3 or Ks.ndim != 3:
        raise ValueError(f"viewmats must be [C,4,4] and Ks [C,3,3]; got {tuple(viewmats.shape)}, {tuple(Ks.shape)}.")
    faces_i = faces.to(torch.int32).contiguous()
    verts_h = torch.cat([verts, torch.ones_like(verts[:, :1])], dim=-1)  # [V,4]
    clip = clip_from_opencv(viewmats.to(verts.dtype), Ks, width, height, near, far)  # [C,4,4]
    verts_clip = (verts_h[None] @ clip.mT).contiguous()  # [C,V,4], w = view-space z
    bary, tri_id, ndc_depth = rasterize(verts_clip, faces_i, width, height, backend=backend)
    mask = (tri_id >= 0)[..., None].to(verts.dtype)  # [C,H,W,1]

    # Shared per-vertex attributes, interpolated in one call: normal, uv, the user's attributes.
    shared = [vertex_normals(verts, faces)] + ([uv.to(verts.dtype)] if uv is not None else [])
    shared += [a.to(verts.dtype) for a in vertex_attrs.values()]
    parts = list(
        interpolate(torch.cat(shared, -1), bary, tri_id, faces_i, backend=backend).split(
            [a.shape[-1] for a in shared], -1
        )
    )
    normal_img, uv_img = parts.pop(0), (parts.pop(0) if uv is not None else None)
    attr_imgs = dict(zip(vertex_attrs, parts))
    depth = interpolate(verts_clip[..., 3:], bary, tri_id, faces_i, backend=backend)  # [C,H,W,1]

    if texture is not None:
        color = _sample_texture(texture, uv_img)
    elif "color" in vertex_attrs:
        color = attr_imgs["color"]
    else:
        color = torch.ones_like(mask).expand(-1, -1, -1, 3)
    aa = antialias(torch.cat([color * mask, mask], -1), tri_id, ndc_depth, verts_clip, faces_i)
    premult, alpha = aa[..., :-1], aa[..., -1:].clamp(0.0, 1.0)
    if background is None:
        rgb = premult
    else:
        bg = background.to(premult).reshape(-1, 1, 1, background.shape[-1])  # [1 or C,1,1,3]
        rgb = premult + (1.0 - alpha) * bg
    out = {
        "rgb": rgb,
        "alpha": alpha,
        "depth": depth,
        "normal": F.normalize(normal_img, dim=-1, eps=1e-12) * mask,
    }
    out.update(attr_imgs)
    return out
