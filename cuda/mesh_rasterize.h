// Triangle rasterizer with nvdiffrast-like semantics ("mesh" extension).
//
// Shared declarations of the CPU (mesh_rasterize_cpu.cpp) and CUDA (mesh_rasterize.cu) kernels;
// mesh_ext.cpp binds them. The maths is the one of studio/mesh/_torch_impl.py, operation for
// operation, so the outputs are bit-identical:
//
// Clip space is OpenGL-style: vertex (x, y, z, w), inside when -w <= x, y, z <= w. Pixel (row i,
// col j) has its centre at NDC
//   px = (2 j + 1) / W - 1,   py = (2 i + 1) / H - 1        (row 0 <-> NDC y = -1)
// For a triangle (p0, p1, p2) and a pixel, with X_k = x_k - px w_k, Y_k = y_k - py w_k:
//   a0 = X1 Y2 - X2 Y1,  a1 = X2 Y0 - X0 Y2,  a2 = X0 Y1 - X1 Y0,  s = a0 + a1 + a2
// (a is proportional to the perspective-correct barycentrics: sum_k a_k (x_k, y_k, w_k) projects
// onto the pixel centre). The pixel is covered when all a_k >= 0 and s > 0, or all a_k <= 0 and
// s < 0 (both windings; edges shared by two triangles are tested with exactly negated edge
// functions, so meshes are watertight). Then
//   u = a0 / s,  v = a1 / s                           (weights u, v, 1-u-v of v0, v1, v2)
//   depth = (a0 z0 + a1 z1 + a2 z2) / (a0 w0 + a1 w1 + a2 w2)      (= z/w, NDC depth)
// and the sample is kept only when -1 <= depth <= 1 (near/far clipping per pixel).
// Triangles with a vertex at w <= 0 (behind the camera or crossing its plane) or with a
// non-finite coordinate are culled as a whole (no clipping).
// Visibility: the smallest key = (order-preserving int32 of depth) << 32 | triangle id wins, i.e.
// the nearest sample, the lower triangle id on equal depth (deterministic).
//
// Shapes: verts_clip [B,V,4] float32, faces [F,3] int32, bary [B,H,W,2] (u, v) float32,
// tri_id [B,H,W] int32 (-1 = empty), depth [B,H,W] float32 (0 where empty),
// attr [Ba,V,D] float32 with Ba in {1, B}, interpolated [B,H,W,D].
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__CUDACC__)
#define MESH_HD __host__ __device__ __forceinline__
#else
#define MESH_HD inline
#endif

// Explicitly rounded float operations: on the GPU the _rn intrinsics keep nvcc from fusing
// multiply-adds, so every backend rounds like the torch reference.
#ifdef __CUDA_ARCH__
#define MESH_MUL(a, b) __fmul_rn((a), (b))
#define MESH_ADD(a, b) __fadd_rn((a), (b))
#define MESH_SUB(a, b) __fsub_rn((a), (b))
#define MESH_DIV(a, b) __fdiv_rn((a), (b))
#else
#define MESH_MUL(a, b) ((a) * (b))
#define MESH_ADD(a, b) ((a) + (b))
#define MESH_SUB(a, b) ((a) - (b))
#define MESH_DIV(a, b) ((a) / (b))
#endif

