"""``studio.render.rasterize``: the one differentiable Gaussian rasterizer every method calls.

Pipeline (as gsplat's ``rendering.py``): SH -> colours, EWA projection (``projection.py``),
tile intersection (``tiles.py``), per-pixel compositing by the chosen backend, then background,
expected depth and normals. The forward model is 3DGS "classic" (see ``projection.py`` and
``_torch_impl.py`` for the exact maths, identical in every backend).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor

from studio.gaussians.sh import eval_sh
from studio.render.normals import depth_to_normal
from studio.render.projection import project_gaussians
from studio.render.tiles import TILE_SIZE, isect_tiles, tile_extents

BACKENDS = ("auto", "torch", "studio", "gsplat")


class RenderOut(NamedTuple):
    """Rendered images for C cameras.

    color [C,H,W,D] = sum_i w_i c_i + T * background; alpha [C,H,W,1] = 1 - T;
    depth [C,H,W,1] expected view-space z (sum_i w_i z_i / alpha; 0 where alpha = 0);
    normal [C,H,W,3] camera-frame normals from the depth map (see ``normals.py``), or None when
    ``rasterize(..., with_normal=False)``;
    meta: gsplat 1.4's ``info`` dict for ``packed=False`` (``means2d`` with retained grad,
    ``radii`` [C,N], ``width``, ``height``, ``n_cameras``, tile lists ...) plus ``backend``.
    """

    color: Tensor
    alpha: Tensor
    depth: Tensor
    normal: Optional[Tensor]
    meta: dict[str, Any]


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> ``gsplat`` on CUDA, else ``studio``; refuses gsplat on CPU tensors."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown rasterizer backend {backend!r}; choose one of {BACKENDS}.")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" else "studio"
    if backend == "gsplat" and device.type != "cuda":
        raise ValueError("The gsplat backend needs CUDA tensors; use backend='studio' or 'torch' on CPU.")
    return backend


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    background: Optional[Tensor] = None,
    backend: str = "auto",
    *,
    sh_degree: Optional[int] = None,
    near_plane: float = 0.01,
    eps2d: float = 0.3,
    with_normal: bool = True,
) -> RenderOut:
    """Render N Gaussians into C pinhole cameras.

    Args:
        means [N,3], quats [N,4] (w,x,y,z), scales [N,3] linear, opacities [N] in [0,1].
        colors: [N,D] or [C,N,D] features, or SH coefficients [N,K,3] when ``sh_degree`` is set
            (rgb = max(0, 0.5 + SH(d)), d from the camera centre to the mean).
        viewmats [C,4,4] world-to-camera (OpenCV axes); Ks [C,3,3] pinhole, pixel centres at +0.5.
        width, height: pixels. background: [D] or [C,D], added as T * background.
        backend: ``auto`` | ``torch`` | ``studio`` | ``gsplat`` (CUDA only).
        near_plane: Gaussians with view-space z below this are culled. eps2d: 2D low-pass (px^2).
        with_normal: compute ``RenderOut.normal`` (False: None, and no time spent on it).
    Returns:
        ``RenderOut``; differentiable in every input except ``Ks``.
    """
    backend = resolve_backend(backend, means.device)
    n_cams = viewmats.shape[0]
    feats = _features(means, colors, viewmats, sh_degree, n_cams, fused=backend == "studio")
    if backend == "gsplat":
        color, alpha, depth, meta = _render_gsplat(
            means, quats, scales, opacities, feats, viewmats, Ks, width, height, near_plane, eps2d
        )
    else:
        color, alpha, depth, meta = _render_tiles(
            means, quats, scales, opacities, feats, viewmats, Ks, width, height, near_plane, eps2d, backend
        )
    if background is not None:
        bg = background if background.ndim == 2 else background.expand(n_cams, -1)
        color = color + (1.0 - alpha) * bg[:, None, None, :]
    normal = depth_to_normal(depth, alpha, Ks) if with_normal else None
    meta["backend"] = backend
    return RenderOut(color=color, alpha=alpha, depth=depth, normal=normal, meta=meta)


def _features(
    means: Tensor, colors: Tensor, viewmats: Tensor, sh_degree: Optional[int], n_cams: int, fused: bool = False
) -> Tensor:
    """Per-camera features [C,N,D] from plain features or SH coefficients; ``fused``: SH colours of
    float32 CPU tensors by the extension (``SHColorsCPU``) unless the cameras need gradients."""
    if sh_degree is not None:
        if colors.ndim != 3 or colors.shape[-1] != 3 or colors.shape[0] != means.shape[0]:
            raise ValueError(f"With sh_degree set, colors must be [N,K,3]; got {tuple(colors.shape)}.")
        rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
        campos = -(rot.transpose(-1, -2) @ trans[..., None])[..., 0]  # [C,3]
        tensors = (means, colors, viewmats)
        if (
            fused
            and not viewmats.requires_grad
            and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        ):
            from studio.render._studio_impl import SHColorsCPU

            return SHColorsCPU.apply(sh_degree, colors, means, campos)
        dirs = means[None] - campos[:, None]  # [C,N,3]
        return torch.clamp_min(eval_sh(sh_degree, colors[None].expand(n_cams, -1, -1, -1), dirs) + 0.5, 0.0)
    if colors.ndim == 2:
        return colors[None].expand(n_cams, -1, -1)
    if colors.ndim == 3 and colors.shape[0] == n_cams:
        return colors
    raise ValueError(f"colors must be [N,D] or [C,N,D] (or [N,K,3] with sh_degree); got {tuple(colors.shape)}.")


def _render_tiles(means, quats, scales, opacities, feats, viewmats, Ks, width, height, near_plane, eps2d, backend):
    """torch / studio backends: shared projection and tiling, backend-specific compositing."""
    n_cams = viewmats.shape[0]
    fused = backend == "studio"
    proj = project_gaussians(means, quats, scales, viewmats, Ks, width, height, near_plane, eps2d, fused=fused)
    opac = opacities[None].expand(n_cams, -1)
    extents = tile_extents(proj.radii, proj.conics, opac, fused=fused)
    if backend == "torch":
        from studio.render._torch_impl import rasterize_to_pixels_torch as composite

        isect = isect_tiles(proj.means2d, extents, proj.depths, width, height)
    else:
        from studio.render._studio_impl import isect_tiles_studio
        from studio.render._studio_impl import rasterize_to_pixels_studio as composite

        isect = isect_tiles_studio(proj.means2d, extents, proj.depths, width, height)
    means2d = proj.means2d
    if means2d.requires_grad:
        means2d.retain_grad()
    values = torch.cat([feats, proj.depths[..., None]], dim=-1)  # depth rides as the last channel
    img, alpha = composite(means2d, proj.conics, values.contiguous(), opac.contiguous(), width, height, isect)
    depth = img[..., -1:] / alpha.clamp(min=1e-10)
    meta = {
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": proj.radii,
        "means2d": means2d,
        "depths": proj.depths,
        "conics": proj.conics,
        "opacities": opac,
        "tile_width": isect.tile_width,
        "tile_height": isect.tile_height,
        "tiles_per_gauss": isect.tiles_per_gauss,
        "isect_ids": isect.isect_ids,
        "flatten_ids": isect.flatten_ids,
        "isect_offsets": isect.isect_offsets,
        "width": width,
        "height": height,
        "tile_size": TILE_SIZE,
        "n_cameras": n_cams,
    }
    return img[..., :-1], alpha, depth, meta


def _render_gsplat(means, quats, scales, opacities, feats, viewmats, Ks, width, height, near_plane, eps2d):
    """gsplat 1.4 backend (CUDA tensors only), same model: classic mode, expected depth."""
    from gsplat import rasterization

    img, alpha, info = rasterization(
        means,
        quats,
        scales,
        opacities,
        feats,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near_plane,
        eps2d=eps2d,
        packed=False,
        rasterize_mode="classic",
        render_mode="RGB+ED",
    )
    return img[..., :-1], alpha, img[..., -1:], dict(info)
