// CPU kernels of the triangle rasterizer (see mesh_rasterize.h for the maths and shapes).
//
// Forward, after one parallel pass over vertices (pixel-space bounds records), faces (index
// check) and pixels (empty keys), in two passes over at::parallel_for workers:
// 1. per (image, triangle), in chunks pulled from a shared counter: culling and a conservative
//    pixel rectangle, both axes at once from the minimum of its vertices' records; small
//    triangles (most of a dense mesh) test their candidate pixels kLanes at a time with vector
//    arithmetic (as a row, a column or a 2x2 quad: one step for up to kLanes pixels), and keep
//    the smallest 64-bit (depth, id) key per pixel with an atomic minimum;
// 2. per pixel (row by row: no index divisions), the winner's (u, v, depth) is recomputed with
//    triangle_sample; when there are large triangles, they are first drawn in bands of kBand
//    rows, each band owned by one worker (load balance without atomics), which keeps the samples
//    of the winners it draws.
// The minimum key does not depend on the order, so the result is deterministic and bit-identical
// to the torch reference (lane-wise vector operations round like scalar ones).
// Backward passes split each image's rows into a fixed number of chunks (one per thread), each
// accumulating into its own gradient buffer, summed in chunk order: race-free and deterministic
// for a given thread count.
// Multiply-adds must not be fused (the torch reference rounds every operation): only matters
// where the target has FMA instructions (not the x86-64 baseline).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__) && (defined(__FMA__) || defined(__aarch64__))
#pragma GCC optimize("fp-contract=off")
#endif

#include "mesh_rasterize.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace studio {
namespace mesh {

namespace {

constexpr int64_t kBand = 8;         // rows per band of the large-triangle pass
constexpr int64_t kSmallArea = 256;  // larger pixel rectangles go to the band pass
constexpr int kLanes = 4;            // candidate pixels tested together (GCC/Clang vector extension)
typedef float Lanes __attribute__((vector_size(4 * kLanes)));
typedef int32_t LaneMask __attribute__((vector_size(4 * kLanes)));
constexpr LaneMask kLaneIndex = {0, 1, 2, 3};

// Bit l set when lane l of m is set (lanes are 0 or -1, as vector comparisons give them).
inline unsigned lane_bits(const LaneMask& m) {
#if defined(__SSE2__)
  return static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(reinterpret_cast<const __m128i&>(m))));
#else
  unsigned bits = 0;
  for (int l = 0; l < kLanes; ++l) bits |= static_cast<unsigned>(m[l] & 1) << l;
  return bits;
#endif
}

typedef float Float4 __attribute__((vector_size(16)));
typedef int32_t Int4 __attribute__((vector_size(16)));

struct Rect {
  int32_t j0, j1, i0, i1;  // inclusive pixel columns and rows
};

// Scratch memory that a thread keeps between calls (freshly allocated megabytes cost more in
// page faults than rasterizing small triangles); buffers over 64 MiB are released on return.
template <typename T>
class Scratch {
 public:
  Scratch(std::vector<T>& store, int64_t n) : store_(store) {
    if (static_cast<int64_t>(store_.size()) < n) store_.resize(n);
  }
  ~Scratch() {
    if (store_.size() * sizeof(T) > (size_t(64) << 20)) std::vector<T>().swap(store_);
  }
  T& operator[](int64_t k) { return store_[k]; }
  T* data() { return store_.data(); }

 private:
  std::vector<T>& store_;
};

