"""Differentiable triangle rasterization (nvdiffrast-like): ``rasterize``, ``interpolate``, ``antialias``;
mesh rendering from OpenCV cameras (``render_mesh``), mesh regularizers, UV atlases and textured
meshes (``studio.mesh.uv``: the texture row convention), level-set meshes (``studio.mesh.level_set``).

See ``studio.mesh.rasterize`` for the conventions; ``studio.cameras.clip_from_opencv`` builds
the clip-space matrix from an OpenCV camera.
"""

from studio.mesh.rasterize import BACKENDS, antialias, interpolate, rasterize, resolve_backend
from studio.mesh.regularizers import edge_face_pairs, laplacian_smoothing, mesh_edges, normal_consistency
from studio.mesh.render import render_mesh, vertex_normals
from studio.mesh.textured import TexturedMesh, save_glb, save_textured_glb, unwrap_with_colors

__all__ = [
    "BACKENDS",
    "TexturedMesh",
    "antialias",
    "edge_face_pairs",
    "interpolate",
    "laplacian_smoothing",
    "mesh_edges",
    "normal_consistency",
    "rasterize",
    "render_mesh",
    "resolve_backend",
    "save_glb",
    "save_textured_glb",
    "unwrap_with_colors",
    "vertex_normals",
]
