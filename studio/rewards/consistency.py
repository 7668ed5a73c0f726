"""Visual consistency reward: how much renders look like the visual-prompt image (VP3D, Chen et al. 2024).

VP3D scores a render against its visual prompt (the image the prior generated from the text)
besides its text alignment; here the score is the cosine similarity of image features, in [-1, 1]
(1 for an identical image), differentiable w.r.t. the renders. The features come from

* a 2D feature model (:func:`studio.features.load_feature_model`: ``"toy-vit"``, a feature-model
  file, a local DINOv2/DINOv3 folder), patch features ``[B,D,h,w]`` of images resized by the model's
  ``prepare``, compared either

  - ``pooling="mean"`` (default): the patch features averaged over the image, then one cosine per
    image: a global appearance match that tolerates the object moving within the frame, as the
    renders of other views do;
  - ``pooling="patch"``: the cosine of each patch with the prompt's patch at the same place,
    averaged over patches (the prompt resized to the render's size first): a spatial match, only
    meaningful for renders from the prompt's own viewpoint;

* or an image-text model (:func:`studio.rewards.load_image_text_model`: ``"toy-clip"``, a toy-clip
  file, a local CLIP folder): the cosine of the L2-normalised image embeddings (global only).

The model's weights are frozen; the prompt's features carry no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from studio.features import load_feature_model
from studio.rewards.registry import is_image_text_model, load_image_text_model

POOLINGS = ("mean", "patch")


class VisualConsistency:
    """``VisualConsistency(model, device, pooling)(renders [B,3,H,W], prompt_image [1,3,H',W']) -> [B]``
    cosine similarities (see the module docstring); images are sRGB floats in [0,1].

    A plain object (not an ``nn.Module``), so a model holding it does not store the frozen feature
    model in its checkpoints; :meth:`to` moves it."""

    def __init__(self, model: str = "toy-vit", device: str | torch.device = "cpu", pooling: str = "mean"):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.image_text = is_image_text_model(model)
        if self.image_text and pooling != "mean":
            raise ValueError(
                f"{model!r} is an image-text model with one global embedding; pooling='patch' needs a feature model"
            )
        self.pooling = pooling
        self.model = load_image_text_model(model, device) if self.image_text else load_feature_model(model, device)
        self.model.requires_grad_(False).eval()
        self.name = str(model)

    def to(self, device: str | torch.device) -> "VisualConsistency":
        self.model.to(device)
        return self

    def features(self, images: Tensor) -> Tensor:
        """Unit-norm features of images ``[B,3,H,W]``: ``[B,D]`` (global) or ``[B,D,h,w]`` (``pooling="patch"``,
        unit norm per patch); the reward is their dot product, averaged over patches."""
        if self.image_text:
            return self.model.embed_images(images)
        device = next(self.model.parameters()).device
        f = self.model(self.model.prepare(images.to(device)))
        return F.normalize(f.mean((-2, -1)) if self.pooling == "mean" else f, dim=1)

    def __call__(self, renders: Tensor, prompt_image: Tensor) -> Tensor:
        if renders.dim() != 4 or renders.shape[1] != 3 or prompt_image.dim() != 4 or prompt_image.shape[:2] != (1, 3):
            raise ValueError(
                f"VisualConsistency takes renders [B,3,H,W] and a prompt image [1,3,H,W], got "
                f"{list(renders.shape)} and {list(prompt_image.shape)}"
            )
        with torch.no_grad():
            prompt = prompt_image.float()
            if self.pooling == "patch" and prompt.shape[-2:] != renders.shape[-2:]:
                prompt = F.interpolate(
                    prompt, size=renders.shape[-2:], mode="bilinear", align_corners=False, antialias=True
                )
            target = self.features(prompt)
        f = self.features(renders)
        cos = (f * target).sum(1)
        return cos if cos.dim() == 1 else cos.mean((-2, -1))
