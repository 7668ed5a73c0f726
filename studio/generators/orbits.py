"""Orbit batches for multi-view generators, from ToyWorld training-split renders:

* the multi-view data of the Gaussian predictor (:mod:`studio.lift.data`: object and multi-object
  scenes, 5 views on a 30-70 degree arc, 64 px), via :func:`orbits_from_lift`;
* the single-object data of the embedded priors (:mod:`studio.priors.toydata`: 8 views at random
  azimuths and elevations all around, 32 px), via :func:`orbits_from_toydata`.

A batch item takes ``views`` of a scene's cameras as the generated set (view 0 the reference, i.e.
the conditioning image; the order is shuffled so the reference is anywhere on the arc; or, with
``arc=True``, a sorted subset: a trajectory from the first to the last chosen view) and the
remaining ones as held-out views that only supervise the 3D mode. Images are area-downsampled to
``res``. Cameras are expressed in the scene's normalised frame
(:func:`studio.cameras.normalize.scene_frame` of the generated set: origin where the optical axes
meet, unit mean camera distance), the frame the generators place their Gaussians in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from studio.cameras.normalize import SceneFrame, scene_frame, to_frame
from studio.lift.data import LiftData


@dataclass
class OrbitBatch:
    """One batch (B items). Images in [0,1]; cameras in each item's normalised scene frame."""

    images: Tensor  # [B,V,3,res,res]
    viewmats: Tensor  # [B,V,4,4] world-to-camera (OpenCV)
    Ks: Tensor  # [B,V,3,3] pixels of a res x res image
    held_images: Tensor  # [B,H,3,res,res] the other views of the scene
    held_viewmats: Tensor  # [B,H,4,4]
    held_Ks: Tensor  # [B,H,3,3]
    alpha: Tensor  # [B,V,1,res,res] coverage in [0,1]
    held_alpha: Tensor  # [B,H,1,res,res]
    captions: list[str]
    frame: SceneFrame
    """Each item's normalised frame in its scene's world."""
    source_images: Optional[Tensor] = None
    """[B,V,3,R,R] the generated views at the data's resolution R (``sample_orbits(source=True)``)."""
    source_Ks: Optional[Tensor] = None
    """[B,V,3,3] their intrinsics in pixels of R x R."""

    def to(self, device) -> "OrbitBatch":
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        moved = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in fields.items()}
        return OrbitBatch(**{**moved, "frame": SceneFrame(*(t.to(device) for t in self.frame))})


def downsample(images: Tensor, Ks: Tensor, res: int) -> tuple[Tensor, Tensor]:
    """Area-downsample [...,C,R,R] images to ``res`` and scale their intrinsics [...,3,3]."""
    R = images.shape[-1]
    if R == res:
        return images, Ks
    lead, C = images.shape[:-3], images.shape[-3]
    small = F.interpolate(images.reshape(-1, *images.shape[-3:]), size=(res, res), mode="area")
    Ks = Ks.clone()
    Ks[..., :2, :] *= res / R
    return small.reshape(*lead, C, res, res), Ks


