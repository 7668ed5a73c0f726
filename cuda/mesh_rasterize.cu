// CUDA kernels of the triangle rasterizer (see mesh_rasterize.h for the maths and shapes).
//
// Forward: one thread per (image, triangle) scans its pixel rectangle and does a 64-bit
// atomicMin of the (depth, id) key (as unsigned: sign bit flipped) into a per-pixel buffer; a
// second kernel, one thread per pixel, decodes the winner and recomputes (u, v, depth) with the
// same rounded operations (bit-identical to the CPU kernels). Backward: one thread per pixel,
// atomicAdd into the vertex / attribute gradients (their summation order is not deterministic).
#include "mesh_rasterize.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

namespace studio {
namespace mesh {
namespace {

constexpr int kThreads = 256;
constexpr unsigned long long kEmptyUKey = 0xffffffffffffffffull;

__device__ __forceinline__ unsigned long long unsigned_key(int64_t key) {
  return static_cast<unsigned long long>(key) ^ 0x8000000000000000ull;
}

__device__ __forceinline__ void load_triangle(const float* verts, const int32_t* faces, int64_t V, int64_t b,
                                              int64_t f, const float*& p0, const float*& p1, const float*& p2) {
  const float* base = verts + b * V * 4;
  p0 = base + 4 * faces[3 * f];
  p1 = base + 4 * faces[3 * f + 1];
  p2 = base + 4 * faces[3 * f + 2];
}

__global__ void raster_triangles_kernel(const float* __restrict__ verts, const int32_t* __restrict__ faces,
                                        int64_t B, int64_t V, int64_t F, int64_t H, int64_t W,
                                        unsigned long long* __restrict__ keys) {
  const int64_t bf = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (bf >= B * F) return;
  const int64_t b = bf / F, f = bf % F;
  const float *p0, *p1, *p2;
  load_triangle(verts, faces, V, b, f, p0, p1, p2);
  if (!triangle_visible(p0, p1, p2)) return;
  const float* p[3] = {p0, p1, p2};
  float xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (int k = 0; k < 3; ++k) {
    const float x = p[k][0] / p[k][3], y = p[k][1] / p[k][3];
    xmin = fminf(xmin, x), xmax = fmaxf(xmax, x), ymin = fminf(ymin, y), ymax = fmaxf(ymax, y);
  }
  int64_t j0, j1, i0, i1;
  pixel_range(xmin, xmax, W, j0, j1);
  pixel_range(ymin, ymax, H, i0, i1);
  for (int64_t i = i0; i <= i1; ++i) {
    const float py = pixel_ndc(i, H);
    for (int64_t j = j0; j <= j1; ++j) {
      Sample smp;
      if (!triangle_sample(p0, p1, p2, pixel_ndc(j, W), py, smp)) continue;
      atomicMin(keys + (b * H + i) * W + j, unsigned_key(depth_key(smp.depth, static_cast<int32_t>(f))));
    }
  }
}

__global__ void resolve_kernel(const float* __restrict__ verts, const int32_t* __restrict__ faces, int64_t B,
                               int64_t V, int64_t H, int64_t W, const unsigned long long* __restrict__ keys,
                               float* __restrict__ bary, int32_t* __restrict__ tri_id, float* __restrict__ depth) {
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pix >= B * H * W) return;
  const unsigned long long key = keys[pix];
  if (key == kEmptyUKey) return;
  const int32_t f = static_cast<int32_t>(key & 0xffffffffull);
  const int64_t b = pix / (H * W), i = (pix / W) % H, j = pix % W;
  const float *p0, *p1, *p2;
  load_triangle(verts, faces, V, b, f, p0, p1, p2);
  Sample smp;
  triangle_sample(p0, p1, p2, pixel_ndc(j, W), pixel_ndc(i, H), smp);
  tri_id[pix] = f;
  bary[2 * pix] = smp.u;
  bary[2 * pix + 1] = smp.v;
  depth[pix] = smp.depth;
}

__global__ void raster_bwd_kernel(const float* __restrict__ verts, const int32_t* __restrict__ faces, int64_t B,
                                  int64_t V, int64_t H, int64_t W, const float* __restrict__ bary,
                                  const int32_t* __restrict__ tri_id, const float* __restrict__ depth,
                                  const float* __restrict__ g_bary, const float* __restrict__ g_depth,
                                  float* __restrict__ g_verts) {
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pix >= B * H * W) return;
  const int32_t f = tri_id[pix];
  if (f < 0) return;
  const float gu = g_bary[2 * pix], gv = g_bary[2 * pix + 1], gd = g_depth[pix];
  if (gu == 0.f && gv == 0.f && gd == 0.f) return;
  const int64_t b = pix / (H * W), i = (pix / W) % H, j = pix % W;
  const float *p0, *p1, *p2;
  load_triangle(verts, faces, V, b, f, p0, p1, p2);
  float g[3][4] = {{0.f}};
  sample_backward(p0, p1, p2, pixel_ndc(j, W), pixel_ndc(i, H), bary[2 * pix], bary[2 * pix + 1], depth[pix], gu, gv,
                  gd, g);
  for (int k = 0; k < 3; ++k) {
    float* dst = g_verts + (b * V + faces[3 * f + k]) * 4;
    for (int c = 0; c < 4; ++c) atomicAdd(dst + c, g[k][c]);
  }
}

__global__ void interp_fwd_kernel(const float* __restrict__ attr, const float* __restrict__ bary,
                                  const int32_t* __restrict__ tri_id, const int32_t* __restrict__ faces,
                                  int64_t n_pix, int64_t HW, int64_t Ba, int64_t V, int64_t D,
                                  float* __restrict__ out) {
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pix >= n_pix) return;
  const int32_t f = tri_id[pix];
  if (f < 0) return;
  const float* a = attr + (Ba == 1 ? 0 : pix / HW) * V * D;
  const float* a0 = a + faces[3 * f] * D;
  const float* a1 = a + faces[3 * f + 1] * D;
  const float* a2 = a + faces[3 * f + 2] * D;
  const float u = bary[2 * pix], v = bary[2 * pix + 1];
  const float t = MESH_SUB(MESH_SUB(1.0f, u), v);
  for (int64_t d = 0; d < D; ++d) {
    out[pix * D + d] = MESH_ADD(MESH_ADD(MESH_MUL(u, a0[d]), MESH_MUL(v, a1[d])), MESH_MUL(t, a2[d]));
  }
}

