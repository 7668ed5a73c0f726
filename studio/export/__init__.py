"""Export of results: 3DGS PLY files, similarity transforms (with SH rotation), meshes."""

from studio.export.mesh import extract_mesh, save_mesh
from studio.export.ply import is_gaussian_ply, load_gaussians_ply, save_gaussians_ply
from studio.export.transform import dataparser_to_world, transform_gaussians

__all__ = [
    "dataparser_to_world",
    "extract_mesh",
    "is_gaussian_ply",
    "load_gaussians_ply",
    "save_gaussians_ply",
    "save_mesh",
    "transform_gaussians",
]
