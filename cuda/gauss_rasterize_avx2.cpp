// AVX2 + FMA tile kernels of the CPU rasterizer: the scalar kernels' loops (gauss_rasterize_cpu.cpp)
// with 8 pixels of a tile row per step. Compiled for any x86-64 target through function
// attributes (no -mavx2 on the command line), and called only where the CPU reports AVX2 and FMA.
//
// Per 8 pixels: sigma, alpha and the decisions (alpha >= 1/255, saturation, T recovery) use the
// scalar kernels' operations in their order, so both paths decide alike; exp is a vector
// polynomial (Cephes' expf, within 2 ulp of std::exp), and the sums use fused multiply-adds, so
// results match the scalar path up to float rounding. Colours, their gradients and the
// "behind" sums are kept channel-major ([D, 256]) so that each channel is one vector per 8 pixels.
#include "gauss_rasterize_cpu.h"

#if STUDIO_CPU_AVX2

#include <immintrin.h>

#define STUDIO_AVX2 __attribute__((target("avx2,fma")))

namespace studio {
namespace cpu {
namespace {

constexpr int kLanes = 8;
constexpr int kGroups = kTileSize / kLanes;  // 8-pixel groups per tile row

// exp(x) for 8 floats (Cephes expf: range reduction by ln 2, degree-5 polynomial); exact at 0.
STUDIO_AVX2 inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(_mm256_mul_ps(y, x), x, _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(pow2n));
}

STUDIO_AVX2 inline float hsum8(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// One Gaussian's constants, broadcast.
struct Gauss8 {
  __m256 mx, a, b, c, o;
  float my, c_f;
  STUDIO_AVX2 Gauss8(float mx_, float my_, float a_, float b_, float c_, float o_)
      : mx(_mm256_set1_ps(mx_)), a(_mm256_set1_ps(a_)), b(_mm256_set1_ps(b_)), c(_mm256_set1_ps(c_)),
        o(_mm256_set1_ps(o_)), my(my_), c_f(c_) {}
};

// sigma, exp(-sigma) and alpha of 8 pixels of a row (the operations of gauss_sigma / gauss_alpha).
struct Alpha8 {
  __m256 dx, sigma, vis, alpha, contributes;  // contributes: sigma >= 0 and alpha >= 1/255
};

// dx and sigma; true when a pixel of `active` may reach alpha 1/255 (sigma <= t), so that the
// exp of all other groups is skipped.
STUDIO_AVX2 inline bool eval_sigma8(const Gauss8& g, __m256 pixel_x, float dy, float c_dy2, __m256 t, __m256 active,
                                    Alpha8& r) {
  r.dx = _mm256_sub_ps(g.mx, pixel_x);
  const __m256 quad = _mm256_add_ps(_mm256_mul_ps(g.a, _mm256_mul_ps(r.dx, r.dx)), _mm256_set1_ps(c_dy2));
  r.sigma = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), quad),
                          _mm256_mul_ps(_mm256_mul_ps(g.b, r.dx), _mm256_set1_ps(dy)));
  const __m256 near = _mm256_and_ps(active, _mm256_cmp_ps(r.sigma, t, _CMP_LE_OQ));
  return !_mm256_testz_ps(near, near);
}

// vis, alpha and which pixels of `active` contribute, after eval_sigma8.
STUDIO_AVX2 inline void eval_alpha8(const Gauss8& g, __m256 active, Alpha8& r) {
  r.vis = exp8(_mm256_sub_ps(_mm256_setzero_ps(), r.sigma));
  // min(0.999, o vis) with NaN kept (as the scalar a > 0.999 ? 0.999 : a)
  r.alpha = _mm256_min_ps(_mm256_set1_ps(kAlphaMax), _mm256_mul_ps(g.o, r.vis));
  r.contributes = _mm256_and_ps(active, _mm256_and_ps(_mm256_cmp_ps(r.sigma, _mm256_setzero_ps(), _CMP_GE_OQ),
                                                      _mm256_cmp_ps(r.alpha, _mm256_set1_ps(kAlphaMin), _CMP_GE_OQ)));
}

