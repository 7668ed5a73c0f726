"""UV-textured meshes: bake vertex colours into a texture atlas, write a textured .glb.

Texture convention (``studio.mesh.render``, ``studio.export.pbr.rasterize_uv``): ``uv`` in [0,1]
with u right and v up; texture row i samples v = (i + 0.5) / T, so row 0 is v = 0, the bottom of
the image. ``save_textured_glb`` flips the rows on write (image files have row 0 at the top).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class TexturedMesh:
    """A mesh with one colour texture.

    ``verts`` [V,3] float32 (world units); ``faces`` [F,3] int64; ``uv`` [V,2] float32 in [0,1]
    (u right, v up); ``texture`` [T,T,3] float32 in [0,1], row 0 = v = 0 (module docstring).
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
    (``studio.export.pbr.dilate``), the rest with the mean colour. Vertices on chart seams are
    duplicated, so the result has V' >= V vertices.

    Args:
        verts [V,3]; faces [F,3] int; vertex_colors [V,3] in [0,1];
        texture_size: T, texels per side; padding: texels between charts;
        dilation: texel rings grown past the charts.
    Returns:
        ``TexturedMesh`` on the device of ``verts``.
    """
    from studio.export.pbr import dilate, rasterize_uv, uv_unwrap
    from studio.mesh.rasterize import interpolate

    device = verts.device
    vmap, new_faces, uv = uv_unwrap(verts.detach().cpu().numpy(), faces.cpu().numpy(), texture_size, padding)
    vmap_t = torch.as_tensor(vmap, device=device)
    faces_t = torch.as_tensor(new_faces, device=device)
    uv_t = torch.as_tensor(uv, device=device)
    bary, tri_id = rasterize_uv(uv_t, faces_t, texture_size)
    colors = vertex_colors.detach().float()[vmap_t]
    texels = interpolate(colors, bary[None], tri_id[None], faces_t.to(torch.int32))[0]  # [T,T,3]
    texture = dilate(texels, tri_id >= 0, dilation).clamp(0.0, 1.0)
    return TexturedMesh(verts=verts.detach().float()[vmap_t], faces=faces_t, uv=uv_t, texture=texture)


def save_textured_glb(path: str | os.PathLike, mesh: TexturedMesh) -> int:
    """Write ``mesh`` as a glTF binary with a PBR material whose ``baseColorTexture`` is the
    texture (8-bit, values written as given: glTF reads them as sRGB-encoded), atomically.

    Returns:
        bytes written.
    """
    import trimesh
    from PIL import Image

    from studio.export.pbr import save_glb

    image = (mesh.texture.detach().flip(0).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()
    material = trimesh.visual.material.PBRMaterial(
        name="studio_texture",
        baseColorTexture=Image.fromarray(image),
        baseColorFactor=[255, 255, 255, 255],
        metallicFactor=0.0,
        roughnessFactor=1.0,
    )
    visual = trimesh.visual.TextureVisuals(uv=mesh.uv.detach().cpu().numpy().astype(np.float32), material=material)
    tm = trimesh.Trimesh(
        vertices=mesh.verts.detach().cpu().numpy().astype(np.float32),
        faces=mesh.faces.cpu().numpy().astype(np.int64),
        visual=visual,
        process=False,
    )
    return save_glb(path, tm)
