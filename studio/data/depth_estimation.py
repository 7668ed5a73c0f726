"""Monocular depth pseudo-labels of the reference image, from a local transformers model.

DreamCraft3D's released preprocessing (``preprocess_image.py``) runs Omnidata's DPT on the input and
keeps the depth inside the mask, min-max normalised to [0, 1], background 0; the coarse stages use
it through ``1 - Pearson(rendered depth, label)`` (``lambda_depth_rel`` 0.05). Here any
``AutoModelForDepthEstimation`` snapshot (DPT, Depth Anything, ...) in a local folder or the local
Hugging Face cache does the same (nothing is downloaded). Most of them, unlike Omnidata, predict
relative *inverse* depth; ``output="disparity"`` (the default) negates it, which Pearson's
invariance to affine maps makes equivalent to depth up to the curvature of 1/d over the object's
depth range (first order; the label is only ever compared by correlation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

import numpy as np
import torch
import torch.nn.functional as F

from studio.io.errors import StudioInputError
from studio.io.pretrained import resolve_pretrained

DepthOutput = Literal["disparity", "depth"]


class DepthEstimator:
    """A transformers depth-estimation model and its image processor, loaded offline from
    ``name_or_path`` (a folder, or a repo id already in the Hugging Face cache)."""

    def __init__(self, name_or_path: Union[str, Path], device: str = "cpu", output: DepthOutput = "disparity"):
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        if output not in ("disparity", "depth"):
            raise StudioInputError(f"depth model output {output!r} must be 'disparity' or 'depth'.")
        folder = resolve_pretrained(name_or_path, "monocular depth model", flag="--pipeline.datamanager.depth-model")
        try:
            self.processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
            self.model = AutoModelForDepthEstimation.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as err:
            raise StudioInputError(
                f"monocular depth model at '{folder}' is not a transformers depth-estimation snapshot ({err})."
            ) from None
        self.model.to(device).eval()
        self.device, self.output = device, output

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Depth label [H,W] float32 of ``rgb`` [H,W,3] in [0,1]: larger = farther, min-max
        normalised to [0,1] inside ``mask`` [H,W] (foreground > 0.5), 0 outside (released format)."""
        h, w = rgb.shape[:2]
        inputs = self.processor(images=rgb.astype(np.float32), return_tensors="pt", do_rescale=False)
        pred = self.model(pixel_values=inputs["pixel_values"].to(self.device)).predicted_depth
        pred = F.interpolate(pred[:, None].float(), (h, w), mode="bilinear", align_corners=False)[0, 0].cpu().numpy()
        depth = (-pred if self.output == "disparity" else pred).astype(np.float64)
        inside = mask > 0.5
        if inside.sum() == 0:
            raise StudioInputError("the reference image has no foreground for the depth label.")
        lo, hi = depth[inside].min(), depth[inside].max()
        out = np.zeros((h, w), np.float32)
        out[inside] = (depth[inside] - lo) / (hi - lo if hi > lo else 1.0)
        return out
