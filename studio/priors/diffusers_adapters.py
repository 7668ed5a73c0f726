"""Pretrained diffusers models behind the :class:`~studio.priors.base.DiffusionPrior` interface.

* :class:`StableDiffusionPrior`: Stable Diffusion (2.1-base by default), VAE latent space.
* :class:`DeepFloydIFPrior`: DeepFloyd IF stage I, 64x64 pixel space, T5 text encoder.
* :class:`Zero123Prior`: Zero-1-to-3 / Stable Zero123 in the diffusers community-pipeline layout
  (``pipeline_zero1to3.py``), image + relative-pose conditioned, VAE latent space.

Loading follows the offline rule: ``path`` is a local diffusers snapshot folder or a Hugging Face
repo id already in the local cache (see :mod:`studio.priors.pretrained`); every ``from_pretrained``
runs with ``local_files_only=True``; a missing folder or component raises one
:class:`~studio.io.errors.StudioInputError`. Default dtype: float16 on CUDA, float32 on CPU.
``alphas_cumprod`` is always float32, and ``predict`` returns the dtype of ``x_t`` (inputs are cast
to the network's dtype and back).

The scheduler is data: only ``scheduler/scheduler_config.json`` is read (betas ->
``alphas_cumprod``, ``prediction_type`` "epsilon" -> "eps", "v_prediction" -> "v").

LoRA copies (``clone_trainable``), for VSD's fake score and BSD's fine-tuned prior
-----------------------------------------------------------------------------------------
The clone does **not** copy any weight tensor. Its UNet is a structural copy of the teacher's UNet
(new ``nn.Module`` objects) whose parameters and buffers *are* the teacher's tensors (shared
storage, frozen); peft LoRA adapters (rank ``lora_rank``, default 4, on ``to_q``, ``to_k``,
``to_v``, ``to_out.0`` of every attention layer) are injected into that copy only, so the
teacher's own modules are untouched and keep predicting exactly as before. VAE and text/image
encoders are the same objects in both. Extra memory: the LoRA factors (float32; about 0.8M
parameters for SD 2.1 at rank 4) plus, when ``camera_dim > 0``, a camera MLP
``Linear(camera_dim, E) -> SiLU -> Linear(E, E)`` (E = the UNet's time-embedding width, 1280 for
SD: about 1.7M parameters) installed as the copy's ``class_embedding``, so the camera embedding is
added to the timestep embedding as in ProlificDreamer. LoRA ``B`` and the MLP's last layer start at
zero, so a fresh clone predicts exactly what the teacher predicts. The camera is read from the
condition field ``"camera"`` ([B,16], e.g. a flattened 4x4 camera-to-world); absent -> zeros (the
"no camera" input used for CFG and camera dropout).
"""

from __future__ import annotations

import copy
import itertools
import json
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.io.errors import StudioInputError
from studio.priors.base import Condition, DiffusionPrior
from studio.priors.pretrained import require_components, resolve_pretrained

__all__ = [
    "DiffusersPrior",
    "StableDiffusionPrior",
    "DeepFloydIFPrior",
    "Zero123Prior",
    "zero123_pose",
    "LORA_TARGET_MODULES",
    "CameraEmbedding",
]

LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
_PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v"}
# OpenAI CLIP image normalisation (used when feature_extractor/ has no preprocessor config)
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ---- loading helpers -------------------------------------------------------------------------
def _default_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _default_dtype(dtype, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        dtype = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
                 "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}[dtype]
    return dtype


def _dtype_kwarg(cls) -> str:
    """``torch_dtype`` for diffusers models and old transformers, ``dtype`` for transformers >= 4.56."""
    try:
        import transformers

        if issubclass(cls, transformers.PreTrainedModel):
            major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
            return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    except ImportError:  # pragma: no cover
        pass
    return "torch_dtype"


def _load_component(cls, folder: Path, sub: str, what: str, dtype: Optional[torch.dtype] = None):
    """``cls.from_pretrained(folder/sub, local_files_only=True)``, trying the fp16 variant files too;
    any failure becomes one StudioInputError naming the component."""
    d = folder / sub
    variants: List[Optional[str]] = [None]
    if any(".fp16." in f.name for f in d.iterdir()):
        variants.append("fp16")
    err: Optional[BaseException] = None
    for variant in variants:
        kwargs = {"local_files_only": True}
        if variant:
            kwargs["variant"] = variant
        if dtype is not None:
            kwargs[_dtype_kwarg(cls)] = dtype
        try:
            return cls.from_pretrained(str(d), **kwargs)
        except (OSError, ValueError, RuntimeError, KeyError) as e:  # missing/corrupt files
            err = err or e
    first = str(err).strip().splitlines()[0] if err and str(err).strip() else type(err).__name__
    raise StudioInputError(f"{what}: could not load '{sub}/' from '{folder}' ({first})")


def _load_tokenizer(folder: Path, sub: str, what: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder / sub), local_files_only=True)
    except ImportError as e:  # e.g. a sentencepiece-only T5 tokenizer without sentencepiece
        raise ImportError(f"{what}: loading '{sub}/' needs an extra package ({e}); pip install sentencepiece protobuf") from e
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StudioInputError(f"{what}: could not load '{sub}/' from '{folder}' ({first})") from e


def _scheduler_data(folder: Path, what: str) -> tuple[Tensor, str, dict]:
    """(alphas_cumprod float32 [T], prediction type, the raw config) from scheduler/."""
    from diffusers import DDPMScheduler

    cfg_file = folder / "scheduler" / "scheduler_config.json"
    if not cfg_file.is_file():
        raise StudioInputError(f"{what}: '{cfg_file}' is missing (the scheduler config holds the noise schedule)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise StudioInputError(f"{what}: '{cfg_file}' is not valid JSON ({e})") from e
    pred = cfg.get("prediction_type", "epsilon")
    if pred not in _PREDICTION_TYPES:
        raise StudioInputError(f"{what}: scheduler prediction_type '{pred}' is not supported (epsilon or v_prediction)")
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "rescale_betas_zero_snr")
    sched = DDPMScheduler(**{k: cfg[k] for k in keys if k in cfg})
    return sched.alphas_cumprod.detach().clone().float(), _PREDICTION_TYPES[pred], cfg


def _load_state_dict(d: Path) -> Dict[str, Tensor]:
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.fp16.safetensors"):
        if (d / name).is_file():
            from safetensors.torch import load_file

            return load_file(str(d / name))
    for name in ("diffusion_pytorch_model.bin", "pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"):
        if (d / name).is_file():
            return torch.load(str(d / name), map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no weights file in '{d}'")


# ---- LoRA / camera helpers -------------------------------------------------------------------
class CameraEmbedding(nn.Module):
    """Camera [B, camera_dim] -> [B, E], added to the UNet's timestep embedding (ProlificDreamer).

    Kept in float32 whatever the UNet's dtype (the UNet casts the result to its own dtype). The
    last layer starts at zero so the embedding is initially 0."""

    def __init__(self, camera_dim: int, embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(camera_dim, embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(embed_dim, embed_dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, cam: Tensor) -> Tensor:
        cam = cam.reshape(cam.shape[0], -1).to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(cam)))


def _share_weights_copy(module: nn.Module) -> nn.Module:
    """New module objects whose parameters and buffers are the same tensors as ``module``'s."""
    memo = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, memo)


