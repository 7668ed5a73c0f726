// Internals of the CPU tile rasterizer shared by its scalar (gauss_rasterize_cpu.cpp) and AVX2
// (gauss_rasterize_avx2.cpp) tile kernels: the scene as raw pointers, one tile's geometry and
// hit range, and where in a tile a Gaussian can reach alpha >= 1/255.
#pragma once

#include "gauss_rasterize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace studio {
namespace cpu {

// Read-only inputs as raw pointers.
struct Scene {
  const float* means2d;        // [C*N, 2]
  const float* conics;         // [C*N, 3]
  const float* values;         // [C*N, D]
  const float* opacities;      // [C*N]
  const int32_t* offsets;      // [C * tile_h * tile_w]
  const int32_t* flatten_ids;  // [M]
  int64_t n_isects, n_tiles, D, width, height, tile_w, tile_h;
};

// Tile t (camera-major, then row-major): pixels [x0, x0 + nw) x [y0, y0 + nh), hits [start, end).
struct Tile {
  int x0, y0, nw, nh;
  int64_t start, end;
  int64_t pixel0;  // flat index of pixel (y0, x0) in [C*H*W]

  Tile(const Scene& s, int64_t t) {
    const int64_t per_camera = s.tile_w * s.tile_h;
    const int64_t camera = t / per_camera, in_camera = t % per_camera;
    x0 = int((in_camera % s.tile_w) * kTileSize);
    y0 = int((in_camera / s.tile_w) * kTileSize);
    nw = int(std::min<int64_t>(kTileSize, s.width - x0));
    nh = int(std::min<int64_t>(kTileSize, s.height - y0));
    start = s.offsets[t];
    end = t + 1 < s.n_tiles ? s.offsets[t + 1] : s.n_isects;
    pixel0 = (camera * s.height + y0) * s.width + x0;
  }
  int64_t pixel(int r, int c, int64_t width) const { return pixel0 + int64_t(r) * width + c; }
};

inline int clamp_index(float v, int hi) {
  // NaN and out-of-range values go to the tile border.
  if (!(v >= 0.f)) return 0;
  if (!(v <= float(hi))) return hi;
  return int(v);
}

// Where in a tile a Gaussian may reach alpha >= 1/255, i.e. sigma <= t = log(255 o): tile-local
// rows [r0, r1), columns [c0, c1) (the ellipse's bounding box) and, in row r, columns
// columns(r). For a positive definite conic this is an ellipse (solving the quadratic in dx per
// row); a pixel of margin on every side keeps float rounding on the safe side, and the per-pixel
// test then decides exactly as the reference does. Indefinite or non-finite conics get the whole
// tile. studio/render/tiles.py (tile_extents) bounds the tiles a Gaussian is listed in by the
// same box.
class Support {
 public:
  int r0, r1, c0, c1;
  float t;  // log(255 o) + 1e-3: sigma above it cannot reach alpha 1/255

  Support(float mx, float my, float o, float a, float b, float c, const Tile& tile)
      : a_(a), b_(b), det_(a * c - b * b), nw_(tile.nw) {
    full_ = !(a > 0.f && det_ > 0.f);
    cx_ = mx - 0.5f - float(tile.x0);  // column (fractional) of the mean
    cy_ = my - 0.5f - float(tile.y0);
    t = std::log(std::max(255.f * o, 1.f)) + 1e-3f;
    two_a_t_ = 2.f * a * t;
    const float ey = std::sqrt(2.f * t * a / det_) + 1.f;  // half-height of the ellipse + margin
    const float ex = std::sqrt(2.f * t * c / det_) + 1.f;  // half-width + margin
    r0 = full_ ? 0 : clamp_index(std::floor(cy_ - ey), tile.nh);
    r1 = full_ ? tile.nh : clamp_index(std::floor(cy_ + ey) + 1.f, tile.nh);
    c0 = full_ ? 0 : clamp_index(std::floor(cx_ - ex), tile.nw);
    c1 = full_ ? tile.nw : clamp_index(std::floor(cx_ + ex) + 1.f, tile.nw);
  }

  bool empty() const { return r0 >= r1 || c0 >= c1; }

  // Columns [first, second) of row r: 0.5 a dx^2 + b dy dx + 0.5 c dy^2 <= t around dx = -b dy / a.
  std::pair<int, int> columns(int r) const {
    if (full_) return {0, nw_};
    const float dy = cy_ - float(r);
    const float half = std::sqrt(std::max(two_a_t_ - det_ * dy * dy, 0.f)) / a_ + 1.f;
    const float centre = cx_ + b_ * dy / a_;
    return {clamp_index(std::floor(centre - half), nw_), clamp_index(std::floor(centre + half) + 1.f, nw_)};
  }

 private:
  float a_, b_, det_, cx_ = 0.f, cy_ = 0.f, two_a_t_ = 0.f;
  int nw_;
  bool full_;
};

// Gradient row of one Gaussian in a worker's buffer: v_mean (2), v_conic (3), v_opacity, v_value (D).
constexpr int64_t kGradHead = 6;

// Output pointers of the forward: colors [C*H*W, D], alphas, final_T [C*H*W], last_ids [C*H*W].
struct ForwardOut {
  float* colors;
  float* alphas;
  float* final_T;
  int32_t* last_ids;
};

// Inputs of the backward beyond the scene: the forward's final_T and last_ids, the output gradients.
struct BackwardIn {
  const float* final_T;   // [C*H*W]
  const int32_t* last_ids;  // [C*H*W]
  const float* v_colors;  // [C*H*W, D]
  const float* v_alphas;  // [C*H*W]
};

// AVX2 + FMA tile kernels (gauss_rasterize_avx2.cpp), same contract as the scalar ones: the
// forward writes the tile's pixels of `out`; the backward adds each Gaussian's gradient row
// (kGradHead + D floats) into `grads` [C*N, kGradHead + D]. The scratch objects are per worker.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define STUDIO_CPU_AVX2 1
struct Avx2ForwardScratch {
  std::vector<float> T, acc;  // [256], [D, 256]: transmittance, colour sums (channel-major)
  std::vector<int32_t> last, active;  // [256]: last contributing hit, ~0 while not saturated
  explicit Avx2ForwardScratch(int64_t D) : T(kTilePixels), acc(D * kTilePixels), last(kTilePixels), active(kTilePixels) {}
};
struct Avx2BackwardScratch {
  std::vector<float> T, T_v_alpha, v_colors, behind, v_values;  // [256], [256], [D,256], [D,256], [D,8]
  std::vector<int32_t> last;                                   // [256]
  explicit Avx2BackwardScratch(int64_t D)
      : T(kTilePixels), T_v_alpha(kTilePixels), v_colors(D * kTilePixels), behind(D * kTilePixels),
        v_values(D * 8), last(kTilePixels) {}
};
void forward_tile_avx2(const Scene& s, const Tile& tile, Avx2ForwardScratch& st, const ForwardOut& out);
void backward_tile_avx2(const Scene& s, const Tile& tile, Avx2BackwardScratch& st, const BackwardIn& in, float* grads);
#else
#define STUDIO_CPU_AVX2 0
#endif

}  // namespace cpu
}  // namespace studio
