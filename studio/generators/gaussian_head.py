"""FlashWorld's 3D-oriented head: pixel-aligned Gaussians from a multi-view denoiser's features.

Per view and pixel, a small CNN on ``concat(decoder features, x0 estimate, Plücker raymap)``
predicts (FlashWorld, Sec. 3.2: "a Gaussian decoder on the features of the denoising network"; its
head layout follows our MVSplat-style predictor, :mod:`studio.lift.model`):

* depth along the pixel's ray: ``1/z = 1/far + sigmoid(o_d) (1/near - 1/far)`` (uniform in inverse
  depth, as MVSplat's depth candidates), in the normalised scene frame (unit mean camera distance;
  ToyWorld scenes lie at z in 0.6..1.4 there);
* opacity ``sigmoid(o_a)``; scales ``s_min + (s_max - s_min) sigmoid(o_s)`` pixel footprints;
  rotation in the camera frame (unit quaternion around identity); colour
  ``sigmoid(logit(x0 in [0,1]) + o_c)``, a residual on the denoiser's own clean-image estimate, so
  the two modes share what the network already knows about appearance.

Output: :class:`studio.lift.gaussians.PixelGaussians` with ``N = V*h*w`` (pixel order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.lift.gaussians import PixelGaussians, gaussians_from_depth

OUT_CHANNELS = 1 + 1 + 3 + 4 + 3
"""inverse-depth logit, opacity logit, 3 scale logits, quaternion, colour residual."""


class GaussianHead(nn.Module):
    def __init__(
        self,
        feat_ch: int,
        hidden: int = 64,
        near: float = 0.45,
        far: float = 1.8,
        scale_min: float = 0.3,
        scale_max: float = 3.0,
        opacity_bias: float = 2.0,
    ):
        super().__init__()
        self.near, self.far, self.scale_min, self.scale_max = near, far, scale_min, scale_max
        self.net = nn.Sequential(
            nn.Conv2d(feat_ch + 3 + 6, hidden, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(hidden, OUT_CHANNELS, 1),
        )
        last = self.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        with torch.no_grad():
            last.bias[1] = opacity_bias

    def forward(self, feats: Tensor, x0: Tensor, raymaps: Tensor, viewmats: Tensor, Ks: Tensor) -> PixelGaussians:
        """``feats`` [B,V,C,h,w], ``x0`` [B,V,3,h,w] (model space [-1,1]), ``raymaps`` [B,V,6,h,w],
        normalised-frame ``viewmats`` [B,V,4,4] and ``Ks`` [B,V,3,3] (pixels of h x w)."""
        B, V, _, h, w = feats.shape
        o = self.net(torch.cat([feats, x0, raymaps.to(feats)], 2).flatten(0, 1)).view(B, V, OUT_CHANNELS, h, w)
        inv = 1.0 / self.far + torch.sigmoid(o[:, :, 0]) * (1.0 / self.near - 1.0 / self.far)
        rgb = ((x0 + 1.0) * 0.5).clamp(1e-3, 1.0 - 1e-3)
        color = torch.sigmoid(torch.logit(rgb) + o[:, :, 9:12])
        scale = self.scale_min + (self.scale_max - self.scale_min) * torch.sigmoid(o[:, :, 2:5])
        quat = o[:, :, 5:9].clone()
        quat[:, :, 0] = quat[:, :, 0] + 1.0
        return gaussians_from_depth(
            1.0 / inv,
            color,
            viewmats,
            Ks,
            opacity=torch.sigmoid(o[:, :, 1]),
            scale=scale.permute(0, 1, 3, 4, 2),
            quats_cam=F.normalize(quat, dim=2).permute(0, 1, 3, 4, 2),
        )
