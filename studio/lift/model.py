"""MVSplat-style feed-forward Gaussian predictor at toy scale (Chen et al., "MVSplat: Efficient 3D
Gaussian Splatting from Sparse Multi-View Images", ECCV 2024).

Pipeline (sections of arXiv:2403.14627: 3.1 multi-view depth estimation, 3.2 Gaussian parameters
prediction, 3.3 training loss):

* **Multi-view feature extraction** (Sec. 3.1): a shared CNN downsamples each context image to
  1/4 resolution (``[B,V,C,H/4,W/4]``), then a light Transformer block lets every view attend to
  itself (self-attention) and to the tokens of all other views (cross-attention), with a fixed 2D
  sine position encoding. (MVSplat: ResNet-like CNN + 6 Swin self/cross-attention blocks.)
* **Cost volume** (Sec. 3.1, Eq. 1-3; :mod:`studio.lift.cost_volume`): D depth candidates uniform in
  inverse depth between ``near`` and ``far``; the other views' features are plane-sweep warped into
  each reference view and correlated by a scaled dot product (mean over other views when V > 2).
* **Cost volume refinement** (Sec. 3.1): a 2D U-Net takes ``[cost volume, features]`` and predicts a
  residual ``dC`` (zero-initialised), ``C~ = C + dC``. (MVSplat adds cross-view attention inside the
  U-Net; here the features entering it are already cross-attended.)
* **Depth estimation and refinement** (Sec. 3.1): softmax over the D candidates, depth = expected inverse depth;
  bilinearly upsampled to full resolution and refined by a small CNN on ``[image, full-res CNN
  features, upsampled features, normalised inverse depth]`` that adds a residual in logit space of
  the normalised inverse depth ``u = (1/z - 1/far) / (1/near - 1/far)`` (so depth stays in [near, far]).
* **Gaussian parameters** (Sec. 3.2): per pixel, means = pixel centres unprojected at the depth;
  opacity from the **matching confidence** (max of the softmax) through a two-layer head;
  scales relative to the pixel footprint ``z / f`` (``s_min..s_max`` pixels, sigmoid); rotation
  quaternion predicted in the camera frame, rotated to the world; colour = sigmoid(logit(pixel) +
  residual) (RGB in [0,1], i.e. SH degree 0 around the input colour; MVSplat predicts SH from
  the features).

Shapes: images ``[B,V,3,H,W]`` in [0,1] with H, W multiples of 4; ``viewmats`` ``[B,V,4,4]`` world-to-
camera (OpenCV); ``Ks`` ``[B,V,3,3]`` in pixels (centres at +0.5); ``near``/``far`` ``[B]`` world units
(view-space z range that holds the scene in every context view). Output :class:`PixelGaussians`
with ``N = V*H*W`` in pixel order ``v*H*W + y*W + x``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.lift.cost_volume import build_cost_volume, depth_candidates, expected_inverse_depth, scale_intrinsics
from studio.lift.gaussians import PixelGaussians, camera_to_world_quats, pixel_footprint, unproject_depth

FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "mvsplat-toy.safetensors"
"""Where the embedded ToyWorld checkpoint goes (fp16 safetensors; not trained yet)."""


@dataclass
class PredictorConfig:
    """Architecture of :class:`GaussianPredictor` (stored in the checkpoint's metadata)."""

    stem_dim: int = 32
    """Channels of the full-resolution CNN features (also the skip into the heads)."""
    feat_dim: int = 64
    """Channels C of the 1/4-resolution matching features."""
    attn_layers: int = 1
    attn_heads: int = 4
    num_depths: int = 32
    """Depth candidates D of the cost volume."""
    unet_dim: int = 48
    head_dim: int = 32
    scale_min: float = 0.3
    scale_max: float = 3.0
    """Range of the Gaussian standard deviations in pixels (multiples of the footprint z / f)."""
    opacity_bias: float = 2.0
    """Initial opacity logit (sigmoid(2) = 0.88)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PredictorConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, ch), ch)


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            _norm(ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1), _norm(ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def sine_position_encoding(ch: int, h: int, w: int, device, dtype) -> Tensor:
    """Fixed 2D sine/cosine encoding [ch,h,w] of the (y, x) pixel centre in [0, 1] (ch % 4 == 0)."""
    q = ch // 4
    freq = torch.exp(torch.arange(q, device=device, dtype=dtype) * (-math.log(100.0) / max(q - 1, 1))) * math.pi * 8
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
    ey = ys[:, None] * freq[None]  # [h,q]
    ex = xs[:, None] * freq[None]  # [w,q]
    pe_y = torch.cat([ey.sin(), ey.cos()], -1)[:, None, :].expand(h, w, 2 * q)
    pe_x = torch.cat([ex.sin(), ex.cos()], -1)[None, :, :].expand(h, w, 2 * q)
    return torch.cat([pe_y, pe_x], -1).permute(2, 0, 1)


class FeatureEncoder(nn.Module):
    """Shared CNN: [B*V,3,H,W] -> full-res features [B*V,stem,H,W] and 1/4-res [B*V,C,H/4,W/4]."""

    def __init__(self, cfg: PredictorConfig):
        super().__init__()
        s, c = cfg.stem_dim, cfg.feat_dim
        self.stem = nn.Sequential(nn.Conv2d(3, s, 3, padding=1), ResBlock(s))
        self.down = nn.Sequential(
            nn.Conv2d(s, (s + c) // 2, 3, stride=2, padding=1),
            ResBlock((s + c) // 2),
            nn.Conv2d((s + c) // 2, c, 3, stride=2, padding=1),
            ResBlock(c),
            ResBlock(c),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        full = self.stem(x * 2.0 - 1.0)
        return full, self.down(full)


class CrossViewBlock(nn.Module):
    """Pre-norm Transformer block: self-attention within a view, cross-attention to all other views'
    tokens, MLP (MVSplat Sec. 3.1; global attention instead of Swin windows at this size)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.n1, self.n2, self.n3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B,V,L,C] -> [B,V,L,C]."""
        B, V, L, C = tokens.shape
        x = tokens.reshape(B * V, L, C)
        h = self.n1(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        x = x.reshape(B, V, L, C)
        h = self.n2(x)
        outs = []
        for i in range(V):
            others = torch.cat([h[:, j] for j in range(V) if j != i], 1)  # [B,(V-1)L,C]
            outs.append(self.cross_attn(h[:, i], others, others, need_weights=False)[0])
        x = x + torch.stack(outs, 1)
        return x + self.mlp(self.n3(x))


class UNet2D(nn.Module):
    """Two-level 2D U-Net ``in_ch -> out_ch`` (the cost volume refiner; output conv zero-initialised)."""

    def __init__(self, in_ch: int, dim: int, out_ch: int):
        super().__init__()
        self.inp = nn.Conv2d(in_ch, dim, 3, padding=1)
        self.e0 = ResBlock(dim)
        self.d1 = nn.Conv2d(dim, 2 * dim, 3, stride=2, padding=1)
        self.e1 = ResBlock(2 * dim)
        self.d2 = nn.Conv2d(2 * dim, 2 * dim, 3, stride=2, padding=1)
        self.mid = ResBlock(2 * dim)
        self.u2 = nn.Conv2d(4 * dim, 2 * dim, 3, padding=1)
        self.u1 = nn.Conv2d(3 * dim, dim, 3, padding=1)
        self.dec = ResBlock(dim)
        self.out = nn.Conv2d(dim, out_ch, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        x0 = self.e0(self.inp(x))
        x1 = self.e1(self.d1(x0))
        x2 = self.mid(self.d2(x1))
        up = F.interpolate(x2, size=x1.shape[-2:], mode="bilinear", align_corners=False)
        y1 = F.silu(self.u2(torch.cat([up, x1], 1)))
        up = F.interpolate(y1, size=x0.shape[-2:], mode="bilinear", align_corners=False)
        y0 = self.dec(F.silu(self.u1(torch.cat([up, x0], 1))))
        return self.out(y0)


def _head(in_ch: int, dim: int, out_ch: int, blocks: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, dim, 3, padding=1)]
    layers += [ResBlock(dim) for _ in range(blocks)]
    layers += [nn.SiLU(), nn.Conv2d(dim, out_ch, 3, padding=1)]
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------
# The predictor
# ---------------------------------------------------------------------------------------------


class GaussianPredictor(nn.Module):
    """Context views -> pixel-aligned Gaussians (see the module docstring for the pipeline).

    ``forward(images [B,V,3,H,W] in [0,1], viewmats [B,V,4,4], Ks [B,V,3,3], near [B], far [B])``
    returns :class:`PixelGaussians` (V >= 2; every view attends to and matches against all others).
    After a forward pass, ``self.last_aux`` holds ``depth_coarse`` [B,V,H/4,W/4], ``confidence``
    [B,V,H/4,W/4] (max of the depth softmax) and ``prob`` [B,V,D,H/4,W/4] for diagnostics.
    """

    def __init__(self, config: Optional[PredictorConfig] = None):
        super().__init__()
        self.config = cfg = config or PredictorConfig()
        self.encoder = FeatureEncoder(cfg)
        self.attn = nn.ModuleList(CrossViewBlock(cfg.feat_dim, cfg.attn_heads) for _ in range(cfg.attn_layers))
        D, C, S = cfg.num_depths, cfg.feat_dim, cfg.stem_dim
        self.refiner = UNet2D(D + C, cfg.unet_dim, D)
        self.depth_refine = _head(3 + S + C + 1, cfg.head_dim, 1)
        nn.init.zeros_(self.depth_refine[-1].weight)
        nn.init.zeros_(self.depth_refine[-1].bias)
        self.gaussian_head = _head(3 + S + C + 2, cfg.head_dim, cfg.head_dim + 3 + 4 + 3)
        self.opacity_head = nn.Sequential(
            nn.Conv2d(cfg.head_dim + 1, cfg.head_dim, 3, padding=1), nn.SiLU(), nn.Conv2d(cfg.head_dim, 1, 3, padding=1)
        )
        nn.init.zeros_(self.opacity_head[-1].weight)
        nn.init.constant_(self.opacity_head[-1].bias, cfg.opacity_bias)
        last = self.gaussian_head[-1]
        nn.init.normal_(last.weight, std=1e-3)
        nn.init.zeros_(last.bias)
        self.last_aux: dict = {}

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Multi-view features: full-res ``[B,V,S,H,W]`` and cross-attended 1/4-res ``[B,V,C,h,w]``."""
        B, V, _, H, W = images.shape
        full, feat = self.encoder(images.reshape(B * V, 3, H, W))
        C, h, w = feat.shape[1:]
        feat = feat + sine_position_encoding(C, h, w, feat.device, feat.dtype)
        tokens = feat.reshape(B, V, C, h * w).transpose(2, 3)  # [B,V,L,C]
        for blk in self.attn:
            tokens = blk(tokens)
        feat = tokens.transpose(2, 3).reshape(B, V, C, h, w)
        return full.reshape(B, V, -1, H, W), feat

    def forward(self, images: Tensor, viewmats: Tensor, Ks: Tensor, near: Tensor, far: Tensor) -> PixelGaussians:
        cfg = self.config
        B, V, _, H, W = images.shape
        if V < 2:
            raise ValueError(f"GaussianPredictor needs at least 2 context views, got {V}")
        if H % 4 or W % 4:
            raise ValueError(f"image size must be a multiple of 4, got {H}x{W}")
        dtype = images.dtype
        near, far = near.to(dtype).reshape(B), far.to(dtype).reshape(B)
        full, feat = self.encode(images)  # [B,V,S,H,W], [B,V,C,h,w]
        C, h, w = feat.shape[2:]

        # Sec. 3.1: cost volume over inverse-depth candidates, refinement, softmax depth
        depths = depth_candidates(near, far, cfg.num_depths)  # [B,D]
        Ks_feat = scale_intrinsics(Ks, w / W, h / H)
        cost = build_cost_volume(feat, viewmats, Ks_feat, depths)  # [B,V,D,h,w]
        x = torch.cat([cost, feat], 2).reshape(B * V, cfg.num_depths + C, h, w)
        cost = cost + self.refiner(x).reshape(B, V, cfg.num_depths, h, w)
        prob = torch.softmax(cost, 2)
        depth_coarse = expected_inverse_depth(prob, depths)  # [B,V,h,w]
        conf = prob.max(2).values  # matching confidence [B,V,h,w]

        # full-resolution depth: normalised inverse depth u in [0,1] (1 = near), residual in logit space
        inv_near, inv_far = (1.0 / near)[:, None, None, None], (1.0 / far)[:, None, None, None]
        u = ((1.0 / depth_coarse - inv_far) / (inv_near - inv_far)).clamp(1e-4, 1 - 1e-4)
        flat = lambda t: t.reshape(B * V, *t.shape[2:])  # noqa: E731
        up = lambda t: F.interpolate(flat(t), size=(H, W), mode="bilinear", align_corners=False)  # noqa: E731
        u_up = up(u[:, :, None])  # [BV,1,H,W]
        feat_up = up(feat)
        img = flat(images)
        ctx = [img, flat(full), feat_up]
        logit_u = torch.logit(u_up.clamp(1e-4, 1 - 1e-4)) + self.depth_refine(torch.cat(ctx + [u_up], 1))
        u_full = torch.sigmoid(logit_u)
        depth = 1.0 / (inv_far + u_full.reshape(B, V, H, W) * (inv_near - inv_far))  # [B,V,H,W]

        # Sec. 3.2: Gaussian parameters per pixel
        conf_up = up(conf[:, :, None])
        hid = self.gaussian_head(torch.cat(ctx + [u_full, conf_up], 1))  # [BV,hd+10,H,W]
        hd = cfg.head_dim
        feat_h, raw_scale, raw_rot, raw_col = (
            hid[:, :hd],
            hid[:, hd : hd + 3],
            hid[:, hd + 3 : hd + 7],
            hid[:, hd + 7 :],
        )
        opacity = torch.sigmoid(self.opacity_head(torch.cat([F.silu(feat_h), conf_up], 1)))  # [BV,1,H,W]
        foot = pixel_footprint(depth, Ks)  # [B,V,H,W] world size of one pixel
        s_pix = cfg.scale_min + (cfg.scale_max - cfg.scale_min) * torch.sigmoid(raw_scale)  # [BV,3,H,W] pixels
        scales = s_pix.reshape(B, V, 3, H, W).permute(0, 1, 3, 4, 2) * foot[..., None]
        rot = raw_rot + torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dtype, device=images.device)[None, :, None, None]
        quats = camera_to_world_quats(rot.reshape(B, V, 4, H, W).permute(0, 1, 3, 4, 2), viewmats)
        colors = torch.sigmoid(torch.logit(img.clamp(0.01, 0.99)) + raw_col)

        N = V * H * W
        to_n = lambda t, k: t.reshape(B, V, k, H, W).permute(0, 1, 3, 4, 2).reshape(B, N, k)  # noqa: E731
        means = unproject_depth(depth, viewmats, Ks).reshape(B, N, 3)
        self.last_aux = {"depth_coarse": depth_coarse, "confidence": conf, "prob": prob}
        return PixelGaussians(
            means=means,
            quats=quats.reshape(B, N, 4),
            scales=scales.reshape(B, N, 3),
            opacities=to_n(opacity, 1)[..., 0],
            colors=to_n(colors, 3),
            depth=depth,
        )


