"""What the diffusers adapters share: the snapshot and scheduler data, the UNet call, LoRA clones,
and the text-CFG / VAE-latent pieces.

Default dtype: float16 on CUDA, float32 on CPU. ``alphas_cumprod`` is always float32 (read from
``scheduler/scheduler_config.json``, see :func:`~studio.priors.diffusers.loading.load_scheduler`);
``predict`` returns the dtype of ``x_t`` (inputs are cast to the network's dtype and back).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.priors.base import Condition, DiffusionPrior
from studio.priors.diffusers.loading import default_device, default_dtype, load_scheduler, snapshot_folder
from studio.priors.diffusers.lora import lora_unet, shallow_module_copy


def resize_square(img: Tensor, size: int) -> Tensor:
    """[B,C,H,W] -> [B,C,size,size], bilinear (antialiased when shrinking); unchanged at that size."""
    if img.shape[-2:] == (size, size):
        return img
    down = img.shape[-1] > size or img.shape[-2] > size
    return F.interpolate(img, (size, size), mode="bilinear", align_corners=False, antialias=down)


class DiffusersPrior(DiffusionPrior):
    """Base of the adapters. Subclasses set ``what`` (human name), ``default_repo`` and
    ``components`` (required sub-folders) and implement ``_load`` (the networks), ``predict`` and
    ``condition``.

    ``path``: a local snapshot folder or a repo id in the Hugging Face cache (None:
    ``default_repo``); ``flag``: the command-line option named in missing-weight errors.
    ``lora_rank`` / ``camera_dim``: defaults of :meth:`clone_trainable`.
    """

    what = "diffusion model"
    default_repo: str | None = None
    components: Sequence[str] = ("unet", "scheduler")

    def __init__(
        self,
        path: str | Path | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        *,
        lora_rank: int = 4,
        camera_dim: int = 0,
        flag: str = "--prior-path",
    ):
        super().__init__()
        dev = default_device(device)
        self.model_dtype = default_dtype(dtype, dev)
        self.path = snapshot_folder(path, self.default_repo, self.components, self.what, flag)
        ac, pred, cfg = load_scheduler(self.path, self.what)
        self.register_buffer("alphas_cumprod", ac, persistent=False)
        self.prediction_type = pred
        self.scheduler_config = cfg
        self.lora_rank = int(lora_rank)
        self.camera_dim = int(camera_dim)  # the camera MLP width a clone gets (0: none)
        self._clone_camera_dim = 0  # >0 only on clones that have a camera MLP
        self._lora_params: list[nn.Parameter] = []
        self._cache: OrderedDict[tuple, dict[str, Tensor]] = OrderedDict()
        self._load()
        for m in self.children():
            m.eval()
            m.requires_grad_(False)
        self.to(dev)

    def _load(self) -> None:
        """Load the networks from ``self.path`` (subclass hook)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    def train(self, mode: bool = True) -> DiffusersPrior:
        """Only the flag changes: the pretrained networks (shared with clones) stay in eval mode."""
        self.training = mode
        return self

    def _run_unet(self, sample: Tensor, t: int | Tensor, context: Tensor, cond: Condition, **unet_kwargs) -> Tensor:
        """Raw UNet output in the UNet's dtype (callers cast back); on clones with a camera MLP the
        condition's ``"camera"`` [B, camera_dim] (absent: zeros, the "no camera" input) goes in too.
        ``unet_kwargs`` (e.g. ControlNet residuals, already in the UNet's dtype) pass through."""
        b = sample.shape[0]
        dtype = self.unet.dtype
        kwargs = dict(unet_kwargs)
        if self._clone_camera_dim:
            cam = cond.tensors.get("camera")
            if cam is None:
                cam = torch.zeros(b, self._clone_camera_dim, device=sample.device)
            cam = cam.reshape(cam.shape[0], -1).float()
            if cam.shape[1] != self._clone_camera_dim:
                raise ValueError(
                    f"camera condition has {cam.shape[1]} values, the clone expects {self._clone_camera_dim}"
                )
            kwargs["class_labels"] = cam.expand(b, -1) if cam.shape[0] == 1 else cam
        t = torch.as_tensor(t, device=sample.device)
        if t.dim() == 0 or t.numel() == 1:
            t = t.reshape(1).expand(b)
        return self.unet(sample.to(dtype), t, encoder_hidden_states=context.to(dtype), **kwargs).sample

    def _cached(self, key: tuple, fn) -> dict[str, Tensor]:
        """``fn()`` memoised under ``key`` (the 64 most recent embeddings)."""
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        val = fn()
        self._cache[key] = val
        while len(self._cache) > 64:
            self._cache.popitem(last=False)
        return val

    # -- fine-tuned copies
    def trainable_parameters(self) -> list[nn.Parameter]:
        """The LoRA factors (+ camera MLP) of a clone; empty for the frozen pretrained prior."""
        return list(self._lora_params)

    def clone_trainable(self, lora_rank: int | None = None, camera_dim: int | None = None) -> DiffusersPrior:
        """A LoRA copy sharing every pretrained tensor with this prior (see :mod:`.lora`); VAE and
        text/image encoders are the same objects in both.

        ``lora_rank`` (default ``self.lora_rank``); ``camera_dim`` (default ``self.camera_dim``):
        width of the camera input of the camera MLP added to the timestep embedding, 0 for none.
        """
        if self._lora_params:
            raise ValueError("clone_trainable() is called on the pretrained prior, not on a LoRA clone")
        cam_dim = int(self.camera_dim if camera_dim is None else camera_dim)
        unet, params = lora_unet(self.unet, int(lora_rank or self.lora_rank), cam_dim, self.what)
        clone = shallow_module_copy(self)
        clone.unet = unet
        clone._lora_params = params
        clone._clone_camera_dim = cam_dim
        return clone

    def lora_state_dict(self) -> dict[str, Tensor]:
        """The clone's trainable tensors by name (LoRA factors + camera MLP), for checkpoints."""
        ids = {id(p) for p in self._lora_params}
        return {n: p.detach() for n, p in self.unet.named_parameters() if id(p) in ids}

    def load_lora_state_dict(self, state: dict[str, Tensor]) -> None:
        ids = {id(p) for p in self._lora_params}
        copy_named_({n: p for n, p in self.unet.named_parameters() if id(p) in ids}, state)


