"""Pixel-aligned Gaussians: the output of the feed-forward predictor, and how to render them.

One Gaussian per context-view pixel (pixelSplat / MVSplat, Chen et al. ECCV 2024, Sec. 3.2: "pixel-
aligned Gaussians"). A batch item with ``V`` context views of ``H x W`` pixels holds ``N = V*H*W``
Gaussians in **pixel order**::

    index(v, y, x) = v*H*W + y*W + x        (view v, image row y, column x)

i.e. ``tensor.reshape(B, V, H, W, ...)`` recovers the per-view image layout. This fixed order is
what makes feature lifting one-to-one: a per-pixel feature map ``[B,V,D,H,W]`` permuted to
``[B,V,H,W,D]`` and flattened is exactly the ``[B,N,D]`` colour table of these Gaussians
(:func:`studio.lift.lifting.lift_features`).

Conventions are those of :func:`studio.render.rasterize` (DESIGN.md "Core interfaces"): world-to-
camera ``viewmats`` with OpenCV axes, ``Ks`` in pixels with pixel ``(row y, col x)`` centred at
``(x + 0.5, y + 0.5)``, quaternions ``(w, x, y, z)``, linear scales in world units, opacities in
``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from studio.gaussians.rotation import quat_multiply, rotmat_to_quat

DEFAULT_EPS2D = 0.1
"""Screen-space dilation (pixel^2) used to render pixel-aligned Gaussians (training and lifting).
The rasterizer's general default 0.3 (3DGS) alone blurs a render by a Gaussian of std 0.55 px, which
mixes each pixel's feature with its neighbours' (round-trip cosine ~0.97 for features that change
every 4 pixels); pixel-aligned Gaussians are at least ``scale_min`` (0.3 px) wide at their own view,
so 0.1 still keeps every splat >= 0.44 px wide (no aliasing) while the round trip stays > 0.99."""


@dataclass
class PixelGaussians:
    """A batch of pixel-aligned 3D Gaussians (all tensors share batch size ``B`` and ``N = V*H*W``).

    Attributes:
        means: [B,N,3] world positions (world units): pixel centres unprojected at ``depth``.
        quats: [B,N,4] world-frame rotations (w,x,y,z), unit norm.
        scales: [B,N,3] linear standard deviations along the Gaussian's local axes (world units).
        opacities: [B,N] in [0,1].
        colors: [B,N,3] RGB in [0,1] (SH degree 0 expressed as a plain colour).
        depth: [B,V,H,W] view-space z of each pixel's Gaussian in its own context view (world units,
            > 0); the first three dimensions after ``B`` give the pixel order of the ``N`` axis.
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    colors: Tensor
    depth: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.means.shape[0])

    @property
    def n_views(self) -> int:
        return int(self.depth.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the context views."""
        return int(self.depth.shape[2]), int(self.depth.shape[3])

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[1])

    def pixel_index(self, v: int, y: int, x: int) -> int:
        """Index along ``N`` of the Gaussian of pixel ``(row y, col x)`` of context view ``v``."""
        H, W = self.image_size
        return (v * H + y) * W + x

    def per_view(self, t: Tensor) -> Tensor:
        """Reshape a per-Gaussian tensor ``[B,N,...]`` to ``[B,V,H,W,...]``."""
        H, W = self.image_size
        return t.reshape(t.shape[0], self.n_views, H, W, *t.shape[2:])

    def validate(self) -> "PixelGaussians":
        B, V, H, W = self.depth.shape
        N = V * H * W
        expect = {"means": (B, N, 3), "quats": (B, N, 4), "scales": (B, N, 3), "opacities": (B, N)}
        for name, shape in expect.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(
                    f"PixelGaussians.{name} has shape {tuple(getattr(self, name).shape)}, expected {shape}"
                )
        if self.colors.shape[:2] != (B, N):
            raise ValueError(f"PixelGaussians.colors has shape {tuple(self.colors.shape)}, expected ({B}, {N}, D)")
        return self

    def map(self, fn) -> "PixelGaussians":
        """Apply ``fn`` to every tensor (e.g. ``lambda t: t.detach()`` or ``.to(device)``)."""
        return PixelGaussians(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def views(self, index: list[int]) -> "PixelGaussians":
        """The Gaussians of the context views ``index`` only (pixel order kept, ``V = len(index)``)."""
        per = lambda t: self.per_view(t)[:, index].flatten(1, 3)  # noqa: E731
        return PixelGaussians(
            means=per(self.means),
            quats=per(self.quats),
            scales=per(self.scales),
            opacities=per(self.opacities),
            colors=per(self.colors),
            depth=self.depth[:, index],
        )

    def item(self, b: int) -> dict[str, Tensor]:
        """Batch item ``b`` as flat rasterizer inputs (means [N,3], quats, scales, opacities, colors)."""
        return {
            "means": self.means[b],
            "quats": self.quats[b],
            "scales": self.scales[b],
            "opacities": self.opacities[b],
            "colors": self.colors[b],
        }


class LiftRender(NamedTuple):
    """Batched render of :class:`PixelGaussians` at ``C`` cameras per batch item."""

    color: Tensor  # [B,C,H,W,D]
    alpha: Tensor  # [B,C,H,W,1]
    depth: Tensor  # [B,C,H,W,1] expected view-space z


def render(
    gaussians: PixelGaussians,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    colors: Optional[Tensor] = None,
    background: Optional[Tensor] = None,
    *,
    near_plane: float = 0.01,
    eps2d: float = DEFAULT_EPS2D,
    backend: str = "auto",
) -> LiftRender:
    """Render each batch item's Gaussians at its own cameras with :func:`studio.render.rasterize`.

    Args:
        gaussians: B items of N Gaussians.
        viewmats: [B,C,4,4] world-to-camera (OpenCV) of the C target cameras of each item.
        Ks: [B,C,3,3] pinhole intrinsics in pixels (pixel centres at +0.5).
        width, height: output size in pixels.
        colors: [B,N,D] per-Gaussian values of any width D (RGB, teacher features, ...); default
            ``gaussians.colors``.
        background: [D], [B,D] or [B,C,D] value behind the Gaussians (default 0).
        near_plane, eps2d, backend: passed to ``rasterize`` (``eps2d`` is the screen-space dilation
            in pixel^2 added to every projected covariance; :data:`DEFAULT_EPS2D`).
    Returns:
        :class:`LiftRender` with ``color`` [B,C,H,W,D] = sum_i w_i c_i + T * background, ``alpha``
        [B,C,H,W,1] and ``depth`` [B,C,H,W,1]; differentiable in the Gaussians and ``colors``.
    """
    from studio.render import rasterize

    feats = gaussians.colors if colors is None else colors
    B = gaussians.batch_size
    if feats.shape[:2] != gaussians.means.shape[:2]:
        raise ValueError(
            f"colors must be [B,N,D] = {tuple(gaussians.means.shape[:2])} + (D,), got {tuple(feats.shape)}"
        )
    if viewmats.ndim != 4 or Ks.ndim != 4 or viewmats.shape[0] != B or Ks.shape[:2] != viewmats.shape[:2]:
        raise ValueError(
            f"viewmats [B,C,4,4] and Ks [B,C,3,3] with B={B}; got {tuple(viewmats.shape)} and {tuple(Ks.shape)}"
        )
    colors_out, alphas, depths = [], [], []
    for b in range(B):
        bg = None
        if background is not None:
            bg = background if background.ndim == 1 else background[b]
        out = rasterize(
            gaussians.means[b],
            gaussians.quats[b],
            gaussians.scales[b],
            gaussians.opacities[b],
            feats[b],
            viewmats[b],
            Ks[b],
            width,
            height,
            background=bg,
            backend=backend,
            near_plane=near_plane,
            eps2d=eps2d,
        )
        colors_out.append(out.color)
        alphas.append(out.alpha)
        depths.append(out.depth)
    return LiftRender(torch.stack(colors_out), torch.stack(alphas), torch.stack(depths))


# ---------------------------------------------------------------------------------------------
# Geometry helpers: unprojection and building Gaussians from a known depth map
# ---------------------------------------------------------------------------------------------


def pixel_rays(Ks: Tensor, height: int, width: int) -> Tensor:
    """Camera-space directions with z = 1 through every pixel centre.

    Args:
        Ks: [...,3,3] intrinsics in pixels.
    Returns:
        [...,H,W,3] ``K^-1 (x + 0.5, y + 0.5, 1)``: multiply by view-space depth z to get points.
    """
    ys = torch.arange(height, dtype=Ks.dtype, device=Ks.device) + 0.5
    xs = torch.arange(width, dtype=Ks.dtype, device=Ks.device) + 0.5
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    pix = torch.stack([x, y, torch.ones_like(x)], -1)  # [H,W,3]
    Kinv = torch.linalg.inv(Ks)
    return torch.einsum("...ij,hwj->...hwi", Kinv, pix)


def unproject_depth(depth: Tensor, viewmats: Tensor, Ks: Tensor) -> Tensor:
    """World points of every pixel centre at view-space depth ``z``.

    Args:
        depth: [B,V,H,W] view-space z (world units).
        viewmats: [B,V,4,4] world-to-camera (OpenCV).
        Ks: [B,V,3,3].
    Returns:
        [B,V,H,W,3] world points ``c2w @ (z * K^-1 (x+0.5, y+0.5, 1))``.
    """
    H, W = depth.shape[-2:]
    cam = pixel_rays(Ks, H, W) * depth[..., None]  # [B,V,H,W,3]
    c2w = torch.linalg.inv(viewmats)
    R, t = c2w[..., :3, :3], c2w[..., :3, 3]
    return torch.einsum("bvij,bvhwj->bvhwi", R, cam) + t[:, :, None, None, :]


def pixel_footprint(depth: Tensor, Ks: Tensor) -> Tensor:
    """World size of one pixel at view-space depth z: ``z / sqrt(fx fy)``.

    Args:
        depth: [B,V,H,W]; Ks: [B,V,3,3].
    Returns:
        [B,V,H,W] in world units.
    """
    f = torch.sqrt(Ks[..., 0, 0] * Ks[..., 1, 1])
    return depth / f[:, :, None, None]


def gaussians_from_depth(
    depth: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    *,
    opacity: float | Tensor = 0.99,
    scale: float | Tensor = 0.3,
    quats_cam: Optional[Tensor] = None,
) -> PixelGaussians:
    """Build pixel-aligned Gaussians from a known depth map (no network).

    Each pixel ``(v, y, x)`` gets one Gaussian at its unprojected centre, coloured by the pixel.
    The predictor's head does the same with predicted values (:class:`studio.lift.model.GaussianPredictor`).

    Args:
        depth: [B,V,H,W] view-space z (world units, > 0).
        colors: [B,V,D,H,W] per-pixel values (RGB in [0,1] or any features).
        viewmats: [B,V,4,4] world-to-camera (OpenCV); Ks: [B,V,3,3].
        opacity: scalar or [B,V,H,W] in [0,1].
        scale: scalar or [B,V,H,W] or [B,V,H,W,3]: standard deviations in **pixels** (multiples of
            :func:`pixel_footprint`); 0.3 is the predictor's smallest scale (``scale_min``).
        quats_cam: optional [B,V,H,W,4] rotations in the camera frame (w,x,y,z); default identity,
            i.e. axes aligned with the camera (x right, y down, z forward).
    Returns:
        :class:`PixelGaussians` in pixel order (``colors`` of width D).
    """
    B, V, H, W = depth.shape
    N = V * H * W
    means = unproject_depth(depth, viewmats, Ks).reshape(B, N, 3)
    foot = pixel_footprint(depth, Ks)  # [B,V,H,W]
    scale = torch.as_tensor(scale, dtype=depth.dtype, device=depth.device)
    if scale.ndim == 5:
        scales = scale * foot[..., None]
    else:
        scales = (scale * foot)[..., None].expand(B, V, H, W, 3)
    if quats_cam is None:
        quats_cam = torch.zeros(B, V, H, W, 4, dtype=depth.dtype, device=depth.device)
        quats_cam[..., 0] = 1.0
    quats = camera_to_world_quats(quats_cam, viewmats)
    opac = torch.as_tensor(opacity, dtype=depth.dtype, device=depth.device).expand(B, V, H, W)
    D = colors.shape[2]
    return PixelGaussians(
        means=means,
        quats=quats.reshape(B, N, 4),
        scales=scales.reshape(B, N, 3),
        opacities=opac.reshape(B, N),
        colors=colors.permute(0, 1, 3, 4, 2).reshape(B, N, D),
        depth=depth,
    )


def camera_to_world_quats(quats_cam: Tensor, viewmats: Tensor) -> Tensor:
    """Rotate camera-frame orientations ``[B,V,H,W,4]`` into the world: ``q_c2w * q``."""
    c2w_rot = torch.linalg.inv(viewmats)[..., :3, :3]
    q_c2w = rotmat_to_quat(c2w_rot)  # [B,V,4]
    q = torch.nn.functional.normalize(quats_cam, dim=-1)
    return quat_multiply(q_c2w[:, :, None, None, :], q)
