// CPU kernels of the tile rasterizer (see gauss_rasterize.h for the maths and shapes).
//
// Forward workers (at::parallel_for, one per thread) pull tiles from a shared counter, so uneven
// tiles balance out. Within a tile the Gaussians are the outer loop and the pixels the inner one,
// restricted to the ellipse where a Gaussian can reach alpha >= 1/255; a tile stops as soon as
// all its pixels are saturated. The backward accumulates into one gradient buffer per
// worker, summed at the end, so there are no races; its workers take fixed tiles (w, w + n, ...),
// so each buffer sums the same tiles in the same order on every run and the gradients are
// bit-identical from run to run (a given thread count; a shared counter made them depend on timing).
// Workers wait for nothing but the end of the parallel region (no spinning of our own), and there
// are at most torch.get_num_threads() of them.
//
// Two implementations of the per-tile loops: the AVX2 + FMA kernels (gauss_rasterize_avx2.cpp,
// 8 pixels of a row per step), used where the CPU has those instructions, and the scalar ones
// below (any CPU; set_cpu_simd(false) forces them, e.g. to compare the two).
#include "gauss_rasterize.h"
#include "gauss_rasterize_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <utility>

namespace studio {

void check_rasterize_inputs(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& values,
    const at::Tensor& opacities, int64_t width, int64_t height,
    const at::Tensor& isect_offsets, const at::Tensor& flatten_ids) {
  TORCH_CHECK(means2d.dim() == 3 && means2d.size(2) == 2, "means2d must be [C,N,2]");
  const int64_t C = means2d.size(0), N = means2d.size(1);
  TORCH_CHECK(conics.dim() == 3 && conics.size(0) == C && conics.size(1) == N && conics.size(2) == 3,
              "conics must be [C,N,3]");
  TORCH_CHECK(values.dim() == 3 && values.size(0) == C && values.size(1) == N && values.size(2) >= 1,
              "values must be [C,N,D]");
  TORCH_CHECK(opacities.dim() == 2 && opacities.size(0) == C && opacities.size(1) == N,
              "opacities must be [C,N]");
  TORCH_CHECK(width > 0 && height > 0, "width and height must be positive");
  const int64_t tile_w = (width + kTileSize - 1) / kTileSize;
  const int64_t tile_h = (height + kTileSize - 1) / kTileSize;
  TORCH_CHECK(isect_offsets.dim() == 3 && isect_offsets.size(0) == C && isect_offsets.size(1) == tile_h &&
                  isect_offsets.size(2) == tile_w,
              "isect_offsets must be [C, ceil(H/16), ceil(W/16)]");
  TORCH_CHECK(flatten_ids.dim() == 1, "flatten_ids must be [M]");
  TORCH_CHECK(C * N < (int64_t(1) << 31) && flatten_ids.numel() < (int64_t(1) << 31),
              "too many Gaussians or tile hits for int32 indices");
  for (const at::Tensor* t : {&means2d, &conics, &values, &opacities}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat, "the studio rasterizer takes float32 tensors");
    TORCH_CHECK(t->is_contiguous(), "the studio rasterizer takes contiguous tensors");
    TORCH_CHECK(t->device() == means2d.device(), "all tensors must be on one device");
  }
  for (const at::Tensor* t : {&isect_offsets, &flatten_ids}) {
    TORCH_CHECK(t->scalar_type() == at::kInt, "isect_offsets and flatten_ids must be int32");
    TORCH_CHECK(t->is_contiguous(), "isect_offsets and flatten_ids must be contiguous");
    TORCH_CHECK(t->device() == means2d.device(), "all tensors must be on one device");
  }
}

void check_rasterize_backward_inputs(
    const at::Tensor& means2d, const at::Tensor& values, int64_t width, int64_t height,
    const at::Tensor& final_T, const at::Tensor& last_ids, const at::Tensor& v_colors,
    const at::Tensor& v_alphas) {
  const int64_t n_pixels = means2d.size(0) * height * width;
  for (const at::Tensor* t : {&final_T, &v_colors, &v_alphas}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->device() == means2d.device(),
                "final_T and the output gradients must be contiguous float32 tensors");
  }
  TORCH_CHECK(final_T.numel() == n_pixels && v_alphas.numel() == n_pixels &&
                  v_colors.numel() == n_pixels * values.size(2),
              "final_T [C,H,W], v_colors [C,H,W,D] and v_alphas [C,H,W,1] do not match the image");
  TORCH_CHECK(last_ids.scalar_type() == at::kInt && last_ids.is_contiguous() && last_ids.numel() == n_pixels &&
                  last_ids.device() == means2d.device(),
              "last_ids must be a contiguous int32 [C,H,W] tensor");
}

