"""A radiance field for score distillation: multi-resolution hash encoding (Instant-NGP, Mueller et
al. 2022) of the position, a small MLP to a density and a view-independent colour.

The density starts as a blob around the origin so that the first renders show an object (threestudio's
``blob_magic3d`` bias of its implicit volume: ``blob_scale * (1 - |x| / blob_std)`` added to the raw
density; DreamFusion Sec. 3 uses a Gaussian blob ``5 exp(-|x|^2 / (2 0.2^2))`` with the same aim).
Activations: ``softplus`` density (threestudio's ``shifted_softplus`` without the shift; the bias
supplies the offset), ``sigmoid`` colour ("albedo" without shading: the Gaussians of ``sds`` are
unshaded too). Positions are scaled from the sphere of ``radius`` into the encoding's unit cube.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class HashGridFieldConfig:
    """Hash grid, MLP and blob settings: threestudio's implicit volume, made smaller so that the tiny
    ``sds`` preset trains in minutes on a CPU (about 0.7 s per step of 4 views at 32 px on 2 cores);
    on a GPU use e.g. ``--pipeline.model.nerf.num-levels 16 --pipeline.model.nerf.log2-hashmap-size 19
    --pipeline.model.nerf.samples-per-ray 128``."""

    num_levels: int = 8
    """Resolution levels of the hash encoding (threestudio: 16)."""
    min_res: int = 16
    max_res: int = 512
    log2_hashmap_size: int = 15
    """Table size per level (2^n entries; threestudio: 19)."""
    features_per_level: int = 2
    hidden_dim: int = 64
    """Width of the one hidden layer of the MLP."""
    radius: float = 0.6
    """Radius of the bounding sphere (world units): ``sds`` cameras orbit at 1.6-2.0 with a 40 deg
    field of view, which shows +-0.58 around the origin at 1.6 (a larger volume fills up past the
    frame: with 1.0 the tiny run grew a blob cut by the image borders)."""
    blob_scale: float = 10.0
    blob_std: float = 0.5
    samples_per_ray: int = 32
    """Stratified samples between the ray's entry and exit of the bounding sphere."""


class HashGridField(nn.Module):
    """``forward(points [...,3])`` -> (density [...,1] >= 0, per unit length; rgb [...,3] in [0,1])."""

    def __init__(self, config: HashGridFieldConfig):
        super().__init__()
        from nerfstudio.field_components.encodings import HashEncoding

        self.config = config
        # torch implementation: tinycudann is optional and its absence must not change results
        self.encoding = HashEncoding(
            num_levels=config.num_levels,
            min_res=config.min_res,
            max_res=config.max_res,
            log2_hashmap_size=config.log2_hashmap_size,
            features_per_level=config.features_per_level,
            implementation="torch",
        )
        self.mlp = nn.Sequential(
            nn.Linear(self.encoding.get_out_dim(), config.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden_dim, 4),
        )

    def density_bias(self, points: Tensor) -> Tensor:
        """The blob added to the raw density [...,1]."""
        return self.config.blob_scale * (1.0 - points.norm(dim=-1, keepdim=True) / self.config.blob_std)

    def forward(self, points: Tensor) -> tuple[Tensor, Tensor]:
        unit = (points / self.config.radius * 0.5 + 0.5).clamp(0.0, 1.0)  # sphere of `radius` -> [0,1]^3
        out = self.mlp(self.encoding(unit.reshape(-1, 3))).reshape(*points.shape[:-1], 4)
        density = nn.functional.softplus(out[..., :1] + self.density_bias(points))
        return density, torch.sigmoid(out[..., 1:])
