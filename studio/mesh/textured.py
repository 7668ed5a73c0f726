"""UV-textured meshes: bake vertex colours into a texture atlas, write textured glTF binaries.

Texture rows follow ``studio.mesh.uv`` (row 0 = v = 0); the written images are flipped there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from studio.mesh.uv import dilate, texture_image, to_uint8, uv_atlas

if TYPE_CHECKING:  # trimesh takes about a second to import: only the writers need it
    import trimesh


@dataclass
class TexturedMesh:
    """A mesh with one colour texture.

    ``verts`` [V,3] float32 (world units); ``faces`` [F,3] int64; ``uv`` [V,2] float32 in [0,1]
    (u right, v up); ``texture`` [T,T,3] float32 in [0,1], row 0 = v = 0 (``studio.mesh.uv``).
    """

    verts: Tensor
    faces: Tensor
    uv: Tensor
    texture: Tensor


@torch.no_grad()
def unwrap_with_colors(
    verts: Tensor,
    faces: Tensor,
    vertex_colors: Tensor,
    texture_size: int = 1024,
    padding: int = 2,
    dilation: int = 8,
) -> TexturedMesh:
    """UV-unwrap a mesh with xatlas and bake its vertex colours into a texture.

    Each texel inside a UV chart takes the colour interpolated (barycentric) at its centre;
    ``dilation`` rings of texels around the charts are filled from their neighbours
    (``studio.mesh.uv.dilate``), the rest with the mean colour. Vertices on chart seams are
    duplicated, so the result has V' >= V vertices.

    Args:
        verts [V,3]; faces [F,3] int; vertex_colors [V,3] in [0,1];
        texture_size: T, texels per side; padding: texels between charts;
        dilation: texel rings grown past the charts.
    Returns:
        ``TexturedMesh`` on the device of ``verts``.
    """
    atlas = uv_atlas(verts.detach().cpu().numpy(), faces.cpu().numpy(), texture_size, padding, verts.device)
    texture = dilate(atlas.texels(vertex_colors), atlas.covered, dilation).clamp(0.0, 1.0)
    return TexturedMesh(verts=verts.detach().float()[atlas.vmapping], faces=atlas.faces, uv=atlas.uv, texture=texture)


def textured_trimesh(
    vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, material: trimesh.visual.material.Material
) -> trimesh.Trimesh:
    """A ``trimesh.Trimesh`` (not processed: vertex order kept) with ``TextureVisuals`` of ``uv``
    [V,2] (v up) and ``material``."""
    import trimesh

    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False)


def save_textured_glb(path: str | os.PathLike, mesh: TexturedMesh) -> int:
    """Write ``mesh`` as a glTF binary with a PBR material whose ``baseColorTexture`` is the
    texture (8-bit, values written as given: glTF reads them as sRGB-encoded), atomically.

    Returns:
        bytes written.
    """
    import trimesh

    material = trimesh.visual.material.PBRMaterial(
        name="studio_texture",
        baseColorTexture=texture_image(to_uint8(mesh.texture)),
        baseColorFactor=[255, 255, 255, 255],
        metallicFactor=0.0,
        roughnessFactor=1.0,
    )
    tm = textured_trimesh(
        mesh.verts.detach().cpu().numpy().astype(np.float32),
        mesh.faces.cpu().numpy().astype(np.int64),
        mesh.uv.detach().cpu().numpy().astype(np.float32),
        material,
    )
    return save_glb(path, tm)


def save_glb(path: str | os.PathLike, mesh: trimesh.Trimesh) -> int:
    """Write ``mesh`` (with its material) as a glTF binary, atomically; returns the byte count."""
    from studio.io.atomic import atomic_write_bytes

    data = mesh.export(file_type="glb")
    atomic_write_bytes(path, data)
    return len(data)
