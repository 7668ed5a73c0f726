"""VP3D's differentiable rewards as a guidance (Chen et al. CVPR 2024): renders scored by frozen
image models, the scores back-propagated through the renders into the 3D representation.

* **Text alignment** (VP3D's human-feedback reward; the paper uses a reward model trained on human
  preferences, ImageReward-style): the cosine similarity between each render's and the prompt's
  embeddings of an image-text model (``studio.rewards.load_image_text_model``: the embedded
  ``toy-clip`` or a local CLIP folder).
* **Visual consistency**: the cosine similarity between each render's image features and the
  visual prompt's (``studio.rewards.VisualConsistency``: a 2D feature model such as ``toy-vit``
  with mean-pooled features, or an image-text model's image tower).

Each reward r in [-1, 1] enters the objective as ``weight * mean_b (1 - r_b)`` (zero at a perfect
score; its gradient is that of ``-weight * mean r``). ``RewardGuidance`` is a plain object, so a
model holding it keeps the frozen reward models out of its checkpoints.

The ``check_*`` functions validate the models' names or paths without reading weights (one
``StudioInputError`` line), for the inputs of commands (``studio.io.inputs.Input``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from studio.io.errors import StudioInputError
from studio.rewards import ImageTextModel, VisualConsistency, is_image_text_model
from studio.rewards.clip import check_clip_folder
from studio.rewards.contrastive import read_toy_clip_config
from studio.rewards.registry import EMBEDDED


def check_image_text_model(name_or_path: str | Path) -> None:
    """An image-text model that ``load_image_text_model`` can read: an embedded name with its weights
    file, a toy-clip ``.safetensors`` file or a transformers CLIP folder (headers only)."""
    key = str(name_or_path).strip()
    if key in EMBEDDED:
        if not EMBEDDED[key].is_file():
            raise StudioInputError(
                f"the embedded image-text model {key!r} has no weights at {EMBEDDED[key]}; run "
                "`python -m studio.rewards.train` to make them."
            )
        read_toy_clip_config(EMBEDDED[key])
        return
    path = Path(key).expanduser()
    if path.is_dir():
        check_clip_folder(path)
    elif path.is_file() or path.suffix == ".safetensors":
        read_toy_clip_config(path)
    else:
        raise StudioInputError(
            f"image-text model {key!r} is neither {', '.join(map(repr, EMBEDDED))}, a toy-clip .safetensors file "
            "nor a local CLIP folder."
        )


def check_consistency_model(name_or_path: str | Path) -> None:
    """A model ``VisualConsistency`` can load: an image-text model (``check_image_text_model``) or a
    2D feature model (``studio.features.check_feature_model``)."""
    if is_image_text_model(name_or_path):
        check_image_text_model(name_or_path)
    else:
        from studio.features import check_feature_model

        check_feature_model(name_or_path)


class RewardGuidance:
    """``RewardGuidance(alignment_model, consistency, alignment_weight, consistency_weight)(images,
    prompt, prompt_image)`` -> {"loss_alignment", "loss_consistency", "reward_alignment",
    "reward_consistency"} (see the module docstring); a term with weight 0 or no model is left out.

    ``images`` [B,3,H,W] in [0,1] (renders over the background the reward models were trained
    with); ``prompt``: the text; ``prompt_image`` [1,3,H',W'] in [0,1]: the visual prompt."""

    def __init__(
        self,
        alignment_model: Optional[ImageTextModel],
        consistency: Optional[VisualConsistency],
        alignment_weight: float = 0.0,
        consistency_weight: float = 0.0,
    ):
        self.alignment_model = alignment_model
        self.consistency = consistency
        self.alignment_weight, self.consistency_weight = float(alignment_weight), float(consistency_weight)

    def __call__(self, images: Tensor, prompt: str, prompt_image: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        if self.alignment_model is not None and self.alignment_weight > 0:
            r = self.alignment_model.alignment(images, prompt)
            out["loss_alignment"] = self.alignment_weight * (1.0 - r).mean()
            out["reward_alignment"] = r.detach().mean()
        if self.consistency is not None and self.consistency_weight > 0:
            r = self.consistency(images, prompt_image)
            out["loss_consistency"] = self.consistency_weight * (1.0 - r).mean()
            out["reward_consistency"] = r.detach().mean()
        return out


@torch.no_grad()
def best_by_alignment(candidates: Tensor, prompt: str, model: Optional[ImageTextModel]) -> tuple[int, Tensor]:
    """(index, scores [N]) of the candidate image [N,3,H,W] in [0,1] whose ``model`` alignment with
    ``prompt`` is highest (without a model: the first, scores all zero)."""
    if model is None or candidates.shape[0] == 1:
        return 0, torch.zeros(candidates.shape[0])
    scores = model.alignment(candidates, prompt).float().cpu()
    return int(scores.argmax()), scores
