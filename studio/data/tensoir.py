"""TensoIR-Synthetic reader (Jin et al., CVPR 2023): one folder per view, ``train_000/``, ``test_000/``, ...

Each view folder holds ``metadata.json`` with ``cam_angle_x`` (horizontal field of view, radians),
``imw`` / ``imh`` (pixels), ``envmap`` (the light of ``rgba.png``) and ``cam_transform_mat``: the
camera-to-world matrix in OpenGL/Blender axes, as TensoIR's own loaders read it: a string of 16
comma-separated numbers in row-major order (``reshape(4, 4)``), or a nested/flat list. A matrix
whose last row is not ``[0, 0, 0, 1]`` but whose last column is was written column-major and is
transposed. Images: ``rgba.png`` (RGBA under the training light, alpha = object mask),
``albedo.png`` (linear 8-bit: TensoIR gamma-encodes it only for display), ``normal.png``
(world-space unit normals as ``(n + 1) / 2`` in RGB) and, in test views, ``rgba_<env>.png`` relit
under the environment ``<env>`` (its map, ``<env>.hdr``, is distributed separately).

Splits: ``val`` reads the test views (the dataset has no validation views); a split without views
falls back to ``test``, then ``train`` (as ``studio.data.nerf_synthetic.split_file``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from studio.data.checks import check_same_size, read_json
from studio.data.images import read_image
from studio.data.nerf_synthetic import SPLITS, FrameSet
from studio.io.errors import StudioInputError

META = "metadata.json"
IMAGE = "rgba.png"
_RELIT = re.compile(r"^rgba_(.+)\.png$")


def is_tensoir(root: Path) -> bool:
    """Whether ``root`` is a TensoIR-Synthetic scene (``train_000/`` or ``test_000/`` with metadata.json)."""
    return (root / "train_000" / META).is_file() or (root / "test_000" / META).is_file()


def view_folders(root: Path, split: str) -> List[Path]:
    """The view folders ``<split>_<index>/`` holding a metadata.json, by index."""
    pattern = re.compile(rf"^{split}_(\d+)$")
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := pattern.match(p.name)) and (p / META).is_file()]
    return [p for _, p in sorted(found)]


def _split_folders(root: Path, split: str) -> List[Path]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    for name in dict.fromkeys((split if split != "val" else "test", "test", "train")):
        folders = view_folders(root, name)
        if folders:
            return folders
    raise StudioInputError(f"{root} holds no train_XXX/ or test_XXX/ view folder with a {META}.")


def camera_to_world(value: Any, source: Path) -> np.ndarray:
    """``cam_transform_mat`` (16-number string, flat or nested list) -> finite 4x4 camera-to-world."""
    try:
        numbers = [float(x) for x in value.split(",")] if isinstance(value, str) else value
        mat = np.asarray(numbers, dtype=np.float64).reshape(4, 4)
    except (AttributeError, TypeError, ValueError):
        raise StudioInputError(f"{source}: 'cam_transform_mat' is not 16 numbers.") from None
    bottom = np.array([0.0, 0.0, 0.0, 1.0])
    if not np.allclose(mat[3], bottom) and np.allclose(mat[:, 3], bottom):
        mat = mat.T  # written column-major
    if not np.all(np.isfinite(mat)) or abs(np.linalg.det(mat[:3, :3])) < 1e-6:
        raise StudioInputError(f"{source}: 'cam_transform_mat' has non-finite values or a degenerate rotation.")
    return mat


def _view_meta(folder: Path) -> tuple[np.ndarray, float, int, int]:
    """(camera-to-world [4,4], cam_angle_x, imw, imh) of one view folder."""
    source = folder / META
    meta = read_json(source)
    c2w = camera_to_world(meta.get("cam_transform_mat"), source)
    try:
        angle_x, width, height = float(meta["cam_angle_x"]), int(meta["imw"]), int(meta["imh"])
    except (KeyError, TypeError, ValueError):
        raise StudioInputError(f"{source} lacks a numeric 'cam_angle_x', 'imw' or 'imh'.") from None
    if not (math.isfinite(angle_x) and 0.0 < angle_x < math.pi):
        raise StudioInputError(f"{source}: cam_angle_x = {angle_x} is not a field of view in (0, pi) radians.")
    return c2w, angle_x, width, height


def read_tensoir(root: Path, split: str) -> FrameSet:
    """One split of a TensoIR-Synthetic scene as a ``FrameSet`` of its ``rgba.png`` images."""
    folders = _split_folders(root, split)
    metas = [_view_meta(f) for f in folders]
    _, angle_x, width, height = metas[0]
    for folder, (_, angle, w, h) in zip(folders, metas):
        if (w, h) != (width, height) or abs(angle - angle_x) > 1e-6:
            raise StudioInputError(
                f"{folder / META}: {w}x{h} px at cam_angle_x {angle}, but {folders[0].name} has "
                f"{width}x{height} px at {angle_x} (a split must share one camera)."
            )
    paths = [f / IMAGE for f in folders]
    check_same_size(paths, [(width, height)] * len(paths))
    return FrameSet.centred_pinhole(paths, np.stack([m[0] for m in metas]), width, height, angle_x)


def training_env(root: Path) -> Optional[str]:
    """The name of the training light (``envmap`` of the first view's metadata, file stem), if given."""
    folders = view_folders(root, "train") or view_folders(root, "test")
    name = read_json(folders[0] / META).get("envmap") if folders else None
    return Path(name).stem if isinstance(name, str) and name else None


def relit_images(root: Path, image_paths: Sequence[Path]) -> Dict[str, List[Path]]:
    """``{env: [rgba_<env>.png of each view]}`` for every env that all of ``image_paths``' view
    folders hold, in their order; the training light (and its rotations ``<env>_<deg>``) left out."""
    folders = [Path(p).parent for p in image_paths]
    if not folders:
        return {}
    names = [{m.group(1) for p in f.iterdir() if (m := _RELIT.match(p.name))} for f in folders]
    common = set.intersection(*names)
    train = training_env(root)
    if train is not None:
        common = {n for n in common if n != train and not re.fullmatch(rf"{re.escape(train)}_\d+", n)}
    return {name: [f / f"rgba_{name}.png" for f in folders] for name in sorted(common)}


def read_view_aovs(folder: Path) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(linear albedo [H,W,3], world unit normals [H,W,3]) of a view folder; None where the file is absent."""
    albedo_path, normal_path = folder / "albedo.png", folder / "normal.png"
    albedo = read_image(albedo_path)[..., :3] if albedo_path.is_file() else None
    normal = None
    if normal_path.is_file():
        n = read_image(normal_path)[..., :3] * 2.0 - 1.0
        normal = (n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-8)).astype(np.float32)
    return albedo, normal
