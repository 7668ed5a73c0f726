"""Dataset detection and validation: each bad input gives one clear StudioInputError."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.data import DatasetFormat, detect_format, read_nerf_synthetic, validate_dataset
from studio.io.errors import StudioInputError


def test_nerf_synthetic_reads_intrinsics_and_poses(nerf_synthetic: Path):
    assert validate_dataset(nerf_synthetic) is DatasetFormat.NERF_SYNTHETIC
    frames = read_nerf_synthetic(nerf_synthetic, "train")
    assert (frames.width, frames.height) == (16, 16)
    assert frames.fx == pytest.approx(0.5 * 16 / math.tan(0.5 * 0.69))
    assert frames.camera_to_worlds.shape == (3, 4, 4)
    assert all(p.exists() and p.suffix == ".png" for p in frames.image_paths)


def _edit_frames(root: Path, edit) -> None:
    path = root / "transforms_train.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda root: (root / "train" / "r_1.png").unlink(), "does not exist"),
        (lambda root: (root / "train" / "r_1.png").write_bytes(b"not a png"), "corrupt"),
        (lambda root: _edit_frames(root, lambda m: m.update(frames=[])), "no frames"),
        (lambda root: Image.new("RGBA", (20, 16)).save(root / "train" / "r_2.png"), "mismatched"),
        (
            lambda root: _edit_frames(
                root, lambda m: m["frames"][0]["transform_matrix"][0].__setitem__(3, float("nan"))
            ),
            "NaN",
        ),
        (lambda root: (root / "transforms_train.json").write_text("{broken"), "not valid JSON"),
    ],
)
def test_bad_nerf_synthetic_input_is_one_clear_error(nerf_synthetic: Path, breakage, message):
    breakage(nerf_synthetic)
    with pytest.raises(StudioInputError, match=message) as info:
        validate_dataset(nerf_synthetic)
    assert "\n" not in str(info.value)


def test_unknown_folder_is_rejected(tmp_path: Path):
    with pytest.raises(StudioInputError, match="neither"):
        detect_format(tmp_path)
    with pytest.raises(StudioInputError, match="does not exist"):
        detect_format(tmp_path / "missing")


def test_nerfstudio_format_checks_per_frame_sizes(tmp_path: Path):
    (tmp_path / "images").mkdir()
    frames = []
    for i, size in enumerate([(16, 12), (8, 6)]):
        Image.fromarray(np.zeros(size[::-1] + (3,), np.uint8)).save(tmp_path / "images" / f"{i}.png")
        frames.append(
            {
                "file_path": f"images/{i}.png",
                "w": size[0],
                "h": size[1],
                "fl_x": 10.0,
                "fl_y": 10.0,
                "cx": size[0] / 2,
                "cy": size[1] / 2,
                "transform_matrix": np.eye(4).tolist(),
            }
        )
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": frames}))
    assert validate_dataset(tmp_path) is DatasetFormat.NERFSTUDIO
    frames[1]["w"] = 9
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": frames}))
    with pytest.raises(StudioInputError, match="mismatched"):
        validate_dataset(tmp_path)


def test_val_from_train_holds_out_every_kth_training_frame(tmp_path: Path):
    """val_from_train K: the val split is training frames 0, K, 2K, ... and the training split the
    rest (never both); the test split is untouched; K leaving no training frame is one clear error."""
    from conftest import write_nerf_synthetic

    from studio.data.dataparser import StudioDataParserConfig

    scene = write_nerf_synthetic(tmp_path / "scene", n=10)
    every = StudioDataParserConfig(data=scene).setup()
    held = StudioDataParserConfig(data=scene, val_from_train=4).setup()
    all_train = every.get_dataparser_outputs("train").image_filenames
    train, val = (held.get_dataparser_outputs(s).image_filenames for s in ("train", "val"))
    assert val == [all_train[i] for i in (0, 4, 8)]
    assert train == [p for i, p in enumerate(all_train) if i not in (0, 4, 8)]
    assert held.get_dataparser_outputs("test").image_filenames == every.get_dataparser_outputs("test").image_filenames
    poses = held.get_dataparser_outputs("val").cameras.camera_to_worlds
    torch.testing.assert_close(poses, every.get_dataparser_outputs("train").cameras.camera_to_worlds[[0, 4, 8]])
    with pytest.raises(StudioInputError, match="val-from-train 1"):
        StudioDataParserConfig(data=scene, val_from_train=1).setup().get_dataparser_outputs("train")
