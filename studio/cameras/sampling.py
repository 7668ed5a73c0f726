"""Random orbit cameras for generation (text/image-to-3D) and relative poses for novel-view priors.

World up is +Z and azimuth is measured from +X towards +Y, as in ToyWorld (``scenes/toyworld/
cameras.py``), so cameras sampled here see objects as the embedded priors were trained to;
``orbit_cameras`` / ``orbit_c2w`` take another ``up`` for turntables of Y-up scenes.
Angles are in degrees, distances in world units. Camera-to-world matrices use OpenGL axes
(x right, y up, camera looks along -z), as Nerfstudio ``Cameras`` expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


class OrbitViews(NamedTuple):
    """A batch of orbit views: each field [N] (degrees / world units)."""

    elevation: Tensor
    azimuth: Tensor
    distance: Tensor
    fov: Tensor


def orbit_c2w(
    elevation: Tensor,
    azimuth: Tensor,
    distance: Tensor,
    target: Sequence[float] = (0.0, 0.0, 0.0),
    up: Sequence[float] = (0.0, 0.0, 1.0),
) -> Tensor:
    """[N,3,4] OpenGL camera-to-world matrices of cameras at (elevation, azimuth, distance) [N]
    looking at ``target``.

    The orbit turns about ``up`` (normalised); azimuth 0 is along ``e1``, the part of +X (of +Y
    when ``up`` is near +-X) orthogonal to ``up``, and azimuth 90 along ``up x e1`` (+Y for the
    default +Z). Elevation +-90 deg is handled (the right axis falls back to ``(up x e1) x back``).
    """
    e, a = torch.deg2rad(elevation.float()), torch.deg2rad(azimuth.float())
    u = F.normalize(torch.tensor(up, dtype=e.dtype, device=e.device), dim=0)
    near_x = abs(float(u[0])) >= 0.9
    helper = torch.tensor([0.0, 1.0, 0.0] if near_x else [1.0, 0.0, 0.0], dtype=e.dtype, device=e.device)
    e1 = F.normalize(helper - (helper @ u) * u, dim=0)
    e2 = torch.linalg.cross(u, e1)
    back = torch.cos(e)[:, None] * (torch.cos(a)[:, None] * e1 + torch.sin(a)[:, None] * e2) + torch.sin(e)[:, None] * u
    eye = torch.tensor(target, dtype=back.dtype, device=back.device) + distance.float()[:, None] * back
    right = torch.linalg.cross(u.expand_as(back), back)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    fallback = torch.linalg.cross(e2.expand_as(back), back)
    right = F.normalize(torch.where(degenerate, fallback, right), dim=-1)
    cam_up = torch.linalg.cross(back, right)
    return torch.stack([right, cam_up, back, eye], -1)


def orbit_viewmats(elevation: Tensor, azimuth: Tensor, distance: Tensor) -> Tensor:
    """[...,4,4] world-to-camera matrices (OpenCV axes, as ``studio.render.rasterize`` takes) of
    orbit cameras at (elevation, azimuth (degrees), distance) [...] looking at the origin, +Z up."""
    from studio.cameras.convert import opengl_c2w_to_viewmat

    shape = elevation.shape
    c2w = orbit_c2w(elevation.reshape(-1), azimuth.reshape(-1), distance.reshape(-1))
    full = torch.eye(4, dtype=c2w.dtype, device=c2w.device).repeat(c2w.shape[0], 1, 1)
    full[:, :3] = c2w
    return opengl_c2w_to_viewmat(full).reshape(*shape, 4, 4)


def relative_pose(reference: OrbitViews, target: OrbitViews) -> Tensor:
    """Zero-1-to-3's relative camera [N,4]: (polar angle change in radians, sin and cos of the
    azimuth change, distance change), target minus reference, with polar = 90 deg - elevation
    (Liu et al. 2023, Sec. 3.2: the camera is (theta, phi, r) and the condition is the delta)."""
    d_polar = torch.deg2rad(reference.elevation - target.elevation)  # polar_t - polar_r
    d_az = torch.deg2rad(target.azimuth - reference.azimuth)
    return relative_camera(d_polar, d_az, target.distance - reference.distance)


def relative_camera(d_polar: Tensor, d_azimuth: Tensor, d_radius: Tensor) -> Tensor:
    """[..., 4] Zero-1-to-3 condition ``[d_polar, sin d_azimuth, cos d_azimuth, d_radius]`` of the
    changes of polar angle and azimuth (radians) and distance, target minus reference."""
    return torch.stack([d_polar, torch.sin(d_azimuth), torch.cos(d_azimuth), d_radius], -1).float()


def camera_vector(views: OrbitViews) -> Tensor:
    """[N,16] flattened 4x4 camera-to-world matrices: the camera condition of VSD's fake score
    (ProlificDreamer feeds the camera matrix to its LoRA network)."""
    c2w = orbit_c2w(views.elevation, views.azimuth, views.distance)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=c2w.dtype).expand(c2w.shape[0], 1, 4)
    return torch.cat([c2w, bottom], 1).flatten(1)


@dataclass
class OrbitSampler:
    """Uniform random orbit views: elevation and azimuth uniform in their ranges (degrees), the
    distance uniform in ``distance_range`` and the horizontal field of view in ``fov_range``."""

    elevation_range: Tuple[float, float] = (-10.0, 60.0)
    azimuth_range: Tuple[float, float] = (-180.0, 180.0)
    distance_range: Tuple[float, float] = (1.6, 2.0)
    fov_range: Tuple[float, float] = (40.0, 40.0)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> OrbitViews:
        def uniform(lo_hi: Tuple[float, float]) -> Tensor:
            lo, hi = lo_hi
            return lo + (hi - lo) * torch.rand(n, generator=generator)

        return OrbitViews(
            uniform(self.elevation_range),
            uniform(self.azimuth_range),
            uniform(self.distance_range),
            uniform(self.fov_range),
        )

    def ring(self, n: int, elevation: Optional[float] = None) -> OrbitViews:
        """``n`` evenly spaced azimuths at one elevation (default: the middle of the range) and
        the mean distance and field of view: evaluation and turntable views."""
        elev = 0.5 * sum(self.elevation_range) if elevation is None else elevation
        full = lambda v: torch.full((n,), float(v))  # noqa: E731
        az = torch.arange(n, dtype=torch.float32) * (360.0 / n) + self.azimuth_range[0]
        return OrbitViews(full(elev), az, full(0.5 * sum(self.distance_range)), full(0.5 * sum(self.fov_range)))


def orbit_cameras(
    views: OrbitViews,
    resolution: int,
    target: Sequence[float] = (0.0, 0.0, 0.0),
    up: Sequence[float] = (0.0, 0.0, 1.0),
):
    """Nerfstudio ``Cameras`` (square images of ``resolution`` pixels, horizontal field of view
    ``views.fov``) for ``views`` around ``target``, orbiting about ``up`` (``orbit_c2w``)."""
    from nerfstudio.cameras.cameras import Cameras, CameraType

    focal = 0.5 * resolution / torch.tan(0.5 * torch.deg2rad(views.fov.float()))
    return Cameras(
        camera_to_worlds=orbit_c2w(views.elevation, views.azimuth, views.distance, target, up),
        fx=focal[:, None],
        fy=focal[:, None],
        cx=resolution / 2.0,
        cy=resolution / 2.0,
        width=resolution,
        height=resolution,
        camera_type=CameraType.PERSPECTIVE,
    )


__all__ = ["OrbitSampler", "OrbitViews", "camera_vector", "orbit_c2w", "orbit_cameras", "relative_pose"]
