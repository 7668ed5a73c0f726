"""The multi-view prior interface: ``V`` views of one scene denoised jointly.

A :class:`MultiViewPrior` is a :class:`~studio.priors.base.DiffusionPrior` whose model space has a
view axis: samples are ``[B,V,C,h,w]`` (``latent_shape`` = (V, C, h, w)) and ``predict(x_t, t,
cond)`` returns the same shape, every view at the same timestep ``t`` [B]. Images handed to
``encode`` are ``[B,V,3,H,W]`` in [0, 1].

Conditions (``condition``):

* ``pose``: the cameras as Plücker raymaps ``[B,V,6,H,W]`` (:func:`mv_pose`), expressed in the
  frame of view 0 so the prior is invariant to where the scene sits in the world;
* ``image``: ``[B,3,H,W]`` in [0,1], the clean view 0 (image-to-3D); None for text only;
* ``text``: caption(s); "" is the unconditional caption of classifier-free guidance.

View 0 is the reference view: with an image condition, its sample is the encoded image and its
prediction is ignored by samplers and losses (:func:`generated_views`).
"""

from __future__ import annotations

from torch import Tensor

from studio.cameras.rays import plucker_raymaps, relative_to_first
from studio.priors.base import DiffusionPrior


class MultiViewPrior(DiffusionPrior):
    """Base class of the multi-view priors (embedded ``toy-mv``; the Wan2.2 adapter)."""

    n_views: int = 4
    """Views a sample holds (the training value; the networks accept other counts)."""

    def raymaps(self, viewmats: Tensor, Ks: Tensor, height: int, width: int) -> Tensor:
        """The ``pose`` condition [B,V,6,height,width] of world cameras ``viewmats`` [B,V,4,4] and
        ``Ks`` [B,V,3,3] (default: :func:`mv_pose`, Plücker raymaps in view 0's frame)."""
        return mv_pose(viewmats, Ks, height, width)


def mv_pose(viewmats: Tensor, Ks: Tensor, height: int, width: int) -> Tensor:
    """Plücker raymaps [B,V,6,height,width] of cameras ``viewmats`` [B,V,4,4] (world-to-camera,
    OpenCV) and ``Ks`` [B,V,3,3] (pixels, for a ``height x width`` image), in the frame of view 0."""
    return plucker_raymaps(relative_to_first(viewmats), Ks, height, width)


def generated_views(x: Tensor, image_conditioned: bool) -> Tensor:
    """The views of ``x`` [B,V,...] a sampler generates: all but view 0 when it is the given image."""
    return x[:, 1:] if image_conditioned else x
