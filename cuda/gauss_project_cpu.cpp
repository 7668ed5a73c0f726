// EWA projection of 3D Gaussians on the CPU, forward and hand-written backward: the maths of
// studio/render/projection.py (gsplat 1.4's classic projection), one Gaussian per loop step
// instead of PyTorch's batched 3x3 products.
//
// Per camera (R, t = viewmat[:3,:3], viewmat[:3,3]; fx, fy, cx, cy) and Gaussian (m, q, s):
//   M = rotmat(q / |q|) diag(s),  Sigma = M M^T,  mc = R m + t,  Cc = R Sigma R^T
//   zs = z if z >= near else 1;  tx = zs clamp(x / zs, -lim_x-, lim_x+) (same for ty)
//   J = [[fx/zs, 0, -fx tx/zs^2], [0, fy/zs, -fy ty/zs^2]],  [[a, b], [b, c]] = J Cc J^T + eps2d I
//   conic = (c, -b, a) / det (det = 1 where culled),  mean2d = (fx x/zs + cx, fy y/zs + cy),
//   depth = z,  radius = ceil(3 sqrt(lambda_max)) or 0 where culled.
// The backward is the exact derivative of those expressions (the derivative PyTorch's autograd
// gives for projection.py), summed over cameras per Gaussian; the viewmats' gradient is summed
// over Gaussians in per-chunk buffers (no atomics), so results do not depend on the thread count.
#include "gauss_rasterize.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

namespace studio {
namespace {

using Mat3 = float[3][3];

// One camera: world-to-camera rotation and translation, intrinsics and the clamp limits of tx, ty.
struct Camera {
  Mat3 R;
  float t[3];
  float fx, fy, cx, cy, lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg;

  Camera(const float* viewmat, const float* K, int64_t width, int64_t height) {
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) R[i][j] = viewmat[4 * i + j];
      t[i] = viewmat[4 * i + 3];
    }
    fx = K[0];
    fy = K[4];
    cx = K[2];
    cy = K[5];
    const float w = float(width), h = float(height);
    lim_x_pos = (w - cx) / fx + 0.3f * (0.5f * w / fx);
    lim_x_neg = cx / fx + 0.3f * (0.5f * w / fx);
    lim_y_pos = (h - cy) / fy + 0.3f * (0.5f * h / fy);
    lim_y_neg = cy / fy + 0.3f * (0.5f * h / fy);
  }
};

// A Gaussian's world-space shape: normalised quaternion, its rotation matrix, M = Rq diag(s),
// Sigma = M M^T.
struct Shape {
  float qn[4], norm;
  Mat3 Rq, M, Sigma;

  Shape(const float* q, const float* s) {
    norm = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    const float inv = 1.f / std::max(norm, 1e-12f);  // torch.nn.functional.normalize's eps
    for (int i = 0; i < 4; ++i) qn[i] = q[i] * inv;
    const float w = qn[0], x = qn[1], y = qn[2], z = qn[3];
    const float r[9] = {1 - 2 * (y * y + z * z), 2 * (x * y - w * z),     2 * (x * z + w * y),
                        2 * (x * y + w * z),     1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                        2 * (x * z - w * y),     2 * (y * z + w * x),     1 - 2 * (x * x + y * y)};
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        Rq[i][j] = r[3 * i + j];
        M[i][j] = Rq[i][j] * s[j];
      }
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) Sigma[i][j] = M[i][0] * M[j][0] + M[i][1] * M[j][1] + M[i][2] * M[j][2];
  }
};

// out = A B (or A^T B, A B^T with the flags).
void matmul(const Mat3& A, const Mat3& B, Mat3& out, bool transpose_a = false, bool transpose_b = false) {
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      float sum = 0.f;
      for (int k = 0; k < 3; ++k) sum += (transpose_a ? A[k][i] : A[i][k]) * (transpose_b ? B[j][k] : B[k][j]);
      out[i][j] = sum;
    }
}

