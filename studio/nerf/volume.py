"""Volume rendering of a radiance field (NeRF, Mildenhall et al. 2020, Eq. 3) along camera rays.

For samples at distances t_i with spacing delta_i, alpha_i = 1 - exp(-sigma_i delta_i), the
transmittance T_i = prod_{j<i} (1 - alpha_j) and the weights w_i = T_i alpha_i give

    C = sum_i w_i c_i + (1 - A) c_bg,   A = sum_i w_i,   depth = sum_i w_i t_i / max(A, eps).

Rays are sampled between their entry and exit of the field's bounding sphere (stratified, with
a random offset per interval in training); rays that miss it render the background.
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

Field = Callable[[Tensor], Tuple[Tensor, Tensor]]


def sphere_bounds(origins: Tensor, directions: Tensor, radius: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Entry and exit distances [R] of rays (origins, unit directions [R,3]) through the sphere of
    ``radius`` at the origin (entry clamped to >= 0), and whether each ray hits it [R] bool."""
    b = (origins * directions).sum(-1)
    c = (origins * origins).sum(-1) - radius**2
    disc = b * b - c
    hit = disc > 0
    root = disc.clamp(min=0).sqrt()
    return (-b - root).clamp(min=0.0), (-b + root).clamp(min=0.0), hit & (-b + root > 0)


def composite(density: Tensor, rgb: Tensor, t: Tensor, delta: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Eq. 3 for samples density [R,S,1] (per unit length), rgb [R,S,3] at distances t [R,S] with
    spacings delta [R,S]: (colour over black [R,3], accumulated alpha [R,1], depth [R,1])."""
    alpha = 1.0 - torch.exp(-density[..., 0] * delta)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + 1e-10], dim=1), dim=1)
    w = (trans * alpha)[..., None]
    acc = w.sum(1)
    depth = (w[..., 0] * t).sum(1, keepdim=True) / acc.clamp(min=1e-6)
    return (w * rgb).sum(1), acc, depth


def render_rays(
    field: Field,
    origins: Tensor,
    directions: Tensor,
    radius: float,
    n_samples: int,
    background: Tensor,
    perturb: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """rgb [R,3] over ``background`` [3], alpha [R,1] and depth [R,1] (0 where nothing is hit)
    of rays (origins [R,3], directions [R,3], normalised here) through ``field``."""
    d = torch.nn.functional.normalize(directions, dim=-1)
    near, far, hit = sphere_bounds(origins, d, radius)
    u = torch.arange(n_samples, device=origins.device, dtype=origins.dtype)
    u = (u + (torch.rand(len(origins), n_samples, device=u.device) if perturb else 0.5)) / n_samples
    t = near[:, None] + (far - near)[:, None] * u  # [R,S]
    delta = ((far - near) / n_samples)[:, None].expand_as(t) * hit[:, None]
    density, rgb = field(origins[:, None] + t[..., None] * d[:, None])
    color, acc, depth = composite(density, rgb, t, delta)
    return color + (1.0 - acc) * background, acc, depth * (acc > 0)


def render_cameras(
    field: Field,
    cameras: Cameras,
    radius: float,
    n_samples: int,
    background: Tensor,
    perturb: bool = False,
    chunk: int = 1 << 14,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Every camera of ``cameras`` (equal sizes): rgb [C,H,W,3], alpha and depth [C,H,W,1]."""
    outs = []
    for i in range(cameras.shape[0]):
        rays = cameras.generate_rays(camera_indices=i)
        H, W = rays.origins.shape[:2]
        o, dirs = rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3)
        parts = [
            render_rays(field, o[k : k + chunk], dirs[k : k + chunk], radius, n_samples, background, perturb)
            for k in range(0, len(o), chunk)
        ]
        outs.append([torch.cat(p).reshape(H, W, -1) for p in zip(*parts)])
    return tuple(torch.stack(x) for x in zip(*outs))  # type: ignore[return-value]
