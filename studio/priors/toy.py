"""The embedded toy priors: small pixel-space (32x32 RGB by default) diffusion models trained on ToyWorld.

* ``toy-t2i`` (:class:`ToyT2IPrior`): text -> image. A compact UNet conditioned, by cross-attention
  at its lowest resolution (8x8), on the tokens of a small learned text encoder
  (:mod:`studio.priors.text`), and (format 2, ``arch.pooled_text``) by the mean of those tokens
  through an MLP added to the time embedding, as Imagen adds its pooled text embedding (Saharia et
  al. 2022, Sec. 2.2): every ResBlock then sees the caption, so global attributes such as the
  colour reach the 32x32 and 16x16 levels that cross-attention at 8x8 does not.
  ``condition(text="")`` is the unconditional prompt (trained with 10% caption dropout, so
  classifier-free guidance works). ``condition(text, pose=camera)`` adds an
  optional camera ``[B, 16]`` (any per-view vector, e.g. a flattened 4x4 camera-to-world) through an
  MLP into the time embedding; its last layer is zero-initialised, so the pretrained prior ignores
  it until a fine-tuned copy (VSD's camera-conditioned fake score) learns to use it.
* ``toy-nvs`` (:class:`ToyNVSPrior`): Zero123-style novel-view synthesis. Input channels are
  ``concat(x_t, reference)`` (6 channels, the reference in model space); the condition is the
  relative camera ``pose = [d_polar (rad), sin(d_azimuth), cos(d_azimuth), d_radius]`` (target
  minus reference, polar angle from the up axis so ``d_polar = -(elevation change)``: Zero-1-to-3's
  own convention, as ``studio.priors.diffusers.zero123_pose``) embedded by an MLP into the time
  embedding and, together with a small CNN embedding of the reference (8x8 = 64 tokens), used as
  cross-attention tokens. The unconditional
  condition zeroes the concatenated reference and swaps the tokens for learned null tokens
  (10% condition dropout in training).

Both use v-prediction (Salimans & Ho 2022) with the cosine schedule (Nichol & Dhariwal 2021,
diffusers' ``squaredcos_cap_v2``), T = 1000: at 32x32 the cosine schedule spends more steps on the
coarse structure, and v-prediction keeps the loss well scaled at both ends of the schedule, where
eps-prediction makes the x0 estimate at high noise unstable. Guidance code converts with
``to_eps`` / ``to_x0`` and never needs to know.

Resolution: ``arch["image_size"]`` (S px square, default 32, so files without it are 32x32); the
model space is ``[3, S, S]``. The UNet is convolutional and attends at S/4 (its lowest level, with
three levels); only toy-nvs's reference-token positions (``ref_encoder.pos`` [1, (S/4)^2, D]) and
null tokens (``null_tokens`` [1, (S/4)^2 + 1, D]) depend on S. :func:`init_from` starts a prior of
one size from the weights of another (progressive resolution: the 64x64 ``toy-nvs-64`` starts from
the 32x32 ``toy-nvs``), copying every tensor of the same shape and resizing those grids.

Files: one fp16 ``.safetensors`` holding the EMA weights, with the JSON config (kind, architecture,
vocabulary, schedule, training record) in the file's metadata under ``"studio_config"`` (a copy is
written beside it as ``<name>.json`` for people). :func:`save_toy_prior` writes atomically;
:func:`load_toy_prior` rebuilds the model from the metadata alone.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.cameras.sampling import relative_camera
from studio.priors.base import Condition, DiffusionPrior
from studio.priors.text import TextEncoder, WordTokenizer
from studio.priors.toy_unet import RefEncoder, ToyUNet, make_alphas_cumprod, zero_init

FORMAT_VERSION = 2
"""2: toy-t2i may carry ``arch.pooled_text`` (files of version 1 have none)."""


class ToyPrior(DiffusionPrior):
    """Shared parts of the toy priors: schedule buffer, config, batch handling."""

    kind: str = ""
    prediction_type = "v"

    def __init__(self, config: dict):
        super().__init__()
        self.config = copy.deepcopy(config)
        self.image_size = int(self.config.get("arch", {}).get("image_size", 32))
        self.latent_shape = (3, self.image_size, self.image_size)
        sched = self.config.setdefault("schedule", {"name": "cosine", "num_train_timesteps": 1000})
        self.prediction_type = self.config.setdefault("prediction_type", "v")
        self.register_buffer(
            "alphas_cumprod", make_alphas_cumprod(sched["name"], int(sched["num_train_timesteps"])), persistent=False
        )

    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    def complete_arch(self, defaults: dict) -> dict:
        """``config["arch"]`` with ``defaults`` filled in (stored back, so a saved file is complete)."""
        arch = self.config.setdefault("arch", {})
        for key, value in defaults.items():
            arch.setdefault(key, value)
        return arch

    def build_text_encoder(self, arch: dict) -> None:
        """The word tokenizer (vocabulary from the config, else ToyWorld's) and the text encoder of ``arch``."""
        self.tokenizer = WordTokenizer(self.config.get("vocabulary"), max_len=arch["max_len"])
        self.config["vocabulary"] = self.tokenizer.words
        self.text_encoder = TextEncoder(
            len(self.tokenizer), arch["max_len"], arch["text_dim"], arch["text_layers"], arch["heads"]
        )

    def saved_state(self) -> Dict[str, Tensor]:
        """The tensors a toy-prior file stores (default: the whole state dict)."""
        return self.state_dict()

    def load_saved_state(self, state: Dict[str, Tensor]) -> None:
        """Load what :meth:`saved_state` stored."""
        self.load_state_dict(state)

    def _t(self, t: Union[Tensor, int], B: int) -> Tensor:
        t = torch.as_tensor(t, device=self.device)
        return t.reshape(-1).expand(B) if t.numel() == 1 else t.reshape(B)


class ToyT2IPrior(ToyPrior):
    """Text -> image toy prior (see the module docstring). Condition fields: ``text`` [B,L,D],
    ``text_mask`` [B,L] (bool), optional ``camera`` [B,16]."""

    kind = "toy-t2i"

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
                "camera_dim": 16,
                "pooled_text": self.config.get("format_version", FORMAT_VERSION) >= 2,
            }
        )
        self.build_text_encoder(arch)
        self.unet = ToyUNet(3, 3, arch["channels"], arch["n_res"], arch["text_dim"], arch["heads"])
        temb = self.unet.temb_dim
        self.camera_mlp = nn.Sequential(
            nn.Linear(arch["camera_dim"], temb), nn.SiLU(), zero_init(nn.Linear(temb, temb))
        )
        self.text_pool = (
            nn.Sequential(nn.Linear(arch["text_dim"], temb), nn.SiLU(), nn.Linear(temb, temb))
            if arch["pooled_text"]
            else None
        )

    def condition(self, text=None, image=None, pose=None) -> Condition:
        if image is not None:
            raise ValueError("toy-t2i is text-conditioned; it takes no reference image (use toy-nvs)")
        texts = [""] if text is None else ([text] if isinstance(text, str) else list(text))
        ids, mask = self.tokenizer(texts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        out = {"text": self.text_encoder(ids, mask), "text_mask": mask}
        if pose is not None:
            out["camera"] = self._camera(pose, len(texts))
        return Condition(out)

    def _camera(self, pose: Tensor, B: int) -> Tensor:
        pose = torch.as_tensor(pose, dtype=torch.float32, device=self.device)
        pose = pose.reshape(pose.shape[0] if pose.dim() > 1 else 1, -1)
        if pose.shape[1] != self.config["arch"]["camera_dim"]:
            raise ValueError(f"toy-t2i camera must be [B, {self.config['arch']['camera_dim']}], got {list(pose.shape)}")
        return pose

    def unconditional(self, like: Condition) -> Condition:
        u = self.condition(text="")
        if "camera" in like.tensors:  # VSD's camera-conditioned fake score keeps the camera in both branches
            u.tensors["camera"] = like.tensors["camera"]
        return u

    def predict(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        B = x_t.shape[0]
        c = cond.expand(B).tensors
        text = c["text"].to(x_t)
        extra = self.camera_mlp(c["camera"].to(x_t)) if "camera" in c else None
        if self.text_pool is not None:
            mask = c["text_mask"].to(x_t)[..., None]  # [B, L, 1]; masked tokens are zero already
            pooled = self.text_pool(text.sum(1) / mask.sum(1).clamp(min=1.0))
            extra = pooled if extra is None else extra + pooled
        return self.unet(x_t, self._t(t, B), text, c["text_mask"], extra)

    def trainable_parameters(self) -> List[nn.Parameter]:
        """A fine-tuned copy trains the denoiser (with the pooled-text MLP) and the camera MLP; the
        text encoder stays fixed."""
        pool = [] if self.text_pool is None else list(self.text_pool.parameters())
        return list(self.unet.parameters()) + pool + list(self.camera_mlp.parameters())


class ToyNVSPrior(ToyPrior):
    """Zero123-style novel-view toy prior (see the module docstring). Condition fields: ``ref``
    [B,3,S,S] (model space, S = ``image_size``), ``pose`` [B,4], ``uncond`` [B,1] (1 = the CFG null condition)."""

    kind = "toy-nvs"

    def __init__(self, config: dict):
        super().__init__(config)
        arch = self.complete_arch(
            {"channels": [32, 64, 128], "n_res": 2, "heads": 4, "ctx_dim": 128, "pose_dim": 4, "image_size": 32}
        )
        if self.image_size % 4 or self.image_size % 2 ** (len(arch["channels"]) - 1):
            raise ValueError(f"toy-nvs image_size {self.image_size} must divide by 4 and by the UNet's downsampling")
        D = arch["ctx_dim"]
        self.unet = ToyUNet(6, 3, arch["channels"], arch["n_res"], D, arch["heads"])
        temb = self.unet.temb_dim
        self.ref_encoder = RefEncoder(D, 64, self.image_size)
        self.pose_token = nn.Sequential(nn.Linear(arch["pose_dim"], D), nn.SiLU(), nn.Linear(D, D))
        self.pose_emb = nn.Sequential(nn.Linear(arch["pose_dim"], temb), nn.SiLU(), nn.Linear(temb, temb))
        self.null_tokens = nn.Parameter(torch.randn(1, (self.image_size // 4) ** 2 + 1, D) * 0.02)

    @staticmethod
    def relative_pose(elev_ref, azim_ref, radius_ref, elev_tgt, azim_tgt, radius_tgt) -> Tensor:
        """Zero123's relative camera ``[d_polar (rad), sin(d_az), cos(d_az), d_radius]`` from absolute
        elevations/azimuths (radians) and radii, target minus reference, with polar = pi/2 -
        elevation (so d_polar = elev_ref - elev_tgt), as ``studio.cameras.sampling.relative_pose``
        and Zero123 itself; any broadcastable shapes."""
        e0, a0, r0, e1, a1, r1 = (
            torch.as_tensor(v, dtype=torch.float32)
            for v in (elev_ref, azim_ref, radius_ref, elev_tgt, azim_tgt, radius_tgt)
        )
        e0, a0, r0, e1, a1, r1 = torch.broadcast_tensors(e0, a0, r0, e1, a1, r1)
        return relative_camera(e0 - e1, a1 - a0, r1 - r0)

    def condition(self, text=None, image=None, pose=None) -> Condition:
        if image is None or pose is None:
            raise ValueError("toy-nvs needs a reference image [B,3,H,W] in [0,1] and a relative pose [B,4]")
        image = image.float()
        if image.shape[-1] != self.image_size:  # area when shrinking, bilinear when enlarging
            mode = "area" if image.shape[-1] > self.image_size else "bilinear"
            image = F.interpolate(image, size=(self.image_size,) * 2, mode=mode)
        ref = self.encode(image).to(self.device)
        pose = torch.as_tensor(pose, dtype=torch.float32, device=self.device).reshape(
            -1, self.config["arch"]["pose_dim"]
        )
        B = max(ref.shape[0], pose.shape[0])
        ref, pose = ref.expand(B, *ref.shape[1:]), pose.expand(B, -1)
        return Condition({"ref": ref, "pose": pose, "uncond": torch.zeros(B, 1, device=self.device)})

    def unconditional(self, like: Condition) -> Condition:
        B = like.batch_size
        return Condition(
            {
                "ref": torch.zeros(B, *self.latent_shape, device=self.device),
                "pose": torch.zeros(B, self.config["arch"]["pose_dim"], device=self.device),
                "uncond": torch.ones(B, 1, device=self.device),
            }
        )

    def network_inputs(self, x_t: Tensor, cond: Condition) -> tuple[Tensor, Tensor, Tensor]:
        """What the UNet reads for ``x_t`` [B,3,S,S] under ``cond``: the input concat(x_t, ref)
        [B,6,S,S], the cross-attention tokens [B,(S/4)^2+1,D] and the pose embedding added to
        the time embedding [B,temb] (null tokens and zeros where ``uncond``)."""
        c = cond.expand(x_t.shape[0]).tensors
        keep = 1.0 - c["uncond"].to(x_t)  # [B,1]
        ref = c["ref"].to(x_t) * keep[:, :, None, None]
        pose = c["pose"].to(x_t)
        tokens = torch.cat([self.ref_encoder(ref), self.pose_token(pose)[:, None]], 1)
        tokens = keep[:, :, None] * tokens + (1.0 - keep[:, :, None]) * self.null_tokens.to(x_t)
        return torch.cat([x_t, ref], 1), tokens, self.pose_emb(pose) * keep

    def predict(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        x_in, tokens, extra = self.network_inputs(x_t, cond)
        return self.unet(x_in, self._t(t, x_t.shape[0]), tokens, None, extra)


PRIOR_CLASSES: Dict[str, type] = {"toy-t2i": ToyT2IPrior, "toy-nvs": ToyNVSPrior}


def build_toy_prior(kind: str, config: Optional[dict] = None) -> ToyPrior:
    """A freshly initialised toy prior of ``kind`` ("toy-t2i", "toy-nvs", "toy-mv" or "toy-epipolar",
    whose base prior loads by the name in ``config["base"]``)."""
    if kind == "toy-mv" and kind not in PRIOR_CLASSES:  # defined on top of ToyPrior, so imported here
        from studio.priors.toy_mv import ToyMVPrior

        PRIOR_CLASSES[kind] = ToyMVPrior
    if kind == "toy-epipolar" and kind not in PRIOR_CLASSES:
        from studio.priors.epipolar import EpipolarNVSPrior

        PRIOR_CLASSES[kind] = EpipolarNVSPrior
    if kind not in PRIOR_CLASSES:
        raise ValueError(f"unknown toy prior {kind!r}; one of {sorted(PRIOR_CLASSES)}")
    config = dict(config or {})
    config["kind"] = kind
    return PRIOR_CLASSES[kind](config)


# ---- files ------------------------------------------------------------------------------------


def save_toy_prior(prior: ToyPrior, path: Union[str, Path], extra: Optional[dict] = None) -> Path:
    """Write ``prior``'s weights (fp16) and config to ``path`` (.safetensors) atomically, plus a
    readable copy of the config as ``path.with_suffix('.json')``."""
    from safetensors.torch import save_file

    from studio.io import atomic_path, atomic_write_text

    path = Path(path)
    cfg = copy.deepcopy(prior.config)
    cfg["kind"] = prior.kind
    cfg["format_version"] = FORMAT_VERSION
    if extra:
        cfg.setdefault("training", {}).update(extra)
    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in prior.saved_state().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"studio_config": json.dumps(cfg), "format": "pt"})
    atomic_write_text(path.with_suffix(".json"), json.dumps(cfg, indent=1) + "\n")
    return path


def read_toy_config(path: Union[str, Path]) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "studio_config" not in meta:
        raise ValueError(f"{path} is not a toy-prior file (no 'studio_config' metadata)")
    return json.loads(meta["studio_config"])


def load_toy_prior(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> ToyPrior:
    """Rebuild a toy prior from its .safetensors file (weights cast back to float32), in eval mode."""
    from safetensors.torch import load_file

    cfg = read_toy_config(path)
    prior = build_toy_prior(cfg["kind"], cfg)
    # a toy-mv file also carries FlashWorld's Gaussian head (studio.generators.flashworld), not the prior's
    state = {k: v.float() for k, v in load_file(str(path)).items() if not k.startswith("head.")}
    prior.load_saved_state(state)
    return prior.to(device).eval()


def resize_token_grid(tokens: Tensor, side: int, extra: int = 0) -> Tensor:
    """Tokens ``[1, g*g + extra, D]`` laid out on a g x g grid (row-major, then ``extra`` tokens
    with no position) -> ``[1, side*side + extra, D]``: the grid resized bilinearly, the extra
    tokens kept as they are."""
    n = tokens.shape[1] - extra
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"{n} tokens are not a square grid")
    grid = tokens[:, :n].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(side, side), mode="bilinear", align_corners=False)
    return torch.cat([grid.permute(0, 2, 3, 1).reshape(1, side * side, -1).to(tokens), tokens[:, n:]], 1)


GRID_TOKENS = {"ref_encoder.pos": 0, "null_tokens": 1}
"""toy-nvs tensors laid out on the (S/4) x (S/4) token grid: name -> tokens after the grid (the
last null token stands for the pose token)."""


def init_from(prior: ToyPrior, path: Union[str, Path]) -> dict:
    """Initialise ``prior`` in place from the toy-prior file ``path`` of the same kind (another
    resolution, e.g. 32x32 weights for a 64x64 prior: progressive-resolution training): every
    tensor whose name and shape match is copied; the :data:`GRID_TOKENS` tensors are resized on
    their token grid (:func:`resize_token_grid`); the rest keeps its fresh initialisation.
    Returns {"path", "copied": n, "resized": [names], "fresh": [names]}."""
    from safetensors.torch import load_file

    kind = read_toy_config(path)["kind"]
    if kind != prior.kind:
        raise ValueError(f"{path} is a {kind} prior, not {prior.kind}")
    source = load_file(str(path))
    state = prior.state_dict()
    copied, resized, fresh = 0, [], []
    for name, target in state.items():
        src = source.get(name)
        if src is not None and src.shape == target.shape:
            target.copy_(src.to(target))
            copied += 1
        elif src is not None and name in GRID_TOKENS:
            target.copy_(resize_token_grid(src.float(), prior.image_size // 4, GRID_TOKENS[name]).to(target))
            resized.append(name)
        else:
            fresh.append(name)
    return {"path": str(path), "copied": copied, "resized": resized, "fresh": fresh}