// The projection of one Gaussian into one camera, with the intermediates the backward needs.
struct Projection {
  float mc[3], zs, tx, ty;
  bool valid_z, clamped_x, clamped_y, valid;
  Mat3 Cc;
  float J[2][3];
  float a, b, c, det;
  float mean2d[2], conic[3];
  int32_t radius;

  Projection(const Camera& cam, const float* m, const Shape& g, int64_t width, int64_t height, float near_plane,
             float eps2d) {
    for (int i = 0; i < 3; ++i) mc[i] = cam.R[i][0] * m[0] + cam.R[i][1] * m[1] + cam.R[i][2] * m[2] + cam.t[i];
    Mat3 RS;
    matmul(cam.R, g.Sigma, RS);
    matmul(RS, cam.R, Cc, false, true);

    valid_z = mc[2] >= near_plane;
    zs = valid_z ? mc[2] : 1.f;
    const float u = mc[0] / zs, v = mc[1] / zs;
    clamped_x = !(u >= -cam.lim_x_neg && u <= cam.lim_x_pos);
    clamped_y = !(v >= -cam.lim_y_neg && v <= cam.lim_y_pos);
    tx = zs * std::min(cam.lim_x_pos, std::max(-cam.lim_x_neg, u));
    ty = zs * std::min(cam.lim_y_pos, std::max(-cam.lim_y_neg, v));
    J[0][0] = cam.fx / zs;
    J[0][1] = 0.f;
    J[0][2] = -cam.fx * tx / (zs * zs);
    J[1][0] = 0.f;
    J[1][1] = cam.fy / zs;
    J[1][2] = -cam.fy * ty / (zs * zs);

    float JC[2][3];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j) JC[i][j] = J[i][0] * Cc[0][j] + J[i][1] * Cc[1][j] + J[i][2] * Cc[2][j];
    const auto cov2d = [&](int i, int j) { return JC[i][0] * J[j][0] + JC[i][1] * J[j][1] + JC[i][2] * J[j][2]; };
    a = cov2d(0, 0) + eps2d;
    b = cov2d(0, 1);
    c = cov2d(1, 1) + eps2d;
    det = a * c - b * b;
    valid = valid_z && det > 0.f;
    const float det_safe = valid ? det : 1.f;
    conic[0] = c / det_safe;
    conic[1] = -b / det_safe;
    conic[2] = a / det_safe;
    mean2d[0] = cam.fx * mc[0] / zs + cam.cx;
    mean2d[1] = cam.fy * mc[1] / zs + cam.cy;

    const float half_trace = 0.5f * (a + c);
    const float lam_max = half_trace + std::sqrt(std::max(half_trace * half_trace - det, 0.01f));
    const float r = std::ceil(3.f * std::sqrt(lam_max));
    const bool on_image = mean2d[0] + r > 0.f && mean2d[0] - r < float(width) && mean2d[1] + r > 0.f &&
                          mean2d[1] - r < float(height);
    radius = (valid && on_image && r > 0.f) ? int32_t(r) : 0;
  }
};

// Adds to v_qn the gradient of the loss through Rq(qn) given v_Rq.
void rotmat_backward(const float* qn, const Mat3& v, float* v_qn) {
  const float w = qn[0], x = qn[1], y = qn[2], z = qn[3];
  v_qn[0] += 2.f * (-z * v[0][1] + y * v[0][2] + z * v[1][0] - x * v[1][2] - y * v[2][0] + x * v[2][1]);
  v_qn[1] += 2.f * (y * v[0][1] + z * v[0][2] + y * v[1][0] - 2.f * x * v[1][1] - w * v[1][2] + z * v[2][0] +
                    w * v[2][1] - 2.f * x * v[2][2]);
  v_qn[2] += 2.f * (-2.f * y * v[0][0] + x * v[0][1] + w * v[0][2] + x * v[1][0] + z * v[1][2] - w * v[2][0] +
                    z * v[2][1] - 2.f * y * v[2][2]);
  v_qn[3] += 2.f * (-2.f * z * v[0][0] - w * v[0][1] + x * v[0][2] + w * v[1][0] - 2.f * z * v[1][1] +
                    y * v[1][2] + x * v[2][0] + y * v[2][1]);
}

