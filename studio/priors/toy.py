"""The embedded toy priors: small pixel-space (32x32 RGB) diffusion models trained on ToyWorld.

* ``toy-t2i`` (:class:`ToyT2IPrior`): text -> image. A compact UNet conditioned, by cross-attention
  at its lowest resolution (8x8), on the tokens of a small learned text encoder
  (:mod:`studio.priors.text`). ``condition(text="")`` is the unconditional prompt (trained with 10%
  caption dropout, so classifier-free guidance works). ``condition(text, pose=camera)`` adds an
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
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.priors.base import Condition, DiffusionPrior
from studio.priors.text import TextEncoder, WordTokenizer

FORMAT_VERSION = 1


# ---- schedule ---------------------------------------------------------------------------------

def cosine_alphas_cumprod(T: int = 1000, max_beta: float = 0.999) -> Tensor:
    """abar_t of the cosine schedule exactly as diffusers' ``squaredcos_cap_v2`` (betas clipped)."""

    def f(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)], dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0).float()


def make_alphas_cumprod(schedule: str, T: int) -> Tensor:
    if schedule == "cosine":
        return cosine_alphas_cumprod(T)
    if schedule == "scaled_linear":  # Stable Diffusion's
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=torch.float64) ** 2
        return torch.cumprod(1.0 - betas, 0).float()
    raise ValueError(f"unknown schedule {schedule!r} (cosine or scaled_linear)")


# ---- network pieces ---------------------------------------------------------------------------

def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