// *p = min(*p, value), atomically (GCC/Clang builtins: std::atomic_ref is C++20 and torch builds
// extensions as C++17).
inline void atomic_min(int64_t* p, int64_t value) {
  int64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (value < cur && !__atomic_compare_exchange_n(p, &cur, value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
}

// Deterministic scatter-add over the covered pixels (tri >= 0) of one image [H,W]: the rows are
// split into one chunk per thread holding about equal numbers of covered pixels, each chunk
// accumulates into its own buffer, and the buffers are summed in chunk order into out[0, n)
// (which is overwritten). fn(acc, i, j) adds pixel (i, j)'s contributions into acc.
template <typename Fn>
void scatter_covered(const int32_t* tri, int64_t H, int64_t W, int64_t n, float* out, Fn&& fn) {
  const int64_t n_chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), H));
  std::vector<int64_t> bounds(n_chunks + 1, H);  // chunk c holds rows [bounds[c], bounds[c + 1])
  bounds[0] = 0;
  if (n_chunks > 1) {
    std::vector<int64_t> covered(H + 1, 0);  // covered pixels in rows [0, i)
    for (int64_t i = 0; i < H; ++i) {
      int64_t count = 0;
      for (int64_t j = 0; j < W; ++j) count += tri[i * W + j] >= 0;
      covered[i + 1] = covered[i] + count;
    }
    for (int64_t c = 1, i = 0; c < n_chunks; ++c) {
      while (i < H && covered[i] * n_chunks < covered[H] * c) ++i;
      bounds[c] = i;
    }
  }
  thread_local std::vector<float> buffer_store;
  Scratch<float> buffers(buffer_store, n_chunks > 1 ? n_chunks * n : 0);
  at::parallel_for(0, n_chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      float* acc = n_chunks > 1 ? buffers.data() + c * n : out;
      std::fill(acc, acc + n, 0.f);
      for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
        for (int64_t j = 0; j < W; ++j) {
          if (tri[i * W + j] >= 0) fn(acc, i, j);
        }
      }
    }
  });
  if (n_chunks > 1) {
    at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        float sum = 0.f;
        for (int64_t c = 0; c < n_chunks; ++c) sum += buffers[c * n + e];
        out[e] = sum;
      }
    });
  }
}

}  // namespace

void check_mesh_inputs(const at::Tensor& verts, const at::Tensor& faces, int64_t width, int64_t height) {
  TORCH_CHECK(verts.dim() == 3 && verts.size(2) == 4, "verts_clip must be [B,V,4]");
  TORCH_CHECK(faces.dim() == 2 && faces.size(1) == 3, "faces must be [F,3]");
  TORCH_CHECK(verts.scalar_type() == at::kFloat && verts.is_contiguous(), "verts_clip must be contiguous float32");
  TORCH_CHECK(faces.scalar_type() == at::kInt && faces.is_contiguous(), "faces must be contiguous int32");
  TORCH_CHECK(faces.device() == verts.device(), "verts_clip and faces must be on one device");
  TORCH_CHECK(width > 0 && height > 0, "width and height must be positive");
  TORCH_CHECK(faces.size(0) < (int64_t(1) << 31) && verts.size(1) < (int64_t(1) << 31), "too many faces or vertices");
}

void check_pixel_tensors(const at::Tensor& ref, int64_t B, int64_t H, int64_t W, const at::Tensor& bary,
                         const at::Tensor& tri_id) {
  TORCH_CHECK(bary.dim() == 4 && bary.size(0) == B && bary.size(1) == H && bary.size(2) == W && bary.size(3) == 2,
              "bary must be [B,H,W,2]");
  TORCH_CHECK(tri_id.dim() == 3 && tri_id.size(0) == B && tri_id.size(1) == H && tri_id.size(2) == W,
              "tri_id must be [B,H,W]");
  TORCH_CHECK(bary.scalar_type() == at::kFloat && bary.is_contiguous(), "bary must be contiguous float32");
  TORCH_CHECK(tri_id.scalar_type() == at::kInt && tri_id.is_contiguous(), "tri_id must be contiguous int32");
  TORCH_CHECK(bary.device() == ref.device() && tri_id.device() == ref.device(), "all tensors must be on one device");
}

