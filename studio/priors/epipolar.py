"""Sparse3D's multiview-consistent prior: a novel-view diffusion model guided by an epipolar controller.

Sparse3D (Zou et al., AAAI 2024, Sec. "Multiview-consistent diffusion") guides a pretrained image
diffusion model with a controller that reads features of the 2-3 posed input views along the
epipolar lines of each target pixel, injected ControlNet-style (Zhang et al. 2023): a trainable copy
of the base network's encoder whose outputs enter the frozen base through zero-initialised
convolutions, so training starts from the base model's behaviour exactly.

The embedded ``toy-epipolar`` prior (:class:`EpipolarNVSPrior`):

* **Base**: the frozen ``toy-nvs`` (Zero123-style) conditioned on the input view nearest to the
  target (smallest angle between the camera directions seen from the origin) with Zero123's
  relative pose (:meth:`~studio.priors.toy.ToyNVSPrior.relative_pose`). The file stores only the
  controller and names the base (``config["base"]``), which is loaded by name.
* **View encoder**: a small CNN over each input view (model space) -> features at S/2, with the
  view's pixels appended (the controller can copy colours).
* **Epipolar attention** (:class:`EpipolarAttention`): for every target pixel of an S/2 grid,
  ``depths`` points along its ray between ``near`` and ``far`` are projected into every input view
  and the features sampled bilinearly (zeros and a validity flag outside the image or behind the
  camera). Per depth the views are pooled into their mean and variance (agreement across views
  marks the surface, as in IBRNet's and MVSNet's cost aggregation), embedded with the depth's
  position; a query from the target ray's Plücker coordinates attends over the depths. Result:
  a feature map [B,C,S/2,S/2]. Our choice of aggregation; the paper does not publish its own.
* **ControlNet**: a trainable copy of the base UNet's encoder (:class:`ToyControlNet`) reads
  concat(x_t, reference) like the base plus a zero-initialised convolution of the (upsampled)
  epipolar map; zero-initialised 1x1 convolutions of its skip and middle features are added to the
  frozen base's (:meth:`~studio.priors.toy_unet.ToyUNet.forward` ``residuals``).

Conditions (:meth:`EpipolarNVSPrior.condition_views`): input views ``[B,K,3,H,W]`` in [0, 1]
with world-to-camera matrices ``[B,K,4,4]`` (OpenCV) and pixel intrinsics ``[B,K,3,3]`` of those
images, the target camera ``[B,4,4]`` / ``[B,3,3]`` (pixels of an image of the same size), and the
depth range. World frame: the object near the origin, +Z up (ToyWorld's; Zero123's pose needs a
centred object). The CFG null condition drops the reference, the pose and the controller together
(trained with 10% condition dropout).
"""

from __future__ import annotations

import copy
import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.cameras.rays import plucker_raymaps
from studio.priors.base import Condition
from studio.priors.toy import ToyNVSPrior, ToyPrior
from studio.priors.toy_unet import ToyUNet, zero_init

# ---- camera geometry ----------------------------------------------------------------------------


def camera_centres(viewmats: Tensor) -> Tensor:
    """[...,3] camera centres -R^T t of world-to-camera matrices [...,4,4]."""
    rot, t = viewmats[..., :3, :3], viewmats[..., :3, 3]
    return -torch.einsum("...ji,...j->...i", rot, t)


