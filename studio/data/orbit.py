"""A Nerfstudio data manager without images: random orbit cameras for generation methods.

``next_train`` returns a batch of ``Cameras`` sampled by ``studio.cameras.sampling.OrbitSampler``
and a dict with their ``elevation``, ``azimuth``, ``distance`` (degrees / world units) for
view-dependent prompting and camera-conditioned guidance. Evaluation uses a fixed ring of views. Two schedules of threestudio's random-camera data module, which
DreamCraft3D's released configs use: resolution milestones (the render size grows at given steps)
and progressive views (``progressive_until``: the elevation and azimuth ranges open linearly from
the front view to their full extent).
Used by ``sds`` and the image-to-3D methods (which add their reference view on top).
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.base_datamanager import DataManagerConfig
from nerfstudio.data.datamanagers.random_cameras_datamanager import TrivialDataset

from studio.cameras.sampling import OrbitSampler, OrbitViews, orbit_cameras
from studio.data.base import StudioDataManager
from studio.io.errors import StudioInputError


@dataclass
class OrbitDataManagerConfig(DataManagerConfig):
    """Random orbit views around the origin (+Z up)."""

    _target: Type = field(default_factory=lambda: OrbitDataManager)
    resolution: int = 64
    """Training render size in pixels (square), until the first of ``resolution_milestones``."""
    resolution_milestones: Tuple[int, ...] = ()
    """Steps at which the training render size changes (increasing)."""
    milestone_resolutions: Tuple[int, ...] = ()
    """The render size from each of ``resolution_milestones`` on (same length)."""
    progressive_until: int = 0
    """Steps over which the view ranges open from the front view to the full ranges (0: off)."""
    eval_resolution: int = 128
    """Evaluation and viewer render size."""
    views_per_batch: int = 1
    """Cameras rendered per training step."""
    num_eval_views: int = 8
    """Evaluation ring size."""
    elevation_range: Tuple[float, float] = (-10.0, 60.0)
    azimuth_range: Tuple[float, float] = (-180.0, 180.0)
    distance_range: Tuple[float, float] = (1.6, 2.0)
    fov_range: Tuple[float, float] = (40.0, 40.0)
    seed: int = 0
    """Seed of the camera sequence (training is reproducible)."""

    def sampler(self) -> OrbitSampler:
        return OrbitSampler(self.elevation_range, self.azimuth_range, self.distance_range, self.fov_range)

    def resolution_at(self, step: int) -> int:
        """The training render size at ``step``."""
        if len(self.resolution_milestones) != len(self.milestone_resolutions):
            raise StudioInputError(
                f"--pipeline.datamanager.resolution-milestones has {len(self.resolution_milestones)} steps but "
                f"milestone-resolutions has {len(self.milestone_resolutions)} sizes; give one size per step."
            )
        passed = bisect.bisect_right(list(self.resolution_milestones), step)
        return self.resolution if passed == 0 else int(self.milestone_resolutions[passed - 1])


def progressive_sampler(sampler: OrbitSampler, front: Tuple[float, float], step: int, until: int) -> OrbitSampler:
    """``sampler`` with its elevation and azimuth ranges shrunk towards the ``front`` view
    (elevation, azimuth; degrees) by ``1 - step / until`` (threestudio's ``progressive_view``:
    r = min(step / until, 1), range = (1 - r) front + r full range)."""
    if until <= 0 or step >= until:
        return sampler
    r = step / until
    elevation = tuple((1.0 - r) * front[0] + r * v for v in sampler.elevation_range)
    azimuth = tuple((1.0 - r) * front[1] + r * v for v in sampler.azimuth_range)
    return dataclasses.replace(sampler, elevation_range=elevation, azimuth_range=azimuth)


def views_batch(views: OrbitViews) -> Dict[str, torch.Tensor]:
    return {"elevation": views.elevation, "azimuth": views.azimuth, "distance": views.distance, "fov": views.fov}


class OrbitDataManager(StudioDataManager):
    """See module docstring."""

    config: OrbitDataManagerConfig

    def setup_data(self) -> None:
        config = self.config
        self.sampler = self.make_sampler()
        self.resolution = config.resolution_at(0)
        self.views_per_batch = config.views_per_batch
        self.generator = torch.Generator().manual_seed(int(config.seed))
        self.eval_views = self.sampler.ring(config.num_eval_views)
        eval_cameras = orbit_cameras(self.eval_views, config.eval_resolution)
        self.train_dataset = TrivialDataset(eval_cameras)
        self.eval_dataset = TrivialDataset(eval_cameras)
        for dataset in (self.train_dataset, self.eval_dataset):
            dataset.metadata = {}  # nerfstudio's TrivialDataset leaves a dataclass Field here
        self.eval_index = 0

    def make_sampler(self) -> OrbitSampler:
        return self.config.sampler()

    def front_view(self) -> Tuple[float, float]:
        """(elevation, azimuth) in degrees the progressive view ranges open from: the middle of the
        ranges (the reference view for image-to-3D)."""
        return 0.5 * sum(self.config.elevation_range), 0.5 * sum(self.config.azimuth_range)

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        self.train_count += 1
        self.resolution = self.config.resolution_at(step)
        sampler = progressive_sampler(self.sampler, self.front_view(), step, self.config.progressive_until)
        views = sampler.sample(self.views_per_batch, self.generator)
        return orbit_cameras(views, self.resolution).to(self.device), views_batch(views)

    def _eval_view(self, index: int) -> Tuple[Cameras, Dict]:
        views = OrbitViews(*(v[index : index + 1] for v in self.eval_views))
        return orbit_cameras(views, self.config.eval_resolution).to(self.device), views_batch(views)

    def next_eval(self, step: int) -> Tuple[Cameras, Dict]:
        self.eval_count += 1
        return self.next_eval_image(step)

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict]:
        self.eval_index = (self.eval_index + 1) % self.config.num_eval_views
        return self._eval_view(self.eval_index)

    def get_train_rays_per_batch(self) -> int:
        return self.resolution**2 * self.views_per_batch

    def get_eval_rays_per_batch(self) -> int:
        return self.config.eval_resolution**2

    def get_param_groups(self) -> Dict:
        return {}

    def get_datapath(self) -> Optional[str]:  # nerfstudio's viewer asks for it
        return None
