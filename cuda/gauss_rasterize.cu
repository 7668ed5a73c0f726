// CUDA kernels of the tile rasterizer (see gauss_rasterize.h for the maths and shapes).
//
// As gsplat's rasterize_to_pixels: one 16x16 block per tile, one thread per pixel; the tile's
// Gaussians are staged in shared memory in batches of 256. The forward goes front to back and
// the whole block stops once every pixel is saturated; the backward goes back to front from
// each pixel's last contributor, sums per-Gaussian gradients over each warp and adds them to
// global memory with atomicAdd.
//
// Any channel count D: the kernels are templated on a chunk of CH channels (registers) and the
// host launches one kernel per chunk. The forward recomputes alphas per chunk; in the backward
// the gradients of means2d, conics and opacities are linear in dL/dalpha, which is a sum over
// channels plus the alpha-output term, so each chunk adds its share (the first chunk also the
// alpha-output term).
#include "gauss_rasterize.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <type_traits>

namespace studio {
namespace {

constexpr int kBlockSize = kTilePixels;  // threads per block, one per pixel of a tile
constexpr unsigned kFullMask = 0xffffffffu;

struct KernelArgs {
  const float* means2d;    // [C*N, 2]
  const float* conics;     // [C*N, 3]
  const float* values;     // [C*N, D]
  const float* opacities;  // [C*N]
  const int32_t* offsets;  // [C * tile_h * tile_w]
  const int32_t* flatten_ids;  // [M]
  int32_t n_isects, n_tiles, D, width, height, tile_w, tile_h;
};

// Position of this thread's pixel and its tile's hit range [start, end).
struct ThreadPixel {
  int32_t camera, i, j, start, end;
  bool inside;
  int64_t pix;  // flat index in [C*H*W], valid when inside
  __device__ explicit ThreadPixel(const KernelArgs& args) {
    camera = blockIdx.z;
    i = blockIdx.y * kTileSize + threadIdx.y;
    j = blockIdx.x * kTileSize + threadIdx.x;
    inside = i < args.height && j < args.width;
    pix = (int64_t(camera) * args.height + i) * args.width + j;
    const int32_t tile = (camera * args.tile_h + blockIdx.y) * args.tile_w + blockIdx.x;
    start = args.offsets[tile];
    end = tile + 1 < args.n_tiles ? args.offsets[tile + 1] : args.n_isects;
  }
};

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ int32_t warp_max(int32_t v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// Channels [ch0, ch0 + CH) of colors; the first chunk (write_state) also writes alphas,
// final_T and last_ids.
template <int CH>
__global__ void __launch_bounds__(kBlockSize) rasterize_fwd_kernel(
    const KernelArgs args, const int32_t ch0, const bool write_state,
    float* __restrict__ colors, float* __restrict__ alphas, float* __restrict__ final_T,
    int32_t* __restrict__ last_ids) {
  __shared__ int32_t ids[kBlockSize];
  __shared__ float3 xy_opacity[kBlockSize];
  __shared__ float3 conic[kBlockSize];

  const ThreadPixel tp(args);
  const int32_t tr = threadIdx.y * kTileSize + threadIdx.x;
  const float px = float(tp.j) + 0.5f, py = float(tp.i) + 0.5f;
  float acc[CH];
#pragma unroll
  for (int k = 0; k < CH; ++k) acc[k] = 0.f;
  float T = 1.f;
  int32_t last = -1;
  bool done = !tp.inside;

  for (int32_t batch = tp.start; batch < tp.end; batch += kBlockSize) {
    // also the barrier before overwriting the previous batch
    if (__syncthreads_count(done) == kBlockSize) break;
    const int32_t idx = batch + tr;
    if (idx < tp.end) {
      const int32_t g = args.flatten_ids[idx];
      ids[tr] = g;
      xy_opacity[tr] = make_float3(args.means2d[2 * g], args.means2d[2 * g + 1], args.opacities[g]);
      conic[tr] = make_float3(args.conics[3 * g], args.conics[3 * g + 1], args.conics[3 * g + 2]);
    }
    __syncthreads();
    const int32_t n = min(kBlockSize, tp.end - batch);
    for (int32_t t = 0; t < n && !done; ++t) {
      const float3 co = conic[t];
      const float3 xyo = xy_opacity[t];
      const float dx = xyo.x - px, dy = xyo.y - py;
      const float sigma = gauss_sigma(co.x, co.y, co.z, dx, dy);
      const float alpha = gauss_alpha(xyo.z, expf(-sigma));
      if (!gauss_contributes(sigma, alpha)) continue;
      const float next_T = T * (1.f - alpha);
      if (next_T <= kTransmittanceMin) {
        done = true;
        break;
      }
      const float w = alpha * T;
      const float* val = args.values + int64_t(ids[t]) * args.D + ch0;
#pragma unroll
      for (int k = 0; k < CH; ++k) acc[k] += val[k] * w;
      T = next_T;
      last = batch + t;
    }
  }

  if (!tp.inside) return;
  float* out = colors + tp.pix * args.D + ch0;
#pragma unroll
  for (int k = 0; k < CH; ++k) out[k] = acc[k];
  if (write_state) {
    alphas[tp.pix] = 1.f - T;
    final_T[tp.pix] = T;
    last_ids[tp.pix] = last;
  }
}

// Gradients of channels [ch0, ch0 + CH) and this chunk's share of the geometric gradients;
// the first chunk (with_alpha_grad) adds the alpha-output term.
template <int CH>
__global__ void __launch_bounds__(kBlockSize) rasterize_bwd_kernel(
    const KernelArgs args, const int32_t ch0, const bool with_alpha_grad,
    const float* __restrict__ final_T, const int32_t* __restrict__ last_ids,
    const float* __restrict__ v_colors, const float* __restrict__ v_alphas,
    float* __restrict__ v_means2d, float* __restrict__ v_conics, float* __restrict__ v_values,
    float* __restrict__ v_opacities) {
  __shared__ int32_t ids[kBlockSize];
  __shared__ float3 xy_opacity[kBlockSize];
  __shared__ float3 conic[kBlockSize];
  __shared__ float vals[kBlockSize * CH];
  __shared__ int32_t block_last;

  const ThreadPixel tp(args);
  const int32_t tr = threadIdx.y * kTileSize + threadIdx.x;
  const float px = float(tp.j) + 0.5f, py = float(tp.i) + 0.5f;
  const float T_final = tp.inside ? final_T[tp.pix] : 1.f;
  float T = T_final;
  const int32_t last = tp.inside ? last_ids[tp.pix] : -1;
  const float v_alpha_out = (tp.inside && with_alpha_grad) ? v_alphas[tp.pix] : 0.f;
  float v_col[CH], behind[CH];
#pragma unroll
  for (int k = 0; k < CH; ++k) {
    v_col[k] = tp.inside ? v_colors[tp.pix * args.D + ch0 + k] : 0.f;
    behind[k] = 0.f;
  }

  if (tr == 0) block_last = -1;
  __syncthreads();
  atomicMax(&block_last, last);
  __syncthreads();
  const int32_t tile_last = block_last;  // uniform over the block
  if (tile_last < tp.start) return;
  const int32_t warp_last = warp_max(last);
  const bool lane0 = (tr % 32) == 0;

  for (int32_t batch_end = tile_last; batch_end >= tp.start; batch_end -= kBlockSize) {
    __syncthreads();  // the previous batch is no longer read
    const int32_t idx = batch_end - tr;  // element t of the batch is hit batch_end - t
    if (idx >= tp.start) {
      const int32_t g = args.flatten_ids[idx];
      ids[tr] = g;
      xy_opacity[tr] = make_float3(args.means2d[2 * g], args.means2d[2 * g + 1], args.opacities[g]);
      conic[tr] = make_float3(args.conics[3 * g], args.conics[3 * g + 1], args.conics[3 * g + 2]);
      const float* val = args.values + int64_t(g) * args.D + ch0;
#pragma unroll
      for (int k = 0; k < CH; ++k) vals[tr * CH + k] = val[k];
    }
    __syncthreads();
    const int32_t n = min(kBlockSize, batch_end - tp.start + 1);
    for (int32_t t = max(0, batch_end - warp_last); t < n; ++t) {
      const float3 co = conic[t];
      const float3 xyo = xy_opacity[t];
      const float dx = xyo.x - px, dy = xyo.y - py;
      bool valid = tp.inside && batch_end - t <= last;
      float sigma = 0.f, vis = 0.f, alpha = 0.f;
      if (valid) {
        sigma = gauss_sigma(co.x, co.y, co.z, dx, dy);
        vis = expf(-sigma);
        alpha = gauss_alpha(xyo.z, vis);
        valid = gauss_contributes(sigma, alpha);
      }
      if (!__any_sync(kFullMask, valid)) continue;

      float v_val[CH];
#pragma unroll
      for (int k = 0; k < CH; ++k) v_val[k] = 0.f;
      float v_mx = 0.f, v_my = 0.f, v_a = 0.f, v_b = 0.f, v_c = 0.f, v_o = 0.f;
      if (valid) {
        const float ra = 1.f / (1.f - alpha);
        T *= ra;  // now the transmittance in front of this Gaussian
        const float fac = alpha * T;
        float v_alpha = 0.f;
#pragma unroll
        for (int k = 0; k < CH; ++k) {
          const float c = vals[t * CH + k];
          v_val[k] = fac * v_col[k];
          v_alpha += (c * T - behind[k] * ra) * v_col[k];
          behind[k] += c * fac;
        }
        v_alpha += T_final * ra * v_alpha_out;
        if (xyo.z * vis <= kAlphaMax) {  // not clamped
          const float v_sigma = -xyo.z * vis * v_alpha;
          v_a = 0.5f * v_sigma * dx * dx;
          v_b = v_sigma * dx * dy;
          v_c = 0.5f * v_sigma * dy * dy;
          v_mx = v_sigma * (co.x * dx + co.y * dy);
          v_my = v_sigma * (co.y * dx + co.z * dy);
          v_o = vis * v_alpha;
        }
      }
#pragma unroll
      for (int k = 0; k < CH; ++k) v_val[k] = warp_sum(v_val[k]);
      v_mx = warp_sum(v_mx);
      v_my = warp_sum(v_my);
      v_a = warp_sum(v_a);
      v_b = warp_sum(v_b);
      v_c = warp_sum(v_c);
      v_o = warp_sum(v_o);
      if (lane0) {
        const int32_t g = ids[t];
        float* v_val_g = v_values + int64_t(g) * args.D + ch0;
#pragma unroll
        for (int k = 0; k < CH; ++k) atomicAdd(v_val_g + k, v_val[k]);
        atomicAdd(v_means2d + 2 * int64_t(g), v_mx);
        atomicAdd(v_means2d + 2 * int64_t(g) + 1, v_my);
        atomicAdd(v_conics + 3 * int64_t(g), v_a);
        atomicAdd(v_conics + 3 * int64_t(g) + 1, v_b);
        atomicAdd(v_conics + 3 * int64_t(g) + 2, v_c);
        atomicAdd(v_opacities + g, v_o);
      }
    }
  }
}

// Largest supported chunk not above `remaining` channels.
int chunk_size(int64_t remaining) {
  for (int ch : {32, 16, 8, 4, 3, 2, 1}) {
    if (ch <= remaining) return ch;
  }
  return 1;
}

// Calls f(std::integral_constant<int, ch>{}).
template <typename F>
void with_chunk(int ch, const F& f) {
  switch (ch) {
    case 32: return f(std::integral_constant<int, 32>{});
    case 16: return f(std::integral_constant<int, 16>{});
    case 8: return f(std::integral_constant<int, 8>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 2: return f(std::integral_constant<int, 2>{});
    default: return f(std::integral_constant<int, 1>{});
  }
}

KernelArgs make_args(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& values,
                     const at::Tensor& opacities, int64_t width, int64_t height,
                     const at::Tensor& isect_offsets, const at::Tensor& flatten_ids) {
  KernelArgs args;
  args.means2d = means2d.data_ptr<float>();
  args.conics = conics.data_ptr<float>();
  args.values = values.data_ptr<float>();
  args.opacities = opacities.data_ptr<float>();
  args.offsets = isect_offsets.data_ptr<int32_t>();
  args.flatten_ids = flatten_ids.data_ptr<int32_t>();
  args.n_isects = int32_t(flatten_ids.numel());
  args.n_tiles = int32_t(isect_offsets.numel());
  args.D = int32_t(values.size(2));
  args.width = int32_t(width);
  args.height = int32_t(height);
  args.tile_w = int32_t(isect_offsets.size(2));
  args.tile_h = int32_t(isect_offsets.size(1));
  return args;
}

}  // namespace

std::vector<at::Tensor> rasterize_fwd_cuda(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& values,
    const at::Tensor& opacities, int64_t width, int64_t height,
    const at::Tensor& isect_offsets, const at::Tensor& flatten_ids) {
  check_rasterize_inputs(means2d, conics, values, opacities, width, height, isect_offsets, flatten_ids);
  const c10::cuda::CUDAGuard guard(means2d.device());
  const int64_t C = means2d.size(0), D = values.size(2);
  const auto opts = means2d.options();
  at::Tensor colors = at::empty({C, height, width, D}, opts);
  at::Tensor alphas = at::empty({C, height, width, 1}, opts);
  at::Tensor final_T = at::empty({C, height, width}, opts);
  at::Tensor last_ids = at::empty({C, height, width}, opts.dtype(at::kInt));
  if (C == 0) return {colors, alphas, final_T, last_ids};

  const KernelArgs args = make_args(means2d, conics, values, opacities, width, height, isect_offsets, flatten_ids);
  const dim3 grid(args.tile_w, args.tile_h, C), block(kTileSize, kTileSize);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t ch0 = 0; ch0 < D;) {
    const int ch = chunk_size(D - ch0);
    with_chunk(ch, [&](auto chunk) {
      rasterize_fwd_kernel<decltype(chunk)::value><<<grid, block, 0, stream>>>(
          args, int32_t(ch0), ch0 == 0, colors.data_ptr<float>(), alphas.data_ptr<float>(),
          final_T.data_ptr<float>(), last_ids.data_ptr<int32_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    ch0 += ch;
  }
  return {colors, alphas, final_T, last_ids};
}

std::vector<at::Tensor> rasterize_bwd_cuda(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& values,
    const at::Tensor& opacities, int64_t width, int64_t height,
    const at::Tensor& isect_offsets, const at::Tensor& flatten_ids,
    const at::Tensor& final_T, const at::Tensor& last_ids,
    const at::Tensor& v_colors, const at::Tensor& v_alphas) {
  check_rasterize_inputs(means2d, conics, values, opacities, width, height, isect_offsets, flatten_ids);
  check_rasterize_backward_inputs(means2d, values, width, height, final_T, last_ids, v_colors, v_alphas);
  const c10::cuda::CUDAGuard guard(means2d.device());
  const int64_t C = means2d.size(0), D = values.size(2);
  at::Tensor v_means2d = at::zeros_like(means2d);
  at::Tensor v_conics = at::zeros_like(conics);
  at::Tensor v_values = at::zeros_like(values);
  at::Tensor v_opacities = at::zeros_like(opacities);
  if (C == 0) return {v_means2d, v_conics, v_values, v_opacities};

  const KernelArgs args = make_args(means2d, conics, values, opacities, width, height, isect_offsets, flatten_ids);
  const dim3 grid(args.tile_w, args.tile_h, C), block(kTileSize, kTileSize);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t ch0 = 0; ch0 < D;) {
    const int ch = chunk_size(D - ch0);
    with_chunk(ch, [&](auto chunk) {
      rasterize_bwd_kernel<decltype(chunk)::value><<<grid, block, 0, stream>>>(
          args, int32_t(ch0), ch0 == 0, final_T.data_ptr<float>(), last_ids.data_ptr<int32_t>(),
          v_colors.data_ptr<float>(), v_alphas.data_ptr<float>(),
          v_means2d.data_ptr<float>(), v_conics.data_ptr<float>(),
          v_values.data_ptr<float>(), v_opacities.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    ch0 += ch;
  }
  return {v_means2d, v_conics, v_values, v_opacities};
}

}  // namespace studio
