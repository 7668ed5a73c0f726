"""Zero-1-to-3 and Stable Zero123 in the diffusers community layout (``pipeline_zero1to3.py``):
image + relative-camera conditioned, VAE latent space.

The relative camera itself is :func:`studio.cameras.sampling.relative_pose` (the one
implementation of that maths); :func:`zero123_pose` only encodes it in the 4-vector each variant
was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.cameras.sampling import OrbitViews, relative_pose
from studio.io.errors import StudioInputError
from studio.priors.base import Condition
from studio.priors.diffusers.base import DiffusersPrior, LatentVAEMixin
from studio.priors.diffusers.loading import load_component, load_state_dict

POSE_VARIANTS = ("zero123", "stable-zero123")
# OpenAI CLIP image normalisation (used when feature_extractor/ has no preprocessor config)
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def zero123_pose(
    elevation_deg,
    azimuth_deg,
    radius=None,
    ref_elevation_deg=0.0,
    ref_azimuth_deg=0.0,
    ref_radius=None,
    variant: str = "zero123",
) -> Tensor:
    """The 4-vector Zero123 conditions on, for target views relative to the reference view.

    Angles in degrees (elevation up from the horizon, azimuth around the up axis), radii in world
    units; numbers, sequences or tensors that broadcast to [B].

    * ``variant="zero123"`` (Zero-1-to-3, Zero123-XL): ``relative_pose``'s
      ``[Δpolar (rad), sin Δazimuth, cos Δazimuth, Δradius]``, polar measured from the up axis (so
      Δpolar is minus the elevation change); Δradius is 0 when either radius is None.
    * ``variant="stable-zero123"``: the same first three entries, and the reference view's polar
      angle ``radians(90 - ref_elevation)`` as the fourth (Stable Zero123 does not use the radius).

    Returns float32 [B,4].
    """
    if variant not in POSE_VARIANTS:
        raise ValueError("variant must be 'zero123' or 'stable-zero123'")
    if radius is None or ref_radius is None:
        radius = ref_radius = 0.0
    values = (elevation_deg, azimuth_deg, radius, ref_elevation_deg, ref_azimuth_deg, ref_radius)
    el, az, r, ref_el, ref_az, ref_r = torch.broadcast_tensors(
        *(torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in values)
    )
    fov = torch.zeros_like(el)  # not part of the relative camera
    pose = relative_pose(OrbitViews(ref_el, ref_az, ref_r, fov), OrbitViews(el, az, r, fov))
    if variant == "stable-zero123":
        pose = torch.cat([pose[:, :3], torch.deg2rad(90.0 - ref_el)[:, None]], dim=-1)
    return pose


class Zero123Prior(LatentVAEMixin, DiffusersPrior):
    """Zero-1-to-3 family in the diffusers community layout (``pipeline_zero1to3.py``).

    Folders: ``unet/`` (8 input channels: noisy latent + reference latent), ``vae/``,
    ``image_encoder/`` (CLIPVisionModelWithProjection), ``feature_extractor/`` (optional: only its
    normalisation is read), ``cc_projection/`` (Linear(D+4 -> D), keys ``projection.*`` or plain),
    ``scheduler/``. Default path ``ashawkey/zero123-xl-diffusers``.

    ``condition(image=ref [B,3,H,W] in [0,1], pose=[B,4])`` -> ``{"clip": [B,1,D], "ref_latent":
    [B,4,h,w]}``: ``clip`` = cc_projection([CLIP image embedding, pose]); ``ref_latent`` = the VAE
    posterior mode of the reference, *not* multiplied by the scaling factor (as Zero123 was
    trained). ``pose`` is :func:`zero123_pose` with ``variant=self.pose_variant``.
    ``unconditional``: zeros for both fields (Zero123's CFG). Noisy latents are scaled as usual.
    """

    what = "Zero-1-to-3"
    default_repo = "ashawkey/zero123-xl-diffusers"
    components = ("unet", "vae", "image_encoder", "cc_projection", "scheduler")
    pose_variant = "zero123"

    def _load(self) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPVisionModelWithProjection

        p, what, dt = self.path, self.what, self.model_dtype
        self.vae = load_component(AutoencoderKL, p, "vae", what, dt)
        self.unet = load_component(UNet2DConditionModel, p, "unet", what, dt)
        self.image_encoder = load_component(CLIPVisionModelWithProjection, p, "image_encoder", what, dt)
        self.cc_projection = self._load_cc_projection(p / "cc_projection").to(dt)
        mean, std = _CLIP_MEAN, _CLIP_STD
        pre = p / "feature_extractor" / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
        self.register_buffer("clip_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        f = self.vae_scale_factor
        self.image_size = int(self.unet.config.sample_size) * f
        lat_c = int(self.vae.config.latent_channels)
        if int(self.unet.config.in_channels) != 2 * lat_c:
            raise StudioInputError(
                f"{what}: unet/ takes {self.unet.config.in_channels} input channels, expected {2 * lat_c} "
                "(noisy latent + reference latent); is this a Zero123 snapshot?"
            )
        self.latent_shape = (lat_c, self.image_size // f, self.image_size // f)
        self._last_image: Tensor | None = None
        self._last_embed: tuple | None = None

    def _load_cc_projection(self, d: Path) -> nn.Linear:
        try:
            sd = load_state_dict(d)
        except (OSError, RuntimeError, ValueError) as e:
            raise StudioInputError(f"{self.what}: could not load 'cc_projection/' from '{self.path}' ({e})") from e
        sd = {k.removeprefix("projection."): v for k, v in sd.items()}
        if "weight" not in sd:
            raise StudioInputError(f"{self.what}: 'cc_projection/' in '{self.path}' has no projection weight")
        out_dim, in_dim = sd["weight"].shape
        lin = nn.Linear(in_dim, out_dim, bias="bias" in sd)
        lin.load_state_dict({k: v.float() for k, v in sd.items() if k in ("weight", "bias")})
        return lin

    @torch.no_grad()
    def _embed_image(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """(CLIP image embedding [B,1,D], unscaled reference latent mode [B,4,h,w]); the last
        image's result is reused while the same pixels are passed."""
        image = image.to(self.device)
        if (
            self._last_image is not None
            and self._last_image.shape == image.shape
            and torch.equal(self._last_image, image)
        ):
            return self._last_embed
        s = int(self.image_encoder.config.image_size)
        x = image.float().clamp(0.0, 1.0)
        x = F.interpolate(x, (s, s), mode="bicubic", align_corners=True, antialias=False)
        x = (x - self.clip_mean) / self.clip_std
        clip = self.image_encoder(x.to(self.image_encoder.dtype)).image_embeds.unsqueeze(1)
        ref = self._vae_encode(image.float().clamp(0.0, 1.0), "mean")
        self._last_image, self._last_embed = image.detach().clone(), (clip, ref)
        return clip, ref

    @torch.no_grad()
    def condition(self, text=None, image=None, pose=None) -> Condition:
        if text:
            raise ValueError(f"{type(self).__name__} is conditioned on an image and a pose, not on text")
        if image is None or pose is None:
            raise ValueError(f"{type(self).__name__}.condition needs image=[B,3,H,W] in [0,1] and pose=[B,4]")
        if image.dim() == 3:
            image = image[None]
        pose = torch.as_tensor(pose, device=self.device, dtype=torch.float32)
        if pose.dim() == 1:
            pose = pose[None]
        if pose.shape[-1] != 4:
            raise ValueError(
                f"Zero123 pose must be [B,4] (zero123_pose with variant={self.pose_variant!r}), got {tuple(pose.shape)}"
            )
        clip, ref = self._embed_image(image)
        b = max(clip.shape[0], pose.shape[0])
        if clip.shape[0] not in (1, b) or pose.shape[0] not in (1, b):
            raise ValueError(f"image batch {clip.shape[0]} and pose batch {pose.shape[0]} do not broadcast")
        clip = clip.expand(b, -1, -1)
        ref = ref.expand(b, -1, -1, -1)
        pose = pose.expand(b, -1)[:, None, :].to(clip.dtype)
        emb = self.cc_projection(torch.cat([clip, pose], dim=-1))
        return Condition({"clip": emb, "ref_latent": ref})

    def unconditional(self, like: Condition) -> Condition:
        return Condition({k: torch.zeros_like(v) for k, v in like.tensors.items()})

    def predict(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        cond = cond.expand(x_t.shape[0])
        ref = cond.tensors["ref_latent"].to(x_t.dtype)
        sample = torch.cat([x_t, ref], dim=1)
        return self._run_unet(sample, t, cond.tensors["clip"], cond).to(x_t.dtype)


class StableZero123Prior(Zero123Prior):
    """Stable Zero123 (default ``ashawkey/stable-zero123-diffusers``): the Zero123 adapter with the
    ``"stable-zero123"`` pose (last entry: the reference view's polar angle, see :func:`zero123_pose`)."""

    what = "Stable Zero123"
    default_repo = "ashawkey/stable-zero123-diffusers"
    pose_variant = "stable-zero123"


__all__ = ["POSE_VARIANTS", "StableZero123Prior", "Zero123Prior", "zero123_pose"]
