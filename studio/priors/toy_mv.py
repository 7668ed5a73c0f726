"""``toy-mv``: the embedded multi-view ("orbit video") diffusion prior, trained on ToyWorld.

V views of one scene (32x32 RGB each, model space [-1, 1]) are denoised jointly by one
:class:`~studio.priors.toy_unet.ToyUNet` run over the V views of a sample; its attention blocks
(8x8 level and middle) attend over the tokens of every view of the sample (cross-view attention,
as the 3D attention of multi-view and video diffusion models), its convolutions stay per view.

Per view the network reads ``concat(x_t, Plücker raymap, reference mask)`` (3 + 6 + 1 channels):

* **cameras**: Plücker raymaps (:func:`studio.cameras.rays.plucker_raymaps`) in the **normalised
  scene frame** (:func:`studio.cameras.normalize.scene_frame`: origin where the optical axes meet,
  unit mean camera distance, world axes kept so "up" stays up: ToyWorld is z-up), not in view 0's
  frame (the interface default, :meth:`MultiViewPrior.raymaps`): a z-up scene has a gravity
  direction worth knowing. CAT3D and FlashWorld condition on Plücker rays the same way.
* **image**: with an image condition, view 0 is the clean image (mask channel 1, timestep 0): the
  CAT3D way of conditioning on observed views; the prediction for view 0 is meaningless and
  ignored (:func:`studio.priors.multiview.generated_views`). Any set of views can be given the
  same way (``keyframes``: e.g. the first and last frame of a video-interpolation model, as the
  VideoScene teacher); ``toy-mv`` itself is trained with view 0 only.
* **caption**: tokens of the toy text encoder (:mod:`studio.priors.text`) by cross-attention, and
  their mean through an MLP added to every view's time embedding (as ``toy-t2i``).

Unconditional (CFG): empty caption and no image; the cameras stay (the views must still be of the
given cameras). Training drops the image (10%) and the caption (30%, and always for 20% of the
image-conditioned samples) independently, so the text-only, image-only and joint modes are all
trained. v-prediction, cosine schedule, T = 1000 (as the other toy priors).
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor, nn

from studio.cameras.normalize import scene_frame, to_frame
from studio.cameras.rays import plucker_raymaps
from studio.priors.base import Condition
from studio.priors.multiview import MultiViewPrior
from studio.priors.toy import ToyPrior
from studio.priors.toy_unet import ToyUNet

IN_CHANNELS = 3 + 6 + 1
"""x_t, Plücker raymap, reference mask."""


class ToyMVPrior(ToyPrior, MultiViewPrior):
    """Multi-view toy prior (see the module docstring). Condition fields: ``text`` [B,L,D],
    ``text_mask`` [B,L], ``refs`` [B,V,3,h,w] (the given views, model space; zeros elsewhere),
    ``ref_mask`` [B,V] (1 where a view is given), ``pose`` [B,V,6,h,w] (raymaps from :meth:`raymaps`)."""

    kind = "toy-mv"

    def __init__(self, config: dict):
        super().__init__(config)
        arch = self.complete_arch(
            {
                "channels": [32, 64, 128],
                "n_res": 2,
                "heads": 4,
                "text_dim": 128,
                "text_layers": 2,
                "max_len": 16,
                "views": 4,
                "res": 32,
            }
        )
        self.n_views, self.image_size = arch["views"], arch["res"]
        self.latent_shape = (arch["views"], 3, arch["res"], arch["res"])
        self.build_text_encoder(arch)
        self.unet = ToyUNet(IN_CHANNELS, 3, arch["channels"], arch["n_res"], arch["text_dim"], arch["heads"])
        temb = self.unet.temb_dim
        self.text_pool = nn.Sequential(nn.Linear(arch["text_dim"], temb), nn.SiLU(), nn.Linear(temb, temb))

    # ---- conditions -----------------------------------------------------------------------------
    def raymaps(self, viewmats: Tensor, Ks: Tensor, height: int, width: int) -> Tensor:
        """[B,V,6,height,width] Plücker raymaps of world cameras ``viewmats`` [B,V,4,4] / ``Ks``
        [B,V,3,3] (pixels of a ``height x width`` image), in their normalised scene frame."""
        return plucker_raymaps(to_frame(viewmats, scene_frame(viewmats)), Ks, height, width)

    def condition(self, text=None, image=None, pose=None, keyframes: Optional[dict] = None) -> Condition:
        """``image`` [B,3,H,W] in [0,1] is view 0's; ``keyframes`` maps view indices (negative ones
        count from the end) to given images [B,3,H,W] in [0,1] likewise (area-resized to the
        prior's resolution)."""
        if pose is None:
            raise ValueError("toy-mv needs the cameras: pose = raymaps [B,V,6,H,W] (ToyMVPrior.raymaps)")
        pose = torch.as_tensor(pose, dtype=torch.float32, device=self.device)
        B, V = pose.shape[:2]
        texts = [""] * B if text is None else ([text] * B if isinstance(text, str) else list(text))
        ids, mask = self.tokenizer(texts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        res = self.image_size
        refs = torch.zeros(B, V, 3, res, res, device=self.device)
        ref_mask = torch.zeros(B, V, device=self.device)
        given = dict(keyframes or {})
        if image is not None:
            given[0] = image
        for view, img in given.items():
            img = torch.as_tensor(img, dtype=torch.float32, device=self.device)
            if img.shape[-2:] != (res, res):
                img = nn.functional.interpolate(img, size=(res, res), mode="area")
            refs[:, view] = self.encode(img)
            ref_mask[:, view] = 1.0
        return Condition(
            {"text": self.text_encoder(ids, mask), "text_mask": mask, "pose": pose, "refs": refs, "ref_mask": ref_mask}
        )

    def unconditional(self, like: Condition) -> Condition:
        """Empty caption, no image; ``like``'s cameras (item by item)."""
        return self.condition(text="", pose=like.tensors["pose"])

    # ---- the network -----------------------------------------------------------------------------
    def network_input(self, x_t: Tensor, t: Tensor, cond: Condition) -> tuple[Tensor, Tensor, Condition]:
        """Per-view network input [B*V,10,h,w] and timesteps [B*V] (given views clean at t = 0),
        and the condition expanded to the batch."""
        B, V = x_t.shape[:2]
        c = cond.expand(B)
        given = c.tensors["ref_mask"].to(x_t)[:, :, None, None, None]  # [B,V,1,1,1]
        x_in = given * c.tensors["refs"].to(x_t) + (1.0 - given) * x_t
        ref = given.expand(B, V, 1, *x_t.shape[-2:])
        t_views = self._t(t, B)[:, None].expand(B, V)
        t_views = torch.where(given[:, :, 0, 0, 0] > 0, torch.zeros_like(t_views), t_views)
        x = torch.cat([x_in, c.tensors["pose"].to(x_t), ref], 2).flatten(0, 1)
        return x, t_views.reshape(-1), c

    def forward_features(self, x_t: Tensor, t: Tensor, cond: Condition) -> tuple[Tensor, Tensor]:
        """Network output [B,V,3,h,w] (v-prediction) and last decoder features [B,V,C0,h,w]."""
        B, V = x_t.shape[:2]
        x, t_views, c = self.network_input(x_t, t, cond)
        text, text_mask = c.tensors["text"].to(x_t), c.tensors["text_mask"]
        pooled = self.text_pool(text.sum(1) / text_mask.to(x_t).sum(1, keepdim=True).clamp(min=1.0))
        extra = pooled[:, None].expand(B, V, -1).reshape(B * V, -1)
        out, feats = self.unet(x, t_views, text, text_mask, extra, views=V, return_features=True)
        return out.view(B, V, *out.shape[1:]), feats.view(B, V, *feats.shape[1:])

    def predict(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        return self.forward_features(x_t, t, cond)[0]

    forward = predict  # what DDP wraps when DMD trains a fake-score copy

    def trainable_parameters(self) -> List[nn.Parameter]:
        """A fine-tuned copy (DMD's fake score) trains the denoiser and the pooled-text MLP."""
        return list(self.unet.parameters()) + list(self.text_pool.parameters())


def build_toy_mv(config: Optional[dict] = None) -> ToyMVPrior:
    """A freshly initialised ``toy-mv`` (``config["arch"]`` overrides the default architecture)."""
    return ToyMVPrior({**(config or {}), "kind": "toy-mv"})