void check_projection_inputs(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                             const at::Tensor& viewmats, const at::Tensor& Ks) {
  check_cpu_float32({&means, &quats, &scales, &viewmats, &Ks}, "project_*_cpu");
  const int64_t N = means.size(0), C = viewmats.size(0);
  TORCH_CHECK(means.dim() == 2 && means.size(1) == 3, "means must be [N,3]");
  TORCH_CHECK(quats.dim() == 2 && quats.size(0) == N && quats.size(1) == 4, "quats must be [N,4]");
  TORCH_CHECK(scales.dim() == 2 && scales.size(0) == N && scales.size(1) == 3, "scales must be [N,3]");
  TORCH_CHECK(viewmats.dim() == 3 && viewmats.size(1) == 4 && viewmats.size(2) == 4, "viewmats must be [C,4,4]");
  TORCH_CHECK(Ks.dim() == 3 && Ks.size(0) == C && Ks.size(1) == 3 && Ks.size(2) == 3, "Ks must be [C,3,3]");
}

std::vector<Camera> make_cameras(const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width, int64_t height) {
  std::vector<Camera> cams;
  for (int64_t c = 0; c < viewmats.size(0); ++c)
    cams.emplace_back(viewmats.data_ptr<float>() + 16 * c, Ks.data_ptr<float>() + 9 * c, width, height);
  return cams;
}

}  // namespace

std::vector<at::Tensor> project_fwd_cpu(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                                        const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                        int64_t height, double near_plane, double eps2d) {
  check_projection_inputs(means, quats, scales, viewmats, Ks);
  const int64_t N = means.size(0), C = viewmats.size(0);
  const std::vector<Camera> cams = make_cameras(viewmats, Ks, width, height);
  const auto opts = means.options();
  at::Tensor means2d = at::empty({C, N, 2}, opts), conics = at::empty({C, N, 3}, opts);
  at::Tensor depths = at::empty({C, N}, opts), radii = at::empty({C, N}, opts.dtype(at::kInt));
  const float *m = means.data_ptr<float>(), *q = quats.data_ptr<float>(), *s = scales.data_ptr<float>();
  float *out_m2d = means2d.data_ptr<float>(), *out_conic = conics.data_ptr<float>(), *out_z = depths.data_ptr<float>();
  int32_t* out_r = radii.data_ptr<int32_t>();
  at::parallel_for(0, N, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const Shape g(q + 4 * n, s + 3 * n);
      for (int64_t c = 0; c < C; ++c) {
        const Projection p(cams[c], m + 3 * n, g, width, height, float(near_plane), float(eps2d));
        const int64_t i = c * N + n;
        out_m2d[2 * i] = p.mean2d[0];
        out_m2d[2 * i + 1] = p.mean2d[1];
        for (int k = 0; k < 3; ++k) out_conic[3 * i + k] = p.conic[k];
        out_z[i] = p.mc[2];
        out_r[i] = p.radius;
      }
    }
  });
  return {means2d, conics, depths, radii};
}

