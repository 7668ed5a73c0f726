// Tile-based alpha compositing of projected 2D Gaussians ("rasterize to pixels").
//
// Shared declarations of the CPU (gauss_rasterize_cpu.cpp) and CUDA (gauss_rasterize.cu)
// kernels; gauss_ext.cpp binds them. The maths is the one of studio/render/_torch_impl.py
// (gsplat 1.4's rasterize_to_pixels): for pixel p, centre (j + 0.5, i + 0.5), and its tile's
// depth-sorted Gaussians k,
//   sigma_k = 0.5 (a dx^2 + c dy^2) + b dx dy,  (dx, dy) = mean2d_k - p,  conic (a, b, c)
//   alpha_k = min(0.999, o_k exp(-sigma_k)),  skipped when sigma_k < 0 or alpha_k < 1/255
//   compositing stops before the first k with T_k (1 - alpha_k) <= 1e-4
//   color = sum_k T_k alpha_k c_k,  alpha = 1 - T_final.
// The forward also returns T_final and the index (into flatten_ids) of the last contributing
// Gaussian of each pixel (-1 if none); the backward walks back from it, recovering
// T_k = T_{k+1} / (1 - alpha_k).
//
// Shapes (C cameras, N Gaussians, D channels, M tile hits, float32 unless noted):
//   means2d [C,N,2], conics [C,N,3], values [C,N,D], opacities [C,N],
//   isect_offsets [C,tile_h,tile_w] int32, flatten_ids [M] int32 (= camera * N + gaussian),
//   colors [C,H,W,D], alphas [C,H,W,1], final_T [C,H,W], last_ids [C,H,W] int32.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#if defined(__CUDACC__)
#define STUDIO_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define STUDIO_HOST_DEVICE inline
#endif

namespace studio {

constexpr int kTileSize = 16;
constexpr int kTilePixels = kTileSize * kTileSize;
constexpr float kAlphaMin = 1.0f / 255.0f;
constexpr float kAlphaMax = 0.999f;
constexpr float kTransmittanceMin = 1e-4f;

// sigma of a Gaussian at offset (dx, dy) = mean2d - pixel centre, in the torch reference's
// operation order. Forward and backward share it so that the backward recomputes exactly the
// forward's alphas; on the GPU the explicit round-to-nearest intrinsics keep the compiler from
// fusing multiply-adds differently in the two kernels.
STUDIO_HOST_DEVICE float gauss_sigma(float a, float b, float c, float dx, float dy) {
#ifdef __CUDA_ARCH__
  const float quad = __fadd_rn(__fmul_rn(a, __fmul_rn(dx, dx)), __fmul_rn(c, __fmul_rn(dy, dy)));
  return __fadd_rn(__fmul_rn(0.5f, quad), __fmul_rn(__fmul_rn(b, dx), dy));
#else
  return 0.5f * (a * (dx * dx) + c * (dy * dy)) + b * dx * dy;
#endif
}

// alpha = min(0.999, o * vis) with vis = exp(-sigma); NaN stays NaN (then it is skipped).
STUDIO_HOST_DEVICE float gauss_alpha(float opacity, float vis) {
  const float alpha = opacity * vis;
  return alpha > kAlphaMax ? kAlphaMax : alpha;
}

// True when a Gaussian with this sigma and alpha = min(0.999, o exp(-sigma)) is composited;
// false for NaNs as in the torch reference.
STUDIO_HOST_DEVICE bool gauss_contributes(float sigma, float alpha) {
  return sigma >= 0.f && alpha >= kAlphaMin;
}

// ---- CPU (at::parallel_for over tiles) ----

// Every tensor of `tensors` on the CPU, float32 and contiguous, or one error: "`function` takes
// contiguous float32 CPU `what`".
inline void check_cpu_float32(std::initializer_list<const at::Tensor*> tensors, const char* function,
                              const char* what = "tensors") {
  for (const at::Tensor* t : tensors) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->is_contiguous(), function,
                " takes contiguous float32 CPU ", what);
  }
}

// Returns {colors [C,H,W,D], alphas [C,H,W,1], final_T [C,H,W], last_ids [C,H,W] int32}.
std::vector<at::Tensor> rasterize_fwd_cpu(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& values,
    const at::Tensor& opacities, int64_t width, int64_t height,
    const at::Tensor& isect_offsets, const at::Tensor& flatten_ids);