def orbit_angles(viewmats: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(elevation, azimuth (radians), distance) [...] of the camera centres about the origin,
    +Z up, azimuth from +X towards +Y (ToyWorld's orbit convention)."""
    c = camera_centres(viewmats)
    r = c.norm(dim=-1).clamp(min=1e-8)
    return torch.asin((c[..., 2] / r).clamp(-1.0, 1.0)), torch.atan2(c[..., 1], c[..., 0]), r


def nearest_view(view_mats: Tensor, target_mats: Tensor) -> Tensor:
    """Index [B] of the input view (of ``view_mats`` [B,K,4,4]) whose camera direction from the
    origin is closest in angle to the target's (``target_mats`` [B,4,4])."""
    views = F.normalize(camera_centres(view_mats), dim=-1)
    target = F.normalize(camera_centres(target_mats), dim=-1)
    return torch.einsum("bkc,bc->bk", views, target).argmax(1)


def default_near_far(view_mats: Tensor, view_Ks: Tensor, target_mats: Tensor, size: int) -> Tensor:
    """[B,2] depth range along the target rays: the target's distance to the origin -+ the radius
    of the sphere about the origin that every input view frames (distance x sin(half fov), the
    smallest over the views; ``view_Ks`` in pixels of ``size``-px images)."""
    dist = camera_centres(view_mats).norm(dim=-1)  # [B,K]
    half_fov = torch.atan(0.5 * size / view_Ks[..., 0, 0])
    bound = (dist * torch.sin(half_fov)).amin(1)
    d = camera_centres(target_mats).norm(dim=-1)
    return torch.stack([(d - bound).clamp(min=1e-2), d + bound], -1)


def batch_views(
    images: Tensor, view_mats: Tensor, view_Ks: Tensor, target_mats: Tensor, target_Ks: Tensor, device
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The arguments of ``condition_views`` as float32 on ``device``, broadcast to the targets'
    batch B: images [B,K,3,H,W] (from [K,3,H,W] or [B,K,3,H,W]), view_mats [B,K,4,4], view_Ks
    [B,K,3,3], target_mats [B,4,4], target_Ks [B,3,3]."""

    def f32(x: Tensor) -> Tensor:
        return torch.as_tensor(x, dtype=torch.float32, device=device)

    target_mats = f32(target_mats).reshape(-1, 4, 4)
    images = f32(images)
    images = images[None] if images.dim() == 4 else images
    B, K = target_mats.shape[0], images.shape[1]
    images = images.expand(B, *images.shape[1:])
    return (
        images,
        f32(view_mats).expand(B, K, 4, 4),
        f32(view_Ks).expand(B, K, 3, 3),
        target_mats,
        f32(target_Ks).expand(B, 3, 3),
    )


def project(points: Tensor, viewmats: Tensor, Ks: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """World points [B,N,3] into K cameras [B,K,4,4] / [B,K,3,3] (pixels of ``size``-px images)
    -> grid_sample coordinates [B,K,N,2] (align_corners=False: -1 and 1 are the image edges) and
    validity [B,K,N] (in front of the camera and inside the image)."""
    cam = torch.einsum("bkij,bnj->bkni", viewmats[..., :3, :3], points) + viewmats[:, :, None, :3, 3]
    z = cam[..., 2:3]
    uv = torch.einsum("bkij,bknj->bkni", Ks, cam)[..., :2] / z.clamp(min=1e-6)
    grid = 2.0 * uv / size - 1.0
    valid = (z[..., 0] > 1e-6) & (grid.abs() <= 1.0).all(-1)
    return grid, valid


def target_rays(target_mats: Tensor, target_Ks: Tensor, size: int, grid: int) -> tuple[Tensor, Tensor, Tensor]:
    """Origins, unit directions and Plücker coordinates ([B,P,3], [B,P,3], [B,P,6]; P = grid^2,
    row-major) of the rays through the centres of a ``grid x grid`` lattice over a ``size``-px
    target image."""
    pl = plucker_raymaps(target_mats, scale_intrinsics(target_Ks, grid / size), grid, grid).flatten(2).transpose(1, 2)
    d = pl[..., :3]
    return camera_centres(target_mats)[:, None].expand_as(d), d, pl


# ---- the controller -------------------------------------------------------------------------------


def _fourier(x: Tensor, n: int) -> Tensor:
    """[...,1] in [0,1] -> [...,2n] sin/cos at frequencies pi 2^k."""
    freqs = math.pi * 2.0 ** torch.arange(n, device=x.device, dtype=x.dtype)
    return torch.cat([torch.sin(x * freqs), torch.cos(x * freqs)], -1)


class EpipolarAttention(nn.Module):
    """Input views + cameras -> a feature map of the target view (see the module docstring).

    Args:
        dim: feature channels C; depths: samples per ray; heads: attention heads.
    """

    def __init__(self, dim: int = 64, depths: int = 16, heads: int = 4):
        super().__init__()
        self.depths, self.heads = depths, heads
        self.encoder = nn.Sequential(
            nn.Conv2d(3 + 6, dim, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(dim, dim, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(dim, dim - 3, 3, padding=1),
        )
        pooled = 2 * dim + 1  # mean, variance, fraction of views that see the point
        self.key = nn.Sequential(nn.Linear(pooled + 16, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.query = nn.Sequential(nn.Linear(6, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))

    def view_features(self, views: Tensor, view_mats: Tensor, view_Ks: Tensor) -> Tensor:
        """[B,K,C,S/2,S/2]: the CNN of each view (model space [B,K,3,S,S]) with its Plücker raymap
        (in the frame of the world), its pixels appended (area-downsampled)."""
        B, K, _, S, _ = views.shape
        rays = plucker_raymaps(view_mats, view_Ks, S, S)  # [B,K,6,S,S]
        x = torch.cat([views, rays], 2).flatten(0, 1)
        feats = torch.cat([self.encoder(x), F.avg_pool2d(views.flatten(0, 1), 2)], 1)
        return feats.view(B, K, *feats.shape[1:])

    def forward(
        self,
        views: Tensor,
        view_mats: Tensor,
        view_Ks: Tensor,
        target_mats: Tensor,
        target_Ks: Tensor,
        near_far: Tensor,
    ) -> Tensor:
        """Model-space input views [B,K,3,S,S] with cameras [B,K,4,4] / [B,K,3,3] (pixels of S),
        the target camera [B,4,4] / [B,3,3] and depth range [B,2] -> features [B,C,S/2,S/2]."""
        B, K, _, S, _ = views.shape
        g, D = S // 2, self.depths
        feats = self.view_features(views, view_mats, view_Ks)  # [B,K,C,g,g]
        C = feats.shape[2]
        origin, direction, ray = target_rays(target_mats, target_Ks, S, g)  # [B,P,3], [B,P,3], [B,P,6]
        frac = (torch.arange(D, device=views.device, dtype=views.dtype) + 0.5) / D  # [D]
        depth = near_far[:, :1, None] + (near_far[:, 1:, None] - near_far[:, :1, None]) * frac  # [B,1,D]
        # distance along the unit ray for view depth z: z / cos(angle to the optical axis)
        axis = target_mats[:, 2, :3]  # [B,3]: the camera's +z in world coordinates
        cos = torch.einsum("bpc,bc->bp", direction, axis).clamp(min=1e-3)  # [B,P]
        points = origin[:, :, None] + direction[:, :, None] * (depth / cos[..., None])[..., None]  # [B,P,D,3]
        grid, valid = project(points.reshape(B, -1, 3), view_mats, view_Ks, S)  # [B,K,P*D,2], [B,K,P*D]
        sampled = F.grid_sample(
            feats.flatten(0, 1), grid.flatten(0, 1)[:, :, None], mode="bilinear", align_corners=False
        )  # [B*K,C,P*D,1]
        sampled = sampled.view(B, K, C, -1).permute(0, 3, 1, 2)  # [B,P*D,K,C]
        w = valid.permute(0, 2, 1).to(sampled)[..., None]  # [B,P*D,K,1]
        n = w.sum(2).clamp(min=1.0)
        mean = (sampled * w).sum(2) / n
        var = ((sampled - mean[:, :, None]) ** 2 * w).sum(2) / n
        pooled = torch.cat([mean, var, w.mean(2)], -1).view(B * g * g, D, 2 * C + 1)
        depth_code = _fourier(frac[:, None], 8).expand(B * g * g, D, 16)
        keys = self.key(torch.cat([pooled, depth_code], -1))  # [B*P,D,C]
        query = self.query(ray).reshape(B * g * g, 1, C)
        out, _ = self.attn(query, keys, keys, need_weights=False)
        return self.out(out[:, 0]).view(B, g, g, C).permute(0, 3, 1, 2)


def scale_intrinsics(Ks: Tensor, s: float) -> Tensor:
    """Intrinsics for an image ``s`` times the size (focal lengths and principal point scaled)."""
    out = Ks.clone()
    out[..., :2, :] = out[..., :2, :] * s
    return out


class ToyControlNet(nn.Module):
    """A trainable copy of a :class:`~studio.priors.toy_unet.ToyUNet`'s encoder (time embedding,
    input convolution, down path, middle) with a zero-initialised condition input and
    zero-initialised 1x1 output convolutions (ControlNet, Zhang et al. 2023, Sec. 3.1-3.2)."""

    def __init__(self, base: ToyUNet, cond_channels: int):
        super().__init__()
        self.unet = copy.deepcopy(base)
        for name in ("up", "up_attn", "upsample", "out"):
            delattr(self.unet, name)  # the decoder stays in the frozen base
        for p in self.unet.parameters():
            p.requires_grad_(True)
        c0 = self.unet.channels[0]
        self.cond_in = zero_init(nn.Conv2d(cond_channels, c0, 3, padding=1))
        skip_channels = [c for c in self.unet.channels for _ in range(len(self.unet.down[0]))]
        self.zero_skips = nn.ModuleList(zero_init(nn.Conv2d(c, c, 1)) for c in skip_channels)
        self.zero_mid = zero_init(nn.Conv2d(self.unet.channels[-1], self.unet.channels[-1], 1))

    def forward(
        self, x: Tensor, t: Tensor, ctx: Tensor, extra_emb: Optional[Tensor], cond: Tensor
    ) -> tuple[List[Tensor], Tensor]:
        """Residuals (per skip, middle) for the base's decoder; ``cond`` [B,cond_channels,H,W] at
        the input resolution."""
        temb = self.unet.time_embedding(t, extra_emb)
        h, hs = self.unet.encode(x, temb, ctx, None, 1, input_residual=self.cond_in(cond))
        return [z(s) for z, s in zip(self.zero_skips, hs)], self.zero_mid(h)


# ---- the prior ----------------------------------------------------------------------------------


class EpipolarNVSPrior(ToyPrior):
    """``toy-epipolar`` (see the module docstring). Condition fields: ``ref`` [B,3,S,S] and
    ``pose`` [B,4] (the base's, nearest input view), ``uncond`` [B,1], ``views`` [B,K,3,S,S]
    (model space), ``view_mats`` [B,K,4,4], ``view_Ks`` [B,K,3,3] (pixels of S), ``target_mat``
    [B,4,4], ``target_K`` [B,3,3] (pixels of S), ``near_far`` [B,2]."""

    kind = "toy-epipolar"

    def __init__(self, config: dict, base: Optional[ToyNVSPrior] = None):
        super().__init__(config)
        arch = self.complete_arch({"dim": 64, "depths": 16, "heads": 4})
        self.config.setdefault("base", "toy-nvs")
        if base is None:
            from studio.priors.registry import load_prior

            base = load_prior(self.config["base"])
        if not isinstance(base, ToyNVSPrior):
            raise ValueError(f"toy-epipolar's base must be a toy-nvs prior, got {type(base).__name__}")
        if not torch.equal(base.alphas_cumprod, self.alphas_cumprod.to(base.alphas_cumprod)):
            raise ValueError("toy-epipolar's base must use the same noise schedule")
        self.image_size, self.latent_shape = base.image_size, base.latent_shape
        self.base = base.eval()
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.epipolar = EpipolarAttention(arch["dim"], arch["depths"], arch["heads"])
        self.controlnet = ToyControlNet(base.unet, arch["dim"])
        self.conditioning_scale = 1.0
        """Multiplier of the controller's residuals (0: the base prior alone)."""

    # ---- files: only the controller is stored; the base loads by name --------------------------
    def saved_state(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("base.")}

    def load_saved_state(self, state: dict) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("base.") for k in missing):
            raise ValueError(f"toy-epipolar weights do not match: missing {missing[:3]}, unexpected {unexpected[:3]}")

    def trainable_parameters(self) -> List[nn.Parameter]:
        """The controller (epipolar attention + ControlNet); the base stays frozen."""
        return list(self.epipolar.parameters()) + list(self.controlnet.parameters())

    # ---- conditions ---------------------------------------------------------------------------
    def condition(self, text=None, image=None, pose=None) -> Condition:
        raise ValueError("toy-epipolar is conditioned on posed input views: use condition_views(...)")

    def condition_views(
        self,
        images: Tensor,
        view_mats: Tensor,
        view_Ks: Tensor,
        target_mats: Tensor,
        target_Ks: Tensor,
        near_far: Optional[Tensor] = None,
    ) -> Condition:
        """The condition of targets ``target_mats`` [B,4,4] / ``target_Ks`` [B,3,3] given input
        views ``images`` [K,3,H,W] or [B,K,3,H,W] in [0,1] with ``view_mats`` [(B,)K,4,4] and
        ``view_Ks`` [(B,)(K,)3,3] (broadcast); all intrinsics in pixels of H x W images (square). ``near_far``
        [B,2]: depth range along the target rays (default :func:`default_near_far`)."""
        dev, S = self.device, self.image_size
        images, view_mats, view_Ks, target_mats, target_Ks = batch_views(
            images, view_mats, view_Ks, target_mats, target_Ks, dev
        )
        B, H = target_mats.shape[0], images.shape[-1]
        if H != S:
            flat = F.interpolate(images.flatten(0, 1), size=(S, S), mode="area" if H > S else "bilinear")
            images = flat.view(B, -1, 3, S, S)
        view_Ks, target_Ks = scale_intrinsics(view_Ks, S / H), scale_intrinsics(target_Ks, S / H)
        views = self.encode(images)
        nearest = nearest_view(view_mats, target_mats)
        rows = torch.arange(B, device=dev)
        e0, a0, r0 = orbit_angles(view_mats[rows, nearest])
        e1, a1, r1 = orbit_angles(target_mats)
        if near_far is None:
            near_far = default_near_far(view_mats, view_Ks, target_mats, S)
        pose = ToyNVSPrior.relative_pose(e0, a0, r0, e1, a1, r1).to(dev)
        controller = controller_fields(views, view_mats, view_Ks, target_mats, target_Ks, near_far)
        return Condition({"ref": views[rows, nearest], "pose": pose, **controller})

    def unconditional(self, like: Condition) -> Condition:
        """``like`` with the reference, pose and controller dropped (the CFG null condition)."""
        tensors = dict(like.tensors)
        tensors["ref"] = torch.zeros_like(tensors["ref"])
        tensors["pose"] = torch.zeros_like(tensors["pose"])
        tensors["uncond"] = torch.ones_like(tensors["uncond"])
        return Condition(tensors)

    # ---- the network ----------------------------------------------------------------------------
    def predict(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        B = x_t.shape[0]
        c = cond.expand(B)
        x_in, tokens, extra = self.base.network_inputs(x_t, c)
        t = self._t(t, B)
        v = c.tensors
        rows = (v["uncond"][:, 0] < 0.5).nonzero()[:, 0]  # the controller runs where it is not dropped
        if self.conditioning_scale == 0.0 or rows.numel() == 0:
            return self.base.unet(x_in, t, tokens, None, extra)
        feats = self.epipolar(*(v[k][rows].to(x_t) for k in CONTROLLER_FIELDS))
        feats = F.interpolate(feats, size=x_t.shape[-2:], mode="bilinear", align_corners=False)
        skips, mid = self.controlnet(x_in[rows], t[rows], tokens[rows], extra[rows], feats)

        def scatter(r: Tensor) -> Tensor:
            out = torch.zeros(B, *r.shape[1:], dtype=r.dtype, device=r.device)
            return out.index_copy(0, rows, r * self.conditioning_scale)

        residuals = ([scatter(s) for s in skips], scatter(mid))
        return self.base.unet(x_in, t, tokens, None, extra, residuals=residuals)


CONTROLLER_FIELDS = ("views", "view_mats", "view_Ks", "target_mat", "target_K", "near_far")
"""Condition fields the epipolar attention reads, in its argument order."""


def controller_fields(
    views: Tensor, view_mats: Tensor, view_Ks: Tensor, target_mats: Tensor, target_Ks: Tensor, near_far: Tensor
) -> dict:
    """The controller's condition fields (:data:`CONTROLLER_FIELDS`, batch B = ``target_mats``'s)
    and ``uncond`` zeros [B,1] (the controller on)."""
    B, dev = target_mats.shape[0], target_mats.device
    near_far = torch.as_tensor(near_far, dtype=torch.float32, device=dev).reshape(B, 2)
    values = dict(zip(CONTROLLER_FIELDS, (views, view_mats, view_Ks, target_mats, target_Ks, near_far)))
    return {"uncond": torch.zeros(B, 1, device=dev), **values}
