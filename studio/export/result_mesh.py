"""The final mesh of a mesh-stage run (``dreamcraft3d``), read from its model state, and its writer.

``state_mesh`` is the one place that knows which state tensors make a mesh: a textured mesh after
the texture stage, a vertex-coloured one after the geometry stage (the vertex mesh, or the DMTet
marched), none before.
``save_result_mesh`` writes either as .glb (texture embedded), .obj (+ .mtl + texture .png beside
it) or .ply (vertex-coloured only: a .ply holds no texture, so a textured mesh is refused); the
run's own ``export/mesh.glb`` is written by the same function, so both paths give the same file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
import torch.nn.functional as F
import trimesh
from torch import Tensor

from studio.io import StudioInputError, atomic_path
from studio.io.atomic import atomic_write_bytes
from studio.mesh.textured import TexturedMesh, save_textured_glb, textured_trimesh
from studio.mesh.uv import texture_image, to_uint8

ResultMesh = Union[TexturedMesh, trimesh.Trimesh]


def state_mesh(state: Mapping[str, Tensor], prefix: str = "") -> Optional[ResultMesh]:
    """The mesh a staged mesh model's state holds, in the model's frame, on the CPU.

    Keys (after ``prefix``: ``"_model."`` in a Nerfstudio checkpoint's pipeline state, ``""`` in
    the model's own ``state_dict``): ``mesh.mesh_verts`` [V,3], ``mesh_faces`` [F,3] and
    ``mesh.mesh_colors`` [V,3] in [0,1] from the geometry stage on; after the texture stage
    (UV-unwrapped, so V changes) also ``mesh_uv`` [V,2] and ``mesh.texture`` [T,T,3] in [0,1]
    (``studio.mesh.uv`` convention), while ``mesh.mesh_colors`` keeps the geometry stage's V.

    Returns:
        a ``TexturedMesh`` (texture clamped to [0,1]) when the texture is non-empty; else a
        vertex-coloured ``trimesh.Trimesh`` (not processed: vertex order kept) when there are
        faces; else None (no mesh stage reached, or not a mesh-stage model).
    """

    def get(name: str) -> Tensor:
        return state.get(prefix + name, torch.zeros(0)).detach().cpu()

    verts, faces, texture = get("mesh.mesh_verts").float(), get("mesh_faces").long(), get("mesh.texture")
    if faces.shape[0] == 0 and get("dmtet.dmtet_sdf").shape[0] > 0:  # in a DMTet geometry stage
        return dmtet_state_mesh(get)
    if faces.shape[0] == 0:
        return None
    if texture.shape[0] > 0:
        return TexturedMesh(verts, faces, get("mesh_uv").float(), texture.float().clamp(0.0, 1.0))
    colors = to_uint8(get("mesh.mesh_colors").float().clamp(0.0, 1.0))
    return trimesh.Trimesh(verts.numpy(), faces.numpy(), vertex_colors=colors, process=False)


def dmtet_state_mesh(get) -> trimesh.Trimesh:
    """The vertex-coloured mesh of a DMTet geometry stage: ``dmtet_box`` [2,3], ``dmtet_resolution``
    and ``dmtet.dmtet_sdf`` [V], ``dmtet.dmtet_deform`` [V,3], ``dmtet.dmtet_color`` [V,3]
    (``studio.mesh.dmtet.deformable_surface``), read with ``get(name)``."""
    from studio.mesh.dmtet import deformable_surface, tet_grid

    grid = tet_grid(*get("dmtet_box").float(), int(get("dmtet_resolution")))
    with torch.no_grad():
        verts, faces, colors = deformable_surface(
            grid,
            get("dmtet.dmtet_sdf").float(),
            get("dmtet.dmtet_deform").float(),
            get("dmtet.dmtet_color").float().clamp(0.0, 1.0),
        )
    return trimesh.Trimesh(verts.numpy(), faces.numpy(), vertex_colors=to_uint8(colors), process=False)


def resize_texture(texture: Tensor, size: int) -> Tensor:
    """``texture`` [T,T,3] resampled to [size,size,3]: area averaging when shrinking, bilinear
    (texel centres aligned, ``align_corners=False``) when enlarging, unchanged at the same size."""
    if size == texture.shape[0] and size == texture.shape[1]:
        return texture
    mode = "area" if size < texture.shape[0] else "bilinear"
    image = texture.permute(2, 0, 1)[None].float()
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(image, size=(size, size), mode=mode, **kwargs)[0].permute(1, 2, 0).clamp(0.0, 1.0)


def save_result_mesh(path: str | os.PathLike, mesh: ResultMesh, texture_size: Optional[int] = None) -> None:
    """Write a result mesh, atomically, in the format of ``path``'s extension.

    A ``TexturedMesh`` goes to .glb (``save_textured_glb``) or .obj (``save_textured_obj``), its
    texture resampled to ``texture_size`` x ``texture_size`` texels when given
    (``resize_texture``); a ``trimesh.Trimesh`` to .glb, .obj or .ply (``studio.export.save_mesh``).

    Raises:
        StudioInputError: a textured mesh to .ply, ``texture_size`` for an untextured mesh, or
            another extension.
    """
    from studio.export.mesh import save_mesh

    suffix = Path(path).suffix.lower()
    if not isinstance(mesh, TexturedMesh):
        if texture_size is not None:
            raise StudioInputError("--texture-size applies to a textured mesh only; this mesh has vertex colours.")
        save_mesh(path, mesh)
        return
    if texture_size is not None:
        mesh = TexturedMesh(mesh.verts, mesh.faces, mesh.uv, resize_texture(mesh.texture, texture_size))
    if suffix == ".glb":
        save_textured_glb(path, mesh)
    elif suffix == ".obj":
        save_textured_obj(path, mesh)
    else:
        raise StudioInputError(f"Cannot write the textured mesh to {path}: use .glb or .obj (a .ply holds no texture).")


def save_textured_obj(path: str | os.PathLike, mesh: TexturedMesh) -> list[Path]:
    """Write ``mesh`` as Wavefront OBJ: ``X.obj``, ``X.mtl`` and the texture ``X.png`` (8-bit)
    beside it, with ``mtllib`` / ``map_Kd`` naming them relative to the folder. Whitespace in the
    stem becomes ``_`` in the .mtl and .png names (OBJ statements split on whitespace). Each file
    is written atomically, the .obj last, so an .obj on disk never names a missing file.

    Returns:
        the written paths (.mtl, .png, .obj).
    """
    path = Path(path)
    name = re.sub(r"\s", "_", path.stem)
    material = trimesh.visual.material.SimpleMaterial(
        image=texture_image(to_uint8(mesh.texture)), diffuse=[255, 255, 255, 255], name=name
    )
    tm = textured_trimesh(
        mesh.verts.detach().cpu().float().numpy(),
        mesh.faces.cpu().long().numpy(),
        mesh.uv.detach().cpu().float().numpy(),
        material,
    )
    text, files = trimesh.exchange.obj.export_obj(
        tm, include_normals=False, include_texture=True, return_texture=True, mtl_name=f"{name}.mtl"
    )
    written = []
    for file_name, data in files.items():
        written.append(path.parent / file_name)
        atomic_write_bytes(written[-1], data)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return [*written, path]