// Returns {v_means2d [C,N,2], v_conics [C,N,3], v_values [C,N,D], v_opacities [C,N]}.
std::vector<at::Tensor> rasterize_bwd_cpu(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& values,
    const at::Tensor& opacities, int64_t width, int64_t height,
    const at::Tensor& isect_offsets, const at::Tensor& flatten_ids,
    const at::Tensor& final_T, const at::Tensor& last_ids,
    const at::Tensor& v_colors, const at::Tensor& v_alphas);

// Tile lists of studio/render/tiles.py's isect_tiles (the same elements), on the CPU:
// means2d [C,N,2], extents [C,N,2] per-axis half-sizes in pixels (0 = culled), depths [C,N]
// (float32) -> {tiles_per_gauss [C,N] int32, isect_ids [M] int64, flatten_ids [M] int32,
// isect_offsets [C,tile_h,tile_w] int32}.
std::vector<at::Tensor> isect_tiles_cpu(const at::Tensor& means2d, const at::Tensor& extents, const at::Tensor& depths,
                                        int64_t width, int64_t height);

// studio/render/tiles.py's tile_extents on the CPU: radii [C,N] int32, conics [C,N,3], opacities
// [C,N] or [N] (float32) -> [C,N,2] per-axis half-sizes in pixels (0 = culled).
at::Tensor tile_extents_cpu(const at::Tensor& radii, const at::Tensor& conics, const at::Tensor& opacities);

// View-dependent colours from SH (gauss_sh_cpu.cpp): degree 0..3, coeffs [N,K,3], means [N,3],
// campos [C,3] (float32) -> max(0, 0.5 + SH) [C,N,3]; the backward also takes v_colors [C,N,3] and
// returns {v_coeffs [N,K,3], v_means [N,3]}.
at::Tensor sh_colors_fwd_cpu(int64_t degree, const at::Tensor& coeffs, const at::Tensor& means,
                             const at::Tensor& campos);
std::vector<at::Tensor> sh_colors_bwd_cpu(int64_t degree, const at::Tensor& coeffs, const at::Tensor& means,
                                          const at::Tensor& campos, const at::Tensor& v_colors);

// EWA projection (studio/render/projection.py) on the CPU (gauss_project_cpu.cpp): means [N,3],
// quats [N,4], scales [N,3], viewmats [C,4,4], Ks [C,3,3] (contiguous float32) -> {means2d [C,N,2],
// conics [C,N,3], depths [C,N], radii [C,N] int32}.
std::vector<at::Tensor> project_fwd_cpu(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                                        const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                        int64_t height, double near_plane, double eps2d);

// Its backward: the forward's inputs and the gradients of means2d, conics, depths -> {v_means,
// v_quats, v_scales, v_viewmats [C,4,4] (an undefined tensor unless viewmats_grad)}.
std::vector<at::Tensor> project_bwd_cpu(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                                        const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                        int64_t height, double near_plane, double eps2d, const at::Tensor& v_means2d,
                                        const at::Tensor& v_conics, const at::Tensor& v_depths,
                                        bool viewmats_grad);

// The CPU kernels' per-tile loops: "avx2" (8 pixels per step; where the CPU has AVX2 and FMA and
// SIMD is enabled) or "scalar". set_cpu_simd(false) forces the scalar loops (true: back to the
// default); it returns the previous setting.
std::string cpu_simd();
bool set_cpu_simd(bool enabled);

#ifdef STUDIO_WITH_CUDA
// ---- CUDA (one 16x16 block per tile), same contracts ----

std::vector<at::Tensor> rasterize_fwd_cuda(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& values,
    const at::Tensor& opacities, int64_t width, int64_t height,
    const at::Tensor& isect_offsets, const at::Tensor& flatten_ids);

std::vector<at::Tensor> rasterize_bwd_cuda(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& values,
    const at::Tensor& opacities, int64_t width, int64_t height,
    const at::Tensor& isect_offsets, const at::Tensor& flatten_ids,
    const at::Tensor& final_T, const at::Tensor& last_ids,
    const at::Tensor& v_colors, const at::Tensor& v_alphas);
#endif

// Input validation shared by both devices (shapes, dtypes, contiguity, one device).
void check_rasterize_inputs(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& values,
    const at::Tensor& opacities, int64_t width, int64_t height,
    const at::Tensor& isect_offsets, const at::Tensor& flatten_ids);
void check_rasterize_backward_inputs(
    const at::Tensor& means2d, const at::Tensor& values, int64_t width, int64_t height,
    const at::Tensor& final_T, const at::Tensor& last_ids, const at::Tensor& v_colors,
    const at::Tensor& v_alphas);

}  // namespace studio