def _shallow_module_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` sharing its children, whose child/parameter/buffer tables are its own
    (so assigning a child on the copy leaves the original alone)."""
    new = copy.copy(module)
    new._modules = OrderedDict(module._modules)
    new._parameters = OrderedDict(module._parameters)
    new._buffers = OrderedDict(module._buffers)
    return new


# ---- the common base -------------------------------------------------------------------------
class DiffusersPrior(DiffusionPrior):
    """What the three adapters share: loading, the scheduler data, the UNet call, LoRA clones.

    Subclasses set ``what`` (human name), ``default_repo`` and ``components`` (required
    sub-folders) and implement ``_load`` (the networks), ``predict`` and ``condition``.
    """

    what = "diffusion model"
    default_repo: Optional[str] = None
    components: Sequence[str] = ("unet", "scheduler")

    def __init__(
        self,
        path: Optional[Union[str, Path]] = None,
        dtype: Optional[Union[torch.dtype, str]] = None,
        device: Optional[Union[str, torch.device]] = None,
        *,
        lora_rank: int = 4,
        camera_dim: int = 0,
        flag: str = "--prior-path",
    ):
        super().__init__()
        name = path if path is not None else self.default_repo
        if name is None:
            raise StudioInputError(f"{self.what}: no weights given (pass a local folder with {flag})")
        dev = _default_device(device)
        self.model_dtype = _default_dtype(dtype, dev)
        self.path = resolve_pretrained(name, self.what, flag=flag)
        repo = None if Path(str(name)).expanduser().is_dir() else str(name)  # a repo id from the cache
        require_components(self.path, self.components, self.what, repo_id=repo, example_repo=self.default_repo)
        ac, pred, cfg = _scheduler_data(self.path, self.what)
        self.register_buffer("alphas_cumprod", ac, persistent=False)
        self.prediction_type = pred
        self.scheduler_config = cfg
        self.lora_rank = int(lora_rank)
        self.camera_dim = int(camera_dim)  # the camera MLP width a clone gets (0: none)
        self._clone_camera_dim = 0  # >0 only on clones that have a camera MLP
        self._lora_params: List[nn.Parameter] = []
        self._cache: "OrderedDict[tuple, Dict[str, Tensor]]" = OrderedDict()
        self._load()
        for m in self.children():
            m.eval()
            m.requires_grad_(False)
        self.to(dev)

    # -- subclass hooks
    def _load(self) -> None:
        raise NotImplementedError

    # -- common helpers
    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    def train(self, mode: bool = True) -> "DiffusersPrior":
        """Only the flag changes: the pretrained networks (shared with clones) stay in eval mode."""
        self.training = mode
        return self

    def _timesteps(self, t: Union[int, Tensor], batch: int, device) -> Tensor:
        t = torch.as_tensor(t, device=device)
        if t.dim() == 0 or t.numel() == 1:
            t = t.reshape(1).expand(batch)
        return t

    def _run_unet(self, sample: Tensor, t: Union[int, Tensor], context: Tensor, cond: Condition) -> Tensor:
        """Raw UNet output in the UNet's dtype (callers cast back); adds the camera on clones."""
        b = sample.shape[0]
        dtype = self.unet.dtype
        kwargs = {}
        if self._clone_camera_dim:
            cam = cond.tensors.get("camera")
            if cam is None:
                cam = torch.zeros(b, self._clone_camera_dim, device=sample.device)
            cam = cam.reshape(cam.shape[0], -1).float()
            if cam.shape[1] != self._clone_camera_dim:
                raise ValueError(f"camera condition has {cam.shape[1]} values, the clone expects {self._clone_camera_dim}")
            kwargs["class_labels"] = cam.expand(b, -1) if cam.shape[0] == 1 else cam
        out = self.unet(
            sample.to(dtype), self._timesteps(t, b, sample.device), encoder_hidden_states=context.to(dtype), **kwargs
        ).sample
        return out

    def _cached(self, key: tuple, fn) -> Dict[str, Tensor]:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        val = fn()
        self._cache[key] = val
        while len(self._cache) > 64:
            self._cache.popitem(last=False)
        return val

    @staticmethod
    def _camera_tensor(pose: Tensor) -> Tensor:
        """Camera condition for LoRA clones: [B,4,4] or [B,16] -> [B,16] float32."""
        pose = torch.as_tensor(pose)
        if pose.dim() == 2 and pose.shape == (4, 4):
            pose = pose[None]
        if pose.dim() == 1:
            pose = pose[None]
        return pose.reshape(pose.shape[0], -1).float()

    # -- fine-tuned copies
    def trainable_parameters(self) -> List[nn.Parameter]:
        """The LoRA factors (+ camera MLP) of a clone; empty for the frozen pretrained prior."""
        return list(self._lora_params)

    def clone_trainable(self, lora_rank: Optional[int] = None, camera_dim: Optional[int] = None) -> "DiffusersPrior":
        """A LoRA copy sharing every pretrained tensor with this prior (see the module docs).

        ``lora_rank`` (default ``self.lora_rank``); ``camera_dim`` (default ``self.camera_dim``):
        width of the camera input of the camera MLP added to the timestep embedding, 0 for none.
        """
        from peft import LoraConfig, inject_adapter_in_model

        if self._lora_params:
            raise ValueError("clone_trainable() is called on the pretrained prior, not on a LoRA clone")
        rank = int(lora_rank or self.lora_rank)
        cam_dim = int(self.camera_dim if camera_dim is None else camera_dim)
        unet = _share_weights_copy(self.unet)
        unet.requires_grad_(False)
        config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, init_lora_weights=True,
                            target_modules=list(LORA_TARGET_MODULES))
        inject_adapter_in_model(config, unet)
        params: List[nn.Parameter] = []
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.data = p.data.float()  # train the factors in float32 (peft casts activations)
                p.requires_grad_(True)
                params.append(p)
        if not params:
            raise ValueError(f"{self.what}: no attention projections {LORA_TARGET_MODULES} found for LoRA")
        if cam_dim > 0:
            if unet.class_embedding is not None:
                raise ValueError(f"{self.what}: the UNet already has a class embedding; camera_dim must be 0")
            embed_dim = unet.time_embedding.linear_2.out_features
            cam = CameraEmbedding(cam_dim, embed_dim).to(self.device)
            unet.class_embedding = cam
            for p in cam.parameters():
                p.requires_grad_(True)
                params.append(p)
        unet.eval()
        clone = _shallow_module_copy(self)
        clone.unet = unet
        clone._lora_params = params
        clone._clone_camera_dim = cam_dim
        return clone

    def lora_state_dict(self) -> Dict[str, Tensor]:
        """The clone's trainable tensors by name (LoRA factors + camera MLP), for checkpoints."""
        ids = {id(p) for p in self._lora_params}
        return {n: p.detach() for n, p in self.unet.named_parameters() if id(p) in ids}

    def load_lora_state_dict(self, state: Dict[str, Tensor]) -> None:
        ids = {id(p) for p in self._lora_params}
        named = {n: p for n, p in self.unet.named_parameters() if id(p) in ids}
        missing = set(named) - set(state)
        if missing:
            raise KeyError(f"LoRA state lacks {sorted(missing)[:3]} ...")
        with torch.no_grad():
            for n, p in named.items():
                p.copy_(state[n])


class _TextCFGMixin:
    """The CFG null condition of the text priors: the empty prompt and, if ``like`` has a camera
    (VSD clones), a zero camera."""

    def unconditional(self, like: Condition) -> Condition:
        tensors = {"text": self._embed_text([""])}
        if "camera" in like.tensors:
            tensors["camera"] = torch.zeros_like(like.tensors["camera"])
        return Condition(tensors)


class _LatentVAEMixin:
    """encode/decode through an AutoencoderKL (``self.vae``, ``self.encode_mode``: ``sample`` or
    ``mean`` of the posterior). ``default_camera_dim``: the camera MLP width of LoRA clones."""

    default_camera_dim = 0

    def __init__(self, path=None, dtype=None, device=None, *, encode_mode: str = "sample",
                 lora_rank: int = 4, camera_dim: Optional[int] = None, flag: str = "--prior-path"):
        if encode_mode not in ("sample", "mean"):
            raise ValueError("encode_mode must be 'sample' or 'mean'")
        self.encode_mode = encode_mode
        camera_dim = self.default_camera_dim if camera_dim is None else camera_dim
        super().__init__(path, dtype, device, lora_rank=lora_rank, camera_dim=camera_dim, flag=flag)

    vae: nn.Module
    encode_mode: str = "sample"

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def _resize(self, img: Tensor, size: int, mode: str = "bilinear") -> Tensor:
        if img.shape[-2:] == (size, size):
            return img
        down = img.shape[-1] > size or img.shape[-2] > size
        return F.interpolate(img, (size, size), mode=mode, align_corners=False, antialias=down)

    def _vae_encode(self, img: Tensor, mode: str) -> Tensor:
        """[B,3,H,W] in [0,1] -> unscaled VAE latent ("sample" or "mean")."""
        x = self._resize(img, self.image_size) * 2.0 - 1.0
        dist = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        return dist.sample() if mode == "sample" else dist.mean

    def encode(self, img: Tensor) -> Tensor:
        """[B,3,H,W] in [0,1] (resized to ``image_size`` if needed) -> scaled latents [B,4,h,w].
        Differentiable in ``img``; ``encode_mode`` "sample" (as SDS implementations do) or "mean"."""
        lat = self._vae_encode(img, self.encode_mode).float()
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return ((lat - shift) * self.vae.config.scaling_factor).to(img.dtype)

    def decode(self, lat: Tensor) -> Tensor:
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        z = lat.float() / self.vae.config.scaling_factor + shift
        img = self.vae.decode(z.to(self.vae.dtype)).sample.float()
        return ((img + 1.0) * 0.5).clamp(0.0, 1.0).to(lat.dtype)


# ---- Stable Diffusion ------------------------------------------------------------------------
class StableDiffusionPrior(_TextCFGMixin, _LatentVAEMixin, DiffusersPrior):
    """Stable Diffusion (default ``stabilityai/stable-diffusion-2-1-base``: 512 px, eps).

    Model space: VAE latents ``(4, H/8, W/8)`` times ``vae.config.scaling_factor``.
    ``condition(text=..., pose=None)``: CLIP text tokens ``{"text": [B,77,D]}``; with ``pose``
    (a camera, [B,4,4] or [B,16]) also ``{"camera": [B,16]}``, read only by LoRA clones that have a
    camera MLP (VSD); the pretrained UNet ignores it. ``unconditional(like)``: the empty prompt and,
    if ``like`` has a camera, a zero camera. Clones get ``camera_dim=16`` by default.
    """

    what = "Stable Diffusion 2.1-base"
    default_repo = "stabilityai/stable-diffusion-2-1-base"
    components = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")

    default_camera_dim = 16

    def _load(self) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        p, what, dt = self.path, self.what, self.model_dtype
        self.vae = _load_component(AutoencoderKL, p, "vae", what, dt)
        self.unet = _load_component(UNet2DConditionModel, p, "unet", what, dt)
        self.text_encoder = _load_component(CLIPTextModel, p, "text_encoder", what, dt)
        self.tokenizer = _load_tokenizer(p, "tokenizer", what)
        f = self.vae_scale_factor
        self.image_size = int(self.unet.config.sample_size) * f
        self.latent_shape = (int(self.unet.config.in_channels), self.image_size // f, self.image_size // f)

    @torch.no_grad()
    def _embed_text(self, texts: List[str]) -> Tensor:
        def run():
            tok = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt")
            mask = None
            if getattr(self.text_encoder.config, "use_attention_mask", False):
                mask = tok.attention_mask.to(self.device)
            emb = self.text_encoder(tok.input_ids.to(self.device), attention_mask=mask)[0]
            return {"text": emb}

        return self._cached(("text",) + tuple(texts), run)["text"]

    def condition(self, text=None, image=None, pose=None) -> Condition:
        if image is not None:
            raise ValueError("StableDiffusionPrior is text-conditioned: pass text=..., not image=")
        if text is None:
            raise ValueError("StableDiffusionPrior.condition needs text (\"\" for the unconditional)")
        texts = [text] if isinstance(text, str) else list(text)
        tensors = {"text": self._embed_text(texts)}
        if pose is not None:
            tensors["camera"] = self._camera_tensor(pose).to(self.device)
        return Condition(tensors)

    def predict(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        cond = cond.expand(x_t.shape[0])
        return self._run_unet(x_t, t, cond.tensors["text"], cond).to(x_t.dtype)


# ---- DeepFloyd IF stage I --------------------------------------------------------------------
class DeepFloydIFPrior(_TextCFGMixin, DiffusersPrior):
    """DeepFloyd IF stage I (default ``DeepFloyd/IF-I-XL-v1.0``): 64x64 pixel space in [-1,1].

    Text: T5 encoder tokens ``{"text": [B,77,4096]}`` (no caption cleaning). The UNet outputs
    eps and a learned variance (6 channels); ``predict`` returns the first 3 (eps), as DDPM's
    ``learned_range`` step does. Memory: T5-XXL is about 4.8B parameters (~9.5 GB in fp16); pass
    ``load_text_encoder=False`` and ``text_embeddings=...`` to :meth:`condition` to skip it, or call
    :meth:`release_text_encoder` once the prompts are embedded (embeddings are cached).
    """

    what = "DeepFloyd IF stage I"
    default_repo = "DeepFloyd/IF-I-XL-v1.0"
    components = ("unet", "text_encoder", "tokenizer", "scheduler")

    def __init__(self, path=None, dtype=None, device=None, *, load_text_encoder: bool = True,
                 lora_rank: int = 4, camera_dim: int = 0, flag: str = "--prior-path"):
        self._want_text_encoder = load_text_encoder
        if not load_text_encoder:
            self.components = ("unet", "scheduler")
        super().__init__(path, dtype, device, lora_rank=lora_rank, camera_dim=camera_dim, flag=flag)

    def _load(self) -> None:
        from diffusers import UNet2DConditionModel

        p, what, dt = self.path, self.what, self.model_dtype
        self.unet = _load_component(UNet2DConditionModel, p, "unet", what, dt)
        self.text_encoder = None
        self.tokenizer = None
        if self._want_text_encoder:
            from transformers import T5EncoderModel

            self.text_encoder = _load_component(T5EncoderModel, p, "text_encoder", what, dt)
            self.tokenizer = _load_tokenizer(p, "tokenizer", what)
        self.image_size = int(self.unet.config.sample_size)
        self.latent_shape = (3, self.image_size, self.image_size)
        self._max_length = 77

    def release_text_encoder(self) -> None:
        """Drop T5 (cached prompt embeddings stay usable)."""
        self.text_encoder = None

    @torch.no_grad()
    def _embed_text(self, texts: List[str]) -> Tensor:
        def run():
            if self.text_encoder is None or self.tokenizer is None:
                raise ValueError(f"{self.what}: the text encoder is not loaded; pass text_embeddings= instead")
            tok = self.tokenizer(texts, padding="max_length", max_length=self._max_length, truncation=True,
                                 add_special_tokens=True, return_tensors="pt")
            emb = self.text_encoder(tok.input_ids.to(self.device), attention_mask=tok.attention_mask.to(self.device))[0]
            return {"text": emb}

        return self._cached(("text",) + tuple(texts), run)["text"]

    def condition(self, text=None, image=None, pose=None, *, text_embeddings: Optional[Tensor] = None) -> Condition:
        if image is not None:
            raise ValueError("DeepFloydIFPrior is text-conditioned: pass text=..., not image=")
        if text_embeddings is not None:
            tensors = {"text": text_embeddings.to(self.device)}
        elif text is None:
            raise ValueError("DeepFloydIFPrior.condition needs text (\"\" for the unconditional)")
        else:
            tensors = {"text": self._embed_text([text] if isinstance(text, str) else list(text))}
        if pose is not None:
            tensors["camera"] = self._camera_tensor(pose).to(self.device)
        return Condition(tensors)

    def predict(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        cond = cond.expand(x_t.shape[0])
        out = self._run_unet(x_t, t, cond.tensors["text"], cond)
        return out[:, : x_t.shape[1]].to(x_t.dtype)

    def encode(self, img: Tensor) -> Tensor:
        """[B,3,H,W] in [0,1] (resized to 64x64 if needed) -> [-1,1]."""
        if img.shape[-2:] != (self.image_size, self.image_size):
            down = img.shape[-1] > self.image_size
            img = F.interpolate(img, (self.image_size,) * 2, mode="bilinear", align_corners=False, antialias=down)
        return img * 2.0 - 1.0


# ---- Zero-1-to-3 -----------------------------------------------------------------------------
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

    Angles in degrees (elevation up from the horizon, azimuth around the up axis).

    * ``variant="zero123"`` (Zero-1-to-3, Zero123-XL):
      ``[Δpolar (rad), sin Δazimuth, cos Δazimuth, Δradius]`` with the polar angle measured from
      the up axis, so ``Δpolar = radians(ref_elevation - elevation)`` (= minus the elevation
      change), ``Δazimuth = azimuth - ref_azimuth``, ``Δradius = radius - ref_radius`` (0 when
      either is None).
    * ``variant="stable-zero123"``: the same first three entries, and the reference view's polar
      angle ``radians(90 - ref_elevation)`` as the fourth (Stable Zero123 does not use radius).

    Returns float32 [B,4] (B = broadcast of the inputs).
    """
    el = torch.as_tensor(elevation_deg, dtype=torch.float32).reshape(-1)
    az = torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1)
    ref_el = torch.as_tensor(ref_elevation_deg, dtype=torch.float32).reshape(-1)
    ref_az = torch.as_tensor(ref_azimuth_deg, dtype=torch.float32).reshape(-1)
    d_polar = torch.deg2rad(ref_el - el)
    d_az = torch.deg2rad(az - ref_az)
    if variant == "zero123":
        if radius is None or ref_radius is None:
            last = torch.zeros_like(d_polar)
        else:
            last = torch.as_tensor(radius, dtype=torch.float32).reshape(-1) - torch.as_tensor(ref_radius, dtype=torch.float32).reshape(-1)
    elif variant == "stable-zero123":
        last = torch.deg2rad(90.0 - ref_el)
    else:
        raise ValueError("variant must be 'zero123' or 'stable-zero123'")
    d_polar, d_az, last = torch.broadcast_tensors(d_polar, d_az, last)
    return torch.stack([d_polar, torch.sin(d_az), torch.cos(d_az), last], dim=-1)


class Zero123Prior(_LatentVAEMixin, DiffusersPrior):
    """Zero-1-to-3 family in the diffusers community layout (``pipeline_zero1to3.py``).

    Folders: ``unet/`` (8 input channels: noisy latent + reference latent), ``vae/``,
    ``image_encoder/`` (CLIPVisionModelWithProjection), ``feature_extractor/`` (optional: only its
    normalisation is read), ``cc_projection/`` (Linear(D+4 -> D), keys ``projection.*`` or plain),
    ``scheduler/``. Default path ``ashawkey/zero123-xl-diffusers``.

    ``condition(image=ref [B,3,H,W] in [0,1], pose=[B,4])`` -> ``{"clip": [B,1,D], "ref_latent":
    [B,4,h,w]}``: ``clip`` = cc_projection([CLIP image embedding, pose]); ``ref_latent`` = the VAE
    posterior mode of the reference, *not* multiplied by the scaling factor (as Zero123 was
    trained). ``pose`` is Zero123's relative camera: see :func:`zero123_pose` (``[Δpolar rad,
    sin Δazimuth, cos Δazimuth, Δradius]``; Stable Zero123: last entry = reference polar angle).
    ``unconditional``: zeros for both fields (Zero123's CFG). Noisy latents are scaled as usual.
    """

    what = "Zero-1-to-3"
    default_repo = "ashawkey/zero123-xl-diffusers"
    components = ("unet", "vae", "image_encoder", "cc_projection", "scheduler")


    def _load(self) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPVisionModelWithProjection

        p, what, dt = self.path, self.what, self.model_dtype
        self.vae = _load_component(AutoencoderKL, p, "vae", what, dt)
        self.unet = _load_component(UNet2DConditionModel, p, "unet", what, dt)
        self.image_encoder = _load_component(CLIPVisionModelWithProjection, p, "image_encoder", what, dt)
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
        self._last_image: Optional[Tensor] = None
        self._last_embed: Optional[tuple] = None

    def _load_cc_projection(self, d: Path) -> nn.Linear:
        try:
            sd = _load_state_dict(d)
        except (OSError, RuntimeError, ValueError) as e:
            raise StudioInputError(f"{self.what}: could not load 'cc_projection/' from '{self.path}' ({e})") from e
        sd = {k[len("projection."):] if k.startswith("projection.") else k: v for k, v in sd.items()}
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
        if self._last_image is not None and self._last_image.shape == image.shape and torch.equal(self._last_image, image):
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
            raise ValueError("Zero123Prior is conditioned on an image and a pose, not on text")
        if image is None or pose is None:
            raise ValueError("Zero123Prior.condition needs image=[B,3,H,W] in [0,1] and pose=[B,4]")
        if image.dim() == 3:
            image = image[None]
        pose = torch.as_tensor(pose, device=self.device, dtype=torch.float32)
        if pose.dim() == 1:
            pose = pose[None]
        if pose.shape[-1] != 4:
            raise ValueError(f"Zero123 pose must be [B,4] (see zero123_pose), got {tuple(pose.shape)}")
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
