"""Data manager of the one-step generators' methods (``ns-train flashworld``, ``videoscene``):
orbit batches from a folder of posed scenes.

``--data DIR`` is one NeRF-synthetic scene or a folder of them (``studio scenes make`` writes them;
:mod:`studio.data.scene_set`). Every scene's train split is read once at ``resolution``; captions
come from each scene's ``meta.json`` (empty when absent). Scenes are cut to the smallest view
count among them. A step draws ``scenes_per_batch`` scenes and, per scene, ``views`` generated
views plus ``held_views`` held-out ones (:func:`studio.generators.orbits.sample_orbits`: cameras in
each scene's normalised frame). ``next_train`` returns ``(batch, batch)`` with ``batch`` an
:class:`~studio.generators.orbits.OrbitBatch` on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.base_datamanager import DataManagerConfig
from nerfstudio.data.datamanagers.random_cameras_datamanager import TrivialDataset

from studio.cameras.nerfstudio import nerfstudio_cameras
from studio.data.base import StudioDataManager
from studio.data.scene_set import check_scene_set, load_scene_views, scene_caption, scene_folders
from studio.generators.orbits import OrbitBatch, OrbitSet, sample_orbits
from studio.io.errors import StudioInputError
from studio.io.inputs import Input, Kind


@dataclass
class OrbitDataManagerConfig(DataManagerConfig):
    """Scenes of ``--data`` (see the module docstring)."""

    _target: Type = field(default_factory=lambda: OrbitDataManager)
    data: Path = Path()
    """A NeRF-synthetic scene folder or a folder of them (train splits are used)."""
    resolution: int = 32
    """Side (pixels) of the generated views (the generator's resolution)."""
    views: int = 4
    held_views: int = 2
    scenes_per_batch: int = 4
    seed: int = 0

    def inputs(self) -> List[Input]:
        return [Input("--data", Kind.DATASET, self.data, check=check_scene_set, required=True)]


def read_orbit_set(folders: List[Path], resolution: int) -> OrbitSet:
    """The train splits of ``folders`` as one :class:`OrbitSet` (views cut to the smallest count)."""
    from rich.progress import track

    scenes = [load_scene_views(p, resolution) for p in track(folders, description="Loading scenes", transient=True)]
    V = min(len(s.images) for s in scenes)
    images = torch.stack([s.images[:V] for s in scenes]).permute(0, 1, 3, 4, 2)
    alpha = torch.stack([s.alpha[:V, 0] for s in scenes])

    def as_uint8(x: torch.Tensor) -> np.ndarray:
        return (x.numpy() * 255.0 + 0.5).astype(np.uint8)

    return OrbitSet(
        images=as_uint8(images),
        viewmats=torch.stack([s.viewmats[:V] for s in scenes]).numpy(),
        Ks=torch.stack([s.Ks[:V] for s in scenes]).numpy(),
        captions=np.array([scene_caption(p) for p in folders]),
        alpha=as_uint8(alpha),
    )


class OrbitDataManager(StudioDataManager):
    """See the module docstring."""

    config: OrbitDataManagerConfig

    def setup_data(self) -> None:
        config = self.config
        self.orbits = read_orbit_set(scene_folders(config.data), config.resolution)
        if self.orbits.n_views <= config.views:
            raise StudioInputError(
                f"--data {config.data}: the generator needs more than {config.views} training views per scene, "
                f"the scenes have {self.orbits.n_views}."
            )
        self.train_dataset = self.eval_dataset = TrivialDataset(self.viewer_cameras())
        self.train_dataset.metadata = {}

    def viewer_cameras(self) -> Cameras:
        """The first scene's training cameras (what the viewer shows)."""
        vm, Ks = torch.from_numpy(self.orbits.viewmats[0]), torch.from_numpy(self.orbits.Ks[0])
        return nerfstudio_cameras(vm, Ks[0], self.config.resolution)

    def batch(self, rng: np.random.Generator, n: int) -> OrbitBatch:
        scenes = rng.integers(0, self.orbits.n_scenes, n)
        cfg = self.config
        return sample_orbits(self.orbits, scenes, cfg.views, cfg.resolution, rng, held=cfg.held_views).to(self.device)

    def next_train(self, step: int) -> Tuple[OrbitBatch, OrbitBatch]:
        self.train_count += 1
        batch = self.batch(
            np.random.default_rng([self.config.seed, step, self.local_rank]), self.config.scenes_per_batch
        )
        return batch, batch

    def next_eval(self, step: int) -> Tuple[OrbitBatch, OrbitBatch]:
        self.eval_count += 1
        batch = self.batch(np.random.default_rng([self.config.seed, step, 1]), self.config.scenes_per_batch)
        return batch, batch

    def next_eval_image(self, step: int) -> Tuple[Cameras, OrbitBatch]:
        """One scene (seeded by ``step``) and the Nerfstudio camera of its first held-out view, in
        the scene's world."""
        from studio.cameras.normalize import from_frame

        batch = self.batch(np.random.default_rng([self.config.seed, step, 2]), 1)
        viewmat = from_frame(batch.held_viewmats[:, :1], batch.frame)[0].cpu()
        camera = nerfstudio_cameras(viewmat, batch.held_Ks[0, 0].cpu(), batch.held_images.shape[-1])
        return camera.to(self.device), batch

    def get_train_rays_per_batch(self) -> int:
        cfg = self.config
        return cfg.resolution**2 * cfg.scenes_per_batch * (cfg.views + cfg.held_views)

    def get_eval_rays_per_batch(self) -> int:
        return self.get_train_rays_per_batch()
