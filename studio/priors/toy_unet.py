"""The networks of the embedded toy priors (``studio.priors.toy``): a compact UNet with
cross-attention at its lowest resolution, the reference-image encoder of ``toy-nvs``, and the
noise schedules they train with (cosine, Nichol & Dhariwal 2021; scaled-linear)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, T, dtype=torch.float64) ** 2
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


def zero_init(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int):
        super().__init__()
        self.n1, self.c1 = _gn(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(temb, 2 * cout)
        self.n2, self.c2 = _gn(cout), zero_init(nn.Conv2d(cout, cout, 3, padding=1))
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
        self.n1, self.qkv, self.o1 = nn.LayerNorm(ch), nn.Linear(ch, 3 * ch), zero_init(nn.Linear(ch, ch))
        self.n2, self.q, self.kv, self.o2 = (
            nn.LayerNorm(ch),
            nn.Linear(ch, ch),
            nn.Linear(ctx_dim, 2 * ch),
            zero_init(nn.Linear(ch, ch)),
        )
        self.n3, self.ff = (
            nn.LayerNorm(ch),
            nn.Sequential(nn.Linear(ch, 2 * ch), nn.GELU(), zero_init(nn.Linear(2 * ch, ch))),
        )

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
        a = F.scaled_dot_product_attention(
            self._split(self.q(self.n2(h))), self._split(k), self._split(v), attn_mask=mask
        )
        h = h + self.o2(a.transpose(1, 2).reshape(B, H * W, C))
        h = h + self.ff(self.n3(h))
        return x + h.transpose(1, 2).reshape(B, C, H, W)


class ToyUNet(nn.Module):
    """Compact UNet: ``len(channels)`` levels (32 -> 16 -> 8 at 32x32), ``n_res`` residual blocks
    per level, attention (self + cross to the context tokens) only at the lowest level and in the
    middle. ``extra_emb`` (already in the time-embedding width) is added to the time embedding.

    ``views = V > 1`` makes it a multi-view denoiser: ``x`` [B*V,C,H,W] holds V views per sample
    (view-major within each sample), ``t`` and ``extra_emb`` are per view ([B*V]), ``ctx`` is per
    sample ([B,L,D]), and every attention block sees the V views tiled into one [B,C,V*h,w] map,
    so its self-attention runs over the tokens of all views of a sample (cross-view attention);
    convolutions stay per view."""

    def __init__(
        self,
        in_ch: int = 3,
        out_ch: int = 3,
        channels: Sequence[int] = (32, 64, 128),
        n_res: int = 2,
        ctx_dim: int = 128,
        heads: int = 4,
    ):
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
        self.mid1, self.mid_attn, self.mid2 = (
            ResBlock(ch, ch, temb),
            AttnBlock(ch, ctx_dim, heads),
            ResBlock(ch, ch, temb),
        )
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
        self.out = nn.Sequential(_gn(ch), nn.SiLU(), zero_init(nn.Conv2d(ch, out_ch, 3, padding=1)))

    def attend(self, at: nn.Module, h: Tensor, ctx: Tensor, ctx_mask: Optional[Tensor], views: int) -> Tensor:
        """``at`` applied to ``h`` [B*V,C,H,W] (identity where the level has no attention); with
        ``views`` > 1 the V views of each sample are tiled into one [B,C,V*H,W] map first."""
        if not isinstance(at, AttnBlock):
            return h
        if views == 1:
            return at(h, ctx, ctx_mask)
        BV, C, H, W = h.shape
        tiled = h.view(BV // views, views, C, H, W).transpose(1, 2).reshape(BV // views, C, views * H, W)
        out = at(tiled, ctx, ctx_mask)
        return out.view(BV // views, C, views, H, W).transpose(1, 2).reshape(BV, C, H, W)

    def time_embedding(self, t: Tensor, extra_emb: Optional[Tensor] = None) -> Tensor:
        """[B,temb_dim]: the sinusoidal embedding of ``t`` through the MLP, plus ``extra_emb``."""
        temb = self.time(timestep_embedding(t, self.channels[0]))
        return temb if extra_emb is None else temb + extra_emb

    def encode(
        self,
        x: Tensor,
        temb: Tensor,
        ctx: Tensor,
        ctx_mask: Optional[Tensor] = None,
        views: int = 1,
        input_residual: Optional[Tensor] = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """The down path and middle: (middle features [B*V,C,h,w], skip features, shallowest
        first). ``input_residual`` [B*V,channels[0],H,W] is added after ``conv_in`` (where a
        ControlNet adds its condition, Zhang et al. 2023, Sec. 3.2)."""
        h = self.conv_in(x)
        if input_residual is not None:
            h = h + input_residual
        hs = []
        for blocks, attn, down in zip(self.down, self.down_attn, self.downsample):
            for blk, at in zip(blocks, attn):
                h = self.attend(at, blk(h, temb), ctx, ctx_mask, views)
                hs.append(h)
            h = down(h)
        h = self.mid2(self.attend(self.mid_attn, self.mid1(h, temb), ctx, ctx_mask, views), temb)
        return h, hs

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        ctx: Tensor,
        ctx_mask: Optional[Tensor] = None,
        extra_emb: Optional[Tensor] = None,
        views: int = 1,
        return_features: bool = False,
        residuals: Optional[tuple[list[Tensor], Tensor]] = None,
    ):
        """Output [B*V,out_ch,H,W]; with ``return_features`` also the last decoder features
        [B*V,channels[0],H,W] (what FlashWorld's Gaussian head reads). ``residuals`` (skip
        residuals in :meth:`encode`'s order, middle residual) are added to the skip and middle
        features before the decoder reads them: a ControlNet's output."""
        temb = self.time_embedding(t, extra_emb)
        h, hs = self.encode(x, temb, ctx, ctx_mask, views)
        if residuals is not None:
            skips, mid = residuals
            hs = [a + b for a, b in zip(hs, skips)]
            h = h + mid
        for blocks, attn, up in zip(self.up, self.up_attn, self.upsample):
            for blk, at in zip(blocks, attn):
                h = self.attend(at, blk(torch.cat([h, hs.pop()], 1), temb), ctx, ctx_mask, views)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.out(h)
        return (out, h) if return_features else out


# ---- the priors -------------------------------------------------------------------------------


class RefEncoder(nn.Module):
    """Small CNN: reference image [B,3,32,32] (model space) -> 8x8 = 64 tokens [B,64,D]."""

    def __init__(self, dim: int = 128, width: int = 64, size: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, dim, 3, stride=2, padding=1),
        )
        n = (size // 4) ** 2
        self.pos = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ref: Tensor) -> Tensor:
        return self.norm(self.net(ref).flatten(2).transpose(1, 2) + self.pos)
