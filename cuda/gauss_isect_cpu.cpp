// Tile intersection on the CPU: the lists of studio/render/tiles.py (isect_tiles), element for
// element, in O(N + M) instead of a sort of the M hits.
//
// isect_tiles sorts 64-bit keys camera | tile | float_bits(depth) of every (Gaussian, tile) hit;
// within one tile a Gaussian appears once, so a tile's run is its Gaussians ordered by
// (depth bits, Gaussian index). Here: (1) each Gaussian's tile rectangle, with the same float32
// operations as the Python code; (2) per camera, the Gaussians with hits ordered by depth bits
// with a stable radix sort (ties keep the index order), and per tile row the ones reaching it;
// (3) hits per tile and their offsets; (4) the lists, each tile row filled by one worker walking
// its Gaussians in depth order. Nothing depends on the thread count.
#include "gauss_rasterize.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

namespace studio {
namespace {

// A Gaussian with hits: tiles [x0, x1) x [y0, y1) of camera flat / N, its depth's float bits.
struct Hit {
  uint32_t depth_bits;
  int32_t flat;  // camera * N + gaussian
  int16_t x0, x1, y0, y1;
};

// The float32 maths of isect_tiles: clamp(floor(m/16 - r/16), 0, n) and clamp(ceil(m/16 + r/16), 0, n).
inline int16_t tile_floor(float m, float r, int32_t n) {
  const float v = std::floor(m / float(kTileSize) - r / float(kTileSize));
  return int16_t(std::min(std::max(v, 0.f), float(n)));
}
inline int16_t tile_ceil(float m, float r, int32_t n) {
  const float v = std::ceil(m / float(kTileSize) + r / float(kTileSize));
  return int16_t(std::min(std::max(v, 0.f), float(n)));
}

// Stable LSD radix sort of `hits` by depth bits (11-bit digits).
void radix_sort_by_depth(std::vector<Hit>& hits) {
  constexpr int kBits = 11, kBins = 1 << kBits;
  std::vector<Hit> tmp(hits.size());
  std::vector<int64_t> start(kBins);
  for (int shift = 0; shift < 32; shift += kBits) {
    std::fill(start.begin(), start.end(), 0);
    for (const Hit& h : hits) ++start[(h.depth_bits >> shift) & (kBins - 1)];
    int64_t sum = 0;
    for (auto& s : start) {
      const int64_t count = s;
      s = sum;
      sum += count;
    }
    for (const Hit& h : hits) tmp[start[(h.depth_bits >> shift) & (kBins - 1)]++] = h;
    hits.swap(tmp);
  }
}

}  // namespace

at::Tensor tile_extents_cpu(const at::Tensor& radii, const at::Tensor& conics, const at::Tensor& opacities) {
  TORCH_CHECK(radii.dim() == 2 && radii.scalar_type() == at::kInt, "radii must be [C,N] int32");
  const int64_t C = radii.size(0), N = radii.size(1);
  TORCH_CHECK(conics.dim() == 3 && conics.size(0) == C && conics.size(1) == N && conics.size(2) == 3,
              "conics must be [C,N,3]");
  TORCH_CHECK(opacities.numel() == C * N || opacities.numel() == N, "opacities must be [C,N] or [N]");
  for (const at::Tensor* t : {&radii, &conics, &opacities}) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous(), "tile_extents_cpu takes contiguous CPU tensors");
  }
  TORCH_CHECK(conics.scalar_type() == at::kFloat && opacities.scalar_type() == at::kFloat,
              "conics and opacities must be float32");
  at::Tensor extents = at::empty({C, N, 2}, conics.options());
  const int32_t* r = radii.data_ptr<int32_t>();
  const float* k = conics.data_ptr<float>();
  const float* o = opacities.data_ptr<float>();
  float* out = extents.data_ptr<float>();
  const bool per_camera = opacities.numel() == C * N;
  at::parallel_for(0, C * N, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float a = k[3 * i], b = k[3 * i + 1], c = k[3 * i + 2];
      const float opac = o[per_camera ? i : i % N];
      const float radius = float(r[i]);
      if (r[i] <= 0 || !(opac >= kAlphaMin)) {
        out[2 * i] = out[2 * i + 1] = 0.f;
        continue;
      }
      const float det = a * c - b * b;
      if (!(a > 0.f && det > 0.f)) {  // not positive definite: the radius
        out[2 * i] = out[2 * i + 1] = radius;
        continue;
      }
      const float t = std::log(std::max(255.f * opac, 1.f)) + 1e-3f;
      out[2 * i] = std::min(std::sqrt(2.f * t * c / det) + 1.f, radius);
      out[2 * i + 1] = std::min(std::sqrt(2.f * t * a / det) + 1.f, radius);
    }
  });
  return extents;
}