def _gn(ch: int) -> nn.GroupNorm:
    g = max(1, min(32, ch // 4))
    while ch % g:
        g -= 1
    return nn.GroupNorm(g, ch)


def _zero(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int):
        super().__init__()
        self.n1, self.c1 = _gn(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(temb, 2 * cout)
        self.n2, self.c2 = _gn(cout), _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.t(F.silu(temb))[:, :, None, None].chunk(2, 1)
        h = self.n2(h) * (1 + scale) + shift
        return self.skip(x) + self.c2(F.silu(h))


class AttnBlock(nn.Module):
    """Self-attention, cross-attention to ``ctx`` tokens, feed-forward (pre-norm, residual)."""

    def __init__(self, ch: int, ctx_dim: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm_in = _gn(ch)
        self.n1, self.qkv, self.o1 = nn.LayerNorm(ch), nn.Linear(ch, 3 * ch), _zero(nn.Linear(ch, ch))
        self.n2, self.q, self.kv, self.o2 = nn.LayerNorm(ch), nn.Linear(ch, ch), nn.Linear(ctx_dim, 2 * ch), _zero(nn.Linear(ch, ch))
        self.n3, self.ff = nn.LayerNorm(ch), nn.Sequential(nn.Linear(ch, 2 * ch), nn.GELU(), _zero(nn.Linear(2 * ch, ch)))

    def _split(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        return x.view(B, N, self.heads, C // self.heads).transpose(1, 2)

    def forward(self, x: Tensor, ctx: Tensor, ctx_mask: Optional[Tensor] = None) -> Tensor:
        B, C, H, W = x.shape
        h = self.norm_in(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        q, k, v = self.qkv(self.n1(h)).chunk(3, -1)
        a = F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v))
        h = h + self.o1(a.transpose(1, 2).reshape(B, H * W, C))
        k, v = self.kv(ctx).chunk(2, -1)
        mask = None if ctx_mask is None else ctx_mask[:, None, None, :]
        a = F.scaled_dot_product_attention(self._split(self.q(self.n2(h))), self._split(k), self._split(v), attn_mask=mask)
        h = h + self.o2(a.transpose(1, 2).reshape(B, H * W, C))
        h = h + self.ff(self.n3(h))
        return x + h.transpose(1, 2).reshape(B, C, H, W)


class ToyUNet(nn.Module):
    """Compact UNet: ``len(channels)`` levels (32 -> 16 -> 8 at 32x32), ``n_res`` residual blocks
    per level, attention (self + cross to the context tokens) only at the lowest level and in the
    middle. ``extra_emb`` (already in the time-embedding width) is added to the time embedding."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, channels: Sequence[int] = (32, 64, 128), n_res: int = 2,
                 ctx_dim: int = 128, heads: int = 4):
        super().__init__()
        self.channels = list(channels)
        c0 = self.channels[0]
        self.temb_dim = temb = 4 * c0
        self.time = nn.Sequential(nn.Linear(c0, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.conv_in = nn.Conv2d(in_ch, c0, 3, padding=1)
        self.down = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, ch = [], c0
        last = len(self.channels) - 1
        for lvl, c in enumerate(self.channels):
            blocks, attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(n_res):
                blocks.append(ResBlock(ch, c, temb))
                attn.append(AttnBlock(c, ctx_dim, heads) if lvl == last else nn.Identity())
                ch = c
                skips.append(ch)
            self.down.append(blocks)
            self.down_attn.append(attn)
            self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1) if lvl != last else nn.Identity())
        self.mid1, self.mid_attn, self.mid2 = ResBlock(ch, ch, temb), AttnBlock(ch, ctx_dim, heads), ResBlock(ch, ch, temb)
        self.up = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for lvl in reversed(range(len(self.channels))):
            c = self.channels[lvl]
            blocks, attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(n_res):
                blocks.append(ResBlock(ch + skips.pop(), c, temb))
                attn.append(AttnBlock(c, ctx_dim, heads) if lvl == last else nn.Identity())
                ch = c
            self.up.append(blocks)
            self.up_attn.append(attn)
            self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1) if lvl != 0 else nn.Identity())
        self.out = nn.Sequential(_gn(ch), nn.SiLU(), _zero(nn.Conv2d(ch, out_ch, 3, padding=1)))

    def forward(self, x: Tensor, t: Tensor, ctx: Tensor, ctx_mask: Optional[Tensor] = None,
                extra_emb: Optional[Tensor] = None) -> Tensor:
        temb = self.time(timestep_embedding(t, self.channels[0]))
        if extra_emb is not None:
            temb = temb + extra_emb
        h = self.conv_in(x)
        hs = []
        for blocks, attn, down in zip(self.down, self.down_attn, self.downsample):
            for blk, at in zip(blocks, attn):
                h = blk(h, temb)
                h = at(h, ctx, ctx_mask) if isinstance(at, AttnBlock) else h
                hs.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb), ctx, ctx_mask), temb)
        for blocks, attn, up in zip(self.up, self.up_attn, self.upsample):
            for blk, at in zip(blocks, attn):
                h = blk(torch.cat([h, hs.pop()], 1), temb)
                h = at(h, ctx, ctx_mask) if isinstance(at, AttnBlock) else h
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(h)


# ---- the priors -------------------------------------------------------------------------------

class ToyPrior(DiffusionPrior):
    """Shared parts of the toy priors: schedule buffer, config, batch handling."""

    kind: str = ""
    prediction_type = "v"
    image_size = 32
    latent_shape = (3, 32, 32)

    def __init__(self, config: dict):
        super().__init__()
        self.config = copy.deepcopy(config)
        sched = self.config.setdefault("schedule", {"name": "cosine", "num_train_timesteps": 1000})
        self.prediction_type = self.config.setdefault("prediction_type", "v")
        self.register_buffer("alphas_cumprod", make_alphas_cumprod(sched["name"], int(sched["num_train_timesteps"])),
                             persistent=False)

    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    def _t(self, t: Union[Tensor, int], B: int) -> Tensor:
        t = torch.as_tensor(t, device=self.device)
        return t.reshape(-1).expand(B) if t.numel() == 1 else t.reshape(B)


class ToyT2IPrior(ToyPrior):
    """Text -> image toy prior (see the module docstring). Condition fields: ``text`` [B,L,D],
    ``text_mask`` [B,L] (bool), optional ``camera`` [B,16]."""

    kind = "toy-t2i"

    def __init__(self, config: dict):
        super().__init__(config)
        arch = self.config.setdefault("arch", {})
        arch.setdefault("channels", [32, 64, 128]); arch.setdefault("n_res", 2); arch.setdefault("heads", 4)
        arch.setdefault("text_dim", 128); arch.setdefault("text_layers", 2); arch.setdefault("max_len", 16)
        arch.setdefault("camera_dim", 16)
        self.tokenizer = WordTokenizer(self.config.get("vocabulary"), max_len=arch["max_len"])
        self.config["vocabulary"] = self.tokenizer.words
        self.text_encoder = TextEncoder(len(self.tokenizer), arch["max_len"], arch["text_dim"], arch["text_layers"], arch["heads"])
        self.unet = ToyUNet(3, 3, arch["channels"], arch["n_res"], arch["text_dim"], arch["heads"])
        temb = self.unet.temb_dim
        self.camera_mlp = nn.Sequential(nn.Linear(arch["camera_dim"], temb), nn.SiLU(), _zero(nn.Linear(temb, temb)))

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
        extra = self.camera_mlp(c["camera"].to(x_t)) if "camera" in c else None
        return self.unet(x_t, self._t(t, B), c["text"].to(x_t), c["text_mask"], extra)

    def trainable_parameters(self) -> List[nn.Parameter]:
        """A fine-tuned copy trains the denoiser and the camera MLP; the text encoder stays fixed."""
        return list(self.unet.parameters()) + list(self.camera_mlp.parameters())


class RefEncoder(nn.Module):
    """Small CNN: reference image [B,3,32,32] (model space) -> 8x8 = 64 tokens [B,64,D]."""

    def __init__(self, dim: int = 128, width: int = 64, size: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, dim, 3, stride=2, padding=1),
        )
        n = (size // 4) ** 2
        self.pos = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ref: Tensor) -> Tensor:
        return self.norm(self.net(ref).flatten(2).transpose(1, 2) + self.pos)


class ToyNVSPrior(ToyPrior):
    """Zero123-style novel-view toy prior (see the module docstring). Condition fields: ``ref``
    [B,3,32,32] (model space), ``pose`` [B,4], ``uncond`` [B,1] (1 = the CFG null condition)."""

    kind = "toy-nvs"

    def __init__(self, config: dict):
        super().__init__(config)
        arch = self.config.setdefault("arch", {})
        arch.setdefault("channels", [32, 64, 128]); arch.setdefault("n_res", 2); arch.setdefault("heads", 4)
        arch.setdefault("ctx_dim", 128); arch.setdefault("pose_dim", 4)
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
        e0, a0, r0, e1, a1, r1 = (torch.as_tensor(v, dtype=torch.float32) for v in
                                  (elev_ref, azim_ref, radius_ref, elev_tgt, azim_tgt, radius_tgt))
        e0, a0, r0, e1, a1, r1 = torch.broadcast_tensors(e0, a0, r0, e1, a1, r1)
        da = a1 - a0
        return torch.stack([e0 - e1, torch.sin(da), torch.cos(da), r1 - r0], -1)

    def condition(self, text=None, image=None, pose=None) -> Condition:
        if image is None or pose is None:
            raise ValueError("toy-nvs needs a reference image [B,3,32,32] in [0,1] and a relative pose [B,4]")
        ref = self.encode(F.interpolate(image.float(), size=(self.image_size,) * 2, mode="area")
                          if image.shape[-1] != self.image_size else image.float()).to(self.device)
        pose = torch.as_tensor(pose, dtype=torch.float32, device=self.device).reshape(-1, self.config["arch"]["pose_dim"])
        B = max(ref.shape[0], pose.shape[0])
        ref, pose = ref.expand(B, *ref.shape[1:]), pose.expand(B, -1)
        return Condition({"ref": ref, "pose": pose, "uncond": torch.zeros(B, 1, device=self.device)})

    def unconditional(self, like: Condition) -> Condition:
        B = like.batch_size
        return Condition({"ref": torch.zeros(B, *self.latent_shape, device=self.device),
                          "pose": torch.zeros(B, self.config["arch"]["pose_dim"], device=self.device),
                          "uncond": torch.ones(B, 1, device=self.device)})

    def predict(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        B = x_t.shape[0]
        c = cond.expand(B).tensors
        keep = 1.0 - c["uncond"].to(x_t)  # [B,1]
        ref = c["ref"].to(x_t) * keep[:, :, None, None]
        pose = c["pose"].to(x_t)
        tokens = torch.cat([self.ref_encoder(ref), self.pose_token(pose)[:, None]], 1)
        tokens = keep[:, :, None] * tokens + (1.0 - keep[:, :, None]) * self.null_tokens.to(x_t)
        extra = self.pose_emb(pose) * keep
        return self.unet(torch.cat([x_t, ref], 1), self._t(t, B), tokens, None, extra)


PRIOR_CLASSES: Dict[str, type] = {"toy-t2i": ToyT2IPrior, "toy-nvs": ToyNVSPrior}


def build_toy_prior(kind: str, config: Optional[dict] = None) -> ToyPrior:
    """A freshly initialised toy prior of ``kind`` ("toy-t2i" or "toy-nvs")."""
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
    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in prior.state_dict().items()}
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
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    prior.load_state_dict(state)
    return prior.to(device).eval()