// x of the pixel centres of group k of a tile row.
STUDIO_AVX2 inline __m256 group_pixel_x(const Tile& tile, int k) {
  return _mm256_add_ps(_mm256_set1_ps(float(tile.x0 + k * kLanes)),
                       _mm256_setr_ps(0.5f, 1.5f, 2.5f, 3.5f, 4.5f, 5.5f, 6.5f, 7.5f));
}

}  // namespace

STUDIO_AVX2 void forward_tile_avx2(const Scene& s, const Tile& tile, Avx2ForwardScratch& st, const ForwardOut& out) {
  const int64_t D = s.D;
  float* T = st.T.data();
  float* acc = st.acc.data();
  int32_t* last = st.last.data();
  int32_t* active = st.active.data();
  std::fill(st.T.begin(), st.T.end(), 1.f);
  std::fill(st.acc.begin(), st.acc.end(), 0.f);
  std::fill(st.last.begin(), st.last.end(), -1);
  for (int r = 0; r < kTileSize; ++r)
    for (int col = 0; col < kTileSize; ++col) active[r * kTileSize + col] = (r < tile.nh && col < tile.nw) ? ~0 : 0;
  const __m256 pixel_x[kGroups] = {group_pixel_x(tile, 0), group_pixel_x(tile, 1)};
  const __m256 t_min = _mm256_set1_ps(kTransmittanceMin), one = _mm256_set1_ps(1.f);

  int left = tile.nw * tile.nh;
  for (int64_t idx = tile.start; idx < tile.end && left > 0; ++idx) {
    const int64_t g = s.flatten_ids[idx];
    const float mx = s.means2d[2 * g], my = s.means2d[2 * g + 1];
    const float a = s.conics[3 * g], b = s.conics[3 * g + 1], c = s.conics[3 * g + 2];
    const float o = s.opacities[g];
    const Support support(mx, my, o, a, b, c, tile);
    if (support.empty()) continue;
    const Gauss8 gv(mx, my, a, b, c, o);
    const __m256 t = _mm256_set1_ps(support.t);
    const float* val = s.values + g * D;
    const __m256i idx_v = _mm256_set1_epi32(int32_t(idx));
    const int k0 = support.c0 / kLanes, k1 = (support.c1 - 1) / kLanes;
    for (int r = support.r0; r < support.r1; ++r) {
      const float dy = my - (float(tile.y0 + r) + 0.5f);
      const float c_dy2 = c * (dy * dy);
      for (int k = k0; k <= k1; ++k) {
        const int p = r * kTileSize + k * kLanes;
        const __m256 act = _mm256_loadu_ps(reinterpret_cast<const float*>(active + p));
        if (_mm256_testz_ps(act, act)) continue;
        Alpha8 e;
        if (!eval_sigma8(gv, pixel_x[k], dy, c_dy2, t, act, e)) continue;
        eval_alpha8(gv, act, e);
        const __m256 contributes = e.contributes;
        if (_mm256_testz_ps(contributes, contributes)) continue;
        const __m256 T_p = _mm256_loadu_ps(T + p);
        const __m256 next_T = _mm256_mul_ps(T_p, _mm256_sub_ps(one, e.alpha));
        const __m256 saturates = _mm256_and_ps(contributes, _mm256_cmp_ps(next_T, t_min, _CMP_LE_OQ));
        const __m256 update = _mm256_andnot_ps(saturates, contributes);
        if (!_mm256_testz_ps(saturates, saturates)) {
          _mm256_storeu_ps(reinterpret_cast<float*>(active + p), _mm256_andnot_ps(saturates, act));
          left -= __builtin_popcount(unsigned(_mm256_movemask_ps(saturates)));
        }
        const __m256 w = _mm256_and_ps(_mm256_mul_ps(e.alpha, T_p), update);
        _mm256_storeu_ps(T + p, _mm256_blendv_ps(T_p, next_T, update));
        float* last_p = reinterpret_cast<float*>(last + p);
        _mm256_storeu_ps(last_p, _mm256_blendv_ps(_mm256_loadu_ps(last_p), _mm256_castsi256_ps(idx_v), update));
        for (int64_t ch = 0; ch < D; ++ch) {
          float* acc_p = acc + ch * kTilePixels + p;
          _mm256_storeu_ps(acc_p, _mm256_fmadd_ps(_mm256_set1_ps(val[ch]), w, _mm256_loadu_ps(acc_p)));
        }
      }
    }
  }
  for (int r = 0; r < tile.nh; ++r) {
    for (int col = 0; col < tile.nw; ++col) {
      const int p = r * kTileSize + col;
      const int64_t pix = tile.pixel(r, col, s.width);
      float* color = out.colors + pix * D;
      for (int64_t ch = 0; ch < D; ++ch) color[ch] = acc[ch * kTilePixels + p];
      out.alphas[pix] = 1.f - T[p];
      out.final_T[pix] = T[p];
      out.last_ids[pix] = last[p];
    }
  }
}