std::vector<at::Tensor> rasterize_fwd_cpu(const at::Tensor& verts, const at::Tensor& faces, int64_t width,
                                          int64_t height) {
  check_mesh_inputs(verts, faces, width, height);
  const int64_t B = verts.size(0), V = verts.size(1), F = faces.size(0), H = height, W = width;
  const float* vp = verts.data_ptr<float>();
  const int32_t* fp = faces.data_ptr<int32_t>();
  if (B == 0 || F == 0 || B * H * W == 0) {
    return {at::zeros({B, H, W, 2}, verts.options()), at::full({B, H, W}, -1, verts.options().dtype(at::kInt)),
            at::zeros({B, H, W}, verts.options())};
  }
  std::vector<float> px(W + kLanes), py(H + kLanes);  // padded for the last group of lanes
  for (int64_t j = 0; j < W + kLanes; ++j) px[j] = pixel_ndc(j, W);
  for (int64_t i = 0; i < H + kLanes; ++i) py[i] = pixel_ndc(i, H);

  // per vertex: whether it can be drawn (finite, w > 0) and its pixel-space bounds record
  // (sx, sy, -sx, -sy) with s = (ndc + 1) size / 2 (for the rectangles only: the 0.01 px margin of
  // pixel_range absorbs its rounding; the minimum of three records holds a triangle's bounds);
  // per pixel: the minimum key so far
  thread_local std::vector<Float4> bounds_store;
  thread_local std::vector<uint8_t> drawable_store;
  thread_local std::vector<int64_t> keys_store;
  Scratch<Float4> bounds(bounds_store, B * V);
  Scratch<uint8_t> drawable(drawable_store, B * V);
  Scratch<int64_t> keys(keys_store, B * H * W);
  // (one parallel region for vertices, faces and keys: waking the workers costs more than the work)
  const float half_w = 0.5f * static_cast<float>(W), half_h = 0.5f * static_cast<float>(H);
  const int64_t v_blocks = (B * V + 4095) / 4096, f_blocks = (3 * F + 16383) / 16384;
  const int64_t k_blocks = (B * H * W + 16383) / 16384;
  std::atomic<bool> bad_index{false};
  at::parallel_for(0, v_blocks + f_blocks + k_blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      if (blk >= v_blocks + f_blocks) {
        const int64_t k0 = (blk - v_blocks - f_blocks) * 16384, k1 = std::min(B * H * W, k0 + 16384);
        std::fill(keys.data() + k0, keys.data() + k1, kEmptyKey);
      } else if (blk >= v_blocks) {
        const int64_t e0 = (blk - v_blocks) * 16384, e1 = std::min(3 * F, e0 + 16384);
        const int32_t n_verts = static_cast<int32_t>(V);
        int32_t bad = 0;
        for (int64_t e = e0; e < e1; ++e) bad |= (fp[e] < 0) | (fp[e] >= n_verts);
        if (bad) bad_index = true;
      } else {
        for (int64_t v = blk * 4096; v < std::min(B * V, (blk + 1) * 4096); ++v) {
          const float* p = vp + 4 * v;
          const bool finite = std::isfinite(p[0]) & std::isfinite(p[1]) & std::isfinite(p[2]) & std::isfinite(p[3]);
          drawable[v] = finite & (p[3] > 0.f);
          const float inv_w = 1.0f / p[3];
          const float sx = (p[0] * inv_w + 1.0f) * half_w, sy = (p[1] * inv_w + 1.0f) * half_h;
          bounds[v] = Float4{sx, sy, -sx, -sy};
        }
      }
    }
  });
  TORCH_CHECK(!bad_index, "faces index a vertex out of range");

  // triangle_sample over rows [i_lo, i_hi] x columns [r.j0, r.j1] of triangle f, kLanes
  // candidate pixels at a time with the same operations lane-wise; `update(slot, key, u, v, d)` keeps
  // the minimum for covered pixels (slot = pixel index). The lanes cover a step's pixels as a row
  // (rectangles 3+ columns wide: kLanes adjacent columns), a column (1 wide: kLanes rows) or a 2x2
  // quad (2 wide), so that every rectangle of at most kLanes pixels takes one step.
  // (C++17: the kWithBary flag comes as std::bool_constant, torch builds extensions with -std=c++17)
  static_assert(kLanes == 4, "the quad layout assumes 4 lanes");
  auto scan = [&](auto with_bary, int64_t b, int32_t f, const Rect& r, int64_t i_lo, int64_t i_hi, auto&& update) {
    constexpr bool kWithBary = decltype(with_bary)::value;
    const float* base = vp + b * V * 4;
    const float* p0 = base + 4 * fp[3 * f];
    const float* p1 = base + 4 * fp[3 * f + 1];
    const float* p2 = base + 4 * fp[3 * f + 2];
    // tests lane l's pixel (PX[l], PY[l]) where valid[l], at pixel index
    // first + (l >> shift) * W + (l & mask), and updates the covered ones
    auto step = [&](const Lanes& PX, const Lanes& PY, const LaneMask& valid, int64_t first, int shift, int mask) {
      const Lanes X0 = p0[0] - PX * p0[3], Y0 = p0[1] - PY * p0[3];
      const Lanes X1 = p1[0] - PX * p1[3], Y1 = p1[1] - PY * p1[3];
      const Lanes X2 = p2[0] - PX * p2[3], Y2 = p2[1] - PY * p2[3];
      const Lanes a0 = X1 * Y2 - X2 * Y1;
      const Lanes a1 = X2 * Y0 - X0 * Y2;
      const Lanes a2 = X0 * Y1 - X1 * Y0;
      const Lanes s = (a0 + a1) + a2;
      const LaneMask pos = (a0 >= 0.f) & (a1 >= 0.f) & (a2 >= 0.f) & (s > 0.f);
      const LaneMask neg = (a0 <= 0.f) & (a1 <= 0.f) & (a2 <= 0.f) & (s < 0.f);
      const LaneMask inside = (pos | neg) & valid;
      if (lane_bits(inside) == 0) return;
      const Lanes zc = (a0 * p0[2] + a1 * p1[2]) + a2 * p2[2];
      const Lanes wc = (a0 * p0[3] + a1 * p1[3]) + a2 * p2[3];
      const Lanes d = zc / wc;
      Lanes u{}, v{};
      if constexpr (kWithBary) u = a0 / s, v = a1 / s;
      for (unsigned bits = lane_bits(inside & (d >= -1.0f) & (d <= 1.0f)); bits != 0; bits &= bits - 1) {
        const int l = __builtin_ctz(bits);
        update(first + (l >> shift) * W + (l & mask), depth_key(d[l], f), u[l], v[l], d[l]);
      }
    };
    const int32_t i_last = static_cast<int32_t>(i_hi);
    if (r.j0 == r.j1) {  // a column
      const Lanes PX = Lanes{} + px[r.j0];
      for (int64_t i = i_lo; i <= i_hi; i += kLanes) {
        Lanes PY;
        std::memcpy(&PY, &py[i], sizeof(PY));
        step(PX, PY, kLaneIndex + static_cast<int32_t>(i) <= i_last, (b * H + i) * W + r.j0, 0, 0);
      }
    } else if (r.j0 + 1 == r.j1) {  // 2x2 quads
      const Lanes PX = {px[r.j0], px[r.j0 + 1], px[r.j0], px[r.j0 + 1]};
      for (int64_t i = i_lo; i <= i_hi; i += 2) {
        const Lanes PY = {py[i], py[i], py[i + 1], py[i + 1]};
        step(PX, PY, (kLaneIndex >> 1) + static_cast<int32_t>(i) <= i_last, (b * H + i) * W + r.j0, 1, 1);
      }
    } else {  // rows
      for (int64_t i = i_lo; i <= i_hi; ++i) {
        const Lanes PY = Lanes{} + py[i];
        for (int32_t j = r.j0; j <= r.j1; j += kLanes) {
          Lanes PX;
          std::memcpy(&PX, &px[j], sizeof(PX));
          step(PX, PY, kLaneIndex + j <= r.j1, (b * H + i) * W + j, 2, 3);
        }
      }
    }
  };

  // pass 1, over triangles in chunks pulled by the workers: culling and pixel rectangles; small
  // triangles are drawn at once into the shared keys (atomic minimum, uncontended in practice),
  // large ones (rectangle over kSmallArea pixels) are set aside for the band pass
  const int64_t BF = B * F;
  const int64_t n_chunks = std::max<int64_t>(1, std::min<int64_t>(8 * at::get_num_threads(), BF / 2048));
  std::vector<std::vector<std::pair<int64_t, Rect>>> large(n_chunks);
  std::atomic<int64_t> next_chunk{0};
  // pixel_range on both axes at once: lanes (lo x, lo y, hi x, hi y) of the pixel-space bounds
  const Float4 sign{1.f, 1.f, -1.f, -1.f}, margin{0.51f, 0.51f, 0.49f, 0.49f};
  const Float4 upper{static_cast<float>(W), static_cast<float>(H), static_cast<float>(W), static_cast<float>(H)};
  const Int4 first_step{1, 1, 0, 0}, last_index{INT32_MAX, INT32_MAX, static_cast<int32_t>(W - 1), static_cast<int32_t>(H - 1)};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    for (int64_t c = next_chunk++; c < n_chunks; c = next_chunk++) {
      const int64_t bf0 = c * BF / n_chunks, bf1 = (c + 1) * BF / n_chunks;
      int64_t b = bf0 / F, f = bf0 - b * F;
      for (int64_t bf = bf0; bf < bf1; ++bf, ++f) {
        if (f == F) f = 0, ++b;
        const int32_t* idx = fp + 3 * f;
        const int64_t v0 = b * V + idx[0], v1 = b * V + idx[1], v2 = b * V + idx[2];
        if (!(drawable[v0] & drawable[v1] & drawable[v2])) continue;
        const Float4 m01 = bounds[v0] < bounds[v1] ? bounds[v0] : bounds[v1];
        Float4 x = (m01 < bounds[v2] ? m01 : bounds[v2]) * sign - margin;
        x = x > -1.0f ? x : Float4{} - 1.0f;  // (also NaN)
        x = x < upper ? x : upper;
        Int4 n = __builtin_convertvector(x, Int4);  // floor: truncation, minus one below
        n += __builtin_convertvector(n, Float4) > x;
        n += first_step;
        n = n < last_index ? n : last_index;
        if (n[0] > n[2] || n[1] > n[3]) continue;
        const Rect r{n[0], n[2], n[1], n[3]};
        if ((r.j1 - r.j0 + 1) * (r.i1 - r.i0 + 1) > kSmallArea) {
          large[c].emplace_back(bf, r);
          continue;
        }
        scan(std::false_type{}, b, static_cast<int32_t>(f), r, r.i0, r.i1, [&](int64_t slot, int64_t key, float, float, float) {
          atomic_min(&keys[slot], key);
        });
      }
    }
  });

  auto bary = at::empty({B, H, W, 2}, verts.options());
  auto tri_id = at::empty({B, H, W}, verts.options().dtype(at::kInt));
  auto depth = at::empty({B, H, W}, verts.options());
  float* bary_p = bary.data_ptr<float>();
  int32_t* tri_p = tri_id.data_ptr<int32_t>();
  float* depth_p = depth.data_ptr<float>();
  // writes the outputs of pixel (i, j) of image b: empty, the given sample, or (no sample) the
  // winner's recomputed
  auto resolve = [&](int64_t b, int64_t i, int64_t j, const Sample* stored) {
    const int64_t pix = (b * H + i) * W + j;
    Sample smp{0.f, 0.f, 0.f};
    int32_t f = -1;
    if (keys[pix] != kEmptyKey) {
      f = static_cast<int32_t>(keys[pix] & 0xffffffff);
      if (stored != nullptr) {
        smp = *stored;
      } else {
        const float* base = vp + b * V * 4;
        triangle_sample(base + 4 * fp[3 * f], base + 4 * fp[3 * f + 1], base + 4 * fp[3 * f + 2], px[j], py[i], smp);
      }
    }
    tri_p[pix] = f;
    bary_p[2 * pix] = smp.u;
    bary_p[2 * pix + 1] = smp.v;
    depth_p[pix] = smp.depth;
  };

  bool any_large = false;
  for (const auto& chunk : large) any_large |= !chunk.empty();
  if (!any_large) {
    // pass 2 (only small triangles): per pixel, the winner's (u, v, depth), recomputed with the
    // same operations
    at::parallel_for(0, B * H, std::max<int64_t>(1, 4096 / W), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / H, i = row - b * H;
        for (int64_t j = 0; j < W; ++j) resolve(b, i, j, nullptr);
      }
    });
    return {bary, tri_id, depth};
  }
  // pass 2 (with large triangles): these are binned into bands of kBand rows per image (a
  // counting sort); a band belongs to one worker, which keeps the minimum keys without atomics
  // and the samples of its winners, then writes its rows' outputs (recomputing the samples of
  // winners from pass 1)
  const int64_t n_bands = (H + kBand - 1) / kBand, n_jobs = B * n_bands;
  std::vector<int64_t> offsets(n_jobs + 1, 0);
  auto for_each_band = [&](auto&& fn) {
    for (const auto& chunk : large) {
      for (const auto& [bf, r] : chunk) {
        for (int64_t band = r.i0 / kBand; band <= r.i1 / kBand; ++band) fn((bf / F) * n_bands + band, bf, r);
      }
    }
  };
  for_each_band([&](int64_t job, int64_t, const Rect&) { ++offsets[job + 1]; });
  for (int64_t job = 0; job < n_jobs; ++job) offsets[job + 1] += offsets[job];
  std::vector<std::pair<int64_t, Rect>> bins(offsets[n_jobs]);
  std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
  for_each_band([&](int64_t job, int64_t bf, const Rect& r) { bins[fill[job]++] = {bf, r}; });
  std::atomic<int64_t> next_job{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    std::vector<Sample> samples(kBand * W);
    std::vector<uint8_t> stored(kBand * W);
    for (int64_t job = next_job++; job < n_jobs; job = next_job++) {
      const int64_t row0 = (job % n_bands) * kBand, row1 = std::min(H, row0 + kBand) - 1;
      const int64_t b = job / n_bands;
      const int64_t first = (b * H + row0) * W;  // pixel index of the band's start
      std::fill(stored.begin(), stored.end(), 0);
      for (int64_t k = offsets[job]; k < offsets[job + 1]; ++k) {
        const auto& [bf, r] = bins[k];
        scan(std::true_type{}, bf / F, static_cast<int32_t>(bf % F), r, std::max<int64_t>(r.i0, row0),
             std::min<int64_t>(r.i1, row1), [&](int64_t slot, int64_t key, float u, float v, float d) {
               if (key < keys[slot]) {
                 keys[slot] = key;
                 samples[slot - first] = Sample{u, v, d};
                 stored[slot - first] = 1;
               }
             });
      }
      for (int64_t i = row0; i <= row1; ++i) {
        for (int64_t j = 0; j < W; ++j) {
          const int64_t k = (i - row0) * W + j;
          resolve(b, i, j, stored[k] ? &samples[k] : nullptr);
        }
      }
    }
  });
  return {bary, tri_id, depth};
}

