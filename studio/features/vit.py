"""The embedded feature model ``toy-vit``: a small Vision Transformer (Dosovitskiy et al. 2021).

Patch 8, width 192, depth 6, 3 heads, MLP ratio 4 (a ViT-Tiny cut to depth 6), trained at 32x32
(a 4x4 grid) by DINO self-distillation on ToyWorld renders (:mod:`studio.features.dino`). Pre-norm
blocks, a CLS token and learned position embeddings for the training grid; at any other grid
``h x w`` the patch embeddings are resized bicubically (as DINO's ``interpolate_pos_encoding``), so
the model takes any input whose sides are multiples of 8. ``forward`` returns the patch tokens after
the final LayerNorm as ``[B,192,H/8,W/8]``; ``tokens`` also returns the CLS token (DINO's head reads
it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.features.base import FeatureModel

DEFAULT_ARCH = {"image_size": 32, "patch_size": 8, "dim": 192, "depth": 6, "heads": 3, "mlp_ratio": 4.0}


class Attention(nn.Module):
    """Multi-head self-attention over tokens [B,N,D]."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B,heads,N,D/heads]
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ToyViT(FeatureModel):
    """The embedded ViT (see the module docstring); ``arch`` overrides :data:`DEFAULT_ARCH`."""

    kind = "toy-vit"

    def __init__(self, arch: dict | None = None, name: str = "toy-vit"):
        super().__init__()
        self.arch = {**DEFAULT_ARCH, **(arch or {})}
        unknown = set(self.arch) - set(DEFAULT_ARCH)
        if unknown:
            raise ValueError(f"unknown toy-vit arch fields {sorted(unknown)}; known: {sorted(DEFAULT_ARCH)}")
        a = self.arch
        self.name, self.dim, self.patch_size, self.image_size = name, a["dim"], a["patch_size"], a["image_size"]
        if self.image_size % self.patch_size or self.dim % a["heads"]:
            raise ValueError(f"toy-vit needs image_size % patch_size == 0 and dim % heads == 0, got {a}")
        grid = self.image_size // self.patch_size
        self.patch_embed = nn.Conv2d(3, self.dim, self.patch_size, stride=self.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, self.dim))
        self.blocks = nn.ModuleList(Block(self.dim, a["heads"], a["mlp_ratio"]) for _ in range(a["depth"]))
        self.norm = nn.LayerNorm(self.dim, eps=1e-6)
        self.reset_parameters()

    @property
    def config(self) -> dict:
        return {"arch": dict(self.arch)}

    @classmethod
    def from_config(cls, config: dict, name: str = "toy-vit") -> "ToyViT":
        return cls(config.get("arch"), name=name)

    def reset_parameters(self) -> None:
        """ViT/DINO initialisation: truncated normal (std 0.02) weights, zero biases, unit LayerNorms."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def position_embedding(self, h: int, w: int) -> Tensor:
        """Position embeddings [1, 1+h*w, D] for an ``h x w`` patch grid: the CLS entry as trained, the
        patch entries resized bicubically from the training grid (unchanged at that grid)."""
        grid = int(math.isqrt(self.pos_embed.shape[1] - 1))
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        if (h, w) != (grid, grid):
            patch_pos = patch_pos.reshape(1, grid, grid, self.dim).permute(0, 3, 1, 2)
            patch_pos = F.interpolate(patch_pos, size=(h, w), mode="bicubic", align_corners=False)
            patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, self.dim)
        return torch.cat([cls_pos, patch_pos], 1)

    def tokens(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images [B,3,H,W] in [0,1] -> (CLS token [B,D], patch tokens [B,h,w,D]) after the final norm."""
        x = self.patch_embed(self.normalize(images))  # [B,D,h,w]
        B, _, h, w = x.shape
        x = torch.cat([self.cls_token.expand(B, -1, -1), x.flatten(2).transpose(1, 2)], 1)
        x = x + self.position_embedding(h, w)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 0], x[:, 1:].reshape(B, h, w, self.dim)

    def forward(self, images: Tensor) -> Tensor:
        """images [B,3,H,W] in [0,1] (H, W multiples of 8) -> patch features [B,D,H/8,W/8] float32."""
        return self.tokens(images)[1].permute(0, 3, 1, 2).float()
