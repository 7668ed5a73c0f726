// CPU kernels of the triangle rasterizer (see mesh_rasterize.h for the maths and shapes).
//
// Forward: a parallel setup pass computes each triangle's conservative pixel rectangle (culled
// triangles get an empty one); triangles are binned into bands of kBand image rows (in id
// order); workers (at::parallel_for, one per thread) pull (image, band) jobs from a shared
// counter and scan each binned triangle's rectangle inside their band against a band-local
// 64-bit (depth, id) key buffer. A band belongs to one worker, so there are no races, and the
// smallest key wins whatever the order, so the result is deterministic.
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

namespace studio {
namespace mesh {

namespace {
constexpr int64_t kBand = 8;
}

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
  // every pixel is written by the band pass below
  auto bary = at::empty({B, H, W, 2}, verts.options());
  auto tri_id = at::empty({B, H, W}, verts.options().dtype(at::kInt));
  auto depth = at::empty({B, H, W}, verts.options());

  std::vector<float> px(W), py(H);
  for (int64_t j = 0; j < W; ++j) px[j] = pixel_ndc(j, W);
  for (int64_t i = 0; i < H; ++i) py[i] = pixel_ndc(i, H);

  // setup: conservative pixel rectangles [j0, j1] x [i0, i1] per (image, triangle)
  std::vector<int32_t> rect(B * F * 4);
  std::atomic<bool> bad_index{false};
  at::parallel_for(0, B * F, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t bf = begin; bf < end; ++bf) {
      const int64_t b = bf / F, f = bf % F;
      const float* base = vp + b * V * 4;
      int32_t* r = rect.data() + 4 * bf;
      if (!(fp[3 * f] >= 0 && fp[3 * f] < V && fp[3 * f + 1] >= 0 && fp[3 * f + 1] < V && fp[3 * f + 2] >= 0 &&
            fp[3 * f + 2] < V)) {
        bad_index = true;
        r[0] = 0, r[1] = -1, r[2] = 0, r[3] = -1;
        continue;
      }
      const float* p[3] = {base + 4 * fp[3 * f], base + 4 * fp[3 * f + 1], base + 4 * fp[3 * f + 2]};
      r[0] = 0, r[1] = -1, r[2] = 0, r[3] = -1;
      if (!triangle_visible(p[0], p[1], p[2])) continue;
      float xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
      for (int k = 0; k < 3; ++k) {
        const float inv_w = 1.0f / p[k][3];  // bounds only: the 0.01 px margin absorbs rounding
        const float x = p[k][0] * inv_w, y = p[k][1] * inv_w;
        xmin = std::min(xmin, x), xmax = std::max(xmax, x), ymin = std::min(ymin, y), ymax = std::max(ymax, y);
      }
      int64_t j0, j1, i0, i1;
      pixel_range(xmin, xmax, W, j0, j1);
      pixel_range(ymin, ymax, H, i0, i1);
      if (j0 > j1 || i0 > i1) continue;
      r[0] = static_cast<int32_t>(j0), r[1] = static_cast<int32_t>(j1);
      r[2] = static_cast<int32_t>(i0), r[3] = static_cast<int32_t>(i1);
    }
  });

  TORCH_CHECK(!bad_index, "faces index a vertex out of range");

  // binning into bands of kBand rows, per image, in triangle order: T fixed chunks of triangles
  // count their (image, band) hits in parallel, a prefix sum in (job, chunk) order gives each
  // chunk its slots, and the chunks fill them in parallel
  const int64_t n_bands = (H + kBand - 1) / kBand;
  const int64_t n_jobs = B * n_bands;
  const int64_t BF = B * F;
  const int64_t T = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (BF + 8191) / 8192));
  std::vector<int64_t> counts(T * n_jobs, 0);
  auto for_each_hit = [&](int64_t t, auto&& fn) {
    for (int64_t bf = t * BF / T; bf < (t + 1) * BF / T; ++bf) {
      const int32_t* r = rect.data() + 4 * bf;
      if (r[0] > r[1]) continue;
      const int64_t job0 = (bf / F) * n_bands;
      for (int64_t band = r[2] / kBand; band <= r[3] / kBand; ++band) fn(job0 + band, bf);
    }
  };
  at::parallel_for(0, T, 1, [&](int64_t t_begin, int64_t t_end) {
    for (int64_t t = t_begin; t < t_end; ++t) {
      int64_t* cnt = counts.data() + t * n_jobs;
      for_each_hit(t, [&](int64_t job, int64_t) { ++cnt[job]; });
    }
  });
  std::vector<int64_t> offsets(n_jobs + 1, 0);
  std::vector<int64_t> starts(T * n_jobs);
  int64_t total = 0;
  for (int64_t job = 0; job < n_jobs; ++job) {
    offsets[job] = total;
    for (int64_t t = 0; t < T; ++t) {
      starts[t * n_jobs + job] = total;
      total += counts[t * n_jobs + job];
    }
  }
  offsets[n_jobs] = total;
  std::vector<int32_t> bins(total);
  at::parallel_for(0, T, 1, [&](int64_t t_begin, int64_t t_end) {
    for (int64_t t = t_begin; t < t_end; ++t) {
      int64_t* fill = starts.data() + t * n_jobs;
      for_each_hit(t, [&](int64_t job, int64_t bf) { bins[fill[job]++] = static_cast<int32_t>(bf % F); });
    }
  });

  float* bary_p = bary.data_ptr<float>();
  int32_t* tri_p = tri_id.data_ptr<int32_t>();
  float* depth_p = depth.data_ptr<float>();
  std::atomic<int64_t> next_job{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    std::vector<int64_t> keys(kBand * W);
    std::vector<Sample> samples(kBand * W);
    for (int64_t job = next_job++; job < n_jobs; job = next_job++) {
      const int64_t b = job / n_bands, band = job % n_bands;
      const int64_t row0 = band * kBand, row1 = std::min(H, row0 + kBand);  // [row0, row1)
      std::fill(keys.begin(), keys.end(), kEmptyKey);
      const float* base = vp + b * V * 4;
      for (int64_t k = offsets[job]; k < offsets[job + 1]; ++k) {
        const int32_t f = bins[k];
        const int32_t* r = rect.data() + 4 * (b * F + f);
        const float* p0 = base + 4 * fp[3 * f];
        const float* p1 = base + 4 * fp[3 * f + 1];
        const float* p2 = base + 4 * fp[3 * f + 2];
        const int64_t i_lo = std::max<int64_t>(r[2], row0), i_hi = std::min<int64_t>(r[3], row1 - 1);
        for (int64_t i = i_lo; i <= i_hi; ++i) {
          const int64_t row = (i - row0) * W;
          // triangle_sample with the row-invariant Y_k hoisted (same operations, same results)
          const float Y0 = p0[1] - py[i] * p0[3], Y1 = p1[1] - py[i] * p1[3], Y2 = p2[1] - py[i] * p2[3];
          for (int64_t j = r[0]; j <= r[1]; ++j) {
            const float X0 = p0[0] - px[j] * p0[3], X1 = p1[0] - px[j] * p1[3], X2 = p2[0] - px[j] * p2[3];
            const float a0 = X1 * Y2 - X2 * Y1;
            const float a1 = X2 * Y0 - X0 * Y2;
            const float a2 = X0 * Y1 - X1 * Y0;
            const float s = (a0 + a1) + a2;
            const bool pos = (a0 >= 0.f) & (a1 >= 0.f) & (a2 >= 0.f) & (s > 0.f);  // branch-free
            const bool neg = (a0 <= 0.f) & (a1 <= 0.f) & (a2 <= 0.f) & (s < 0.f);
            // computed for every candidate and selected without branching (most candidates of
            // small triangles are misses, unpredictably); values of covered samples are unchanged
            const float zc = (a0 * p0[2] + a1 * p1[2]) + a2 * p2[2];
            const float wc = (a0 * p0[3] + a1 * p1[3]) + a2 * p2[3];
            const float d = zc / wc;
            const bool ok = (pos | neg) & (d >= -1.0f) & (d <= 1.0f);
            const int64_t key = ok ? depth_key(d, f) : kEmptyKey;
            if (key < keys[row + j]) {  // barycentrics only for the current winner
              keys[row + j] = key;
              samples[row + j] = Sample{a0 / s, a1 / s, d};
            }
          }
        }
      }
      for (int64_t i = row0; i < row1; ++i) {
        for (int64_t j = 0; j < W; ++j) {
          const int64_t local = (i - row0) * W + j;
          const int64_t pix = (b * H + i) * W + j;
          if (keys[local] == kEmptyKey) {
            tri_p[pix] = -1;
            bary_p[2 * pix] = bary_p[2 * pix + 1] = depth_p[pix] = 0.f;
            continue;
          }
          tri_p[pix] = static_cast<int32_t>(keys[local] & 0xffffffff);
          bary_p[2 * pix] = samples[local].u;
          bary_p[2 * pix + 1] = samples[local].v;
          depth_p[pix] = samples[local].depth;
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
  auto g_verts = at::zeros_like(verts);
  const float* vp = verts.data_ptr<float>();
  const int32_t* fp = faces.data_ptr<int32_t>();
  const float* bp = bary.data_ptr<float>();
  const int32_t* tp = tri_id.data_ptr<int32_t>();
  const float* dp = depth.data_ptr<float>();
  const float* gbp = g_bary.data_ptr<float>();
  const float* gdp = g_depth.data_ptr<float>();
  float* gv = g_verts.data_ptr<float>();
  // rows of an image are split into a fixed number of chunks (independent of scheduling), each
  // with its own gradient buffer, summed in chunk order: deterministic and race-free
  const int64_t n_chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), H));
  std::vector<float> buffers(n_chunks > 1 ? n_chunks * V * 4 : 0);
  for (int64_t b = 0; b < B; ++b) {
    const float* base = vp + b * V * 4;
    float* gbase = gv + b * V * 4;
    if (n_chunks > 1) std::fill(buffers.begin(), buffers.end(), 0.f);
    at::parallel_for(0, n_chunks, 1, [&](int64_t c_begin, int64_t c_end) {
      for (int64_t c = c_begin; c < c_end; ++c) {
        float* acc = n_chunks > 1 ? buffers.data() + c * V * 4 : gbase;
        for (int64_t i = c * H / n_chunks; i < (c + 1) * H / n_chunks; ++i) {
          const float py = pixel_ndc(i, H);
          for (int64_t j = 0; j < W; ++j) {
            const int64_t pix = (b * H + i) * W + j;
            const int32_t f = tp[pix];
            if (f < 0) continue;
            const float gu = gbp[2 * pix], gvv = gbp[2 * pix + 1], gd = gdp[pix];
            if (gu == 0.f && gvv == 0.f && gd == 0.f) continue;
            const int32_t* idx = fp + 3 * f;
            float g[3][4] = {{0.f}};
            sample_backward(base + 4 * idx[0], base + 4 * idx[1], base + 4 * idx[2], pixel_ndc(j, W), py,
                            bp[2 * pix], bp[2 * pix + 1], dp[pix], gu, gvv, gd, g);
            for (int k = 0; k < 3; ++k) {
              for (int c4 = 0; c4 < 4; ++c4) acc[4 * idx[k] + c4] += g[k][c4];
            }
          }
        }
      }
    });
    if (n_chunks > 1) {
      at::parallel_for(0, V * 4, 4096, [&](int64_t begin, int64_t end) {
        for (int64_t e = begin; e < end; ++e) {
          float sum = 0.f;
          for (int64_t c = 0; c < n_chunks; ++c) sum += buffers[c * V * 4 + e];
          gbase[e] = sum;
        }
      });
    }
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

at::Tensor interpolate_fwd_cpu(const at::Tensor& attr, const at::Tensor& bary, const at::Tensor& tri_id,
                               const at::Tensor& faces) {
  check_interpolate_inputs(attr, bary, tri_id, faces);
  const int64_t B = tri_id.size(0), H = tri_id.size(1), W = tri_id.size(2);
  const int64_t Ba = attr.size(0), V = attr.size(1), D = attr.size(2), F = faces.size(0);
  auto out = at::empty({B, H, W, D}, attr.options());  // every pixel is written below
  const float* ap = attr.data_ptr<float>();
  const float* bp = bary.data_ptr<float>();
  const int32_t* tp = tri_id.data_ptr<int32_t>();
  const int32_t* fp = faces.data_ptr<int32_t>();
  float* op = out.data_ptr<float>();
  const int64_t HW = H * W;
  at::parallel_for(0, B * HW, 1024, [&](int64_t begin, int64_t end) {
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
  auto g_attr = at::zeros({B, V, D}, attr.options());
  auto g_bary = at::empty_like(bary);  // every pixel is written below
  const float* ap = attr.data_ptr<float>();
  const float* bp = bary.data_ptr<float>();
  const int32_t* tp = tri_id.data_ptr<int32_t>();
  const int32_t* fp = faces.data_ptr<int32_t>();
  const float* gp = g_out.data_ptr<float>();
  float* gap = g_attr.data_ptr<float>();
  float* gbp = g_bary.data_ptr<float>();
  const int64_t HW = H * W;
  // bary gradients: independent per pixel
  at::parallel_for(0, B * HW, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t pix = begin; pix < end; ++pix) {
      const int32_t f = tp[pix];
      if (f < 0) {
        gbp[2 * pix] = gbp[2 * pix + 1] = 0.f;
        continue;
      }
      const float* a = ap + (Ba == 1 ? 0 : pix / HW) * V * D;
      const float* a0 = a + fp[3 * f] * D;
      const float* a1 = a + fp[3 * f + 1] * D;
      const float* a2 = a + fp[3 * f + 2] * D;
      const float* g = gp + pix * D;
      float gu = 0.f, gv = 0.f;
      for (int64_t d = 0; d < D; ++d) {
        gu += g[d] * (a0[d] - a2[d]);
        gv += g[d] * (a1[d] - a2[d]);
      }
      gbp[2 * pix] = gu;
      gbp[2 * pix + 1] = gv;
    }
  });
  // attribute gradients: per image, fixed row chunks with their own buffers (as rasterize_bwd)
  const int64_t n_chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), H));
  std::vector<float> buffers(n_chunks > 1 ? n_chunks * V * D : 0);
  for (int64_t b = 0; b < B; ++b) {
    float* ga = gap + b * V * D;
    if (n_chunks > 1) std::fill(buffers.begin(), buffers.end(), 0.f);
    at::parallel_for(0, n_chunks, 1, [&](int64_t c_begin, int64_t c_end) {
      for (int64_t c = c_begin; c < c_end; ++c) {
        float* acc = n_chunks > 1 ? buffers.data() + c * V * D : ga;
        for (int64_t pix = b * HW + (c * H / n_chunks) * W; pix < b * HW + ((c + 1) * H / n_chunks) * W; ++pix) {
          const int32_t f = tp[pix];
          if (f < 0) continue;
          const float u = bp[2 * pix], v = bp[2 * pix + 1];
          const float w[3] = {u, v, (1.0f - u) - v};
          const float* g = gp + pix * D;
          for (int k = 0; k < 3; ++k) {
            float* dst = acc + fp[3 * f + k] * D;
            for (int64_t d = 0; d < D; ++d) dst[d] += w[k] * g[d];
          }
        }
      }
    });
    if (n_chunks > 1) {
      at::parallel_for(0, V * D, 4096, [&](int64_t begin, int64_t end) {
        for (int64_t e = begin; e < end; ++e) {
          float sum = 0.f;
          for (int64_t c = 0; c < n_chunks; ++c) sum += buffers[c * V * D + e];
          ga[e] = sum;
        }
      });
    }
  }
  return {g_attr, g_bary};
}

}  // namespace mesh
}  // namespace studio