at::Tensor rasterize_bwd_cpu(const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& bary,
                             const at::Tensor& tri_id, const at::Tensor& depth, const at::Tensor& g_bary,
                             const at::Tensor& g_depth) {
  check_mesh_inputs(verts, faces, 1, 1);
  const int64_t B = verts.size(0), V = verts.size(1), H = tri_id.size(1), W = tri_id.size(2);
  check_pixel_tensors(verts, B, H, W, bary, tri_id);
  check_pixel_tensors(verts, B, H, W, g_bary, tri_id);
  TORCH_CHECK(depth.sizes() == tri_id.sizes() && g_depth.sizes() == tri_id.sizes() && depth.is_contiguous() &&
                  g_depth.is_contiguous() && depth.scalar_type() == at::kFloat && g_depth.scalar_type() == at::kFloat,
              "depth and its gradient must be contiguous float32 [B,H,W]");
  auto g_verts = at::empty_like(verts);  // every value is written by scatter_covered
  const float* vp = verts.data_ptr<float>();
  const int32_t* fp = faces.data_ptr<int32_t>();
  const float* bp = bary.data_ptr<float>();
  const int32_t* tp = tri_id.data_ptr<int32_t>();
  const float* dp = depth.data_ptr<float>();
  const float* gbp = g_bary.data_ptr<float>();
  const float* gdp = g_depth.data_ptr<float>();
  float* gv = g_verts.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    const float* base = vp + b * V * 4;
    scatter_covered(tp + b * H * W, H, W, V * 4, gv + b * V * 4, [&](float* acc, int64_t i, int64_t j) {
      const int64_t pix = (b * H + i) * W + j;
      const float gu = gbp[2 * pix], gvv = gbp[2 * pix + 1], gd = gdp[pix];
      if (gu == 0.f && gvv == 0.f && gd == 0.f) return;
      const int32_t* idx = fp + 3 * tp[pix];
      float g[3][4] = {{0.f}};
      sample_backward(base + 4 * idx[0], base + 4 * idx[1], base + 4 * idx[2], pixel_ndc(j, W), pixel_ndc(i, H),
                      bp[2 * pix], bp[2 * pix + 1], dp[pix], gu, gvv, gd, g);
      for (int k = 0; k < 3; ++k) {
        for (int c4 = 0; c4 < 4; ++c4) acc[4 * idx[k] + c4] += g[k][c4];
      }
    });
  }
  return g_verts;
}

