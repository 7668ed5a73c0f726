"""Nerfstudio DataParser that detects the dataset format from ``--data`` alone.

* NeRF-synthetic and TensoIR-Synthetic folders are read by ``studio.data.nerf_synthetic`` /
  ``studio.data.tensoir``: world coordinates are kept as they are (identity dataparser transform,
  scale 1), RGBA images stay RGBA so the model composites them over its own background (and
  takes the alpha as the object mask).
* Nerfstudio ``transforms.json`` datasets are validated here, then parsed by Nerfstudio's own
  parser (per-frame intrinsics, OpenCV distortion, orientation/centering/scaling, train/eval
  split); its ``dataparser_transform`` / ``dataparser_scale`` are what exports undo.
* ``metadata`` (passed to the model): ``dataset_format``, ``camera_extent`` (3DGS scene extent)
  and ``camera_centers`` [C,3] (the split's camera positions, world).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Type

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.data.scene_box import SceneBox

from studio.cameras.nerfstudio import camera_extent
from studio.data.formats import DatasetFormat, detect_format, nerfstudio_transforms_file, read_frames, validate_dataset
from studio.io.inputs import Input, Kind


@dataclass
class StudioDataParserConfig(DataParserConfig):
    """Reads NeRF-synthetic, TensoIR-Synthetic or Nerfstudio datasets, chosen by what ``data`` contains."""

    _target: Type = field(default_factory=lambda: StudioDataParser)
    data: Path = Path()
    """Dataset folder (transforms_train.json, TensoIR's train_000/metadata.json or transforms.json) or a transforms.json file."""
    scene_box_half_size: float = 1.5
    """Largest half side (world units) of the NeRF-synthetic scene box (random initialisation); smaller when cameras are nearer."""
    downscale_factor: int = 1
    """Nerfstudio datasets: image downscale factor (images_N folders, as Nerfstudio)."""
    orientation_method: Literal["pca", "up", "vertical", "none"] = "up"
    """Nerfstudio datasets: how Nerfstudio re-orients the poses (undone by exports)."""
    center_method: Literal["poses", "focus", "none"] = "poses"
    """Nerfstudio datasets: how Nerfstudio re-centres the poses (undone by exports)."""
    auto_scale_poses: bool = True
    """Nerfstudio datasets: scale poses into the unit cube (undone by exports)."""
    train_split_fraction: float = 0.9
    """Nerfstudio datasets: fraction of frames used for training."""
    load_3d_points: bool = True
    """Nerfstudio datasets: seed Gaussians from ``ply_file_path`` when the dataset has one."""
    val_from_train: int = 0
    """NeRF-synthetic / TensoIR datasets: when K > 0, every K-th training frame is the val split and is
    not trained on (for datasets whose val split repeats the test split, e.g. Blender scenes)."""

    def inputs(self) -> List[Input]:
        """``--data``: a dataset folder whose frames, poses, images and point cloud are checked."""
        return [Input("--data", Kind.DATASET, self.data, check=validate_dataset, required=True)]


class StudioDataParser(DataParser):
    """See ``StudioDataParserConfig``."""

    config: StudioDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        fmt = detect_format(self.config.data)
        if fmt is DatasetFormat.NERFSTUDIO:
            return self._nerfstudio_outputs(split)
        return self._frame_set_outputs(split, fmt)

    def _frame_set_outputs(self, split: str, fmt: DatasetFormat) -> DataparserOutputs:
        frames = read_frames(
            self.config.data, split if split in ("train", "val", "test") else "test", self.config.val_from_train
        )
        cameras = Cameras(
            camera_to_worlds=torch.from_numpy(frames.camera_to_worlds[:, :3, :4]),
            fx=frames.fx,
            fy=frames.fy,
            cx=frames.cx,
            cy=frames.cy,
            width=frames.width,
            height=frames.height,
            camera_type=CameraType.PERSPECTIVE,
        )
        # NeRF-synthetic scenes are centred at the origin: the box (random initialisation, viewer)
        # is kept inside 3/4 of the nearest camera's distance, so no point starts at or behind a
        # camera, where no training view would see it (a floater in front of other views)
        nearest = float(cameras.camera_to_worlds[:, :3, 3].norm(dim=-1).min())
        half = min(self.config.scene_box_half_size, 0.75 * nearest / math.sqrt(3.0))
        return DataparserOutputs(
            image_filenames=frames.image_paths,
            cameras=cameras,
            alpha_color=None,
            scene_box=SceneBox(aabb=torch.tensor([[-half] * 3, [half] * 3], dtype=torch.float32)),
            dataparser_scale=1.0,
            metadata={
                "dataset_format": fmt.value,
                "camera_extent": camera_extent(cameras.camera_to_worlds),
                "camera_centers": cameras.camera_to_worlds[:, :3, 3].clone(),
            },
        )

    def _nerfstudio_outputs(self, split: str) -> DataparserOutputs:
        parser = NerfstudioDataParserConfig(
            data=nerfstudio_transforms_file(self.config.data),
            downscale_factor=self.config.downscale_factor,
            orientation_method=self.config.orientation_method,
            center_method=self.config.center_method,
            auto_scale_poses=self.config.auto_scale_poses,
            train_split_fraction=self.config.train_split_fraction,
            load_3D_points=self.config.load_3d_points,
        ).setup()
        outputs = parser.get_dataparser_outputs(split=split)
        outputs.metadata = {
            **outputs.metadata,
            "dataset_format": DatasetFormat.NERFSTUDIO.value,
            "camera_extent": camera_extent(outputs.cameras.camera_to_worlds),
            "camera_centers": outputs.cameras.camera_to_worlds[:, :3, 3].clone(),
        }
        return outputs