namespace {

using cpu::BackwardIn;
using cpu::ForwardOut;
using cpu::kGradHead;
using cpu::Scene;
using cpu::Support;
using cpu::Tile;

Scene make_scene(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& values,
                 const at::Tensor& opacities, int64_t width, int64_t height,
                 const at::Tensor& isect_offsets, const at::Tensor& flatten_ids) {
  return {means2d.data_ptr<float>(),       conics.data_ptr<float>(),
          values.data_ptr<float>(),        opacities.data_ptr<float>(),
          isect_offsets.data_ptr<int32_t>(), flatten_ids.data_ptr<int32_t>(),
          flatten_ids.numel(),             isect_offsets.numel(),
          values.size(2),                  width,
          height,                          isect_offsets.size(2),
          isect_offsets.size(1)};
}

// Runs `work(worker_index, tile_index)` for every tile; `n_workers` at most the thread count.
// `dynamic`: each worker pulls tiles from a shared counter (balanced, but which worker gets a tile
// depends on timing); otherwise worker w takes tiles w, w + n_workers, ... in order (reproducible).
// `make_state` builds each worker's scratch.
template <typename MakeState, typename Work>
void for_each_tile(int64_t n_tiles, int64_t n_workers, bool dynamic, const MakeState& make_state, const Work& work) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, n_workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      auto state = make_state();
      if (dynamic) {
        for (int64_t t = next.fetch_add(1); t < n_tiles; t = next.fetch_add(1)) work(w, t, state);
      } else {
        for (int64_t t = w; t < n_tiles; t += n_workers) work(w, t, state);
      }
    }
  });
}

// Per-pixel scratch of one tile (local index r * 16 + c).
struct ForwardState {
  float T[kTilePixels];
  int32_t last[kTilePixels];
  bool done[kTilePixels];
};

void forward_tile(const Scene& s, const Tile& tile, ForwardState& px, const ForwardOut& out) {
  const int64_t D = s.D;
  int left = tile.nw * tile.nh;
  for (int p = 0; p < kTilePixels; ++p) {
    px.T[p] = 1.f;
    px.last[p] = -1;
    px.done[p] = false;
  }
  for (int64_t idx = tile.start; idx < tile.end && left > 0; ++idx) {
    const int64_t g = s.flatten_ids[idx];
    const float mx = s.means2d[2 * g], my = s.means2d[2 * g + 1];
    const float a = s.conics[3 * g], b = s.conics[3 * g + 1], c = s.conics[3 * g + 2];
    const float o = s.opacities[g];
    const float* val = s.values + g * D;
    const Support support(mx, my, o, a, b, c, tile);
    for (int r = support.r0; r < support.r1; ++r) {
      const float dy = my - (float(tile.y0 + r) + 0.5f);
      const auto [c0, c1] = support.columns(r);
      for (int col = c0; col < c1; ++col) {
        const int p = r * kTileSize + col;
        if (px.done[p]) continue;
        const float dx = mx - (float(tile.x0 + col) + 0.5f);
        const float sigma = gauss_sigma(a, b, c, dx, dy);
        const float alpha = gauss_alpha(o, std::exp(-sigma));
        if (!gauss_contributes(sigma, alpha)) continue;
        const float next_T = px.T[p] * (1.f - alpha);
        if (next_T <= kTransmittanceMin) {
          px.done[p] = true;
          --left;
          continue;
        }
        const float w = alpha * px.T[p];
        float* color = out.colors + tile.pixel(r, col, s.width) * D;
        for (int64_t k = 0; k < D; ++k) color[k] += val[k] * w;
        px.T[p] = next_T;
        px.last[p] = int32_t(idx);
      }
    }
  }
  for (int r = 0; r < tile.nh; ++r) {
    for (int col = 0; col < tile.nw; ++col) {
      const int p = r * kTileSize + col;
      const int64_t pix = tile.pixel(r, col, s.width);
      out.alphas[pix] = 1.f - px.T[p];
      out.final_T[pix] = px.T[p];
      out.last_ids[pix] = px.last[p];
    }
  }
}