namespace {

void check_interpolate_inputs(const at::Tensor& attr, const at::Tensor& bary, const at::Tensor& tri_id,
                              const at::Tensor& faces) {
  TORCH_CHECK(attr.dim() == 3 && attr.scalar_type() == at::kFloat && attr.is_contiguous(),
              "attr must be contiguous float32 [Ba,V,D]");
  TORCH_CHECK(faces.dim() == 2 && faces.size(1) == 3 && faces.scalar_type() == at::kInt && faces.is_contiguous(),
              "faces must be contiguous int32 [F,3]");
  const int64_t B = tri_id.size(0);
  TORCH_CHECK(attr.size(0) == 1 || attr.size(0) == B, "attr must have batch size 1 or B");
  check_pixel_tensors(attr, B, tri_id.size(1), tri_id.size(2), bary, tri_id);
}

}  // namespace

namespace {

// D known at compile time (kD > 0: the attribute loops unroll) or not (kD = 0: runtime d_rt).
template <int kD>
void interpolate_fwd_impl(const float* ap, const float* bp, const int32_t* tp, const int32_t* fp, float* op,
                          int64_t B, int64_t HW, int64_t Ba, int64_t V, int64_t F, int64_t d_rt) {
  const int64_t D = kD > 0 ? kD : d_rt;
  at::parallel_for(0, B * HW, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t pix = begin; pix < end; ++pix) {
      const int32_t f = tp[pix];
      float* o = op + pix * D;
      if (f < 0) {
        for (int64_t d = 0; d < D; ++d) o[d] = 0.f;
        continue;
      }
      TORCH_CHECK(f < F, "tri_id out of range of faces");
      const float* a = ap + (Ba == 1 ? 0 : pix / HW) * V * D;
      const float* a0 = a + fp[3 * f] * D;
      const float* a1 = a + fp[3 * f + 1] * D;
      const float* a2 = a + fp[3 * f + 2] * D;
      const float u = bp[2 * pix], v = bp[2 * pix + 1];
      const float t = (1.0f - u) - v;
      for (int64_t d = 0; d < D; ++d) o[d] = (u * a0[d] + v * a1[d]) + t * a2[d];
    }
  });
}