@dataclass
class OrbitSet:
    """S scenes x V views of one source."""

    images: np.ndarray  # [S,V,R,R,3] uint8 (sRGB on white)
    viewmats: np.ndarray  # [S,V,4,4] float32 world-to-camera (OpenCV)
    Ks: np.ndarray  # [S,V,3,3] float32 pixels of R x R
    captions: np.ndarray  # [S] str
    alpha: np.ndarray  # [S,V,R,R] uint8 coverage (255 = scene)
    ordered: bool = False
    """Whether each scene's views are ordered along one arc (a camera trajectory)."""

    @property
    def n_scenes(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_views(self) -> int:
        return int(self.images.shape[1])


def orbits_from_lift(data: LiftData) -> OrbitSet:
    return OrbitSet(data.images, data.viewmats, data.Ks, data.captions, data.alpha, ordered=True)


def coverage_from_white(images: np.ndarray, threshold: int = 250) -> np.ndarray:
    """[...,R,R] uint8 coverage of renders on white that come without alpha: 255 where any channel
    is below ``threshold`` (an approximation: white surfaces read as background)."""
    return np.where(images.min(-1) < threshold, 255, 0).astype(np.uint8)


def orbits_from_toydata(data, fov_deg: float) -> OrbitSet:
    """The views of a :class:`studio.priors.toydata.ToyData` (elevation/azimuth in radians around
    the scene centre, placed at the origin) as an :class:`OrbitSet`."""
    from studio.cameras.convert import intrinsics_from_fov, opengl_c2w_to_viewmat
    from studio.cameras.sampling import orbit_c2w

    S, V, R = data.images.shape[:3]
    c2w = orbit_c2w(
        torch.from_numpy(np.degrees(data.elevation)).reshape(-1),
        torch.from_numpy(np.degrees(data.azimuth)).reshape(-1),
        torch.from_numpy(data.radius).reshape(-1),
    )
    viewmats = opengl_c2w_to_viewmat(c2w).reshape(S, V, 4, 4).numpy().astype(np.float32)
    Ks = intrinsics_from_fov(fov_deg, R, R).expand(S, V, 3, 3).numpy().astype(np.float32)
    return OrbitSet(data.images, viewmats, Ks, data.captions, coverage_from_white(data.images))


def sample_orbits(
    data: OrbitSet,
    scenes: np.ndarray,
    views: int,
    res: int,
    rng: np.random.Generator,
    held: Optional[int] = None,
    arc: bool = False,
    source: bool = False,
) -> OrbitBatch:
    """A batch of the scenes with indices ``scenes`` (see the module docstring): ``views`` generated
    views (in arc order with ``arc``) and ``held`` held-out ones (default: all the others) per
    scene; needs ``data.n_views > views``. ``source`` also keeps the generated views at the data's
    resolution (``OrbitBatch.source_images``)."""
    V = data.n_views
    if V <= views:
        raise ValueError(f"orbit batches need more than {views} views per scene, the data has {V}")
    if arc and not data.ordered:
        raise ValueError("arc-ordered batches need a source whose views are ordered along an arc")
    held = V - views if held is None else min(held, V - views)
    orders = []
    for _ in scenes:  # first `views` generated, then held out
        perm = rng.permutation(V)
        if arc:
            perm = np.concatenate([np.sort(perm[:views]), perm[views:]])
        orders.append(perm[: views + held])
    order = np.stack(orders)
    s = np.asarray(scenes)[:, None]
    rgba = np.concatenate([data.images[s, order], data.alpha[s, order][..., None]], -1)
    rgba = torch.from_numpy(rgba).float().div(255.0).permute(0, 1, 4, 2, 3)
    viewmats = torch.from_numpy(data.viewmats[s, order]).float()
    full_rgba, full_Ks = rgba, torch.from_numpy(data.Ks[s, order]).float()
    rgba, Ks = downsample(full_rgba, full_Ks, res)
    images, alpha = rgba[:, :, :3], rgba[:, :, 3:]
    frame = scene_frame(viewmats[:, :views])
    gen_vm, held_vm = to_frame(viewmats[:, :views], frame), to_frame(viewmats[:, views:], frame)
    return OrbitBatch(
        images=images[:, :views],
        viewmats=gen_vm,
        Ks=Ks[:, :views],
        held_images=images[:, views:],
        held_viewmats=held_vm,
        held_Ks=Ks[:, views:],
        alpha=alpha[:, :views],
        held_alpha=alpha[:, views:],
        captions=[str(c) for c in data.captions[np.asarray(scenes)]],
        frame=frame,
        source_images=full_rgba[:, :views, :3] if source else None,
        source_Ks=full_Ks[:, :views] if source else None,
    )


def split_arcs(data: OrbitSet, size: int) -> OrbitSet:
    """Scenes whose views are consecutive arcs of ``size`` views (``studio scenes make --path arc``)
    as one ordered orbit per arc (views beyond the last whole arc dropped; captions repeated)."""
    S, V = data.n_scenes, data.n_views
    n = V // size
    if n == 0:
        raise ValueError(f"scenes of {V} views hold no arc of {size} views")

    def arcs(x: np.ndarray) -> np.ndarray:
        return x[:, : n * size].reshape(S * n, size, *x.shape[2:])

    return OrbitSet(
        images=arcs(data.images),
        viewmats=arcs(data.viewmats),
        Ks=arcs(data.Ks),
        captions=np.repeat(data.captions, n),
        alpha=arcs(data.alpha),
        ordered=True,
    )