namespace studio {
namespace mesh {

constexpr int64_t kEmptyKey = INT64_MAX;

// NDC coordinate of the centre of pixel `index` along an axis of `size` pixels.
MESH_HD float pixel_ndc(int64_t index, int64_t size) {
  return MESH_SUB(MESH_DIV(static_cast<float>(2 * index + 1), static_cast<float>(size)), 1.0f);
}

struct Sample {
  float u, v, depth;
};

// Perspective-correct barycentrics and depth of a triangle (p0, p1, p2: pointers to 4 floats
// x, y, z, w) at NDC (px, py). Returns whether the pixel is covered and inside [-1, 1] in depth.
MESH_HD bool triangle_sample(const float* p0, const float* p1, const float* p2, float px, float py, Sample& out) {
  const float X0 = MESH_SUB(p0[0], MESH_MUL(px, p0[3])), Y0 = MESH_SUB(p0[1], MESH_MUL(py, p0[3]));
  const float X1 = MESH_SUB(p1[0], MESH_MUL(px, p1[3])), Y1 = MESH_SUB(p1[1], MESH_MUL(py, p1[3]));
  const float X2 = MESH_SUB(p2[0], MESH_MUL(px, p2[3])), Y2 = MESH_SUB(p2[1], MESH_MUL(py, p2[3]));
  const float a0 = MESH_SUB(MESH_MUL(X1, Y2), MESH_MUL(X2, Y1));
  const float a1 = MESH_SUB(MESH_MUL(X2, Y0), MESH_MUL(X0, Y2));
  const float a2 = MESH_SUB(MESH_MUL(X0, Y1), MESH_MUL(X1, Y0));
  const float s = MESH_ADD(MESH_ADD(a0, a1), a2);
  const bool pos = (a0 >= 0.f) & (a1 >= 0.f) & (a2 >= 0.f) & (s > 0.f);  // branch-free
  const bool neg = (a0 <= 0.f) & (a1 <= 0.f) & (a2 <= 0.f) & (s < 0.f);
  if (!(pos | neg)) return false;
  const float zc = MESH_ADD(MESH_ADD(MESH_MUL(a0, p0[2]), MESH_MUL(a1, p1[2])), MESH_MUL(a2, p2[2]));
  const float wc = MESH_ADD(MESH_ADD(MESH_MUL(a0, p0[3]), MESH_MUL(a1, p1[3])), MESH_MUL(a2, p2[3]));
  const float depth = MESH_DIV(zc, wc);
  if (!(depth >= -1.0f && depth <= 1.0f)) return false;
  out.u = MESH_DIV(a0, s);
  out.v = MESH_DIV(a1, s);
  out.depth = depth;
  return true;
}

// Visibility key: order-preserving int32 of the float depth in the high half, id in the low.
MESH_HD int64_t depth_key(float depth, int32_t id) {
  int32_t bits;
#ifdef __CUDA_ARCH__
  bits = __float_as_int(depth);
#else
  std::memcpy(&bits, &depth, sizeof(bits));
#endif
  const int32_t ordered = bits < 0 ? (bits ^ 0x7fffffff) : bits;
  return static_cast<int64_t>(ordered) * (int64_t(1) << 32) + static_cast<int64_t>(id);
}

// Whether a triangle is drawn at all: every w > 0 and every coordinate finite.
MESH_HD bool triangle_visible(const float* p0, const float* p1, const float* p2) {
  for (int k = 0; k < 4; ++k) {
#ifdef __CUDA_ARCH__
    if (!(isfinite(p0[k]) && isfinite(p1[k]) && isfinite(p2[k]))) return false;
#else
    if (!(std::isfinite(p0[k]) && std::isfinite(p1[k]) && std::isfinite(p2[k]))) return false;
#endif
  }
  return p0[3] > 0.f && p1[3] > 0.f && p2[3] > 0.f;
}

// Pixel range [lo, hi] (inclusive) whose centres may lie in [min_ndc, max_ndc] along an axis of
// `size` pixels: a conservative bound (0.01 px margin), the exact test is triangle_sample.
MESH_HD void pixel_range(float min_ndc, float max_ndc, int64_t size, int64_t& lo, int64_t& hi) {
  const float half = 0.5f * static_cast<float>(size);
  const float last = static_cast<float>(size - 1);
  // first centre >= min - margin, last centre <= max + margin; clamped before the integer floor
  float lo_f = (min_ndc + 1.0f) * half - 0.51f;
  float hi_f = (max_ndc + 1.0f) * half - 0.49f;
  if (!(lo_f > -1.0f)) lo_f = -1.0f;  // also NaN
  if (lo_f > last) lo_f = last + 1.0f;
  if (!(hi_f < last + 1.0f)) hi_f = last + 1.0f;
  if (hi_f < -1.0f) hi_f = -1.0f;
  // floor of a float in [-1, size]: truncation, minus one for negative non-integers
  int64_t lo_i = static_cast<int64_t>(lo_f), hi_i = static_cast<int64_t>(hi_f);
  lo_i -= static_cast<float>(lo_i) > lo_f ? 1 : 0;
  hi_i -= static_cast<float>(hi_i) > hi_f ? 1 : 0;
  lo = lo_i + 1 < 0 ? 0 : lo_i + 1;
  hi = hi_i > size - 1 ? size - 1 : hi_i;
}

// Backward of one covered pixel: given the saved (u, v, depth) and the gradients of u, v and
// depth, accumulates d/d(p_k) into g[k][0..3] (x, y, z, w of vertex k).
MESH_HD void sample_backward(const float* p0, const float* p1, const float* p2, float px, float py,
                             float u, float v, float depth, float gu, float gv, float gd, float g[3][4]) {
  const float* p[3] = {p0, p1, p2};
  const float t = 1.0f - u - v;
  const float b[3] = {u, v, t};
  const float wc = u * p0[3] + v * p1[3] + t * p2[3];
  const float g_zc = gd / wc;
  const float g_wc = -g_zc * depth;
  for (int k = 0; k < 3; ++k) {
    g[k][2] += g_zc * b[k];
    g[k][3] += g_wc * b[k];
  }
  const float gt = g_zc * p2[2] + g_wc * p2[3];
  const float gu_t = gu + g_zc * p0[2] + g_wc * p0[3] - gt;
  const float gv_t = gv + g_zc * p1[2] + g_wc * p1[3] - gt;
  float X[3], Y[3];
  for (int k = 0; k < 3; ++k) {
    X[k] = p[k][0] - px * p[k][3];
    Y[k] = p[k][1] - py * p[k][3];
  }
  const float a0 = X[1] * Y[2] - X[2] * Y[1];
  const float a1 = X[2] * Y[0] - X[0] * Y[2];
  const float a2 = X[0] * Y[1] - X[1] * Y[0];
  const float s = a0 + a1 + a2;
  const float dot = gu_t * u + gv_t * v;
  const float ga0 = (gu_t - dot) / s, ga1 = (gv_t - dot) / s, ga2 = -dot / s;
  float gX[3], gY[3];
  gX[0] = ga2 * Y[1] - ga1 * Y[2];
  gY[0] = ga1 * X[2] - ga2 * X[1];
  gX[1] = ga0 * Y[2] - ga2 * Y[0];
  gY[1] = ga2 * X[0] - ga0 * X[2];
  gX[2] = ga1 * Y[0] - ga0 * Y[1];
  gY[2] = ga0 * X[1] - ga1 * X[0];
  for (int k = 0; k < 3; ++k) {
    g[k][0] += gX[k];
    g[k][1] += gY[k];
    g[k][3] += -px * gX[k] - py * gY[k];
  }
}

// ---- CPU (at::parallel_for) ----

// Returns {bary [B,H,W,2], tri_id [B,H,W] int32, depth [B,H,W]}.
std::vector<at::Tensor> rasterize_fwd_cpu(const at::Tensor& verts, const at::Tensor& faces, int64_t width,
                                          int64_t height);
// Returns g_verts [B,V,4].
at::Tensor rasterize_bwd_cpu(const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& bary,
                             const at::Tensor& tri_id, const at::Tensor& depth, const at::Tensor& g_bary,
                             const at::Tensor& g_depth);
// Returns out [B,H,W,D].
at::Tensor interpolate_fwd_cpu(const at::Tensor& attr, const at::Tensor& bary, const at::Tensor& tri_id,
                               const at::Tensor& faces);
// Returns {g_attr [B,V,D] (per image; the caller sums when attr was shared), g_bary [B,H,W,2]}.
std::vector<at::Tensor> interpolate_bwd_cpu(const at::Tensor& attr, const at::Tensor& bary,
                                            const at::Tensor& tri_id, const at::Tensor& faces,
                                            const at::Tensor& g_out);

#ifdef STUDIO_WITH_CUDA
// ---- CUDA (per-triangle raster with 64-bit atomicMin, then per-pixel resolve), same contracts ----
std::vector<at::Tensor> rasterize_fwd_cuda(const at::Tensor& verts, const at::Tensor& faces, int64_t width,
                                           int64_t height);
at::Tensor rasterize_bwd_cuda(const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& bary,
                              const at::Tensor& tri_id, const at::Tensor& depth, const at::Tensor& g_bary,
                              const at::Tensor& g_depth);
at::Tensor interpolate_fwd_cuda(const at::Tensor& attr, const at::Tensor& bary, const at::Tensor& tri_id,
                                const at::Tensor& faces);
std::vector<at::Tensor> interpolate_bwd_cuda(const at::Tensor& attr, const at::Tensor& bary,
                                             const at::Tensor& tri_id, const at::Tensor& faces,
                                             const at::Tensor& g_out);
#endif

// Input validation shared by both devices.
void check_mesh_inputs(const at::Tensor& verts, const at::Tensor& faces, int64_t width, int64_t height);
void check_pixel_tensors(const at::Tensor& ref, int64_t B, int64_t H, int64_t W, const at::Tensor& bary,
                         const at::Tensor& tri_id);

}  // namespace mesh
}  // namespace studio
