"""The ``studio`` backend: per-tile alpha compositing (C++ and CUDA) and, on the CPU, the EWA
projection and the tile lists, all kernels of ``cuda/`` (loaded by ``studio.ext``) with
hand-written backwards.

Same contract and maths as ``rasterize_to_pixels_torch`` (see ``_torch_impl.py``). The forward
also keeps, per pixel, the final transmittance and the index of the last contributing Gaussian;
the backward walks each pixel's list back to front from there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from studio.ext import load_extension
from studio.render.tiles import TILE_SIZE, TileIntersections, isect_tiles


class ProjectGaussiansCPU(torch.autograd.Function):
    """``projection.project_gaussians(..., fused=True)`` on float32 CPU tensors: the extension's
    ``project_fwd_cpu`` / ``project_bwd_cpu`` (gradients of means2d, conics and depths in, those
    of means, quats, scales and viewmats out). ``apply`` returns (means2d, conics, depths, radii)."""

    @staticmethod
    def forward(ctx, means, quats, scales, viewmats, Ks, width, height, near_plane, eps2d):
        ext = load_extension("gauss")
        inputs = [t.detach().contiguous() for t in (means, quats, scales, viewmats, Ks)]
        means2d, conics, depths, radii = ext.project_fwd_cpu(*inputs, width, height, near_plane, eps2d)
        ctx.save_for_backward(*inputs)
        ctx.settings = (width, height, near_plane, eps2d)
        ctx.mark_non_differentiable(radii)
        return means2d, conics, depths, radii

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, _v_radii):
        ext = load_extension("gauss")
        inputs = ctx.saved_tensors
        v_means, v_quats, v_scales, v_viewmats = ext.project_bwd_cpu(
            *inputs,
            *ctx.settings,
            v_means2d.contiguous(),
            v_conics.contiguous(),
            v_depths.contiguous(),
            ctx.needs_input_grad[3],
        )
        return v_means, v_quats, v_scales, v_viewmats, None, None, None, None, None


@torch.no_grad()
def isect_tiles_studio(means2d: Tensor, extents: Tensor, depths: Tensor, width: int, height: int) -> TileIntersections:
    """``isect_tiles``' lists (the same elements) from the extension on CPU tensors: O(N + M) instead
    of a sort of the M hits. CUDA tensors go to ``isect_tiles``.

    Args:
        means2d [C,N,2] pixels, extents [C,N,2] per-axis half-sizes in pixels (0 = culled),
        depths [C,N] view-space z; width, height: image size in pixels.
    """
    if means2d.is_cuda:
        return isect_tiles(means2d, extents, depths, width, height)
    ext = load_extension("gauss")
    per_gauss, isect_ids, flatten_ids, offsets = ext.isect_tiles_cpu(
        means2d.detach().float().contiguous(),
        extents.float().contiguous(),
        depths.detach().float().contiguous(),
        width,
        height,
    )
    return TileIntersections(
        tiles_per_gauss=per_gauss,
        isect_ids=isect_ids,
        flatten_ids=flatten_ids,
        isect_offsets=offsets,
        tile_width=(width + TILE_SIZE - 1) // TILE_SIZE,
        tile_height=(height + TILE_SIZE - 1) // TILE_SIZE,
    )


def rasterize_to_pixels_studio(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    width: int,
    height: int,
    isect: TileIntersections,
) -> tuple[Tensor, Tensor]:
    """Composite projected Gaussians front to back (float32, CPU or CUDA).

    Args:
        means2d [C,N,2], conics [C,N,3], colors [C,N,D], opacities [C,N]: per-camera 2D Gaussians.
        width, height: image size. isect: tile lists from ``isect_tiles``.
    Returns:
        colors [C,H,W,D] (no background), alphas [C,H,W,1]; differentiable in the four tensors.
    """
    return _RasterizeToPixels.apply(
        means2d, conics, colors, opacities, width, height, isect.isect_offsets, isect.flatten_ids
    )


class _RasterizeToPixels(torch.autograd.Function):
    """Extension's ``rasterize_fwd`` / ``rasterize_bwd``; the backward takes the gradients of both
    outputs and returns those of means2d, conics, colors and opacities."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, width, height, isect_offsets, flatten_ids):
        ext = load_extension("gauss", with_cuda=True if means2d.is_cuda else None)
        inputs = [t.contiguous() for t in (means2d, conics, colors, opacities)]
        offsets, ids = isect_offsets.contiguous(), flatten_ids.contiguous()
        out_colors, out_alphas, final_T, last_ids = ext.rasterize_fwd(*inputs, width, height, offsets, ids)
        ctx.save_for_backward(*inputs, offsets, ids, final_T, last_ids)
        ctx.size = (width, height)
        return out_colors, out_alphas

    @staticmethod
    def backward(ctx, v_colors, v_alphas):
        ext = load_extension("gauss", with_cuda=True if v_colors.is_cuda else None)
        means2d, conics, colors, opacities, offsets, ids, final_T, last_ids = ctx.saved_tensors
        width, height = ctx.size
        v_means2d, v_conics, v_colors_in, v_opacities = ext.rasterize_bwd(
            means2d,
            conics,
            colors,
            opacities,
            width,
            height,
            offsets,
            ids,
            final_T,
            last_ids,
            v_colors.contiguous(),
            v_alphas.contiguous(),
        )
        return v_means2d, v_conics, v_colors_in, v_opacities, None, None, None, None


class SHColorsCPU(torch.autograd.Function):
    """``rgb = max(0, 0.5 + SH(normalize(mean - campos)))`` [C,N,3] by the extension's
    ``sh_colors_fwd_cpu`` / ``sh_colors_bwd_cpu`` (float32 CPU; gradients in coeffs and means;
    campos is a constant). ``apply(degree, coeffs [N,K,3], means [N,3], campos [C,3])``."""

    @staticmethod
    def forward(ctx, degree, coeffs, means, campos):
        ext = load_extension("gauss")
        inputs = [t.detach().contiguous() for t in (coeffs, means, campos)]
        ctx.save_for_backward(*inputs)
        ctx.degree = degree
        return ext.sh_colors_fwd_cpu(degree, *inputs)

    @staticmethod
    def backward(ctx, v_colors):
        ext = load_extension("gauss")
        v_coeffs, v_means = ext.sh_colors_bwd_cpu(ctx.degree, *ctx.saved_tensors, v_colors.contiguous())
        return None, v_coeffs, v_means, None