struct BackwardState {
  float T[kTilePixels];        // transmittance, walked back from final_T
  int32_t last[kTilePixels];   // last contributing hit
  std::vector<float> behind;   // [256, D]: sum over the Gaussians behind of T_j alpha_j c_j
  explicit BackwardState(int64_t D) : behind(kTilePixels * D) {}
};

void backward_tile(const Scene& s, const Tile& tile, BackwardState& st, const BackwardIn& in, float* grads) {
  const int64_t D = s.D, stride = kGradHead + D;
  int32_t max_last = -1;
  for (int p = 0; p < kTilePixels; ++p) st.last[p] = -1;
  for (int r = 0; r < tile.nh; ++r) {
    for (int col = 0; col < tile.nw; ++col) {
      const int p = r * kTileSize + col;
      const int64_t pix = tile.pixel(r, col, s.width);
      st.T[p] = in.final_T[pix];
      st.last[p] = in.last_ids[pix];
      max_last = std::max(max_last, st.last[p]);
    }
  }
  if (max_last < tile.start) return;
  std::fill(st.behind.begin(), st.behind.end(), 0.f);

  for (int64_t idx = max_last; idx >= tile.start; --idx) {
    const int64_t g = s.flatten_ids[idx];
    const float mx = s.means2d[2 * g], my = s.means2d[2 * g + 1];
    const float a = s.conics[3 * g], b = s.conics[3 * g + 1], c = s.conics[3 * g + 2];
    const float o = s.opacities[g];
    const float* val = s.values + g * D;
    float* grad = grads + g * stride;
    float* v_val = grad + kGradHead;
    float v_mx = 0.f, v_my = 0.f, v_a = 0.f, v_b = 0.f, v_c = 0.f, v_o = 0.f;
    const Support support(mx, my, o, a, b, c, tile);
    for (int r = support.r0; r < support.r1; ++r) {
      const float dy = my - (float(tile.y0 + r) + 0.5f);
      const auto [c0, c1] = support.columns(r);
      for (int col = c0; col < c1; ++col) {
        const int p = r * kTileSize + col;
        if (st.last[p] < idx) continue;
        const float dx = mx - (float(tile.x0 + col) + 0.5f);
        const float sigma = gauss_sigma(a, b, c, dx, dy);
        const float vis = std::exp(-sigma);
        const float alpha = gauss_alpha(o, vis);
        if (!gauss_contributes(sigma, alpha)) continue;
        const float ra = 1.f / (1.f - alpha);
        st.T[p] *= ra;  // now T_k, the transmittance in front of this Gaussian
        const float T = st.T[p];
        const float fac = alpha * T;
        const int64_t pix = tile.pixel(r, col, s.width);
        const float* v_col = in.v_colors + pix * D;
        float* behind = st.behind.data() + int64_t(p) * D;
        float v_alpha = 0.f;
        for (int64_t k = 0; k < D; ++k) {
          v_val[k] += fac * v_col[k];
          v_alpha += (val[k] * T - behind[k] * ra) * v_col[k];
          behind[k] += val[k] * fac;
        }
        v_alpha += in.final_T[pix] * ra * in.v_alphas[pix];
        if (o * vis <= kAlphaMax) {  // not clamped
          const float v_sigma = -o * vis * v_alpha;
          v_a += 0.5f * v_sigma * dx * dx;
          v_b += v_sigma * dx * dy;
          v_c += 0.5f * v_sigma * dy * dy;
          v_mx += v_sigma * (a * dx + b * dy);
          v_my += v_sigma * (b * dx + c * dy);
          v_o += vis * v_alpha;
        }
      }
    }
    grad[0] += v_mx;
    grad[1] += v_my;
    grad[2] += v_a;
    grad[3] += v_b;
    grad[4] += v_c;
    grad[5] += v_o;
  }
}

int64_t worker_count(int64_t n_tiles) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_tiles));
}

std::atomic<bool> simd_enabled{true};

bool cpu_has_avx2() {
#if STUDIO_CPU_AVX2
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

bool use_avx2() { return simd_enabled.load() && cpu_has_avx2(); }

}  // namespace

bool set_cpu_simd(bool enabled) { return simd_enabled.exchange(enabled); }

std::string cpu_simd() { return use_avx2() ? "avx2" : "scalar"; }