def copy_named_(named: dict[str, Tensor], state: dict[str, Tensor]) -> None:
    """Copy ``state[name]`` into each tensor of ``named`` in place (a LoRA clone's checkpoint);
    KeyError naming the first missing names."""
    missing = set(named) - set(state)
    if missing:
        raise KeyError(f"LoRA state lacks {sorted(missing)[:3]} ...")
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(state[n])


class TextCFGMixin:
    """What the text priors share: the CFG null condition (the empty prompt and, if ``like`` has a
    camera (VSD clones), a zero camera) and the text encoder's release. Subclasses embed prompts
    with :meth:`_text_encoder_or_raise` inside ``self._cached``."""

    text_encoder: nn.Module | None

    def release_text_encoder(self) -> None:
        """Drop the text encoder (T5-XXL: ~9.5 GB in fp16); cached prompt embeddings stay usable."""
        self.text_encoder = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _text_encoder_or_raise(self) -> nn.Module:
        if self.text_encoder is None:
            raise ValueError(
                f"{self.what}: the text encoder was released (or not loaded); embed every prompt first "
                "or pass text_embeddings="
            )
        return self.text_encoder

    def unconditional(self, like: Condition) -> Condition:
        tensors = {"text": self._embed_text([""])}
        if "camera" in like.tensors:
            tensors["camera"] = torch.zeros_like(like.tensors["camera"])
        return Condition(tensors)


class LatentVAEMixin:
    """encode/decode through an AutoencoderKL ``self.vae``. ``encode_mode``: ``"sample"`` or
    ``"mean"`` of the posterior; ``default_camera_dim``: the camera MLP width of LoRA clones."""

    default_camera_dim = 0
    vae: nn.Module
    encode_mode: str = "sample"

    def __init__(
        self,
        path=None,
        dtype=None,
        device=None,
        *,
        encode_mode: str = "sample",
        lora_rank: int = 4,
        camera_dim: int | None = None,
        flag: str = "--prior-path",
    ):
        if encode_mode not in ("sample", "mean"):
            raise ValueError("encode_mode must be 'sample' or 'mean'")
        self.encode_mode = encode_mode
        camera_dim = self.default_camera_dim if camera_dim is None else camera_dim
        super().__init__(path, dtype, device, lora_rank=lora_rank, camera_dim=camera_dim, flag=flag)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def _vae_encode(self, img: Tensor, mode: str) -> Tensor:
        """[B,3,H,W] in [0,1] (resized to ``image_size``) -> unscaled VAE latent ("sample" or "mean")."""
        x = resize_square(img, self.image_size) * 2.0 - 1.0
        dist = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        return dist.sample() if mode == "sample" else dist.mean

    def encode(self, img: Tensor) -> Tensor:
        """[B,3,H,W] in [0,1] -> scaled latents [B,4,h,w], differentiable in ``img``."""
        lat = self._vae_encode(img, self.encode_mode).float()
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return ((lat - shift) * self.vae.config.scaling_factor).to(img.dtype)

    def decode(self, lat: Tensor) -> Tensor:
        """Scaled latents [B,4,h,w] -> [B,3,H,W] in [0,1]."""
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        z = lat.float() / self.vae.config.scaling_factor + shift
        img = self.vae.decode(z.to(self.vae.dtype)).sample.float()
        return ((img + 1.0) * 0.5).clamp(0.0, 1.0).to(lat.dtype)


__all__ = ["DiffusersPrior", "LatentVAEMixin", "TextCFGMixin", "resize_square"]
