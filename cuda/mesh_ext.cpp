// Python bindings of the triangle rasterizer (loaded by studio.ext as the "mesh" extension).
// Each entry point dispatches on the device of its first tensor; the CUDA kernels exist only
// in builds with STUDIO_WITH_CUDA defined.
#include <torch/extension.h>

#include "mesh_rasterize.h"

namespace studio {
namespace mesh {
namespace {

[[noreturn]] void no_cuda() { TORCH_CHECK(false, "this studio 'mesh' extension was built without CUDA"); }

std::vector<at::Tensor> rasterize_fwd(const at::Tensor& verts, const at::Tensor& faces, int64_t width,
                                      int64_t height) {
  if (verts.is_cuda()) {
#ifdef STUDIO_WITH_CUDA
    return rasterize_fwd_cuda(verts, faces, width, height);
#else
    no_cuda();
#endif
  }
  return rasterize_fwd_cpu(verts, faces, width, height);
}

at::Tensor rasterize_bwd(const at::Tensor& verts, const at::Tensor& faces, const at::Tensor& bary,
                         const at::Tensor& tri_id, const at::Tensor& depth, const at::Tensor& g_bary,
                         const at::Tensor& g_depth) {
  if (verts.is_cuda()) {
#ifdef STUDIO_WITH_CUDA
    return rasterize_bwd_cuda(verts, faces, bary, tri_id, depth, g_bary, g_depth);
#else
    no_cuda();
#endif
  }
  return rasterize_bwd_cpu(verts, faces, bary, tri_id, depth, g_bary, g_depth);
}

at::Tensor interpolate_fwd(const at::Tensor& attr, const at::Tensor& bary, const at::Tensor& tri_id,
                           const at::Tensor& faces) {
  if (attr.is_cuda()) {
#ifdef STUDIO_WITH_CUDA
    return interpolate_fwd_cuda(attr, bary, tri_id, faces);
#else
    no_cuda();
#endif
  }
  return interpolate_fwd_cpu(attr, bary, tri_id, faces);
}

std::vector<at::Tensor> interpolate_bwd(const at::Tensor& attr, const at::Tensor& bary, const at::Tensor& tri_id,
                                        const at::Tensor& faces, const at::Tensor& g_out) {
  if (attr.is_cuda()) {
#ifdef STUDIO_WITH_CUDA
    return interpolate_bwd_cuda(attr, bary, tri_id, faces, g_out);
#else
    no_cuda();
#endif
  }
  return interpolate_bwd_cpu(attr, bary, tri_id, faces, g_out);
}

}  // namespace
}  // namespace mesh
}  // namespace studio

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "studio triangle rasterizer (CPU kernels, and CUDA kernels when with_cuda)";
#ifdef STUDIO_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("rasterize_fwd", &studio::mesh::rasterize_fwd,
        "(verts_clip [B,V,4], faces [F,3] int32, width, height) -> [bary [B,H,W,2], tri_id [B,H,W] int32, "
        "depth [B,H,W]]");
  m.def("rasterize_bwd", &studio::mesh::rasterize_bwd,
        "(verts_clip, faces, bary, tri_id, depth, g_bary, g_depth) -> g_verts_clip [B,V,4]");
  m.def("interpolate_fwd", &studio::mesh::interpolate_fwd,
        "(attr [Ba,V,D], bary, tri_id, faces) -> [B,H,W,D]");
  m.def("interpolate_bwd", &studio::mesh::interpolate_bwd,
        "(attr, bary, tri_id, faces, g_out) -> [g_attr [B,V,D] per image, g_bary [B,H,W,2]]");
}
