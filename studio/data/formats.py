"""Dataset format detection from ``--data`` alone, and up-front validation of a whole dataset.

Validation runs before any output is written, so a bad dataset stops a run with one sentence
(missing/corrupt images, empty frame lists, mismatched sizes, non-finite poses).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from studio.data.checks import check_same_size, frames_of, pose_of, read_json
from studio.data.nerf_synthetic import SPLITS, FrameSet, read_nerf_synthetic
from studio.data.tensoir import is_tensoir, read_tensoir
from studio.io.errors import StudioInputError
from studio.io.headers import check_ply


class DatasetFormat(str, Enum):
    NERF_SYNTHETIC = "nerf-synthetic"
    NERFSTUDIO = "nerfstudio"
    TENSOIR = "tensoir"


def detect_format(data: Path) -> DatasetFormat:
    """``transforms_train.json`` -> NeRF-synthetic; ``train_000/metadata.json`` (or ``test_000/``) ->
    TensoIR-Synthetic; ``transforms.json`` (or that file) -> Nerfstudio."""
    if data.is_file() and data.suffix == ".json":
        return DatasetFormat.NERFSTUDIO
    if not data.exists():
        raise StudioInputError(f"--data {data} does not exist.")
    if (data / "transforms_train.json").exists():
        return DatasetFormat.NERF_SYNTHETIC
    if is_tensoir(data):
        return DatasetFormat.TENSOIR
    if (data / "transforms.json").exists():
        return DatasetFormat.NERFSTUDIO
    raise StudioInputError(
        f"--data {data} holds neither transforms_train.json (NeRF-synthetic), train_000/metadata.json "
        "(TensoIR-Synthetic) nor transforms.json (Nerfstudio)."
    )


def read_frames(data: Path, split: str, val_from_train: int = 0) -> FrameSet:
    """One split of a NeRF-synthetic or TensoIR-Synthetic folder (the formats read into a ``FrameSet``).

    ``val_from_train`` K > 0 holds every K-th training frame (0, K, 2K, ...) out as the ``val`` split,
    the training split keeping the others: validation views distinct from the test views for
    datasets whose ``val`` split repeats ``test`` (Blender's NeRF-synthetic scenes, TensoIR)."""
    read = read_tensoir if detect_format(data) is DatasetFormat.TENSOIR else read_nerf_synthetic
    if val_from_train <= 0 or split not in ("train", "val"):
        return read(data, split)
    frames = read(data, "train")
    n = len(frames.image_paths)
    held = list(range(0, n, val_from_train))
    if val_from_train < 2 or len(held) == n:
        raise StudioInputError(f"--val-from-train {val_from_train} leaves no training frames of {n}; use 2 or more.")
    return frames.subset(held if split == "val" else [i for i in range(n) if i % val_from_train])


def nerfstudio_transforms_file(data: Path) -> Path:
    """The transforms.json of a Nerfstudio dataset given as folder or file."""
    return data if data.is_file() else data / "transforms.json"


def _validate_nerfstudio(data: Path) -> None:
    source = nerfstudio_transforms_file(data)
    meta = read_json(source)
    frames = frames_of(meta, source)
    root = source.parent
    paths, sizes = [], []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise StudioInputError(f"{source}: frame {i} has no 'file_path' string.")
        pose_of(frame, i, source)
        for key in ("fl_x", "fl_y", "cx", "cy"):
            value = frame.get(key, meta.get(key))
            if value is None:
                raise StudioInputError(f"{source}: frame {i} has no '{key}' (neither per frame nor global).")
        paths.append(root / frame["file_path"])
        w, h = frame.get("w", meta.get("w")), frame.get("h", meta.get("h"))
        sizes.append((int(w), int(h)) if w is not None and h is not None else None)
    if all(s is not None for s in sizes):
        check_same_size(paths, sizes)  # type: ignore[arg-type]
    else:
        check_same_size(paths)
    if isinstance(meta.get("ply_file_path"), str):
        header = check_ply(root / meta["ply_file_path"], f"{source}: point cloud")
        if header.element("vertex") is None:
            raise StudioInputError(f"{source}: point cloud {meta['ply_file_path']} has no 'vertex' element.")


def validate_dataset(data: Path) -> DatasetFormat:
    """Detect the format and check every split's frames, poses and images; returns the format."""
    fmt = detect_format(data)
    if fmt is not DatasetFormat.NERFSTUDIO:
        for split in SPLITS:
            read_frames(data, split)
    else:
        _validate_nerfstudio(data)
    return fmt
