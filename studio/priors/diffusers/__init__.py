"""Pretrained diffusers models behind the :class:`~studio.priors.base.DiffusionPrior` interface.

* :class:`StableDiffusionPrior`: Stable Diffusion (2.1-base by default), VAE latent space.
* :class:`DeepFloydIFPrior`: DeepFloyd IF stage I, 64x64 pixel space, T5 text encoder.
* :class:`Zero123Prior` / :class:`StableZero123Prior`: Zero-1-to-3 / Stable Zero123, image +
  relative-pose conditioned (:func:`zero123_pose`), VAE latent space.
* :class:`Zero123EpipolarPrior` / :class:`StableZero123EpipolarPrior`: Sparse3D's multiview-consistent
  prior, the epipolar controller on Zero123 as a ControlNet.
* :class:`WanMultiViewPrior`: Wan2.2 TI2V as a multi-view flow prior (views as latent frames,
  Plücker-ray camera embedding, optional clean view 0), Wan VAE latent space.

Weights load only from a local folder or the local Hugging Face cache (:mod:`.loading`); LoRA copies
for VSD/BSD share the frozen weights (:mod:`.lora`). diffusers, transformers and peft are imported
only when a model is loaded or cloned.
"""

from studio.priors.diffusers.base import DiffusersPrior
from studio.priors.diffusers.deepfloyd_if import DeepFloydIFPrior
from studio.priors.diffusers.lora import LORA_TARGET_MODULES, CameraEmbedding
from studio.priors.diffusers.stable_diffusion import StableDiffusionPrior
from studio.priors.diffusers.wan import WanMultiViewPrior
from studio.priors.diffusers.zero123 import StableZero123Prior, Zero123Prior, zero123_pose
from studio.priors.diffusers.zero123_epipolar import StableZero123EpipolarPrior, Zero123EpipolarPrior

__all__ = [
    "LORA_TARGET_MODULES",
    "CameraEmbedding",
    "DeepFloydIFPrior",
    "DiffusersPrior",
    "StableDiffusionPrior",
    "StableZero123EpipolarPrior",
    "StableZero123Prior",
    "WanMultiViewPrior",
    "Zero123EpipolarPrior",
    "Zero123Prior",
    "zero123_pose",
]
