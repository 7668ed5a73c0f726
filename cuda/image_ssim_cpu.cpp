// SSIM of float32 images on the CPU, forward and backward in two passes each (loaded by
// studio.ext as the "image" extension; studio/metrics.py's ssim uses it for CPU tensors).
//
// The maths of studio/metrics.py (Wang et al. 2004, Eq. 13; 'valid' window positions only): per
// image plane (one channel of one image, H x W) and window position (y, x) of the K x K separable
// Gaussian g (Ho = H - K + 1 rows, Wo = W - K + 1 columns),
//   mu_p, mu_t, e_pp, e_tt, e_pt = blur(p), blur(t), blur(p^2), blur(t^2), blur(p t)
//   A1 = 2 mu_p mu_t + c1,  A2 = 2 (e_pt - mu_p mu_t) + c2
//   B1 = mu_p^2 + mu_t^2 + c1,  B2 = (e_pp - mu_p^2) + (e_tt - mu_t^2) + c2
//   s = A1 A2 / (B1 B2),  ssim = mean of s over planes and positions.
// Backward (gradient of the mean with respect to p; t is a constant): per position
//   ds/dmu_p = 2 mu_t (A2 - A1) / (B1 B2) - 2 mu_p s (1/B1 - 1/B2)
//   ds/de_pp = -s / B2,  ds/de_pt = 2 A1 / (B1 B2)
// then back through the blur (its transpose: the same taps, scattered), and
//   dL/dp = blur^T(ds/dmu_p) + 2 p blur^T(ds/de_pp) + t blur^T(ds/de_pt).
// Each pass is an at::parallel_for over (plane, row); the mean is summed per row in double, so the
// result does not depend on the thread count.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace studio {
namespace {

struct Planes {
  const float* p;
  const float* t;
  int64_t P, H, W, K, Ho, Wo;
  std::vector<float> g;
};

Planes make_planes(const at::Tensor& pred, const at::Tensor& target, const at::Tensor& window) {
  for (const at::Tensor* tensor : {&pred, &target, &window}) {
    TORCH_CHECK(tensor->device().is_cpu() && tensor->scalar_type() == at::kFloat && tensor->is_contiguous(),
                "ssim_*_cpu takes contiguous float32 CPU tensors");
  }
  TORCH_CHECK(pred.dim() == 3 && pred.sizes() == target.sizes(), "pred and target must be [P,H,W] of one shape");
  TORCH_CHECK(window.dim() == 1, "window must be [K]");
  Planes s{pred.data_ptr<float>(), target.data_ptr<float>(), pred.size(0), pred.size(1), pred.size(2),
           window.size(0), 0, 0, {}};
  TORCH_CHECK(s.H >= s.K && s.W >= s.K, "images must be at least as large as the window");
  s.Ho = s.H - s.K + 1;
  s.Wo = s.W - s.K + 1;
  s.g.assign(window.data_ptr<float>(), window.data_ptr<float>() + s.K);
  return s;
}

// Horizontal pass: rows [P*H, 5, Wo] of blur_x(p), blur_x(t), blur_x(p^2), blur_x(t^2), blur_x(p t).
std::vector<float> blur_rows(const Planes& s) {
  std::vector<float> rows(s.P * s.H * 5 * s.Wo);
  at::parallel_for(0, s.P * s.H, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* p = s.p + r * s.W;
      const float* t = s.t + r * s.W;
      float* out = rows.data() + r * 5 * s.Wo;
      for (int64_t x = 0; x < s.Wo; ++x) {
        float a = 0.f, b = 0.f, c = 0.f, d = 0.f, e = 0.f;
        for (int64_t k = 0; k < s.K; ++k) {
          const float w = s.g[k], pv = p[x + k], tv = t[x + k];
          a += w * pv;
          b += w * tv;
          c += w * (pv * pv);
          d += w * (tv * tv);
          e += w * (pv * tv);
        }
        out[x] = a;
        out[s.Wo + x] = b;
        out[2 * s.Wo + x] = c;
        out[3 * s.Wo + x] = d;
        out[4 * s.Wo + x] = e;
      }
    }
  });
  return rows;
}

// The five statistics at window position (plane, y, x) from the horizontal pass.
struct Stats {
  float mu_p, mu_t, e_pp, e_tt, e_pt;
};

template <typename Visit>
void for_each_position(const Planes& s, const std::vector<float>& rows, const Visit& visit) {
  at::parallel_for(0, s.P * s.Ho, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(5 * s.Wo);
    for (int64_t py = begin; py < end; ++py) {
      const int64_t plane = py / s.Ho, y = py % s.Ho;
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t k = 0; k < s.K; ++k) {
        const float w = s.g[k];
        const float* row = rows.data() + (plane * s.H + y + k) * 5 * s.Wo;
        for (int64_t i = 0; i < 5 * s.Wo; ++i) acc[i] += w * row[i];
      }
      for (int64_t x = 0; x < s.Wo; ++x) {
        visit(py, x, Stats{acc[x], acc[s.Wo + x], acc[2 * s.Wo + x], acc[3 * s.Wo + x], acc[4 * s.Wo + x]});
      }
    }
  });
}

