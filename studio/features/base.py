"""The one interface of 2D feature models: sRGB images -> dense patch features.

A :class:`FeatureModel` maps images ``[B,3,H,W]`` (float in [0,1], sRGB, ``H`` and ``W`` multiples
of ``patch_size``) to features ``[B,D,H/p,W/p]`` (float32), normalising the pixels itself (mean/std
buffers). Feature ``[:, :, i, j]`` describes the pixel square ``[i*p, (i+1)*p) x [j*p, (j+1)*p)``.
``prepare`` resizes any image to a size ``forward`` accepts.

Models that can be saved (:func:`studio.features.registry.save_feature_model`) also carry a ``kind``
(the key of their class in ``studio.features.registry.MODEL_CLASSES``), a JSON-able ``config`` and
a classmethod ``from_config(config, name)`` that builds the architecture with no weights read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureModel(nn.Module):
    """Image -> dense patch features (see the module docstring)."""

    kind: str = ""
    """Class key in the registry (saved in files); empty for models that cannot be saved."""
    name: str = ""
    """e.g. "toy-vit", or the path the model was loaded from."""
    dim: int
    """Feature channels D."""
    patch_size: int
    """Stride of the feature map in pixels."""
    image_size: int
    """Preferred square input side in pixels (a multiple of ``patch_size``)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def config(self) -> dict:
        """JSON-able description from which ``from_config`` rebuilds the architecture."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    def forward(self, images: Tensor) -> Tensor:
        """images [B,3,H,W] float in [0,1] (sRGB, H and W multiples of ``patch_size``)
        -> features [B,D,H/p,W/p] float32."""
        raise NotImplementedError

    def normalize(self, images: Tensor) -> Tensor:
        """Checked ``images`` [B,3,H,W] in [0,1] -> ``(images - mean) / std`` (float32)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name or type(self).__name__} takes images [B,3,H,W], got {list(images.shape)}")
        H, W = images.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(
                f"{self.name or type(self).__name__} needs H and W multiples of its patch size {p}, got {H}x{W}; "
                "resize with prepare() first"
            )
        return (images.float() - self.pixel_mean) / self.pixel_std

    def prepare(self, images: Tensor) -> Tensor:
        """Resize images [B,3,H,W] in [0,1] so ``forward`` accepts them: the aspect ratio is kept, the
        shorter side becomes ``image_size`` and the longer one the nearest multiple of ``patch_size``
        (bilinear with antialiasing). Images already of that size are returned as they are."""
        H, W = images.shape[-2:]
        p, scale = self.patch_size, self.image_size / min(H, W)
        size = tuple(max(p, round(n * scale / p) * p) for n in (H, W))
        if size == (H, W):
            return images
        return F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
