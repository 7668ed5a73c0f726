"""Mesh regularizers for surface optimisation: normal consistency and uniform Laplacian smoothing.

Both are differentiable w.r.t. the vertex positions. Their connectivity (``edge_face_pairs``,
``mesh_edges``) depends on the faces only: callers optimising a fixed topology can compute it once
and pass it in.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def _edge_keys(faces: Tensor) -> tuple[Tensor, Tensor]:
    """Undirected edges of every face: keys [3F] (one int64 per vertex pair) and the pairs [3F,2]
    (smaller index first), edge k of face f at 3 f + k (vertices k -> k+1)."""
    f = faces.long()
    pairs = f[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2)
    pairs = torch.stack([pairs.amin(-1), pairs.amax(-1)], -1)
    n = int(f.max()) + 1 if f.numel() else 1
    return pairs[:, 0] * n + pairs[:, 1], pairs


def edge_face_pairs(faces: Tensor) -> Tensor:
    """Pairs of faces sharing an edge.

    Args:
        faces [F,3] int.
    Returns:
        [E,2] int64 face indices: one row per interior edge (two faces); a non-manifold edge
        with n faces gives all n (n - 1) / 2 pairs, a boundary edge none.
    """
    keys, _ = _edge_keys(faces)
    order = torch.argsort(keys, stable=True)
    sk, face_of = keys[order], order // 3
    counts = torch.unique_consecutive(sk, return_counts=True)[1]
    max_count = int(counts.max()) if counts.numel() else 0
    out = [torch.zeros(0, 2, dtype=torch.long, device=faces.device)]
    for d in range(1, max_count):  # slots d apart in the sorted keys with the same edge
        same = sk[:-d] == sk[d:]
        out.append(torch.stack([face_of[:-d][same], face_of[d:][same]], -1))
    return torch.cat(out)


def mesh_edges(faces: Tensor) -> Tensor:
    """[E,2] int64 unique undirected edges (smaller vertex index first) of ``faces`` [F,3]."""
    return torch.unique(_edge_keys(faces)[1], dim=0)


def face_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """[F,3] unit normals ``(v1 - v0) x (v2 - v0)`` normalised (0 for degenerate faces)."""
    f = faces.long()
    # index_select, not x[idx]: a reproducible backward on the CPU (see studio.pbr.cubemap.cube_lookup)
    v0, v1, v2 = (verts.index_select(0, f[:, k]) for k in range(3))
    return F.normalize(torch.linalg.cross(v1 - v0, v2 - v0), dim=-1)


def normal_consistency(verts: Tensor, faces: Tensor, pairs: Optional[Tensor] = None) -> Tensor:
    """Mean of ``1 - cos`` between the normals of the two faces of each interior edge.

    pytorch3d's ``mesh_normal_consistency`` for a consistently oriented mesh (it takes the normal
    orientations from the winding): 0 for a flat or smoothly curved surface, up to 2 for a fold.

    Args:
        verts [V,3]; faces [F,3] int; pairs: ``edge_face_pairs(faces)`` if already computed.
    Returns:
        scalar (0 if the mesh has no interior edge).
    """
    pairs = edge_face_pairs(faces) if pairs is None else pairs
    if pairs.numel() == 0:
        return verts.sum() * 0.0
    n = face_normals(verts, faces)
    return (1.0 - (n.index_select(0, pairs[:, 0]) * n.index_select(0, pairs[:, 1])).sum(-1)).mean()


def laplacian_smoothing(verts: Tensor, faces: Tensor, edges: Optional[Tensor] = None) -> Tensor:
    """Uniform Laplacian smoothing energy: mean over vertices of ``||v - mean(neighbours)||^2``.

    Args:
        verts [V,3]; faces [F,3] int; edges: ``mesh_edges(faces)`` if already computed.
    Returns:
        scalar (squared length units), the mean over vertices with at least one neighbour.
    """
    edges = mesh_edges(faces) if edges is None else edges
    a, b = edges[:, 0], edges[:, 1]
    total = torch.zeros_like(verts).index_add(0, a, verts.index_select(0, b)).index_add(0, b, verts.index_select(0, a))
    degree = torch.zeros(len(verts), dtype=verts.dtype, device=verts.device)
    degree = degree.index_add(0, a, torch.ones_like(a, dtype=verts.dtype)).index_add(
        0, b, torch.ones_like(b, dtype=verts.dtype)
    )
    used = degree > 0
    if not bool(used.any()):
        return verts.sum() * 0.0
    delta = verts[used] - total[used] / degree[used, None]
    return delta.square().sum(-1).mean()
