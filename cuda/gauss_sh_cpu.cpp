// View-dependent colours of Gaussians from SH coefficients on the CPU, forward and backward: the
// maths of studio/render/rasterize.py's _features with studio/gaussians/sh.py (the 3DGS basis),
//   u = normalize(mean - campos),  rgb = max(0, 0.5 + sum_k Y_k(u) c_k),  k < (degree + 1)^2,
// one Gaussian per loop step (all cameras) instead of PyTorch's stacked basis and products.
// Backward: v_c_k = sum_cameras Y_k(u) g, g = v_rgb where 0.5 + sum >= 0 (torch's clamp_min);
// v_u = sum_k (g . c_k) dY_k/du; v_mean = (v_u - u (u . v_u)) / |mean - campos|.
#include "gauss_rasterize.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

namespace studio {
namespace {

constexpr float kC0 = 0.28209479177387814f, kC1 = 0.4886025119029199f;
constexpr float kC2[5] = {1.0925484305920792f, -1.0925484305920792f, 0.31539156525252005f, -1.0925484305920792f,
                          0.5462742152960396f};
constexpr float kC3[7] = {-0.5900435899266435f, 2.890611442640554f, -0.4570457994644658f, 0.3731763325901154f,
                          -0.4570457994644658f, 1.445305721320277f, -0.5900435899266435f};

// Basis values Y[16] at unit direction (x, y, z) and, when dY is given, their gradients dY[16][3].
void sh_basis(float x, float y, float z, float* Y, float (*dY)[3]) {
  const float xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
  const float values[16] = {kC0,
                            -kC1 * y,
                            kC1 * z,
                            -kC1 * x,
                            kC2[0] * xy,
                            kC2[1] * yz,
                            kC2[2] * (2.f * zz - xx - yy),
                            kC2[3] * xz,
                            kC2[4] * (xx - yy),
                            kC3[0] * y * (3.f * xx - yy),
                            kC3[1] * xy * z,
                            kC3[2] * y * (4.f * zz - xx - yy),
                            kC3[3] * z * (2.f * zz - 3.f * xx - 3.f * yy),
                            kC3[4] * x * (4.f * zz - xx - yy),
                            kC3[5] * z * (xx - yy),
                            kC3[6] * x * (xx - 3.f * yy)};
  std::copy(values, values + 16, Y);
  if (dY == nullptr) return;
  const float grads[16][3] = {{0.f, 0.f, 0.f},
                              {0.f, -kC1, 0.f},
                              {0.f, 0.f, kC1},
                              {-kC1, 0.f, 0.f},
                              {kC2[0] * y, kC2[0] * x, 0.f},
                              {0.f, kC2[1] * z, kC2[1] * y},
                              {-2.f * kC2[2] * x, -2.f * kC2[2] * y, 4.f * kC2[2] * z},
                              {kC2[3] * z, 0.f, kC2[3] * x},
                              {2.f * kC2[4] * x, -2.f * kC2[4] * y, 0.f},
                              {6.f * kC3[0] * xy, kC3[0] * (3.f * xx - 3.f * yy), 0.f},
                              {kC3[1] * yz, kC3[1] * xz, kC3[1] * xy},
                              {-2.f * kC3[2] * xy, kC3[2] * (4.f * zz - xx - 3.f * yy), 8.f * kC3[2] * yz},
                              {-6.f * kC3[3] * xz, -6.f * kC3[3] * yz, kC3[3] * (6.f * zz - 3.f * xx - 3.f * yy)},
                              {kC3[4] * (4.f * zz - 3.f * xx - yy), -2.f * kC3[4] * xy, 8.f * kC3[4] * xz},
                              {2.f * kC3[5] * xz, -2.f * kC3[5] * yz, kC3[5] * (xx - yy)},
                              {kC3[6] * (3.f * xx - 3.f * yy), -6.f * kC3[6] * xy, 0.f}};
  for (int k = 0; k < 16; ++k)
    for (int j = 0; j < 3; ++j) dY[k][j] = grads[k][j];
}

// Unit direction from campos to mean (torch.nn.functional.normalize: divided by max(|d|, 1e-12)).
struct Direction {
  float u[3], norm;
  Direction(const float* mean, const float* campos) {
    const float d[3] = {mean[0] - campos[0], mean[1] - campos[1], mean[2] - campos[2]};
    norm = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
    const float inv = 1.f / std::max(norm, 1e-12f);
    for (int j = 0; j < 3; ++j) u[j] = d[j] * inv;
  }
};

void check_sh_inputs(int64_t degree, const at::Tensor& coeffs, const at::Tensor& means, const at::Tensor& campos) {
  TORCH_CHECK(degree >= 0 && degree <= 3, "SH degree must be 0..3");
  check_cpu_float32({&coeffs, &means, &campos}, "sh_colors_*_cpu");
  TORCH_CHECK(coeffs.dim() == 3 && coeffs.size(2) == 3 && coeffs.size(1) >= (degree + 1) * (degree + 1),
              "coeffs must be [N,K,3] with K >= (degree + 1)^2");
  TORCH_CHECK(means.dim() == 2 && means.size(0) == coeffs.size(0) && means.size(1) == 3, "means must be [N,3]");
  TORCH_CHECK(campos.dim() == 2 && campos.size(1) == 3, "campos must be [C,3]");
}

}  // namespace

at::Tensor sh_colors_fwd_cpu(int64_t degree, const at::Tensor& coeffs, const at::Tensor& means,
                             const at::Tensor& campos) {
  check_sh_inputs(degree, coeffs, means, campos);
  const int64_t N = coeffs.size(0), K = coeffs.size(1), C = campos.size(0);
  const int bases = int((degree + 1) * (degree + 1));
  at::Tensor colors = at::empty({C, N, 3}, coeffs.options());
  const float *sh = coeffs.data_ptr<float>(), *m = means.data_ptr<float>(), *cam = campos.data_ptr<float>();
  float* out = colors.data_ptr<float>();
  at::parallel_for(0, N, 2048, [&](int64_t begin, int64_t end) {
    float Y[16];
    for (int64_t n = begin; n < end; ++n) {
      const float* c = sh + n * K * 3;
      for (int64_t cam_i = 0; cam_i < C; ++cam_i) {
        const Direction dir(m + 3 * n, cam + 3 * cam_i);
        sh_basis(dir.u[0], dir.u[1], dir.u[2], Y, nullptr);
        float* rgb = out + (cam_i * N + n) * 3;
        for (int j = 0; j < 3; ++j) {
          float sum = 0.f;
          for (int k = 0; k < bases; ++k) sum += Y[k] * c[3 * k + j];
          rgb[j] = std::max(sum + 0.5f, 0.f);
        }
      }
    }
  });
  return colors;
}

std::vector<at::Tensor> sh_colors_bwd_cpu(int64_t degree, const at::Tensor& coeffs, const at::Tensor& means,
                                          const at::Tensor& campos, const at::Tensor& v_colors) {
  check_sh_inputs(degree, coeffs, means, campos);
  const int64_t N = coeffs.size(0), K = coeffs.size(1), C = campos.size(0);
  TORCH_CHECK(v_colors.is_contiguous() && v_colors.scalar_type() == at::kFloat && v_colors.numel() == C * N * 3,
              "v_colors must be a contiguous float32 [C,N,3]");
  const int bases = int((degree + 1) * (degree + 1));
  at::Tensor v_coeffs = at::zeros_like(coeffs), v_means = at::zeros_like(means);
  const float *sh = coeffs.data_ptr<float>(), *m = means.data_ptr<float>(), *cam = campos.data_ptr<float>();
  const float* g_rgb = v_colors.data_ptr<float>();
  float *vc = v_coeffs.data_ptr<float>(), *vm = v_means.data_ptr<float>();
  at::parallel_for(0, N, 2048, [&](int64_t begin, int64_t end) {
    float Y[16], dY[16][3];
    for (int64_t n = begin; n < end; ++n) {
      const float* c = sh + n * K * 3;
      float* v_c = vc + n * K * 3;
      for (int64_t cam_i = 0; cam_i < C; ++cam_i) {
        const Direction dir(m + 3 * n, cam + 3 * cam_i);
        sh_basis(dir.u[0], dir.u[1], dir.u[2], Y, dY);
        const float* v_rgb = g_rgb + (cam_i * N + n) * 3;
        float g[3];
        for (int j = 0; j < 3; ++j) {
          float sum = 0.f;
          for (int k = 0; k < bases; ++k) sum += Y[k] * c[3 * k + j];
          g[j] = sum + 0.5f >= 0.f ? v_rgb[j] : 0.f;
        }
        float v_u[3] = {0.f, 0.f, 0.f};
        for (int k = 0; k < bases; ++k) {
          const float v_Y = g[0] * c[3 * k] + g[1] * c[3 * k + 1] + g[2] * c[3 * k + 2];
          for (int j = 0; j < 3; ++j) {
            v_c[3 * k + j] += Y[k] * g[j];
            v_u[j] += v_Y * dY[k][j];
          }
        }
        if (dir.norm > 1e-12f) {
          const float dot = dir.u[0] * v_u[0] + dir.u[1] * v_u[1] + dir.u[2] * v_u[2];
          for (int j = 0; j < 3; ++j) vm[3 * n + j] += (v_u[j] - dir.u[j] * dot) / dir.norm;
        } else {
          for (int j = 0; j < 3; ++j) vm[3 * n + j] += v_u[j] / 1e-12f;
        }
      }
    }
  });
  return {v_coeffs, v_means};
}

}  // namespace studio