__global__ void interp_bwd_kernel(const float* __restrict__ attr, const float* __restrict__ bary,
                                  const int32_t* __restrict__ tri_id, const int32_t* __restrict__ faces,
                                  int64_t n_pix, int64_t HW, int64_t Ba, int64_t V, int64_t D,
                                  const float* __restrict__ g_out, float* __restrict__ g_attr,
                                  float* __restrict__ g_bary) {
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pix >= n_pix) return;
  const int32_t f = tri_id[pix];
  if (f < 0) return;
  const int64_t b = pix / HW;
  const float* a = attr + (Ba == 1 ? 0 : b) * V * D;
  const int32_t idx[3] = {faces[3 * f], faces[3 * f + 1], faces[3 * f + 2]};
  const float u = bary[2 * pix], v = bary[2 * pix + 1];
  const float w[3] = {u, v, (1.0f - u) - v};
  const float* g = g_out + pix * D;
  float gu = 0.f, gvv = 0.f;
  for (int64_t d = 0; d < D; ++d) {
    const float a0 = a[idx[0] * D + d], a1 = a[idx[1] * D + d], a2 = a[idx[2] * D + d];
    gu += g[d] * (a0 - a2);
    gvv += g[d] * (a1 - a2);
    for (int k = 0; k < 3; ++k) atomicAdd(g_attr + (b * V + idx[k]) * D + d, w[k] * g[d]);
  }
  g_bary[2 * pix] = gu;
  g_bary[2 * pix + 1] = gvv;
}

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

