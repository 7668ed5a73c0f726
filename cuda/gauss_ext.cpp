// Python bindings of the Gaussian tile rasterizer (loaded by studio.ext as the "gauss"
// extension). Each entry point dispatches on the device of `means2d`; the CUDA kernels exist
// only in builds with STUDIO_WITH_CUDA defined.
#include <torch/extension.h>

#include "gauss_rasterize.h"

namespace studio {
namespace {

std::vector<at::Tensor> rasterize_fwd(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& values,
    const at::Tensor& opacities, int64_t width, int64_t height,
    const at::Tensor& isect_offsets, const at::Tensor& flatten_ids) {
  if (means2d.is_cuda()) {
#ifdef STUDIO_WITH_CUDA
    return rasterize_fwd_cuda(means2d, conics, values, opacities, width, height, isect_offsets, flatten_ids);
#else
    TORCH_CHECK(false, "this studio 'gauss' extension was built without CUDA");
#endif
  }
  return rasterize_fwd_cpu(means2d, conics, values, opacities, width, height, isect_offsets, flatten_ids);
}

std::vector<at::Tensor> rasterize_bwd(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& values,
    const at::Tensor& opacities, int64_t width, int64_t height,
    const at::Tensor& isect_offsets, const at::Tensor& flatten_ids,
    const at::Tensor& final_T, const at::Tensor& last_ids,
    const at::Tensor& v_colors, const at::Tensor& v_alphas) {
  if (means2d.is_cuda()) {
#ifdef STUDIO_WITH_CUDA
    return rasterize_bwd_cuda(means2d, conics, values, opacities, width, height, isect_offsets, flatten_ids,
                              final_T, last_ids, v_colors, v_alphas);
#else
    TORCH_CHECK(false, "this studio 'gauss' extension was built without CUDA");
#endif
  }
  return rasterize_bwd_cpu(means2d, conics, values, opacities, width, height, isect_offsets, flatten_ids,
                           final_T, last_ids, v_colors, v_alphas);
}

}  // namespace
}  // namespace studio

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "studio Gaussian tile rasterizer (CPU kernels, and CUDA kernels when with_cuda)";
#ifdef STUDIO_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("rasterize_fwd", &studio::rasterize_fwd,
        "Composite: (means2d, conics, values, opacities, width, height, isect_offsets, flatten_ids) -> "
        "[colors [C,H,W,D], alphas [C,H,W,1], final_T [C,H,W], last_ids [C,H,W] int32]");
  m.def("isect_tiles_cpu", &studio::isect_tiles_cpu,
        "Tile lists on the CPU: (means2d [C,N,2], extents [C,N,2], depths [C,N], width, height) -> "
        "[tiles_per_gauss, isect_ids, flatten_ids, isect_offsets]");
  m.def("tile_extents_cpu", &studio::tile_extents_cpu,
        "tiles.tile_extents on the CPU: (radii [C,N] int32, conics [C,N,3], opacities [C,N] or [N]) -> [C,N,2]");
  m.def("sh_colors_fwd_cpu", &studio::sh_colors_fwd_cpu,
        "SH colours on the CPU: (degree, coeffs [N,K,3], means [N,3], campos [C,3]) -> max(0, 0.5 + SH) [C,N,3]");
  m.def("sh_colors_bwd_cpu", &studio::sh_colors_bwd_cpu,
        "Its backward: (degree, coeffs, means, campos, v_colors [C,N,3]) -> [v_coeffs, v_means]");
  m.def("project_fwd_cpu", &studio::project_fwd_cpu,
        "EWA projection on the CPU: (means, quats, scales, viewmats, Ks, width, height, near_plane, eps2d) -> "
        "[means2d [C,N,2], conics [C,N,3], depths [C,N], radii [C,N] int32]");
  m.def("project_bwd_cpu", &studio::project_bwd_cpu,
        "Its backward: (forward inputs..., v_means2d, v_conics, v_depths, viewmats_grad) -> "
        "[v_means, v_quats, v_scales, v_viewmats or None]");
  m.def("cpu_simd", &studio::cpu_simd, "The CPU kernels' per-tile loops now: 'avx2' or 'scalar'");
  m.def("set_cpu_simd", &studio::set_cpu_simd, py::arg("enabled"),
        "Enable (default) or disable the AVX2 CPU loops; returns the previous setting");
  m.def("rasterize_bwd", &studio::rasterize_bwd,
        "Backward: (forward inputs..., final_T, last_ids, v_colors, v_alphas) -> "
        "[v_means2d, v_conics, v_values, v_opacities]");
}