std::vector<at::Tensor> project_bwd_cpu(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                                        const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                        int64_t height, double near_plane, double eps2d, const at::Tensor& v_means2d,
                                        const at::Tensor& v_conics, const at::Tensor& v_depths,
                                        bool viewmats_grad) {
  check_projection_inputs(means, quats, scales, viewmats, Ks);
  const int64_t N = means.size(0), C = viewmats.size(0);
  check_cpu_float32({&v_means2d, &v_conics, &v_depths}, "project_bwd_cpu", "gradients");
  TORCH_CHECK(v_means2d.numel() == C * N * 2 && v_conics.numel() == C * N * 3 && v_depths.numel() == C * N,
              "project_bwd_cpu: gradients must be [C,N,2], [C,N,3], [C,N]");
  const std::vector<Camera> cams = make_cameras(viewmats, Ks, width, height);
  const auto opts = means.options();
  at::Tensor v_means = at::zeros({N, 3}, opts), v_quats = at::zeros({N, 4}, opts), v_scales = at::zeros({N, 3}, opts);
  // Chunks of Gaussians, each with its own [C,4,4] viewmat gradient buffer, summed at the end.
  const int64_t chunk = 1024, n_chunks = std::max<int64_t>(1, (N + chunk - 1) / chunk);
  at::Tensor v_view_chunks = at::zeros({viewmats_grad ? n_chunks : 1, C, 4, 4}, opts);
  const float *m = means.data_ptr<float>(), *q = quats.data_ptr<float>(), *s = scales.data_ptr<float>();
  const float *g_m2d = v_means2d.data_ptr<float>(), *g_conic = v_conics.data_ptr<float>();
  const float* g_z = v_depths.data_ptr<float>();
  float *vm = v_means.data_ptr<float>(), *vq = v_quats.data_ptr<float>(), *vs = v_scales.data_ptr<float>();
  float* vview_base = v_view_chunks.data_ptr<float>();
  const float near = float(near_plane), eps = float(eps2d);

  at::parallel_for(0, n_chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    for (int64_t k = chunk_begin; k < chunk_end; ++k) {
      float* vview = vview_base + (viewmats_grad ? k * C * 16 : 0);
      for (int64_t n = k * chunk; n < std::min(N, (k + 1) * chunk); ++n) {
        const Shape g(q + 4 * n, s + 3 * n);
        const float* mean = m + 3 * n;
        Mat3 v_Sigma = {};
        for (int64_t c = 0; c < C; ++c) {
          const int64_t i = c * N + n;
          const Camera& cam = cams[c];
          const Projection p(cam, mean, g, width, height, near, eps);
          // conic -> (a, b, c); culled Gaussians divide by 1 instead of det.
          const float k0 = g_conic[3 * i], k1 = g_conic[3 * i + 1], k2 = g_conic[3 * i + 2];
          float v_a, v_b, v_c;
          if (p.valid) {
            const float id = 1.f / p.det, id2 = id * id;
            v_a = k0 * (-p.c * p.c * id2) + k1 * (p.b * p.c * id2) + k2 * (id - p.a * p.c * id2);
            v_b = k0 * (2.f * p.b * p.c * id2) + k1 * (-id - 2.f * p.b * p.b * id2) + k2 * (2.f * p.a * p.b * id2);
            v_c = k0 * (id - p.c * p.a * id2) + k1 * (p.b * p.a * id2) + k2 * (-p.a * p.a * id2);
          } else {
            v_a = k2;
            v_b = -k1;
            v_c = k0;
          }
          // cov2d = J Cc J^T with gradient G = [[v_a, v_b], [0, v_c]] (only the upper triangle is read).
          const float G[2][2] = {{v_a, v_b}, {0.f, v_c}};
          float GJ[2][3], GtJ[2][3];
          for (int r = 0; r < 2; ++r)
            for (int j = 0; j < 3; ++j) {
              GJ[r][j] = G[r][0] * p.J[0][j] + G[r][1] * p.J[1][j];
              GtJ[r][j] = G[0][r] * p.J[0][j] + G[1][r] * p.J[1][j];
            }
          Mat3 v_Cc;  // J^T G J
          for (int r = 0; r < 3; ++r)
            for (int j = 0; j < 3; ++j) v_Cc[r][j] = p.J[0][r] * GJ[0][j] + p.J[1][r] * GJ[1][j];
          float v_J[2][3];  // G J Cc^T + G^T J Cc
          for (int r = 0; r < 2; ++r)
            for (int j = 0; j < 3; ++j) {
              float sum = 0.f;
              for (int l = 0; l < 3; ++l) sum += GJ[r][l] * p.Cc[j][l] + GtJ[r][l] * p.Cc[l][j];
              v_J[r][j] = sum;
            }
          const float zs = p.zs, zs2 = zs * zs, zs3 = zs2 * zs;
          float v_zs = -cam.fx / zs2 * v_J[0][0] + 2.f * cam.fx * p.tx / zs3 * v_J[0][2] - cam.fy / zs2 * v_J[1][1] +
                       2.f * cam.fy * p.ty / zs3 * v_J[1][2];
          const float v_tx = -cam.fx / zs2 * v_J[0][2], v_ty = -cam.fy / zs2 * v_J[1][2];
          float v_mc[3] = {0.f, 0.f, g_z[i]};
          // tx = zs clamp(x / zs): x passes through unclamped, else zs times the limit.
          if (p.clamped_x) {
            v_zs += v_tx * (p.tx / zs);
          } else {
            v_mc[0] += v_tx;
          }
          if (p.clamped_y) {
            v_zs += v_ty * (p.ty / zs);
          } else {
            v_mc[1] += v_ty;
          }
          const float gx = g_m2d[2 * i], gy = g_m2d[2 * i + 1];
          v_mc[0] += cam.fx / zs * gx;
          v_mc[1] += cam.fy / zs * gy;
          v_zs += -cam.fx * p.mc[0] / zs2 * gx - cam.fy * p.mc[1] / zs2 * gy;
          if (p.valid_z) v_mc[2] += v_zs;

          // mc = R m + t; Cc = R Sigma R^T.
          for (int j = 0; j < 3; ++j) vm[3 * n + j] += cam.R[0][j] * v_mc[0] + cam.R[1][j] * v_mc[1] + cam.R[2][j] * v_mc[2];
          Mat3 VR, RtVR;
          matmul(v_Cc, cam.R, VR);
          matmul(cam.R, VR, RtVR, true);
          for (int r = 0; r < 3; ++r)
            for (int j = 0; j < 3; ++j) v_Sigma[r][j] += RtVR[r][j];
          if (viewmats_grad) {
            float* out = vview + 16 * c;
            Mat3 Vs, VsR, VsRS;  // (V + V^T) R Sigma
            for (int r = 0; r < 3; ++r)
              for (int j = 0; j < 3; ++j) Vs[r][j] = v_Cc[r][j] + v_Cc[j][r];
            matmul(Vs, cam.R, VsR);
            matmul(VsR, g.Sigma, VsRS);
            for (int r = 0; r < 3; ++r) {
              for (int j = 0; j < 3; ++j) out[4 * r + j] += v_mc[r] * mean[j] + VsRS[r][j];
              out[4 * r + 3] += v_mc[r];
            }
          }
        }
        // Sigma = M M^T, M = Rq diag(s), Rq = rotmat(q / |q|).
        Mat3 v_M, v_Rq;
        for (int r = 0; r < 3; ++r)
          for (int j = 0; j < 3; ++j) {
            float sum = 0.f;
            for (int l = 0; l < 3; ++l) sum += (v_Sigma[r][l] + v_Sigma[l][r]) * g.M[l][j];
            v_M[r][j] = sum;
          }
        for (int j = 0; j < 3; ++j) {
          float sum = 0.f;
          for (int r = 0; r < 3; ++r) {
            v_Rq[r][j] = v_M[r][j] * s[3 * n + j];
            sum += v_M[r][j] * g.Rq[r][j];
          }
          vs[3 * n + j] = sum;
        }
        float v_qn[4] = {0.f, 0.f, 0.f, 0.f};
        rotmat_backward(g.qn, v_Rq, v_qn);
        if (g.norm > 1e-12f) {
          const float dot = g.qn[0] * v_qn[0] + g.qn[1] * v_qn[1] + g.qn[2] * v_qn[2] + g.qn[3] * v_qn[3];
          for (int j = 0; j < 4; ++j) vq[4 * n + j] = (v_qn[j] - g.qn[j] * dot) / g.norm;
        } else {
          for (int j = 0; j < 4; ++j) vq[4 * n + j] = v_qn[j] / 1e-12f;
        }
      }
    }
  });
  at::Tensor v_viewmats = viewmats_grad ? v_view_chunks.sum(0) : at::Tensor();
  return {v_means, v_quats, v_scales, v_viewmats};
}

}  // namespace studio
