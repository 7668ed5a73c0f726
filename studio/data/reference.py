"""Image-to-3D data: one preprocessed reference view plus random orbit views.

``--data image.png`` names the reference image (``studio.data.single_image.load_reference``:
mask, recentring, optional ``depth_path``/``normal_path``; without ``depth_path``, ``depth_model``
makes the depth label with a local monocular estimator, ``studio.data.depth_estimation``). The
reference camera is an orbit view
(elevation, azimuth, distance, fov) looking at the origin (``reference_view``); an evaluation on a
posed dataset sets it from the dataset's camera. Random views use the reference distance and
field of view (DreamCraft3D's configs do the same).
``next_train`` returns the random views (as ``OrbitDataManager``) and adds to the batch the
reference camera (``ref_*`` angles) and its targets ``ref_rgb`` [S,S,3], ``ref_mask`` [S,S,1],
``ref_depth`` [S,S,1] and ``ref_normal`` [S,S,3] when given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras

from studio.cameras.sampling import OrbitSampler, OrbitViews, orbit_cameras
from studio.data.orbit import OrbitDataManager, OrbitDataManagerConfig
from studio.data.single_image import load_reference
from studio.io.errors import StudioInputError
from studio.io.inputs import Input, Kind, validate


@dataclass
class ReferenceDataManagerConfig(OrbitDataManagerConfig):
    """Reference image + random views (see module docstring)."""

    _target: Type = field(default_factory=lambda: ReferenceDataManager)
    reference_size: int = 256
    """Size of the preprocessed reference image and of its renders (pixels)."""
    border_ratio: float = 0.2
    """Empty border on each side of the recentred object, as a fraction of the image."""
    depth_path: Optional[Path] = None
    """Optional depth map of the input image (any monotonic scale; Pearson loss)."""
    normal_path: Optional[Path] = None
    """Optional camera-space normal map of the input image (RGB = (n + 1) / 2)."""
    depth_model: Optional[str] = None
    """Local transformers depth-estimation snapshot (DPT, Depth Anything; a folder or a cached repo
    id) that makes the depth label when ``depth_path`` is not given (released preprocessing: Omnidata)."""
    depth_model_output: Literal["disparity", "depth"] = "disparity"
    """What ``depth_model`` predicts: relative inverse depth (DPT, Depth Anything) or depth (Omnidata)."""
    reference_view: Tuple[float, float, float, float] = (15.0, 0.0, 1.8, 40.0)
    """Reference camera: elevation, azimuth (degrees), distance, horizontal fov (degrees)."""
    recentre: bool = True
    """Recentre the object (off when the reference camera comes from a posed dataset)."""

    def inputs(self) -> List[Input]:
        """The reference image (``--data``) and its optional depth and normal maps."""
        return [
            Input("--data", Kind.IMAGE, self.data, required=True),
            Input("--pipeline.datamanager.depth-path", Kind.IMAGE, self.depth_path),
            Input("--pipeline.datamanager.normal-path", Kind.IMAGE, self.normal_path),
        ]


class ReferenceDataManager(OrbitDataManager):
    """See module docstring."""

    config: ReferenceDataManagerConfig

    def __init__(self, config: ReferenceDataManagerConfig, device="cpu", **kwargs):
        validate(config.inputs())
        super().__init__(config, device=device, **kwargs)
        size = config.reference_size
        border = config.border_ratio if config.recentre else None
        try:
            self.reference = load_reference(Path(config.data), size, border, config.depth_path, config.normal_path)
        except StudioInputError as err:
            raise StudioInputError(f"--data {config.data}: {err}") from None
        if self.reference.depth is None and config.depth_model is not None:
            from studio.data.depth_estimation import DepthEstimator

            estimator = DepthEstimator(config.depth_model, str(device), config.depth_model_output)
            self.reference.depth = estimator(self.reference.rgb, self.reference.mask)
        elev, az, dist, fov = (torch.tensor([float(v)]) for v in config.reference_view)
        self.reference_views = OrbitViews(elev, az, dist, fov)
        self.reference_camera: Cameras = orbit_cameras(self.reference_views, size)
        self._reference_batch: Optional[Dict[str, torch.Tensor]] = None

    def make_sampler(self) -> OrbitSampler:
        """Random views at the reference distance and field of view (as DreamCraft3D's configs)."""
        sampler = self.config.sampler()
        _, _, dist, fov = (float(v) for v in self.config.reference_view)
        sampler.distance_range, sampler.fov_range = (dist, dist), (fov, fov)
        return sampler

    def front_view(self) -> Tuple[float, float]:
        """The reference view's (elevation, azimuth): random views open progressively from it."""
        return float(self.config.reference_view[0]), float(self.config.reference_view[1])

    def reference_batch(self) -> Dict[str, torch.Tensor]:
        """The reference camera and targets (built once, on the data manager's device)."""
        if self._reference_batch is None:
            ref = self.reference
            out = {
                "ref_rgb": torch.from_numpy(ref.rgb).float(),
                "ref_mask": torch.from_numpy(ref.mask).float()[..., None],
                "ref_elevation": self.reference_views.elevation,
                "ref_azimuth": self.reference_views.azimuth,
                "ref_distance": self.reference_views.distance,
                "ref_fov": self.reference_views.fov,
            }
            if ref.depth is not None:
                out["ref_depth"] = torch.from_numpy(ref.depth).float()[..., None]
            if ref.normal is not None:
                out["ref_normal"] = torch.from_numpy(ref.normal).float()
            self._reference_batch = {k: v.to(self.device) for k, v in out.items()}
        return self._reference_batch

    def next_train(self, step: int):
        cameras, batch = super().next_train(step)
        batch.update(self.reference_batch())
        return cameras, batch