template <int kD>
void interpolate_bwd_impl(const float* ap, const float* bp, const int32_t* tp, const int32_t* fp, const float* gp,
                          float* gap, float* gbp, int64_t B, int64_t H, int64_t W, int64_t Ba, int64_t V, int64_t d_rt) {
  const int64_t D = kD > 0 ? kD : d_rt;
  const int64_t HW = H * W;
  for (int64_t b = 0; b < B; ++b) {
    const float* a = ap + (Ba == 1 ? 0 : b) * V * D;
    scatter_covered(tp + b * HW, H, W, V * D, gap + b * V * D, [&](float* acc, int64_t i, int64_t j) {
      const int64_t pix = b * HW + i * W + j;
      const int32_t* idx = fp + 3 * tp[pix];
      const float *a0 = a + idx[0] * D, *a1 = a + idx[1] * D, *a2 = a + idx[2] * D;
      const float u = bp[2 * pix], v = bp[2 * pix + 1], t = (1.0f - u) - v;
      const float* g = gp + pix * D;
      float gu = 0.f, gv = 0.f;
      for (int64_t d = 0; d < D; ++d) {
        gu += g[d] * (a0[d] - a2[d]);
        gv += g[d] * (a1[d] - a2[d]);
      }
      gbp[2 * pix] = gu;
      gbp[2 * pix + 1] = gv;
      float* acc0 = acc + idx[0] * D;
      float* acc1 = acc + idx[1] * D;
      float* acc2 = acc + idx[2] * D;
      for (int64_t d = 0; d < D; ++d) acc0[d] += u * g[d];
      for (int64_t d = 0; d < D; ++d) acc1[d] += v * g[d];
      for (int64_t d = 0; d < D; ++d) acc2[d] += t * g[d];
    });
  }
}