STUDIO_AVX2 void backward_tile_avx2(const Scene& s, const Tile& tile, Avx2BackwardScratch& st, const BackwardIn& in,
                                    float* grads) {
  const int64_t D = s.D, stride = kGradHead + D;
  float* T = st.T.data();
  float* T_v_alpha = st.T_v_alpha.data();
  float* v_colors = st.v_colors.data();
  float* behind = st.behind.data();
  float* v_values = st.v_values.data();
  int32_t* last = st.last.data();
  std::fill(st.last.begin(), st.last.end(), -1);
  std::fill(st.T.begin(), st.T.end(), 0.f);
  std::fill(st.T_v_alpha.begin(), st.T_v_alpha.end(), 0.f);
  std::fill(st.v_colors.begin(), st.v_colors.end(), 0.f);
  int32_t max_last = -1;
  for (int r = 0; r < tile.nh; ++r) {
    for (int col = 0; col < tile.nw; ++col) {
      const int p = r * kTileSize + col;
      const int64_t pix = tile.pixel(r, col, s.width);
      T[p] = in.final_T[pix];
      T_v_alpha[p] = in.final_T[pix] * in.v_alphas[pix];
      last[p] = in.last_ids[pix];
      for (int64_t ch = 0; ch < D; ++ch) v_colors[ch * kTilePixels + p] = in.v_colors[pix * D + ch];
      max_last = std::max(max_last, last[p]);
    }
  }
  if (max_last < tile.start) return;
  std::fill(st.behind.begin(), st.behind.end(), 0.f);
  const __m256 pixel_x[kGroups] = {group_pixel_x(tile, 0), group_pixel_x(tile, 1)};
  const __m256 one = _mm256_set1_ps(1.f), half = _mm256_set1_ps(0.5f), alpha_max = _mm256_set1_ps(kAlphaMax);

  for (int64_t idx = max_last; idx >= tile.start; --idx) {
    const int64_t g = s.flatten_ids[idx];
    const float mx = s.means2d[2 * g], my = s.means2d[2 * g + 1];
    const float a = s.conics[3 * g], b = s.conics[3 * g + 1], c = s.conics[3 * g + 2];
    const float o = s.opacities[g];
    const Support support(mx, my, o, a, b, c, tile);
    if (support.empty()) continue;
    const Gauss8 gv(mx, my, a, b, c, o);
    const __m256 t = _mm256_set1_ps(support.t);
    const float* val = s.values + g * D;
    const __m256i idx_minus_1 = _mm256_set1_epi32(int32_t(idx - 1));
    __m256 v_mx = _mm256_setzero_ps(), v_my = v_mx, v_a = v_mx, v_b = v_mx, v_c = v_mx, v_o = v_mx;
    bool touched = false;
    const int k0 = support.c0 / kLanes, k1 = (support.c1 - 1) / kLanes;
    for (int r = support.r0; r < support.r1; ++r) {
      const float dy = my - (float(tile.y0 + r) + 0.5f);
      const float c_dy2 = c * (dy * dy);
      const __m256 dy_v = _mm256_set1_ps(dy);
      for (int k = k0; k <= k1; ++k) {
        const int p = r * kTileSize + k * kLanes;
        // pixels whose last contributor is at or behind this hit
        const __m256 act = _mm256_castsi256_ps(
            _mm256_cmpgt_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(last + p)), idx_minus_1));
        if (_mm256_testz_ps(act, act)) continue;
        Alpha8 e;
        if (!eval_sigma8(gv, pixel_x[k], dy, c_dy2, t, act, e)) continue;
        eval_alpha8(gv, act, e);
        const __m256 contributes = e.contributes;
        if (_mm256_testz_ps(contributes, contributes)) continue;
        if (!touched) {
          std::fill(st.v_values.begin(), st.v_values.end(), 0.f);
          touched = true;
        }
        const __m256 ra = _mm256_div_ps(one, _mm256_sub_ps(one, e.alpha));
        const __m256 T_old = _mm256_loadu_ps(T + p);
        const __m256 T_p = _mm256_blendv_ps(T_old, _mm256_mul_ps(T_old, ra), contributes);  // T in front
        _mm256_storeu_ps(T + p, T_p);
        const __m256 fac = _mm256_and_ps(_mm256_mul_ps(e.alpha, T_p), contributes);
        __m256 v_alpha = _mm256_mul_ps(_mm256_loadu_ps(T_v_alpha + p), ra);
        for (int64_t ch = 0; ch < D; ++ch) {
          const __m256 v_col = _mm256_loadu_ps(v_colors + ch * kTilePixels + p);
          const __m256 val_c = _mm256_set1_ps(val[ch]);
          float* behind_p = behind + ch * kTilePixels + p;
          const __m256 behind_c = _mm256_loadu_ps(behind_p);
          float* v_val = v_values + ch * kLanes;
          _mm256_storeu_ps(v_val, _mm256_fmadd_ps(fac, v_col, _mm256_loadu_ps(v_val)));
          v_alpha = _mm256_fmadd_ps(_mm256_fmsub_ps(val_c, T_p, _mm256_mul_ps(behind_c, ra)), v_col, v_alpha);
          _mm256_storeu_ps(behind_p, _mm256_fmadd_ps(val_c, fac, behind_c));
        }
        // not clamped at 0.999: the gradient reaches sigma and the opacity
        const __m256 o_vis = _mm256_mul_ps(gv.o, e.vis);
        const __m256 unclamped = _mm256_and_ps(contributes, _mm256_cmp_ps(o_vis, alpha_max, _CMP_LE_OQ));
        const __m256 v_sigma =
            _mm256_and_ps(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(o_vis, v_alpha)), unclamped);
        const __m256 v_sigma_dx = _mm256_mul_ps(v_sigma, e.dx);
        v_a = _mm256_fmadd_ps(_mm256_mul_ps(half, v_sigma_dx), e.dx, v_a);
        v_b = _mm256_fmadd_ps(v_sigma_dx, dy_v, v_b);
        v_c = _mm256_fmadd_ps(_mm256_mul_ps(half, v_sigma), _mm256_mul_ps(dy_v, dy_v), v_c);
        v_mx = _mm256_fmadd_ps(v_sigma, _mm256_fmadd_ps(gv.a, e.dx, _mm256_mul_ps(gv.b, dy_v)), v_mx);
        v_my = _mm256_fmadd_ps(v_sigma, _mm256_fmadd_ps(gv.b, e.dx, _mm256_mul_ps(gv.c, dy_v)), v_my);
        v_o = _mm256_add_ps(v_o, _mm256_and_ps(_mm256_mul_ps(e.vis, v_alpha), unclamped));
      }
    }
    if (!touched) continue;
    float* grad = grads + g * stride;
    grad[0] += hsum8(v_mx);
    grad[1] += hsum8(v_my);
    grad[2] += hsum8(v_a);
    grad[3] += hsum8(v_b);
    grad[4] += hsum8(v_c);
    grad[5] += hsum8(v_o);
    for (int64_t ch = 0; ch < D; ++ch) grad[kGradHead + ch] += hsum8(_mm256_loadu_ps(v_values + ch * kLanes));
  }
}

}  // namespace cpu
}  // namespace studio

#endif  // STUDIO_CPU_AVX2