std::vector<at::Tensor> rasterize_fwd_cpu(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& values,
    const at::Tensor& opacities, int64_t width, int64_t height,
    const at::Tensor& isect_offsets, const at::Tensor& flatten_ids) {
  check_rasterize_inputs(means2d, conics, values, opacities, width, height, isect_offsets, flatten_ids);
  const int64_t C = means2d.size(0), D = values.size(2);
  const auto opts = means2d.options();
  at::Tensor colors = at::zeros({C, height, width, D}, opts);
  at::Tensor alphas = at::empty({C, height, width, 1}, opts);
  at::Tensor final_T = at::empty({C, height, width}, opts);
  at::Tensor last_ids = at::empty({C, height, width}, opts.dtype(at::kInt));

  const Scene s = make_scene(means2d, conics, values, opacities, width, height, isect_offsets, flatten_ids);
  const int64_t n_tiles = s.n_tiles;
  const ForwardOut out{colors.data_ptr<float>(), alphas.data_ptr<float>(), final_T.data_ptr<float>(),
                       last_ids.data_ptr<int32_t>()};
  const int64_t n_workers = worker_count(n_tiles);
  if (use_avx2()) {
#if STUDIO_CPU_AVX2
    for_each_tile(
        n_tiles, n_workers, /*dynamic=*/true, [D] { return cpu::Avx2ForwardScratch(D); },
        [&](int64_t, int64_t t, cpu::Avx2ForwardScratch& st) { cpu::forward_tile_avx2(s, Tile(s, t), st, out); });
#endif
  } else {
    for_each_tile(
        n_tiles, n_workers, /*dynamic=*/true, [] { return ForwardState(); },
        [&](int64_t, int64_t t, ForwardState& px) { forward_tile(s, Tile(s, t), px, out); });
  }
  return {colors, alphas, final_T, last_ids};
}

std::vector<at::Tensor> rasterize_bwd_cpu(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& values,
    const at::Tensor& opacities, int64_t width, int64_t height,
    const at::Tensor& isect_offsets, const at::Tensor& flatten_ids,
    const at::Tensor& final_T, const at::Tensor& last_ids,
    const at::Tensor& v_colors, const at::Tensor& v_alphas) {
  check_rasterize_inputs(means2d, conics, values, opacities, width, height, isect_offsets, flatten_ids);
  const int64_t C = means2d.size(0), N = means2d.size(1), D = values.size(2);
  check_rasterize_backward_inputs(means2d, values, width, height, final_T, last_ids, v_colors, v_alphas);
  const Scene s = make_scene(means2d, conics, values, opacities, width, height, isect_offsets, flatten_ids);
  const int64_t n_tiles = s.n_tiles;
  const int64_t stride = kGradHead + D;
  // One gradient buffer per worker; fewer workers if the buffers would exceed ~1 GiB.
  const int64_t buffer_bytes = std::max<int64_t>(1, C * N * stride * int64_t(sizeof(float)));
  const int64_t n_workers = std::max<int64_t>(1, std::min(worker_count(n_tiles), (int64_t(1) << 30) / buffer_bytes));
  at::Tensor grads = at::zeros({n_workers, C * N, stride}, means2d.options());
  float* grads_p = grads.data_ptr<float>();
  const BackwardIn in{final_T.data_ptr<float>(), last_ids.data_ptr<int32_t>(), v_colors.data_ptr<float>(),
                      v_alphas.data_ptr<float>()};
  const auto worker_grads = [&](int64_t w) { return grads_p + w * C * N * stride; };
  if (use_avx2()) {
#if STUDIO_CPU_AVX2
    for_each_tile(
        n_tiles, n_workers, /*dynamic=*/false, [D] { return cpu::Avx2BackwardScratch(D); },
        [&](int64_t w, int64_t t, cpu::Avx2BackwardScratch& st) {
          cpu::backward_tile_avx2(s, Tile(s, t), st, in, worker_grads(w));
        });
#endif
  } else {
    for_each_tile(
        n_tiles, n_workers, /*dynamic=*/false, [D] { return BackwardState(D); },
        [&](int64_t w, int64_t t, BackwardState& st) { backward_tile(s, Tile(s, t), st, in, worker_grads(w)); });
  }
  at::Tensor total = grads.sum(0).view({C, N, stride});
  return {total.slice(2, 0, 2).contiguous(), total.slice(2, 2, 5).contiguous(),
          total.slice(2, kGradHead, stride).contiguous(), total.select(2, 5).contiguous()};
}

}  // namespace studio
