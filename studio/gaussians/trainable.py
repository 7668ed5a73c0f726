"""Raw (optimisable) Gaussian parameters and their activation, shared by every Gaussian method.

Storage follows 3DGS / gsplat's strategies: ``means`` [N,3], ``scales`` [N,3] (log), ``quats``
[N,4] (unnormalised wxyz), ``opacities`` [N] (logits), ``features_dc`` [N,3] and
``features_rest`` [N,K-1,3] (SH). Densification (``gsplat.strategy``) edits this dict in place.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from studio.gaussians.container import Gaussians

PARAM_NAMES = ("means", "scales", "quats", "features_dc", "features_rest", "opacities")


class TrainableGaussians(nn.Module):
    """A ParameterDict of raw Gaussian parameters (see module docstring)."""

    def __init__(self, params: dict[str, Tensor]):
        super().__init__()
        self.params = nn.ParameterDict({name: nn.Parameter(params[name]) for name in PARAM_NAMES})

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    @property
    def sh(self) -> Tensor:
        """[N,K,3] SH coefficients (DC first)."""
        return torch.cat([self.params["features_dc"][:, None, :], self.params["features_rest"]], dim=1)

    def activated(self) -> Gaussians:
        """The scene with activated parameters (differentiable)."""
        return Gaussians(
            means=self.params["means"],
            quats=self.params["quats"],
            scales=torch.exp(self.params["scales"]),
            opacities=torch.sigmoid(self.params["opacities"]),
            sh=self.sh,
        )

    def resize_to(self, state_dict: dict[str, Tensor], prefix: str) -> None:
        """Resize parameters to the Gaussian count stored in ``state_dict`` (before loading it)."""
        key = f"{prefix}params.means"
        if key not in state_dict:
            return
        n = state_dict[key].shape[0]
        device = self.params["means"].device
        for name, param in self.params.items():
            self.params[name] = nn.Parameter(torch.zeros((n,) + param.shape[1:], device=device))
