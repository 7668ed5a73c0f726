"""Sparse-view data: 2-3 posed input images plus random orbit views (``ns-train sparse3d --data DIR``).

``--data DIR`` is a NeRF-synthetic folder (``transforms_train.json``) or a Nerfstudio dataset
(``transforms.json``) whose training frames are the input views, read by
``studio.data.dataparser.StudioDataParser`` (NeRF-synthetic world coordinates are kept, Nerfstudio
poses are oriented/centred/scaled as Nerfstudio does). The object is assumed near the world origin
with +Z up (Blender's and ToyWorld's convention; Zero123-style priors read orbit angles about it).

Every input image is resized to ``input_resolution`` (area) and split into colour over white
``input_rgb`` [K,S,S,3] and mask ``input_mask`` [K,S,S,1]; their cameras are ``input_cameras``
(Nerfstudio ``Cameras`` at that size; also in every training batch). The dataset's ``meta.json``
``"category"`` (ToyWorld writes one) is the training dataset's metadata, which the model reads. Random training views orbit the origin at the inputs' mean
distance and field of view over ``elevation_range`` x ``azimuth_range``. ``next_train`` returns
them as ``OrbitDataManager`` does, the input views' tensors added to the batch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras

from studio.cameras.sampling import OrbitSampler
from studio.data.dataparser import StudioDataParserConfig
from studio.data.formats import validate_dataset
from studio.data.images import read_image
from studio.data.orbit import OrbitDataManager, OrbitDataManagerConfig
from studio.io.errors import StudioInputError
from studio.io.inputs import Input, Kind, validate

MAX_VIEWS = 6
"""Most input views accepted (the embedded controller was trained with 2 and 3)."""


@dataclass
class SparseViewDataManagerConfig(OrbitDataManagerConfig):
    """2-3 posed input views + random orbit views (see module docstring)."""

    _target: Type = field(default_factory=lambda: SparseViewDataManager)
    input_resolution: int = 64
    """Side (pixels, square) the input images are resized to, and of their renders."""
    train_split_fraction: float = 1.0
    """Nerfstudio datasets: fraction of the frames used as inputs (1: all)."""

    def inputs(self) -> List[Input]:
        return [Input("--data", Kind.DATASET, self.data, check=validate_dataset, required=True)]


def load_input_views(data: Path, size: int, train_split_fraction: float = 1.0) -> Tuple[Cameras, np.ndarray]:
    """The training frames of ``data``: cameras rescaled to ``size`` px and RGBA images
    [K,size,size,4] float32 (area-resized; RGB images get an all-ones alpha). Raises one
    StudioInputError line for fewer than 2 or more than ``MAX_VIEWS`` frames or non-square images."""
    outputs = StudioDataParserConfig(data=data, train_split_fraction=train_split_fraction).setup()
    outputs = outputs.get_dataparser_outputs("train")
    paths, cameras = list(outputs.image_filenames), outputs.cameras
    if not 2 <= len(paths) <= MAX_VIEWS:
        raise StudioInputError(
            f"--data {data}: sparse-view reconstruction takes 2 to {MAX_VIEWS} posed views, this dataset has {len(paths)}."
        )
    images = []
    for path in paths:
        img = read_image(Path(path))
        if img.shape[0] != img.shape[1]:
            raise StudioInputError(
                f"--data {data}: {path} is {img.shape[1]}x{img.shape[0]}; input views must be square."
            )
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, -1)
        if img.shape[-1] == 3:
            img = np.concatenate([img, np.ones_like(img[..., :1])], -1)
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
        images.append(F.interpolate(t, size=(size, size), mode="area")[0].permute(1, 2, 0).numpy())
    cameras.rescale_output_resolution(size / float(cameras.width[0, 0]))
    return cameras, np.stack(images).astype(np.float32)


def dataset_category(data: Path) -> Optional[str]:
    """The ``"category"`` of the dataset's ``meta.json`` (ToyWorld writes one), or None."""
    meta = (data.parent if data.is_file() else data) / "meta.json"
    try:
        value = json.loads(meta.read_text()).get("category")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


class SparseViewDataManager(OrbitDataManager):
    """See module docstring."""

    config: SparseViewDataManagerConfig

    def __init__(self, config: SparseViewDataManagerConfig, device="cpu", **kwargs):
        validate(config.inputs())
        self.input_cameras, rgba = load_input_views(
            Path(config.data), config.input_resolution, config.train_split_fraction
        )
        alpha = rgba[..., 3:4]
        self._input_batch = {
            "input_rgb": torch.from_numpy(rgba[..., :3] * alpha + (1.0 - alpha)),
            "input_mask": torch.from_numpy(alpha),
        }
        super().__init__(config, device=device, **kwargs)
        self.input_cameras = self.input_cameras.to(self.device)
        self._input_batch = {k: v.to(self.device) for k, v in self._input_batch.items()}
        self._input_batch["input_cameras"] = self.input_cameras

    def setup_data(self) -> None:
        super().setup_data()
        # what the model reads at set-up (Nerfstudio hands it the training dataset's metadata)
        self.train_dataset.metadata = {"category": dataset_category(Path(self.config.data))}

    def input_orbit(self) -> Tuple[float, float]:
        """Mean distance of the input cameras from the origin and their horizontal fov (degrees)."""
        c2w = self.input_cameras.camera_to_worlds
        distance = float(c2w[:, :3, 3].norm(dim=-1).mean())
        fov = math.degrees(
            2.0 * math.atan(0.5 * float(self.input_cameras.width[0, 0]) / float(self.input_cameras.fx[0, 0]))
        )
        return distance, fov

    def make_sampler(self) -> OrbitSampler:
        """Random views at the inputs' distance and field of view."""
        sampler = self.config.sampler()
        distance, fov = self.input_orbit()
        sampler.distance_range, sampler.fov_range = (distance, distance), (fov, fov)
        return sampler

    def next_train(self, step: int):
        cameras, batch = super().next_train(step)
        batch.update(self._input_batch)
        return cameras, batch