# ---------------------------------------------------------------------------------------------
# Checkpoints: fp16 safetensors with the config in the metadata
# ---------------------------------------------------------------------------------------------


def save_predictor(model: GaussianPredictor, path: Union[str, Path], extra: Optional[dict] = None) -> Path:
    """Write the weights (fp16) and config of ``model`` to ``path`` (.safetensors) atomically
    (``studio.io.atomic_path``); ``extra`` (JSON-able, e.g. training settings) goes in the metadata."""
    from safetensors.torch import save_file

    from studio.io import atomic_path

    path = Path(path)
    meta = {"kind": "mvsplat-toy", "format_version": FORMAT_VERSION, "model": model.config.to_dict()}
    if extra:
        meta["training"] = extra
    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"studio_config": json.dumps(meta), "format": "pt"})
    return path


def read_predictor_config(path: Union[str, Path]) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "studio_config" not in meta:
        raise ValueError(f"{path} is not a Gaussian-predictor file (no 'studio_config' metadata)")
    return json.loads(meta["studio_config"])


def load_predictor(path: Union[str, Path, None] = None, device: Union[str, torch.device] = "cpu") -> GaussianPredictor:
    """Rebuild a predictor from its .safetensors file (weights cast to float32), in eval mode.
    ``path`` defaults to the embedded checkpoint :data:`DEFAULT_WEIGHTS`."""
    from safetensors.torch import load_file

    path = Path(path or DEFAULT_WEIGHTS)
    if not path.is_file():
        raise FileNotFoundError(
            f"no Gaussian-predictor checkpoint at {path}; train one with `python -m studio.lift.train`"
        )
    meta = read_predictor_config(path)
    model = GaussianPredictor(PredictorConfig.from_dict(meta["model"]))
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.to(device).eval()
