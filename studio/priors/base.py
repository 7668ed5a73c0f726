"""The diffusion-prior interface every guidance (SDS, VSD, BSD, ...) talks to.

A prior is a denoiser ``predict(x_t, t, cond)`` over a model space ``x`` (pixels for the embedded
toy priors and DeepFloyd IF, VAE latents for Stable Diffusion / Zero123). Its noise schedule
(``alphas_cumprod`` [T] = abar and ``prediction_type`` "eps", "v" or "flow") and the conversions
``add_noise`` / ``to_eps`` / ``to_x0`` / ``training_target`` live in one
:class:`~studio.priors.schedule.NoiseSchedule` (``noise_schedule``); the prior's methods of the same
names delegate to it. Images handed to ``encode`` are [B,3,H,W] in [0, 1]; ``decode`` returns the
same range.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from studio.priors.schedule import NoiseSchedule, PredictionType


@dataclass
class Condition:
    """What a prior is conditioned on, already embedded (the output of ``DiffusionPrior.condition``).

    ``tensors`` holds the model-specific embeddings, each with a leading batch dimension (text
    tokens [B,L,D], image embedding [B,D], pose [B,P], concatenated image latents [B,C,h,w], ...).
    A condition of batch 1 broadcasts against any batch of ``x_t``.
    """

    tensors: dict[str, Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return next(iter(self.tensors.values())).shape[0] if self.tensors else 1

    def expand(self, batch: int) -> Condition:
        """The condition repeated to ``batch`` rows (from batch 1 or ``batch``)."""
        out = {}
        for k, v in self.tensors.items():
            out[k] = v.expand(batch, *v.shape[1:]) if v.shape[0] == 1 else v
            if out[k].shape[0] != batch:
                raise ValueError(f"condition '{k}' has batch {v.shape[0]}, expected 1 or {batch}")
        return Condition(out)

    @staticmethod
    def cat(conds: Sequence[Condition], batches: Sequence[int]) -> Condition:
        """Concatenate conditions along the batch (each first expanded to its batch size);
        used to run the conditional and unconditional branches of CFG in one call."""
        keys = set(conds[0].tensors)
        if any(set(c.tensors) != keys for c in conds):
            raise ValueError("conditions to concatenate must have the same fields")
        expanded = [c.expand(b) for c, b in zip(conds, batches)]
        return Condition({k: torch.cat([c.tensors[k] for c in expanded]) for k in keys})

    def index(self, rows: slice | Tensor) -> Condition:
        return Condition({k: v[rows] for k, v in self.tensors.items()})

    def to(self, device) -> Condition:
        return replace(self, tensors={k: v.to(device) for k, v in self.tensors.items()})


class DiffusionPrior(nn.Module):
    """Base class of the priors (see the module docstring for the conventions).

    Subclasses set ``alphas_cumprod`` (a buffer [T]), ``prediction_type``, ``image_size`` (the
    pixel resolution ``encode`` expects) and ``latent_shape`` (C, h, w) of the model space, and
    implement ``predict`` and ``condition``. ``encode``/``decode`` default to the identity map
    [0,1] <-> [-1,1] of pixel-space models.
    """

    prediction_type: PredictionType = "eps"
    image_size: int = 32
    latent_shape: tuple = (3, 32, 32)
    alphas_cumprod: Tensor

    # ---- what subclasses implement ----------------------------------------------------------
    def predict(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        """Network output [B,C,h,w] (in ``prediction_type``) at integer timesteps ``t`` [B]."""
        raise NotImplementedError

    def condition(
        self,
        text: str | list[str] | None = None,
        image: Tensor | None = None,
        pose: Tensor | None = None,
    ) -> Condition:
        """Embed a condition. ``text``: prompt(s), "" is the unconditional (CFG) text;
        ``image``: reference image [B,3,H,W] in [0,1] (image-conditioned priors); ``pose``:
        relative camera [B,P] (novel-view priors; the layout is the prior's, see its docs)."""
        raise NotImplementedError

    def unconditional(self, like: Condition) -> Condition:
        """The CFG "null" condition matching ``like`` (default: empty text)."""
        return self.condition(text="")

    # ---- model space ------------------------------------------------------------------------
    def release_text_encoder(self) -> None:
        """Free the text encoder once every prompt the run needs has been embedded (embeddings are
        cached; a new prompt then raises). No-op for priors whose encoder is small or absent."""

    def encode(self, img: Tensor) -> Tensor:
        """[B,3,H,W] in [0,1] -> model space [B,C,h,w] (pixel models: [-1,1])."""
        return img * 2.0 - 1.0

    def decode(self, lat: Tensor) -> Tensor:
        """Model space [B,C,h,w] -> [B,3,H,W] in [0,1]."""
        return ((lat + 1.0) * 0.5).clamp(0.0, 1.0)

    # ---- noise schedule: the forward process and output conversions -------------------------
    @property
    def noise_schedule(self) -> NoiseSchedule:
        """``alphas_cumprod`` and ``prediction_type`` as a :class:`NoiseSchedule` (on the prior's device)."""
        return NoiseSchedule(self.alphas_cumprod, self.prediction_type)

    @property
    def num_train_timesteps(self) -> int:
        return self.noise_schedule.num_train_timesteps

    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x_t [B,C,h,w] from x_0 and noise at timesteps ``t`` [B]."""
        return self.noise_schedule.add_noise(x0, eps, t)

    def to_eps(self, x_t: Tensor, t: Tensor, out: Tensor) -> Tensor:
        """The noise prediction implied by the network output ``out``."""
        return self.noise_schedule.to_eps(x_t, t, out)

    def to_x0(self, x_t: Tensor, t: Tensor, out: Tensor) -> Tensor:
        """The clean-sample prediction implied by the network output ``out``."""
        return self.noise_schedule.to_x0(x_t, t, out)

    def training_target(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """What the network should output for (x0, eps, t): the denoising-loss target used by
        prior training, VSD's fake score and BSD's fine-tuning."""
        return self.noise_schedule.training_target(x0, eps, t)

    # ---- copies that guidance fine-tunes ----------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters a fine-tuned copy trains (default: all)."""
        return [p for p in self.parameters()]

    def clone_trainable(self) -> DiffusionPrior:
        """A copy whose ``trainable_parameters()`` require grad, for VSD's fake score and BSD's
        bootstrapped prior. Small priors deep-copy everything; large adapters override this to add
        LoRA layers to a shared frozen network instead."""
        clone = copy.deepcopy(self)
        for p in clone.parameters():
            p.requires_grad_(False)
        for p in clone.trainable_parameters():
            p.requires_grad_(True)
        return clone


def freeze(prior: DiffusionPrior) -> DiffusionPrior:
    """Put a prior in eval mode with every parameter frozen (how guidance uses the teacher)."""
    prior.eval()
    for p in prior.parameters():
        p.requires_grad_(False)
    return prior