constexpr float kC1 = 0.01f * 0.01f, kC2 = 0.03f * 0.03f;

}  // namespace

// Mean SSIM of pred, target [P,H,W] with the separable window [K]: a 0-dim float32 tensor.
at::Tensor ssim_fwd_cpu(const at::Tensor& pred, const at::Tensor& target, const at::Tensor& window) {
  const Planes s = make_planes(pred, target, window);
  const std::vector<float> rows = blur_rows(s);
  std::vector<double> row_sums(s.P * s.Ho, 0.0);
  for_each_position(s, rows, [&](int64_t py, int64_t, const Stats& m) {
    const float mu_pt = m.mu_p * m.mu_t, mu_pp = m.mu_p * m.mu_p, mu_tt = m.mu_t * m.mu_t;
    const float num = (2.f * mu_pt + kC1) * (2.f * (m.e_pt - mu_pt) + kC2);
    const float den = (mu_pp + mu_tt + kC1) * ((m.e_pp - mu_pp) + (m.e_tt - mu_tt) + kC2);
    row_sums[py] += double(num / den);
  });
  double total = 0.0;
  for (double v : row_sums) total += v;
  return at::scalar_tensor(float(total / double(s.P * s.Ho * s.Wo)), pred.options());
}

// Gradient [P,H,W] of grad_out * ssim_fwd_cpu(pred, target, window) with respect to pred.
at::Tensor ssim_bwd_cpu(const at::Tensor& pred, const at::Tensor& target, const at::Tensor& window,
                        double grad_out) {
  const Planes s = make_planes(pred, target, window);
  const std::vector<float> rows = blur_rows(s);
  const float scale = float(grad_out / double(s.P * s.Ho * s.Wo));
  // d(mean)/d(mu_p, e_pp, e_pt) per window position: [P*Ho, 3, Wo].
  std::vector<float> d_stats(s.P * s.Ho * 3 * s.Wo);
  for_each_position(s, rows, [&](int64_t py, int64_t x, const Stats& m) {
    const float mu_pt = m.mu_p * m.mu_t, mu_pp = m.mu_p * m.mu_p, mu_tt = m.mu_t * m.mu_t;
    const float A1 = 2.f * mu_pt + kC1, A2 = 2.f * (m.e_pt - mu_pt) + kC2;
    const float B1 = mu_pp + mu_tt + kC1, B2 = (m.e_pp - mu_pp) + (m.e_tt - mu_tt) + kC2;
    const float inv_den = 1.f / (B1 * B2), ssim = A1 * A2 * inv_den;
    float* out = d_stats.data() + py * 3 * s.Wo;
    out[x] = scale * (2.f * m.mu_t * (A2 - A1) * inv_den - 2.f * m.mu_p * ssim * (1.f / B1 - 1.f / B2));
    out[s.Wo + x] = scale * (-ssim / B2);
    out[2 * s.Wo + x] = scale * (2.f * A1 * inv_den);
  });
  at::Tensor grad = at::empty_like(pred);
  float* gp = grad.data_ptr<float>();
  // Transposed blur: vertical (gather the window rows covering image row y), then horizontal.
  at::parallel_for(0, s.P * s.H, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> col(3 * s.Wo);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / s.H, y = r % s.H;
      std::fill(col.begin(), col.end(), 0.f);
      for (int64_t k = 0; k < s.K; ++k) {
        const int64_t yo = y - k;
        if (yo < 0 || yo >= s.Ho) continue;
        const float w = s.g[k];
        const float* src = d_stats.data() + (plane * s.Ho + yo) * 3 * s.Wo;
        for (int64_t i = 0; i < 3 * s.Wo; ++i) col[i] += w * src[i];
      }
      const float* p = s.p + r * s.W;
      const float* t = s.t + r * s.W;
      for (int64_t x = 0; x < s.W; ++x) {
        float g_mu = 0.f, g_pp = 0.f, g_pt = 0.f;
        const int64_t k0 = std::max<int64_t>(0, x - (s.Wo - 1)), k1 = std::min<int64_t>(s.K - 1, x);
        for (int64_t k = k0; k <= k1; ++k) {
          const float w = s.g[k];
          const int64_t xo = x - k;
          g_mu += w * col[xo];
          g_pp += w * col[s.Wo + xo];
          g_pt += w * col[2 * s.Wo + xo];
        }
        gp[r * s.W + x] = g_mu + 2.f * p[x] * g_pp + t[x] * g_pt;
      }
    }
  });
  return grad;
}

}  // namespace studio

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "studio image kernels on the CPU (SSIM forward and backward)";
  m.attr("with_cuda") = false;
  m.def("ssim_fwd_cpu", &studio::ssim_fwd_cpu,
        "Mean SSIM: (pred [P,H,W], target [P,H,W], window [K]) -> 0-dim tensor ('valid' positions)");
  m.def("ssim_bwd_cpu", &studio::ssim_bwd_cpu,
        "Its gradient: (pred, target, window, grad_out) -> d(grad_out * ssim)/d(pred) [P,H,W]");
}