// Calls fn(std::integral_constant<int, D>) for D = 1..4 (unrolled kernels), else with 0.
template <typename Fn>
void dispatch_channels(int64_t D, Fn&& fn) {
  switch (D) {
    case 1: return fn(std::integral_constant<int, 1>{});
    case 2: return fn(std::integral_constant<int, 2>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    default: return fn(std::integral_constant<int, 0>{});
  }
}

}  // namespace

at::Tensor interpolate_fwd_cpu(const at::Tensor& attr, const at::Tensor& bary, const at::Tensor& tri_id,
                               const at::Tensor& faces) {
  check_interpolate_inputs(attr, bary, tri_id, faces);
  const int64_t B = tri_id.size(0), H = tri_id.size(1), W = tri_id.size(2);
  const int64_t Ba = attr.size(0), V = attr.size(1), D = attr.size(2), F = faces.size(0);
  auto out = at::empty({B, H, W, D}, attr.options());  // every pixel is written
  dispatch_channels(D, [&](auto kd) {
    interpolate_fwd_impl<decltype(kd)::value>(attr.data_ptr<float>(), bary.data_ptr<float>(), tri_id.data_ptr<int32_t>(),
                                              faces.data_ptr<int32_t>(), out.data_ptr<float>(), B, H * W, Ba, V, F, D);
  });
  return out;
}

