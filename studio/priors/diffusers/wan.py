"""Wan2.2 TI2V (the video backbone FlashWorld builds on) as a :class:`MultiViewPrior`: the ``V``
views of one scene are the ``V`` latent frames of a short video.

Snapshot (the diffusers layout of ``Wan-AI/Wan2.2-TI2V-5B-Diffusers``), loaded only from a local
folder or the local Hugging Face cache (``local_files_only=True``, :mod:`.loading`):

* ``transformer/``: ``WanTransformer3DModel`` (patch ``(1,2,2)``, in/out channels = VAE ``z_dim``);
* ``vae/``: ``AutoencoderKLWan`` (TI2V: ``z_dim`` 48, 16x spatial compression, ``latents_mean`` /
  ``latents_std`` per channel);
* ``text_encoder/`` (``UMT5EncoderModel``) and ``tokenizer/``;
* ``scheduler/``: the UniPC / FlowMatch config; only ``num_train_timesteps``, ``prediction_type``
  (must be ``flow_prediction`` or absent) and ``flow_shift`` (or ``shift``) are read.

Noise schedule (:mod:`studio.priors.schedule`, ``"flow"``): integer t in {0..T-1}, sigma
s = (t+1)/T, x_t = (1-s) x_0 + s eps, network output u = eps - x_0 (Wan's ``flow_prediction``).
The transformer gets the timestep s * T, as diffusers' flow schedulers pass ``sigma *
num_train_timesteps``. ``predict`` never shifts sigma: ``flow_shift`` (5.0 for TI2V-5B) is the
official *sampler's* warp of its sigma grid, s' = shift s / (1 + (shift - 1) s), kept in
``self.flow_shift`` and used by :meth:`shifted_timesteps` for samplers that want Wan's grid.

Shapes and units (ours unless said otherwise):

* model space ``[B,V,C,h,w]``: C = VAE ``z_dim``, h = w = ``image_size / f`` (f the VAE's spatial
  compression), values ``(z - latents_mean) / latents_std`` (the official normalisation);
* ``predict``: ``[B,V,C,h,w]`` -> ``[B,C,V,h,w]`` (the transformer's ``hidden_states``, views as
  latent frames) -> output permuted back to ``[B,V,C,h,w]``, dtype of ``x_t``;
* ``encode``: ``[B,V,3,H,W]`` in [0,1] (resized to ``image_size``) -> each view through the Wan
  VAE as its own one-frame video (one frame -> one latent frame). *Deviation*: the official model
  packs 4 video frames into one latent frame (after the first); we keep one latent per view so
  every view has its own camera. ``decode`` is the inverse, to [0,1];
* camera (ours; FlashWorld likewise adds Plücker rays to the video backbone's input tokens, the
  exact layer is ours): ``condition(pose=[B,V,6,H,W])`` (:func:`~studio.priors.multiview.mv_pose`
  raymaps in view 0's frame) -> in ``predict`` resized to ``h x w`` (area), permuted to
  ``[B,6,V,h,w]`` and embedded by ``camera_embedding``, a zero-initialised float32
  ``Conv3d(6, inner_dim, kernel=stride=patch_size)`` whose output ``[B,inner_dim,V,h/2,w/2]`` is
  added to ``transformer.patch_embedding``'s output through a forward hook held only during the
  call. A freshly loaded prior therefore predicts exactly as the video model until the embedding
  is trained; ``trainable_parameters()`` returns it (plus the LoRA factors of a clone);
* image (image-to-3D): ``condition(image=[B,3,H,W])`` -> the posterior mean latent of the clean
  view 0 ``[B,C,h,w]``; ``predict`` writes it into view 0 of the input (the official TI2V
  ``expand_timesteps`` recipe: ``(1 - mask) * condition + mask * latents``), so view 0 of ``x_t``
  never affects the output. With ``reference_timestep="zero"`` (default) view 0's tokens get
  timestep 0, as the official TI2V pipeline does (per-token timesteps [B, V*h/2*w/2]);
  ``"t"`` keeps the given t on every view. View 0's prediction is meaningless either way
  (:func:`~studio.priors.multiview.generated_views`);
* text: UMT5 embeddings ``[B,L,D]`` (L = ``max_text_length``, 512 officially), zeroed after each
  prompt's tokens (as the official pipeline); "" is the unconditional caption. ``unconditional``
  keeps ``like``'s image and pose (only the caption is dropped, as Wan's CFG).

dtype: the transformer and text encoder in float16 on CUDA, float32 on CPU (as the other adapters;
Wan was trained in bfloat16, pass ``dtype="bf16"`` to match); the VAE in float32 unless
``vae_dtype`` is given (the diffusers Wan2.2 examples load it in float32); the camera embedding and
LoRA factors always float32. ``alphas_cumprod`` (float32 [T]) holds the variance-preserving abar of
the same signal-to-noise ratio, ``(1-s)^2 / ((1-s)^2 + s^2)``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.io.errors import StudioInputError
from studio.priors.base import Condition
from studio.priors.diffusers.base import copy_named_, resize_square
from studio.priors.diffusers.loading import (
    default_device,
    default_dtype,
    load_component,
    load_tokenizer,
    read_scheduler_config,
    snapshot_folder,
)
from studio.priors.multiview import MultiViewPrior

REFERENCE_TIMESTEPS = ("zero", "t")


def load_flow_schedule(folder: Path, what: str) -> tuple[int, float, dict]:
    """(num_train_timesteps, flow_shift, raw config) of ``scheduler/scheduler_config.json``;
    one StudioInputError line when it is missing, unreadable or not a flow-matching schedule."""
    cfg = read_scheduler_config(folder, what)
    pred = cfg.get("prediction_type", "flow_prediction")
    if pred != "flow_prediction":
        raise StudioInputError(
            f"{what}: scheduler prediction_type '{pred}' is not flow matching (expected 'flow_prediction')"
        )
    shift = cfg.get("flow_shift", cfg.get("shift", 1.0))
    return int(cfg.get("num_train_timesteps", 1000)), float(shift if shift is not None else 1.0), cfg


def flow_alphas_cumprod(num_train_timesteps: int) -> Tensor:
    """abar [T] of the rectified-flow schedule s = (t+1)/T (same SNR; see :mod:`studio.priors.schedule`)."""
    s = torch.arange(1, num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    return ((1 - s) ** 2 / ((1 - s) ** 2 + s**2)).float()


class WanMultiViewPrior(MultiViewPrior):
    """Wan2.2 TI2V (default ``Wan-AI/Wan2.2-TI2V-5B-Diffusers``) as a multi-view flow prior; see
    the module docstring for shapes, units and what follows the official model.

    ``path``: a local snapshot folder or a repo id already in the Hugging Face cache (None: the
    default repo); ``dtype``/``device``: of the transformer and text encoder (defaults: fp16 on
    CUDA, fp32 on CPU); ``vae_dtype``: default float32; ``image_size``: square pixel size views
    are resized to (a multiple of ``f * 2``; 704 is TI2V's 720p height); ``n_views``: the ``V`` of
    ``latent_shape``; ``encode_mode``: "sample" or "mean" of the VAE posterior;
    ``reference_timestep``: "zero" (official TI2V) or "t" for view 0 with an image condition;
    ``max_text_length``: UMT5 tokens (512 officially); ``load_text_encoder=False`` skips UMT5
    (then pass ``text_embeddings=`` to :meth:`condition`); ``lora_rank``: of
    :meth:`clone_trainable`; ``flag``: the option missing-weight errors name.
    """

    what = "Wan2.2 TI2V-5B"
    default_repo = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    components = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
    prediction_type = "flow"

    def __init__(
        self,
        path: str | Path | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        *,
        vae_dtype: torch.dtype | str | None = torch.float32,
        image_size: int = 704,
        n_views: int = 4,
        encode_mode: str = "sample",
        reference_timestep: str = "zero",
        max_text_length: int = 512,
        load_text_encoder: bool = True,
        lora_rank: int = 4,
        flag: str = "--prior-path",
    ):
        super().__init__()
        if encode_mode not in ("sample", "mean"):
            raise ValueError("encode_mode must be 'sample' or 'mean'")
        if reference_timestep not in REFERENCE_TIMESTEPS:
            raise ValueError(f"reference_timestep must be one of {REFERENCE_TIMESTEPS}")
        dev = default_device(device)
        self.model_dtype = default_dtype(dtype, dev)
        self.vae_dtype = default_dtype(vae_dtype, dev)
        self.encode_mode = encode_mode
        self.reference_timestep = reference_timestep
        self.max_text_length = int(max_text_length)
        self.lora_rank = int(lora_rank)
        self.n_views = int(n_views)
        comps = self.components if load_text_encoder else ("transformer", "vae", "scheduler")
        self.path = snapshot_folder(path, self.default_repo, comps, self.what, flag)
        T, self.flow_shift, self.scheduler_config = load_flow_schedule(self.path, self.what)
        self.register_buffer("alphas_cumprod", flow_alphas_cumprod(T), persistent=False)
        self._lora_params: list[nn.Parameter] = []
        self._cache: OrderedDict[tuple, Tensor] = OrderedDict()
        self._load(load_text_encoder)
        for m in (self.transformer, self.vae, self.text_encoder):
            if m is not None:
                m.eval()
                m.requires_grad_(False)
        f = self.vae_scale_factor
        if int(image_size) % (f * self.patch_size[1]) or int(image_size) % (f * self.patch_size[2]):
            raise ValueError(f"image_size {image_size} must be a multiple of {f * max(self.patch_size[1:])}")
        self.image_size = int(image_size)
        self.latent_shape = (self.n_views, self.latent_channels, self.image_size // f, self.image_size // f)
        self.to(dev)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, **kwargs) -> WanMultiViewPrior:
        """The constructor under the diffusers name (offline: local folder or HF cache only)."""
        return cls(path, **kwargs)

    def _load(self, load_text_encoder: bool) -> None:
        from diffusers import AutoencoderKLWan, WanTransformer3DModel

        p, what = self.path, self.what
        self.transformer = load_component(WanTransformer3DModel, p, "transformer", what, self.model_dtype)
        self.vae = load_component(AutoencoderKLWan, p, "vae", what, self.vae_dtype)
        self.text_encoder = None
        self.tokenizer = None
        if load_text_encoder:
            from transformers import UMT5EncoderModel

            self.text_encoder = load_component(UMT5EncoderModel, p, "text_encoder", what, self.model_dtype)
            self.tokenizer = load_tokenizer(p, "tokenizer", what)
        tcfg, vcfg = self.transformer.config, self.vae.config
        self.patch_size = tuple(int(x) for x in tcfg.patch_size)
        if self.patch_size[0] != 1:
            raise StudioInputError(
                f"{what}: transformer/ patch_size {self.patch_size} must be 1 in time (views are frames)"
            )
        z = int(vcfg.z_dim)
        if int(tcfg.in_channels) != z or int(tcfg.out_channels or z) != z:
            raise StudioInputError(
                f"{what}: transformer/ has {tcfg.in_channels} input channels but vae/ z_dim is {z}; "
                "is this a Wan2.2 TI2V snapshot?"
            )
        if self.text_encoder is not None and int(self.text_encoder.config.d_model) != int(tcfg.text_dim):
            raise StudioInputError(
                f"{what}: text_encoder/ width {self.text_encoder.config.d_model} != transformer text_dim {tcfg.text_dim}"
            )
        self.latent_channels = z
        self.register_buffer("latents_mean", torch.tensor(vcfg.latents_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("latents_std", torch.tensor(vcfg.latents_std, dtype=torch.float32), persistent=False)
        if self.latents_mean.numel() != z or self.latents_std.numel() != z:
            raise StudioInputError(f"{what}: vae/ latents_mean/latents_std must have z_dim={z} entries")
        inner = int(tcfg.num_attention_heads) * int(tcfg.attention_head_dim)
        self.camera_embedding = nn.Conv3d(6, inner, kernel_size=self.patch_size, stride=self.patch_size)
        nn.init.zeros_(self.camera_embedding.weight)
        nn.init.zeros_(self.camera_embedding.bias)

    # ---- bookkeeping -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell (``scale_factor_spatial`` of the VAE config: 16 for TI2V)."""
        f = getattr(self.vae.config, "scale_factor_spatial", None)
        if f is None:
            f = 2 ** sum(1 for _ in self.vae.config.temperal_downsample) * int(self.vae.config.patch_size or 1)
        return int(f)

    def train(self, mode: bool = True) -> WanMultiViewPrior:
        """Only the flag changes: the pretrained networks (shared with clones) stay in eval mode."""
        self.training = mode
        return self

    def shifted_timesteps(self, num_steps: int) -> Tensor:
        """``num_steps`` integer timesteps [num_steps], high to low noise, on the official sampler's
        shifted sigma grid (s linear from 1 to 1/num_steps, then s' = shift s / (1 + (shift-1) s))."""
        T = self.num_train_timesteps
        s = torch.linspace(1.0, 1.0 / num_steps, num_steps, dtype=torch.float64)
        s = self.flow_shift * s / (1.0 + (self.flow_shift - 1.0) * s)
        return (s * T).round().long().sub(1).clamp(0, T - 1)

    # ---- model space -----------------------------------------------------------------------
    def _views(self, x: Tensor, name: str) -> tuple[Tensor, bool]:
        if x.dim() == 4:  # one view
            return x[:, None], True
        if x.dim() != 5:
            raise ValueError(f"{name} must be [B,V,C,H,W], got {tuple(x.shape)}")
        return x, False

    def _vae_encode(self, img: Tensor, mode: str) -> Tensor:
        """[B,V,3,H,W] in [0,1] -> normalised latents [B,V,C,h,w] (float32)."""
        b, v = img.shape[:2]
        x = resize_square(img.flatten(0, 1), self.image_size) * 2.0 - 1.0
        dist = self.vae.encode(x[:, :, None].to(self.vae.dtype)).latent_dist
        lat = (dist.sample() if mode == "sample" else dist.mean)[:, :, 0].float()
        lat = (lat - self.latents_mean.view(1, -1, 1, 1)) / self.latents_std.view(1, -1, 1, 1)
        return lat.unflatten(0, (b, v))

    def encode(self, img: Tensor) -> Tensor:
        """[B,V,3,H,W] in [0,1] -> [B,V,C,h,w] (each view its own one-frame video), differentiable
        in ``img``; [B,3,H,W] gives [B,C,h,w]."""
        x, single = self._views(img, "img")
        lat = self._vae_encode(x, self.encode_mode).to(img.dtype)
        return lat[:, 0] if single else lat

    def decode(self, lat: Tensor) -> Tensor:
        """[B,V,C,h,w] -> [B,V,3,H,W] in [0,1] ([B,C,h,w] gives [B,3,H,W])."""
        z, single = self._views(lat, "lat")
        b, v = z.shape[:2]
        z = z.flatten(0, 1).float() * self.latents_std.view(1, -1, 1, 1) + self.latents_mean.view(1, -1, 1, 1)
        img = self.vae.decode(z[:, :, None].to(self.vae.dtype)).sample[:, :, 0].float()
        img = ((img + 1.0) * 0.5).clamp(0.0, 1.0).unflatten(0, (b, v)).to(lat.dtype)
        return img[:, 0] if single else img

    # ---- conditions ------------------------------------------------------------------------
    @torch.no_grad()
    def _embed_text(self, texts: list[str]) -> Tensor:
        """UMT5 embeddings [n, max_text_length, D], zero after each prompt's tokens (official)."""
        key = ("text",) + tuple(texts)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError(f"{self.what}: the text encoder is not loaded; pass text_embeddings= instead")
        tok = self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.max_text_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = tok.input_ids.to(self.device), tok.attention_mask.to(self.device)
        emb = self.text_encoder(ids, attention_mask=mask).last_hidden_state
        emb = emb * mask[..., None].to(emb.dtype)
        self._cache[key] = emb
        while len(self._cache) > 64:
            self._cache.popitem(last=False)
        return emb

    def release_text_encoder(self) -> None:
        """Drop UMT5 (about 5.7B parameters; cached prompt embeddings stay usable)."""
        self.text_encoder = None

    @torch.no_grad()
    def condition(
        self,
        text: str | list[str] | None = None,
        image: Tensor | None = None,
        pose: Tensor | None = None,
        *,
        text_embeddings: Tensor | None = None,
    ) -> Condition:
        """``{"text": [B,L,D]}`` (None: the empty caption) + ``"image"``: [B,C,h,w] latent mean of
        the clean view 0 ``image`` [B,3,H,W] in [0,1] + ``"pose"``: raymaps [B,V,6,H,W] float32."""
        if text_embeddings is not None:
            tensors = {"text": text_embeddings.to(self.device)}
        else:
            text = "" if text is None else text
            tensors = {"text": self._embed_text([text] if isinstance(text, str) else list(text))}
        if image is not None:
            if image.dim() == 3:
                image = image[None]
            if image.dim() != 4 or image.shape[1] != 3:
                raise ValueError(f"image must be the clean view 0 [B,3,H,W] in [0,1], got {tuple(image.shape)}")
            img = image.to(self.device, torch.float32).clamp(0.0, 1.0)
            tensors["image"] = self._vae_encode(img[:, None], "mean")[:, 0]
        if pose is not None:
            pose = torch.as_tensor(pose, device=self.device, dtype=torch.float32)
            if pose.dim() != 5 or pose.shape[2] != 6:
                raise ValueError(f"pose must be Plücker raymaps [B,V,6,H,W] (mv_pose), got {tuple(pose.shape)}")
            tensors["pose"] = pose
        return Condition(tensors)

    def unconditional(self, like: Condition) -> Condition:
        """The empty caption; ``like``'s image and pose are kept (Wan's CFG drops only the text)."""
        tensors = {k: v for k, v in like.tensors.items() if k != "text"}
        if self.text_encoder is None and ("text", "") not in self._cache and "text" in like.tensors:
            tensors["text"] = torch.zeros_like(like.tensors["text"][:1])  # no UMT5: an all-masked caption (ours)
        else:
            tensors["text"] = self._embed_text([""])
        return Condition(tensors)

    # ---- the network -----------------------------------------------------------------------
    def _camera_tokens(self, pose: Tensor, b: int, v: int, h: int, w: int) -> Tensor:
        """Raymaps [B,V,6,H,W] -> camera embedding [B,inner_dim,V,h/p,w/p] (float32)."""
        if pose.shape[1] != v:
            raise ValueError(f"pose has {pose.shape[1]} views, x_t has {v}")
        ray = pose.flatten(0, 1).float()
        if ray.shape[-2:] != (h, w):
            if ray.shape[-2] >= h and ray.shape[-1] >= w:
                ray = F.interpolate(ray, (h, w), mode="area")
            else:
                ray = F.interpolate(ray, (h, w), mode="bilinear", align_corners=False)
        ray = ray.unflatten(0, (b, v)).permute(0, 2, 1, 3, 4)  # [B,6,V,h,w]
        return self.camera_embedding(ray.to(self.camera_embedding.weight.dtype))

    def predict(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        """Velocity u = eps - x_0 [B,V,C,h,w] at integer timesteps ``t`` [B] (see the module docs)."""
        if x_t.dim() != 5:
            raise ValueError(f"x_t must be [B,V,C,h,w], got {tuple(x_t.shape)}")
        b, v, c, h, w = x_t.shape
        cond = cond.expand(b)
        x = x_t
        ref = cond.tensors.get("image")
        if ref is not None:
            x = torch.cat([ref[:, None].to(x_t), x_t[:, 1:]], dim=1)
        dtype = self.transformer.patch_embedding.weight.dtype
        hidden = x.permute(0, 2, 1, 3, 4).to(dtype)  # [B,C,V,h,w]: views as latent frames

        t = torch.as_tensor(t, device=x_t.device).reshape(-1)
        t = t.expand(b) if t.numel() == 1 else t
        sigma = (t.float() + 1.0) / self.num_train_timesteps  # studio.priors.schedule's "flow" s_t
        timestep = sigma * self.num_train_timesteps  # what diffusers' flow schedulers pass to Wan
        if ref is not None and self.reference_timestep == "zero":
            per_view = (h // self.patch_size[1]) * (w // self.patch_size[2])
            timestep = timestep[:, None].repeat(1, v * per_view)
            timestep[:, :per_view] = 0.0  # official TI2V: the clean first frame at timestep 0

        handle = None
        if "pose" in cond.tensors:
            cam = self._camera_tokens(cond.tensors["pose"].to(x_t.device), b, v, h, w)
            handle = self.transformer.patch_embedding.register_forward_hook(
                lambda _mod, _inp, out: out + cam.to(out.dtype)
            )
        try:
            out = self.transformer(
                hidden,
                timestep,
                encoder_hidden_states=cond.tensors["text"].to(x_t.device, dtype),
                return_dict=False,
            )[0]
        finally:
            if handle is not None:
                handle.remove()
        return out.permute(0, 2, 1, 3, 4).to(x_t.dtype)

    # ---- fine-tuned copies -----------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        """The camera embedding (+ the LoRA factors of a clone)."""
        return list(self.camera_embedding.parameters()) + list(self._lora_params)

    def clone_trainable(self, lora_rank: int | None = None) -> WanMultiViewPrior:
        """A copy with LoRA (rank ``lora_rank``, default ``self.lora_rank``) on the attention
        projections of a transformer that shares every pretrained tensor with this prior, and its
        own float32 copy of the camera embedding; VAE and text encoder are the same objects."""
        from studio.priors.diffusers.lora import lora_unet, shallow_module_copy

        if self._lora_params:
            raise ValueError("clone_trainable() is called on the pretrained prior, not on a LoRA clone")
        transformer, params = lora_unet(self.transformer, int(lora_rank or self.lora_rank), 0, self.what)
        clone = shallow_module_copy(self)
        clone.transformer = transformer
        clone.camera_embedding = copy.deepcopy(self.camera_embedding).float()
        clone.camera_embedding.requires_grad_(True)
        clone._lora_params = params
        return clone

    def lora_state_dict(self) -> dict[str, Tensor]:
        """The trainable tensors by name (``camera_embedding.*`` and ``transformer.*lora*``)."""
        ids = {id(p) for p in self._lora_params}
        out = {f"camera_embedding.{n}": p.detach() for n, p in self.camera_embedding.named_parameters()}
        out.update({f"transformer.{n}": p.detach() for n, p in self.transformer.named_parameters() if id(p) in ids})
        return out

    def load_lora_state_dict(self, state: dict[str, Tensor]) -> None:
        ids = {id(p) for p in self._lora_params}
        named = {f"camera_embedding.{n}": p for n, p in self.camera_embedding.named_parameters()}
        named.update({f"transformer.{n}": p for n, p in self.transformer.named_parameters() if id(p) in ids})
        copy_named_(named, state)


__all__ = ["REFERENCE_TIMESTEPS", "WanMultiViewPrior", "flow_alphas_cumprod", "load_flow_schedule"]