std::vector<at::Tensor> isect_tiles_cpu(const at::Tensor& means2d, const at::Tensor& extents, const at::Tensor& depths,
                                        int64_t width, int64_t height) {
  TORCH_CHECK(means2d.dim() == 3 && means2d.size(2) == 2, "means2d must be [C,N,2]");
  const int64_t C = means2d.size(0), N = means2d.size(1);
  TORCH_CHECK(extents.dim() == 3 && extents.size(0) == C && extents.size(1) == N && extents.size(2) == 2,
              "extents must be [C,N,2]");
  TORCH_CHECK(depths.dim() == 2 && depths.size(0) == C && depths.size(1) == N, "depths must be [C,N]");
  TORCH_CHECK(width > 0 && height > 0, "width and height must be positive");
  check_cpu_float32({&means2d, &extents, &depths}, "isect_tiles_cpu");
  TORCH_CHECK(N < (int64_t(1) << 31) / std::max<int64_t>(C, 1), "too many Gaussians for int32 indices");
  TORCH_CHECK(width < (int64_t(1) << 19) && height < (int64_t(1) << 19), "images wider or higher than 2^19 pixels");
  const int32_t tile_w = int32_t((width + kTileSize - 1) / kTileSize);
  const int32_t tile_h = int32_t((height + kTileSize - 1) / kTileSize);
  const int64_t tiles_per_camera = int64_t(tile_w) * tile_h;
  const float* m = means2d.data_ptr<float>();
  const float* e = extents.data_ptr<float>();
  const uint32_t* depth_bits = reinterpret_cast<const uint32_t*>(depths.data_ptr<float>());

  // (1) each Gaussian's tiles; (2) per camera, the Gaussians with hits in depth order, then per band
  // (one tile row of one camera) those that reach it, still in depth order
  at::Tensor tiles_per_gauss = at::empty({C, N}, means2d.options().dtype(at::kInt));
  int32_t* per_gauss = tiles_per_gauss.data_ptr<int32_t>();
  const int64_t n_bands = C * tile_h;
  std::vector<std::vector<Hit>> bands(n_bands);
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    std::vector<Hit> hits;
    for (int64_t cam = begin; cam < end; ++cam) {
      hits.clear();
      for (int64_t flat = cam * N; flat < (cam + 1) * N; ++flat) {
        const float ex = e[2 * flat], ey = e[2 * flat + 1];
        per_gauss[flat] = 0;
        if (!(ex > 0.f && ey > 0.f)) continue;
        const Hit h{depth_bits[flat], int32_t(flat), tile_floor(m[2 * flat], ex, tile_w),
                    tile_ceil(m[2 * flat], ex, tile_w), tile_floor(m[2 * flat + 1], ey, tile_h),
                    tile_ceil(m[2 * flat + 1], ey, tile_h)};
        if (h.x1 <= h.x0 || h.y1 <= h.y0) continue;
        per_gauss[flat] = int32_t(h.x1 - h.x0) * (h.y1 - h.y0);
        hits.push_back(h);
      }
      radix_sort_by_depth(hits);
      for (const Hit& h : hits)
        for (int32_t y = h.y0; y < h.y1; ++y) bands[cam * tile_h + y].push_back(h);
    }
  });

  // (3) hits per tile, then where each tile's run starts
  std::vector<int64_t> tile_start(C * tiles_per_camera + 1, 0);
  at::parallel_for(0, n_bands, 1, [&](int64_t begin, int64_t end) {
    for (int64_t band = begin; band < end; ++band) {
      int64_t* counts = tile_start.data() + band * tile_w + 1;
      for (const Hit& h : bands[band])
        for (int32_t x = h.x0; x < h.x1; ++x) ++counts[x];
    }
  });
  for (int64_t t = 0; t < C * tiles_per_camera; ++t) tile_start[t + 1] += tile_start[t];
  const int64_t M = tile_start.back();
  TORCH_CHECK(M < (int64_t(1) << 31), "too many tile hits for int32 offsets");

  at::Tensor isect_offsets = at::empty({C, tile_h, tile_w}, means2d.options().dtype(at::kInt));
  int32_t* offsets = isect_offsets.data_ptr<int32_t>();
  for (int64_t t = 0; t < C * tiles_per_camera; ++t) offsets[t] = int32_t(tile_start[t]);
  at::Tensor isect_ids = at::empty({M}, means2d.options().dtype(at::kLong));
  at::Tensor flatten_ids = at::empty({M}, means2d.options().dtype(at::kInt));
  int64_t* keys = isect_ids.data_ptr<int64_t>();
  int32_t* ids = flatten_ids.data_ptr<int32_t>();
  int tile_bits = 1;
  while ((int64_t(1) << tile_bits) <= tiles_per_camera) ++tile_bits;  // Python's max(1, n.bit_length())

  // (4) the lists, band by band
  at::parallel_for(0, n_bands, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> cursor(tile_w);
    for (int64_t band = begin; band < end; ++band) {
      const int64_t cam = band / tile_h, y = band % tile_h;
      std::copy_n(tile_start.data() + band * tile_w, tile_w, cursor.data());
      for (const Hit& h : bands[band]) {
        const int64_t key = (cam << (32 + tile_bits)) | int64_t(h.depth_bits);
        for (int32_t x = h.x0; x < h.x1; ++x) {
          const int64_t pos = cursor[x]++;
          ids[pos] = h.flat;
          keys[pos] = key | ((y * tile_w + x) << 32);
        }
      }
    }
  });
  return {tiles_per_gauss, isect_ids, flatten_ids, isect_offsets};
}

}  // namespace studio
