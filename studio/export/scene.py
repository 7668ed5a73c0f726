"""Open what ``studio view`` and ``studio render`` accept: a Gaussian PLY, a mesh, or a run's config.yml.

``check_scene_path`` validates a path by its header only (PLY element counts against the file
size, GLB/STL/OFF lengths, a config.yml through the restricted loader), so a command fails before
it allocates or prints anything; ``load_scene`` returns either ``Gaussians`` (world coordinates, CPU, float32) or one
``trimesh.Trimesh`` (a multi-part file is flattened into one mesh with its transforms applied).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

from studio.io.errors import StudioInputError
from studio.io.inputs import CONFIG_SUFFIXES, check_scene

if TYPE_CHECKING:
    import trimesh

    from studio.gaussians import Gaussians

    Scene = Union[Gaussians, trimesh.Trimesh]


def check_scene_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is a file of a supported kind whose header is sound, else ``StudioInputError``."""
    check_scene(Path(path))
    return Path(path)


def load_scene(path: str | os.PathLike) -> "Scene":
    """Read a Gaussian PLY, a mesh file, or a trained run's config.yml (see module docstring)."""
    path = check_scene_path(path)
    suffix = path.suffix.lower()
    if suffix in CONFIG_SUFFIXES:
        from studio.export.runs import load_gaussians_from_config

        return load_gaussians_from_config(path)
    if suffix == ".ply":
        from studio.export import is_gaussian_ply, load_gaussians_ply

        if is_gaussian_ply(path):
            return load_gaussians_ply(path)
    return _load_mesh(path)


def _load_mesh(path: Path) -> "trimesh.Trimesh":
    """One triangle mesh from a mesh file; files without triangles are input errors."""
    import trimesh

    try:
        mesh = trimesh.load(path, force="mesh")
    except Exception as err:  # trimesh raises many types for malformed files
        raise StudioInputError(f"{path} could not be read as a mesh ({err}).") from err
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise StudioInputError(f"{path} holds no triangles (neither a Gaussian PLY nor a mesh).")
    return mesh
