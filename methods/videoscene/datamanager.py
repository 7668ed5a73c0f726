"""Data manager of ``ns-train videoscene``: camera trajectories (arcs) from a folder of ToyWorld scenes.

``--data DIR`` is one scene or a folder of them made with ``studio scenes make --path arc`` (train
views in arcs of :data:`~studio.scenes.toyworld.cameras.ARC_VIEWS`, each a camera trajectory; the
test ring is unused here). Every arc becomes one ordered orbit
(:func:`studio.generators.orbits.split_arcs`); a batch draws ``views`` views of an arc in order (the
first and last: the inputs) and ``held_views`` of its other views, at ``video_resolution``, keeping the
generated views at ``resolution`` for the coarse predictor (:func:`studio.generators.orbits.sample_orbits`
with ``arc`` and ``source``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Type

import numpy as np

from studio.data.scene_set import scene_folders
from studio.generators.orbits import OrbitBatch, sample_orbits, split_arcs
from studio.io.errors import StudioInputError
from studio.models.orbit_data import OrbitDataManager, OrbitDataManagerConfig, read_orbit_set


@dataclass
class VideoSceneDataManagerConfig(OrbitDataManagerConfig):
    """Arcs of ``--data`` (see the module docstring)."""

    _target: Type = field(default_factory=lambda: VideoSceneDataManager)
    resolution: int = 64
    """Side (pixels) the input views are read at (the coarse predictor's)."""
    video_resolution: int = 32
    """Side of the video frames (the video model's)."""
    views: int = 4
    held_views: int = 1


def arc_views(folder) -> int:
    """Views per arc of a scene made with ``--path arc`` (raises for any other camera path)."""
    from studio.scenes.toyworld.cameras import ARC_VIEWS

    meta_path = folder / "meta.json"
    path = json.loads(meta_path.read_text()).get("camera", {}).get("path") if meta_path.is_file() else None
    if path != "arc":
        raise StudioInputError(
            f"{folder}: videoscene trains on camera trajectories; make its scenes with "
            f"`studio scenes make --path arc` (this one's camera path is {path!r})."
        )
    return ARC_VIEWS


class VideoSceneDataManager(OrbitDataManager):
    """See the module docstring."""

    config: VideoSceneDataManagerConfig

    def setup_data(self) -> None:
        from nerfstudio.data.datamanagers.random_cameras_datamanager import TrivialDataset

        config = self.config
        folders = scene_folders(config.data)
        size = {arc_views(f) for f in folders}.pop()
        if size <= config.views:
            raise StudioInputError(f"--pipeline.datamanager.views {config.views} must be below the arcs' {size} views.")
        self.orbits = split_arcs(read_orbit_set(folders, config.resolution), size)
        self.train_dataset = self.eval_dataset = TrivialDataset(self.viewer_cameras())
        self.train_dataset.metadata = {}

    def batch(self, rng: np.random.Generator, n: int) -> OrbitBatch:
        cfg = self.config
        scenes = rng.integers(0, self.orbits.n_scenes, n)
        batch = sample_orbits(
            self.orbits, scenes, cfg.views, cfg.video_resolution, rng, held=cfg.held_views, arc=True, source=True
        )
        return batch.to(self.device)
