"""The plain (activated) parameter set of a 3D Gaussian scene, shared by export, viewer and render."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from studio.gaussians.sh import num_sh_bases


@dataclass
class Gaussians:
    """N Gaussians in world coordinates with activated parameters.

    Attributes:
        means: [N, 3] centres, world units.
        quats: [N, 4] rotations (w, x, y, z); not necessarily normalised.
        scales: [N, 3] standard deviations along the local axes, world units (linear, not log).
        opacities: [N] in [0, 1] (not logits).
        sh: [N, K, 3] real SH coefficients per RGB channel, K = (degree + 1)^2; band 0 is the DC
            term with rgb = 0.5 + SH_C0 * sh[:, 0] (the 3DGS / gsplat convention).
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    sh: Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        shapes = {
            "means": (self.means, (n, 3)),
            "quats": (self.quats, (n, 4)),
            "scales": (self.scales, (n, 3)),
            "opacities": (self.opacities, (n,)),
        }
        for name, (t, shape) in shapes.items():
            if tuple(t.shape) != shape:
                raise ValueError(f"Gaussians.{name} has shape {tuple(t.shape)}, expected {shape}.")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(f"Gaussians.sh has shape {tuple(self.sh.shape)}, expected [N, K, 3].")
        self.sh_degree  # validates K

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        """SH degree d such that K = (d + 1)^2."""
        k = self.sh.shape[1]
        for d in range(5):
            if num_sh_bases(d) == k:
                return d
        raise ValueError(f"Gaussians.sh has {k} coefficients per channel, not a square (d+1)^2.")

    def to(self, device: torch.device | str) -> "Gaussians":
        """Copy of the scene on ``device``."""
        return Gaussians(*(getattr(self, f).to(device) for f in ("means", "quats", "scales", "opacities", "sh")))

    def detach(self) -> "Gaussians":
        """Copy of the scene without autograd history."""
        return Gaussians(*(getattr(self, f).detach() for f in ("means", "quats", "scales", "opacities", "sh")))