std::vector<at::Tensor> interpolate_bwd_cpu(const at::Tensor& attr, const at::Tensor& bary,
                                            const at::Tensor& tri_id, const at::Tensor& faces,
                                            const at::Tensor& g_out) {
  check_interpolate_inputs(attr, bary, tri_id, faces);
  const int64_t B = tri_id.size(0), H = tri_id.size(1), W = tri_id.size(2);
  const int64_t Ba = attr.size(0), V = attr.size(1), D = attr.size(2);
  TORCH_CHECK(g_out.dim() == 4 && g_out.size(0) == B && g_out.size(1) == H && g_out.size(2) == W &&
                  g_out.size(3) == D && g_out.is_contiguous() && g_out.scalar_type() == at::kFloat,
              "the output gradient must be contiguous float32 [B,H,W,D]");
  auto g_attr = at::empty({B, V, D}, attr.options());  // every value is written by scatter_covered
  auto g_bary = at::zeros_like(bary);                   // covered pixels are written
  dispatch_channels(D, [&](auto kd) {
    interpolate_bwd_impl<decltype(kd)::value>(attr.data_ptr<float>(), bary.data_ptr<float>(), tri_id.data_ptr<int32_t>(),
                                              faces.data_ptr<int32_t>(), g_out.data_ptr<float>(), g_attr.data_ptr<float>(),
                                              g_bary.data_ptr<float>(), B, H, W, Ba, V, D);
  });
  return {g_attr, g_bary};
}

}  // namespace mesh
}  // namespace studio
