"""Export of results: 3DGS PLY files, similarity transforms (with SH rotation), meshes.

The names are imported lazily (PEP 562), so ``studio.export.ply`` alone does not pull in trimesh
(what ``studio generate`` needs to start fast)."""

from __future__ import annotations

import importlib

_SOURCES = {
    "extract_mesh": "studio.export.mesh",
    "save_mesh": "studio.export.mesh",
    "is_gaussian_ply": "studio.export.ply",
    "load_gaussians_ply": "studio.export.ply",
    "save_gaussians_ply": "studio.export.ply",
    "dataparser_to_world": "studio.export.transform",
    "transform_gaussians": "studio.export.transform",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module 'studio.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_SOURCES[name]), name)
