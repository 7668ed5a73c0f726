"""Sparse3D's multiview-consistent prior on real weights: Zero123 guided by the epipolar controller.

The ``full``-preset counterpart of ``toy-epipolar`` (:mod:`studio.priors.epipolar`, whose module
docstring describes the method): the frozen base is a Zero123 / Stable Zero123 snapshot
(:class:`~studio.priors.diffusers.zero123.Zero123Prior`) instead of ``toy-nvs``, and the ControlNet
(Zhang et al. 2023) is diffusers' ``ControlNetModel``:

* **Reference**: the input view nearest to the target (:func:`~studio.priors.epipolar.nearest_view`)
  with :func:`~studio.priors.diffusers.zero123.zero123_pose` of the adapter's variant, computed
  from both cameras' orbit angles about the origin, +Z up (:func:`~studio.priors.epipolar.orbit_angles`).
* **Epipolar attention** (:class:`~studio.priors.epipolar.EpipolarAttention`, float32): reads the
  input views as *pixels* in [-1, 1], resized (bilinear, antialiased) to ``view_size`` (default
  twice the latent size, so its S/2 feature map is at the latent resolution; resized there
  bilinearly otherwise). Our choice over the VAE latents: its view encoder takes 3 channels (as
  the toy's), and it appends the pixels themselves, the colours the controller can copy.
* **ControlNet**: ``ControlNetModel.from_unet(unet)``, a trainable copy of Zero123's time embedding,
  8-channel ``conv_in``, down blocks and middle block, in the UNet's dtype. Its
  ``controlnet_cond_embedding`` is diffusers' own with one stage (``conditioning_embedding_out_channels
  = (dim,)``): a 3x3 convolution of the ``dim``-channel epipolar map, SiLU, and a zero-initialised
  3x3 convolution to the first block's channels, at the latent resolution (no downsampling). A plain
  config, so ``save_pretrained`` / ``from_pretrained`` round-trip it. Its zero-initialised 1x1
  outputs, times ``conditioning_scale``, enter the frozen UNet as ``down_block_additional_residuals``
  / ``mid_block_additional_residual``.

Folder: a Zero123 snapshot (diffusers community layout) plus, together or not at all,
``controlnet/`` (a ``ControlNetModel`` saved with ``save_pretrained``) and ``epipolar/``
(``model.safetensors`` + ``config.json`` with ``dim``, ``depths``, ``heads``, ``view_size``), as
:meth:`Zero123EpipolarPrior.save_controller` writes them. Without them the controller is built
fresh (seeded, so the same for every load) and, being zero-initialised, leaves the prior *exactly*
Zero123: loading says so in a one-line warning (logging), since only a trained controller adds the
multiview consistency.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

from studio.io.errors import StudioInputError
from studio.priors.base import Condition
from studio.priors.diffusers.base import resize_square
from studio.priors.diffusers.loading import load_component, load_state_dict
from studio.priors.diffusers.zero123 import Zero123Prior, zero123_pose
from studio.priors.epipolar import (
    CONTROLLER_FIELDS,
    EpipolarAttention,
    batch_views,
    controller_fields,
    default_near_far,
    nearest_view,
    orbit_angles,
    scale_intrinsics,
)

log = logging.getLogger(__name__)

ARCH_KEYS = ("dim", "depths", "heads", "view_size")
DEFAULT_ARCH = {"dim": 64, "depths": 16, "heads": 4}
"""Arch of a fresh epipolar attention (``view_size`` defaults to twice the latent size)."""


class Zero123EpipolarPrior(Zero123Prior):
    """Zero123 + the epipolar controller (see the module docstring); ``zero123-epipolar`` in the
    registry.

    ``arch``: overrides of :data:`DEFAULT_ARCH` / ``view_size`` for a fresh controller (a folder's
    ``epipolar/config.json`` wins). Condition fields: Zero123's ``clip`` [B,1,D] and ``ref_latent``
    [B,4,h,w] (nearest input view), ``uncond`` [B,1] (1 = the CFG null row), and
    :data:`~studio.priors.epipolar.CONTROLLER_FIELDS`: ``views`` [B,K,3,V,V] (pixels in [-1,1],
    V = ``view_size``), ``view_mats`` [B,K,4,4], ``view_Ks`` [B,K,3,3] (pixels of V),
    ``target_mat`` [B,4,4], ``target_K`` [B,3,3] (pixels of V), ``near_far`` [B,2]."""

    what = "Zero-1-to-3 + epipolar controller"

    def __init__(self, path=None, dtype=None, device=None, *, arch: dict | None = None, **kwargs):
        self._fresh_arch = {**DEFAULT_ARCH, **(arch or {})}
        super().__init__(path, dtype, device, **kwargs)
        self.conditioning_scale = 1.0
        """Multiplier of the controller's residuals (0: Zero123 alone)."""

    # ---- files ------------------------------------------------------------------------------
    def _load(self) -> None:
        super()._load()
        from diffusers import ControlNetModel

        has = [(self.path / sub).is_dir() for sub in ("controlnet", "epipolar")]
        if any(has) and not all(has):
            raise StudioInputError(
                f"{self.what}: '{self.path}' has only one of 'controlnet/' and 'epipolar/'; a trained controller "
                "ships both (save_controller writes them), a fresh one neither"
            )
        if all(has):
            self.arch = self._read_arch()
            self.epipolar = EpipolarAttention(*(self.arch[k] for k in ("dim", "depths", "heads")))
            try:
                self.epipolar.load_state_dict(load_state_dict(self.path / "epipolar"))
            except (OSError, RuntimeError, ValueError) as e:
                why = " ".join(str(e).split())  # one line
                raise StudioInputError(f"{self.what}: could not load 'epipolar/' from '{self.path}' ({why})") from e
            self.controlnet = load_component(ControlNetModel, self.path, "controlnet", self.what, self.model_dtype)
            self._check_controlnet()
            return
        self.arch = {"view_size": 2 * self.latent_shape[-1], **self._fresh_arch}
        with torch.random.fork_rng(devices=[]):  # a fresh controller is the same on every load
            torch.manual_seed(0)
            self.epipolar = EpipolarAttention(*(self.arch[k] for k in ("dim", "depths", "heads")))
            controlnet = ControlNetModel.from_unet(
                self.unet,
                conditioning_embedding_out_channels=(self.arch["dim"],),
                conditioning_channels=self.arch["dim"],
            )
        # nn.Module.to: ModelMixin.to warns of float32-only modules, which ControlNetModel has none of
        self.controlnet = nn.Module.to(controlnet, self.model_dtype)
        log.warning(
            "%s: no trained controller in '%s' (controlnet/ + epipolar/): a fresh zero-initialised one, "
            "so the prior is exactly Zero123 until it is trained.",
            self.what,
            self.path,
        )

    def _read_arch(self) -> dict:
        """``epipolar/config.json``: ``dim``, ``depths``, ``heads`` and (optional) ``view_size``."""
        cfg_file = self.path / "epipolar" / "config.json"
        try:
            cfg = {"view_size": 2 * self.latent_shape[-1], **json.loads(cfg_file.read_text())}
            return {k: int(cfg[k]) for k in ARCH_KEYS}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StudioInputError(
                f"{self.what}: '{cfg_file}' must be JSON with integer dim, depths, heads (and view_size) ({e!r})"
            ) from e

    def _check_controlnet(self) -> None:
        cfg, unet = self.controlnet.config, self.unet.config
        if (
            int(cfg.in_channels) != int(unet.in_channels)
            or tuple(cfg.block_out_channels) != tuple(unet.block_out_channels)
            or int(cfg.conditioning_channels) != self.arch["dim"]
        ):
            raise StudioInputError(
                f"{self.what}: 'controlnet/' in '{self.path}' does not fit: it takes {cfg.in_channels} input channels, "
                f"blocks {tuple(cfg.block_out_channels)} and a {cfg.conditioning_channels}-channel condition; the unet "
                f"{unet.in_channels}, {tuple(unet.block_out_channels)} and the epipolar map {self.arch['dim']}"
            )

    def save_controller(self, folder: str | Path) -> Path:
        """Write ``controlnet/`` and ``epipolar/`` into ``folder`` (a Zero123 snapshot, to ship a
        trained controller with it), each written to a temporary folder beside it and then renamed
        over the old one. Returns ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".controller-") as tmp:
            tmp = Path(tmp)
            self.controlnet.save_pretrained(tmp / "controlnet")
            (tmp / "epipolar").mkdir()
            state = {k: v.detach().float().contiguous().cpu() for k, v in self.epipolar.state_dict().items()}
            save_file(state, str(tmp / "epipolar" / "model.safetensors"))
            (tmp / "epipolar" / "config.json").write_text(json.dumps(self.arch, indent=2))
            for sub in ("controlnet", "epipolar"):  # the old one moves into tmp (deleted with it)
                if (folder / sub).exists():
                    (folder / sub).rename(tmp / f"old-{sub}")
                (tmp / sub).rename(folder / sub)
        return folder

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The controller (epipolar attention + ControlNet; + the LoRA factors of a clone)."""
        return list(self.epipolar.parameters()) + list(self.controlnet.parameters()) + list(self._lora_params)

    # ---- conditions ---------------------------------------------------------------------------
    @torch.no_grad()
    def condition_views(
        self,
        images: Tensor,
        view_mats: Tensor,
        view_Ks: Tensor,
        target_mats: Tensor,
        target_Ks: Tensor,
        near_far: Tensor | None = None,
    ) -> Condition:
        """As :meth:`studio.priors.epipolar.EpipolarNVSPrior.condition_views`: targets
        ``target_mats`` [B,4,4] / ``target_Ks`` [B,3,3] given input views ``images`` [K,3,H,W] or
        [B,K,3,H,W] in [0,1] with ``view_mats`` [(B,)K,4,4] and ``view_Ks`` [(B,)(K,)3,3]
        (broadcast; OpenCV world-to-camera, intrinsics in pixels of the square H x H images);
        ``near_far`` [B,2] the depth range along the target rays (default
        :func:`~studio.priors.epipolar.default_near_far`). Zero123's fields are those of
        ``condition(image=nearest view, pose=zero123_pose(...))``."""
        dev, V = self.device, self.arch["view_size"]
        images, view_mats, view_Ks, target_mats, target_Ks = batch_views(
            images, view_mats, view_Ks, target_mats, target_Ks, dev
        )
        B, K, H = images.shape[0], images.shape[1], images.shape[-1]
        view_Ks, target_Ks = scale_intrinsics(view_Ks, V / H), scale_intrinsics(target_Ks, V / H)  # V px images

        # Zero123's reference: every input view is embedded (cached while the views stay the same),
        # its pose to the target computed, and the nearest view's row kept
        el, az, r = orbit_angles(view_mats)  # [B,K], radians
        el_t, az_t, r_t = (a[:, None].expand(B, K) for a in orbit_angles(target_mats))
        deg = torch.rad2deg
        pose = zero123_pose(deg(el_t), deg(az_t), r_t, deg(el), deg(az), r, variant=self.pose_variant)  # [B*K,4]
        base = self.condition(image=images.flatten(0, 1), pose=pose)
        keep = torch.arange(B, device=dev) * K + nearest_view(view_mats, target_mats)
        views = resize_square(images.flatten(0, 1), V).view(B, K, 3, V, V) * 2.0 - 1.0
        if near_far is None:
            near_far = default_near_far(view_mats, view_Ks, target_mats, V)
        controller = controller_fields(views, view_mats, view_Ks, target_mats, target_Ks, near_far)
        return Condition({**base.index(keep).tensors, **controller})

    def unconditional(self, like: Condition) -> Condition:
        """``like`` with Zero123's fields zeroed (its CFG null condition) and the controller dropped."""
        tensors = dict(like.tensors)
        for k in ("clip", "ref_latent"):
            tensors[k] = torch.zeros_like(tensors[k])
        if "uncond" in tensors:
            tensors["uncond"] = torch.ones_like(tensors["uncond"])
        return Condition(tensors)

    # ---- the network ----------------------------------------------------------------------------
    def predict(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        """Zero123's UNet on concat(x_t, reference latent) with the ControlNet's residuals (times
        ``conditioning_scale``) on the rows whose controller is not dropped (``uncond`` 0); a
        condition without the controller's fields (``condition(image=, pose=)``'s) runs Zero123 alone."""
        B = x_t.shape[0]
        c = cond.expand(B)
        v = c.tensors
        sample = torch.cat([x_t, v["ref_latent"].to(x_t.dtype)], dim=1)
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(B)
        rows = (v["uncond"][:, 0] < 0.5).nonzero()[:, 0] if "uncond" in v else None
        if self.conditioning_scale == 0.0 or rows is None or rows.numel() == 0:
            return self._run_unet(sample, t, v["clip"], c).to(x_t.dtype)
        dtype = self.controlnet.dtype
        feats = self.epipolar(*(v[k][rows].float() for k in CONTROLLER_FIELDS))
        feats = resize_square(feats, x_t.shape[-1])  # the latent resolution
        down, mid = self.controlnet(
            sample[rows].to(dtype),
            t[rows],
            encoder_hidden_states=v["clip"][rows].to(dtype),
            controlnet_cond=feats.to(dtype),
            conditioning_scale=self.conditioning_scale,
            return_dict=False,
        )

        def scatter(r: Tensor) -> Tensor:  # zeros on the dropped rows
            out = torch.zeros(B, *r.shape[1:], dtype=self.unet.dtype, device=r.device)
            return out.index_copy(0, rows, r.to(self.unet.dtype))

        residuals = {
            "down_block_additional_residuals": tuple(scatter(d) for d in down),
            "mid_block_additional_residual": scatter(mid),
        }
        return self._run_unet(sample, t, v["clip"], c, **residuals).to(x_t.dtype)


class StableZero123EpipolarPrior(Zero123EpipolarPrior):
    """``stable-zero123-epipolar``: the controller on Stable Zero123 (its pose, see :func:`zero123_pose`)."""

    what = "Stable Zero123 + epipolar controller"
    default_repo = "ashawkey/stable-zero123-diffusers"
    pose_variant = "stable-zero123"


__all__ = ["DEFAULT_ARCH", "StableZero123EpipolarPrior", "Zero123EpipolarPrior"]