std::vector<at::Tensor> rasterize_fwd_cuda(const at::Tensor& verts, const at::Tensor& faces, int64_t width,
                                           int64_t height) {
  check_mesh_inputs(verts, faces, width, height);
  const at::cuda::CUDAGuard guard(verts.device());
  const int64_t B = verts.size(0), V = verts.size(1), F = faces.size(0), H = height, W = width;
  auto bary = at::zeros({B, H, W, 2}, verts.options());
  auto tri_id = at::full({B, H, W}, -1, verts.options().dtype(at::kInt));
  auto depth = at::zeros({B, H, W}, verts.options());
  if (B == 0 || F == 0) return {bary, tri_id, depth};
  TORCH_CHECK(faces.min().item<int32_t>() >= 0 && faces.max().item<int32_t>() < V,
              "faces index a vertex out of range");
  auto keys = at::full({B, H, W}, -1, verts.options().dtype(at::kLong));  // all bits set = empty
  auto stream = at::cuda::getCurrentCUDAStream();
  raster_triangles_kernel<<<blocks_for(B * F), kThreads, 0, stream>>>(
      verts.data_ptr<float>(), faces.data_ptr<int32_t>(), B, V, F, H, W,
      reinterpret_cast<unsigned long long*>(keys.data_ptr<int64_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  resolve_kernel<<<blocks_for(B * H * W), kThreads, 0, stream>>>(
      verts.data_ptr<float>(), faces.data_ptr<int32_t>(), B, V, H, W,
      reinterpret_cast<const unsigned long long*>(keys.data_ptr<int64_t>()), bary.data_ptr<float>(),
      tri_id.data_ptr<int32_t>(), depth.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {bary, tri_id, depth};
}

at::Tensor rasterize_bwd_cuda(const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& bary,
                              const at::Tensor& tri_id, const at::Tensor& depth, const at::Tensor& g_bary,
                              const at::Tensor& g_depth) {
  check_mesh_inputs(verts, faces, 1, 1);
  const at::cuda::CUDAGuard guard(verts.device());
  const int64_t B = verts.size(0), V = verts.size(1), H = tri_id.size(1), W = tri_id.size(2);
  check_pixel_tensors(verts, B, H, W, bary, tri_id);
  check_pixel_tensors(verts, B, H, W, g_bary, tri_id);
  TORCH_CHECK(depth.sizes() == tri_id.sizes() && g_depth.sizes() == tri_id.sizes() && depth.is_contiguous() &&
                  g_depth.is_contiguous(),
              "depth and its gradient must be contiguous float32 [B,H,W]");
  auto g_verts = at::zeros_like(verts);
  if (B * H * W == 0) return g_verts;
  raster_bwd_kernel<<<blocks_for(B * H * W), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      verts.data_ptr<float>(), faces.data_ptr<int32_t>(), B, V, H, W, bary.data_ptr<float>(),
      tri_id.data_ptr<int32_t>(), depth.data_ptr<float>(), g_bary.data_ptr<float>(), g_depth.data_ptr<float>(),
      g_verts.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return g_verts;
}

at::Tensor interpolate_fwd_cuda(const at::Tensor& attr, const at::Tensor& bary, const at::Tensor& tri_id,
                                const at::Tensor& faces) {
  TORCH_CHECK(attr.dim() == 3 && attr.scalar_type() == at::kFloat && attr.is_contiguous(),
              "attr must be contiguous float32 [Ba,V,D]");
  const at::cuda::CUDAGuard guard(attr.device());
  const int64_t B = tri_id.size(0), H = tri_id.size(1), W = tri_id.size(2);
  TORCH_CHECK(attr.size(0) == 1 || attr.size(0) == B, "attr must have batch size 1 or B");
  check_pixel_tensors(attr, B, H, W, bary, tri_id);
  const int64_t D = attr.size(2);
  auto out = at::zeros({B, H, W, D}, attr.options());
  if (B * H * W == 0) return out;
  interp_fwd_kernel<<<blocks_for(B * H * W), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      attr.data_ptr<float>(), bary.data_ptr<float>(), tri_id.data_ptr<int32_t>(), faces.data_ptr<int32_t>(),
      B * H * W, H * W, attr.size(0), attr.size(1), D, out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::vector<at::Tensor> interpolate_bwd_cuda(const at::Tensor& attr, const at::Tensor& bary,
                                             const at::Tensor& tri_id, const at::Tensor& faces,
                                             const at::Tensor& g_out) {
  const at::cuda::CUDAGuard guard(attr.device());
  const int64_t B = tri_id.size(0), H = tri_id.size(1), W = tri_id.size(2);
  check_pixel_tensors(attr, B, H, W, bary, tri_id);
  const int64_t V = attr.size(1), D = attr.size(2);
  TORCH_CHECK(g_out.is_contiguous() && g_out.numel() == B * H * W * D, "the output gradient must be [B,H,W,D]");
  auto g_attr = at::zeros({B, V, D}, attr.options());
  auto g_bary = at::zeros_like(bary);
  if (B * H * W == 0) return {g_attr, g_bary};
  interp_bwd_kernel<<<blocks_for(B * H * W), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      attr.data_ptr<float>(), bary.data_ptr<float>(), tri_id.data_ptr<int32_t>(), faces.data_ptr<int32_t>(),
      B * H * W, H * W, attr.size(0), V, D, g_out.data_ptr<float>(), g_attr.data_ptr<float>(),
      g_bary.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {g_attr, g_bary};
}

}  // namespace mesh
}  // namespace studio
