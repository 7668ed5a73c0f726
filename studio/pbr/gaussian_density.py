"""3D Gaussians as an absorbing (and emitting) medium on a grid, and rays marched through it.

Shadow rays and indirect light need the light a ray collects through the Gaussians. Here the
Gaussians become a density grid (``splat_gaussians``) and rays are marched through it with
trilinear lookups (``DensityGrid.march``), all in vectorised torch, chunked, CPU or GPU.

Density: Gaussian ``i`` (centre ``mu``, rotation ``R``, standard deviations ``s``, opacity ``o``)
is the medium ``sigma_i(x) = c_i exp(-x^T S^-1 x / 2)`` whose optical depth along its shortest
axis through the centre is ``tau_i = -ln(1 - min(o, 0.99))``: a ray crossing one splat head-on
keeps ``1 - o`` of its light, as alpha compositing does (Relightable 3D Gaussians trace the same
per-Gaussian alpha through a BVH; Gao et al. 2023). Its integral over space (its mass) is
``tau_i 2 pi s_a s_b`` (``s_a``, ``s_b`` the two largest scales). The mass is spread over a
``k_x x k_y x k_z`` pattern of points at ``-2 s .. 2 s`` along each local axis with Gaussian weights,
``k`` in ``(1, 3, 5, 9)`` chosen per axis so that the taps are at most about one voxel apart (up to
9 taps: a splat wider than ~2 voxels per standard deviation gets 9), and each point is splatted trilinearly: a splat much larger than a voxel fills its footprint instead
of piling its mass on the voxels next to its centre (which would leave holes that light leaks
through). Points outside the grid's box are dropped.

``colors`` ([N,C], e.g. linear radiance) are splatted as ``sigma * color``, so a march can return
the emitted light a ray collects: ``L = sum_j T_j (1 - exp(-sigma_j dt)) c_j`` with ``c_j`` the
density-weighted colour at sample ``j`` and ``T_j`` the transmittance before it.

Grid layout: ``sigma`` [R,R,R] indexed ``[x, y, z]``, cell ``i`` centred at
``lo + (i + 0.5) (hi - lo) / R`` of ``aabb = [lo, hi]`` [2,3] (world units; ``sigma`` in
1/length).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from studio.gaussians.rotation import quat_to_rotmat

__all__ = ["DensityGrid", "splat_gaussians", "trilinear_splat", "optical_depth"]

_TAPS = (1, 3, 5, 9)  # pattern points per axis
_MAX_OPACITY = 0.99
_OPAQUE_DEPTH = 8.0  # optical depth after which a march stops (transmittance < 3.4e-4)


def optical_depth(opacities: Tensor) -> Tensor:
    """Optical depth ``-ln(1 - o)`` [N] of splats with opacities ``o`` [N] (``o`` capped at 0.99)."""
    return -torch.log1p(-opacities.clamp(0.0, _MAX_OPACITY))


def trilinear_splat(coords: Tensor, values: Tensor, resolution: int) -> Tensor:
    """Add ``values`` [M,C] at continuous voxel coordinates ``coords`` [M,3] (voxel ``i`` centred at
    ``i``) into a zero grid [R,R,R,C] (index order x, y, z) with trilinear weights; corners outside
    the grid get nothing."""
    R = resolution
    grid = torch.zeros(R**3, values.shape[-1], device=values.device, dtype=values.dtype)
    i0 = coords.floor()
    t = coords - i0
    i0 = i0.long()
    for corner in range(8):
        off = torch.tensor([(corner >> k) & 1 for k in range(3)], device=coords.device)
        w = torch.where(off.bool(), t, 1.0 - t).prod(-1)
        idx = i0 + off
        valid = ((idx >= 0) & (idx < R)).all(-1)
        idx = idx.clamp(0, R - 1)
        flat = (idx[:, 0] * R + idx[:, 1]) * R + idx[:, 2]
        grid.index_add_(0, flat, values * (w * valid)[:, None])
    return grid.reshape(R, R, R, -1)


def _axis_pattern(k: int, device) -> tuple[Tensor, Tensor]:
    """Offsets [k] (in standard deviations, -2..2) and normalised Gaussian weights [k] of one axis."""
    if k == 1:
        return torch.zeros(1, device=device), torch.ones(1, device=device)
    u = torch.linspace(-2.0, 2.0, k, device=device)
    w = torch.exp(-0.5 * u * u)
    return u, w / w.sum()


def _taps(scales: Tensor, voxel: float) -> Tensor:
    """Pattern points per axis [N,3] (from ``_TAPS``): taps at most ~one voxel apart over +-2 s."""
    need = (4.0 * scales / voxel).ceil() + 1
    choices = torch.tensor(_TAPS, device=scales.device, dtype=scales.dtype)
    index = (need[..., None] > choices).sum(-1).clamp(max=len(_TAPS) - 1)
    return choices[index].long()


@torch.no_grad()
def splat_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    aabb: Tensor,
    resolution: int,
    colors: Optional[Tensor] = None,
    chunk: int = 1 << 20,
) -> "DensityGrid":
    """The ``DensityGrid`` of Gaussians (module docstring): means [N,3], quats [N,4] (w,x,y,z),
    linear scales [N,3], opacities [N] in [0,1], optional ``colors`` [N,C]; ``aabb`` [2,3]."""
    device = means.device
    aabb = aabb.to(device).float()
    lo, hi = aabb[0], aabb[1]
    cell = (hi - lo) / resolution
    voxel = float(cell.min())
    rot = quat_to_rotmat(quats.float())
    sorted_scales = scales.sort(dim=-1, descending=True).values
    mass = optical_depth(opacities.float()) * 2.0 * math.pi * sorted_scales[:, 0] * sorted_scales[:, 1]
    payload = mass[:, None] if colors is None else torch.cat([mass[:, None], mass[:, None] * colors.float()], -1)
    taps = _taps(scales.float(), voxel)
    key = (taps[:, 0] * 16 + taps[:, 1]) * 16 + taps[:, 2]
    total = torch.zeros(resolution, resolution, resolution, payload.shape[-1], device=device)
    for k in torch.unique(key).tolist():
        sel = torch.nonzero(key == k)[:, 0]
        kx, ky, kz = k // 256, (k // 16) % 16, k % 16
        (ux, wx), (uy, wy), (uz, wz) = (_axis_pattern(kk, device) for kk in (kx, ky, kz))
        offsets = torch.stack(torch.meshgrid(ux, uy, uz, indexing="ij"), -1).reshape(-1, 3)  # [P,3] in std devs
        weights = (wx[:, None, None] * wy[None, :, None] * wz[None, None, :]).reshape(-1)  # [P]
        per = max(1, chunk // offsets.shape[0])
        for start in range(0, sel.numel(), per):
            idx = sel[start : start + per]
            local = offsets[None] * scales[idx, None, :].float()  # [n,P,3]
            points = means[idx, None, :].float() + torch.einsum("nij,npj->npi", rot[idx], local)
            coords = (points - lo) / cell - 0.5
            values = payload[idx, None, :] * weights[None, :, None]
            total += trilinear_splat(coords.reshape(-1, 3), values.reshape(-1, values.shape[-1]), resolution)
    total = total / float(cell.prod())  # mass per voxel -> density
    sigma = total[..., 0]
    color = total[..., 1:] if colors is not None else None
    return DensityGrid(sigma.contiguous(), aabb, color)


@dataclass
class DensityGrid:
    """Opacity density ``sigma`` [R,R,R] (1/length) over ``aabb`` [2,3]; optionally the emitted
    colour ``color`` [R,R,R,C] premultiplied by the density (module docstring)."""

    sigma: Tensor
    aabb: Tensor
    color: Optional[Tensor] = None

    @property
    def resolution(self) -> int:
        return int(self.sigma.shape[0])

    def voxel_size(self) -> float:
        """Smallest cell side (world units): the march step."""
        return float(((self.aabb[1] - self.aabb[0]) / self.resolution).min())

    def _volume(self, with_color: bool) -> Tensor:
        channels = [self.sigma[..., None]]
        if with_color:
            if self.color is None:
                raise ValueError("this density grid was splatted without colours")
            channels.append(self.color)
        return torch.cat(channels, -1).permute(3, 2, 1, 0)[None]  # [1,C,z,y,x] for grid_sample

    def _exit_distance(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """Distance [M] along unit ``dirs`` [M,3] from ``origins`` [M,3] to where the ray leaves the box."""
        lo, hi = self.aabb[0], self.aabb[1]
        safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
        t1, t2 = (lo - origins) / safe, (hi - origins) / safe
        return torch.maximum(t1, t2).amin(-1).clamp(min=0.0)

    def march(
        self,
        origins: Tensor,
        dirs: Tensor,
        start: float = 0.0,
        with_color: bool = False,
        chunk: int = 1 << 16,
        segment: int = 32,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """March rays from ``origins`` [...,3] along unit ``dirs`` [...,3] (world), from distance
        ``start`` to where they leave the box, one voxel per step (samples at the step centres), in
        segments of ``segment`` steps; a ray stops once it has left the box or its transmittance is
        below ``exp(-8)`` (its remaining light and shadow are negligible).

        Returns the transmittance [...] (1 = the ray escapes) and, with ``with_color``, the light
        [...,C] the medium emits towards the origins (None otherwise). No gradient.
        """
        shape = origins.shape[:-1]
        o = origins.reshape(-1, 3).float()
        d = dirs.reshape(-1, 3).float()
        lo, hi = self.aabb[0], self.aabb[1]
        dt = self.voxel_size()
        volume = self._volume(with_color)
        exits = self._exit_distance(o, d)
        depth = torch.zeros(o.shape[0], device=o.device)
        light = torch.zeros(o.shape[0], volume.shape[1] - 1, device=o.device) if with_color else None
        steps = torch.arange(segment, device=o.device, dtype=torch.float32)
        with torch.no_grad():
            for s in range(0, o.shape[0], chunk):
                active = torch.arange(s, min(s + chunk, o.shape[0]), device=o.device)
                first = 0
                while active.numel() > 0:
                    t0 = start + first * dt
                    active = active[(exits[active] > t0) & (depth[active] < _OPAQUE_DEPTH)]
                    if active.numel() == 0:
                        break
                    ts = t0 + (steps + 0.5) * dt  # [S]
                    x = o[active, None, :] + d[active, None, :] * ts[None, :, None]  # [a,S,3]
                    u = (x - lo) / (hi - lo) * 2.0 - 1.0
                    sample = F.grid_sample(
                        volume, u.reshape(1, -1, 1, 1, 3), mode="bilinear", padding_mode="zeros", align_corners=False
                    )  # [1,C,a*S,1,1]
                    sample = sample[0, :, :, 0, 0].T.reshape(x.shape[0], segment, -1)  # [a,S,C]
                    tau = sample[..., 0].clamp(min=0.0) * dt  # [a,S]
                    inside = ts[None, :] < exits[active, None]  # samples past the exit add nothing
                    tau = tau * inside
                    cum = depth[active, None] + tau.cumsum(-1)
                    if with_color:
                        before = torch.exp(-(cum - tau))  # transmittance up to each sample
                        col = sample[..., 1:] / sample[..., :1].clamp(min=1e-8)
                        light[active] += ((before * (1.0 - torch.exp(-tau)))[..., None] * col).sum(1)
                    depth[active] = cum[:, -1]
                    first += segment
        trans = torch.exp(-depth)
        return trans.reshape(shape), None if light is None else light.reshape(shape + (-1,))
