"""``studio export gaussians|mesh|pbr|features``: write a result as a standard 3DGS .ply, a mesh, a PBR asset, or a 2D feature model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from studio.io.errors import StudioInputError
from studio.io.inputs import Input, Kind

MESH_OUTPUTS = (".glb", ".obj", ".ply")
"""Mesh formats ``studio export mesh`` writes (``studio.export.mesh.MESH_FORMATS``)."""


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class ExportGaussians:
    """Export a trained result's Gaussians (world coordinates) as a standard 3DGS .ply."""

    load_config: Path
    """Nerfstudio ``config.yml`` of the run."""
    output: Path
    """Output .ply file."""

    def inputs(self) -> list[Input]:
        return [
            Input("--load-config", Kind.CONFIG, self.load_config, required=True),
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".ply",), required=True),
        ]

    def main(self) -> None:
        from studio.export import save_gaussians_ply
        from studio.export.runs import load_gaussians_from_config

        gaussians = load_gaussians_from_config(self.load_config, device="cpu")
        save_gaussians_ply(self.output, gaussians)
        print(f"Wrote {self.output}: {len(gaussians):,} Gaussians, SH degree {gaussians.sh_degree}.")


@dataclass
class ExportMesh:
    """Write a run's mesh as .glb/.obj/.ply: a mesh-stage run's final mesh (dreamcraft3d: textured
    after its texture stage, vertex-coloured after its geometry stage), else a vertex-coloured mesh
    extracted from the Gaussians (TSDF fusion of rendered depth, or an opacity level set; a NeRF
    run's density level set). A textured mesh goes to .glb (texture embedded) or .obj (+ .mtl and
    texture .png beside it); .ply holds vertex colours only."""

    output: Path
    """Output mesh file: .glb, .obj or .ply."""
    load_config: Optional[Path] = None
    """Nerfstudio ``config.yml`` of the run (or give --input)."""
    input: Optional[Path] = None
    """A Gaussian .ply (3DGS layout) instead of --load-config."""
    resolution: int = 256
    """Voxels along the longest side of the scene's bounds."""
    n_views: int = 60
    """Rendered views fused into the TSDF."""
    image_size: int = 256
    """Width = height of each rendered view, pixels."""
    min_component_fraction: float = 0.01
    """Drop connected pieces holding less than this share of the surface area."""
    method: Literal["tsdf", "density"] = "tsdf"
    """tsdf (captured scenes) or density: a level set of the Gaussians' opacity field (generated objects,
    whose semi-transparent edges depth fusion drops)."""
    density_level: Optional[float] = None
    """Opacity-field level for --method density (default: chosen by silhouette agreement with the
    renders); for a NeRF run, the density of its surface (default: chosen by silhouettes the same way)."""
    device: Optional[str] = None
    """Torch device (default: cuda when available, else cpu)."""
    backend: Literal["auto", "torch", "studio", "gsplat"] = "auto"
    """Gaussian rasterizer backend (``auto``: gsplat on CUDA, studio on CPU)."""
    texture_size: Optional[int] = None
    """Width = height of the written texture of a textured mesh, texels (default: the run's)."""

    def inputs(self) -> list[Input]:
        return [
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=MESH_OUTPUTS, required=True),
            Input("--load-config", Kind.CONFIG, self.load_config),
            Input("--input", Kind.PLY, self.input),
        ]

    def main(self) -> None:
        from studio.export import extract_mesh, load_gaussians_ply, save_mesh

        if (self.load_config is None) == (self.input is None):
            raise StudioInputError(
                "Give exactly one of --load-config (a run's config.yml) or --input (a Gaussian .ply)."
            )
        if self.texture_size is not None and not 16 <= self.texture_size <= 8192:
            raise StudioInputError(f"--texture-size {self.texture_size} must be between 16 and 8192.")
        from studio.export.result_mesh import save_result_mesh
        from studio.export.runs import NerfRun, read_run_mesh, read_run_scene

        final = read_run_mesh(self.load_config) if self.load_config is not None else None
        if final is not None:
            save_result_mesh(self.output, final, self.texture_size)
            print(f"Wrote {self.output}: the run's final mesh, {_describe(final, self.texture_size)}.")
            return
        if self.texture_size is not None:
            raise StudioInputError("--texture-size needs a run with a textured mesh; this result has none.")
        device = self.device or _default_device()
        scene = (
            load_gaussians_ply(self.input).to(device)
            if self.input is not None
            else read_run_scene(self.load_config, device)
        )
        if isinstance(scene, NerfRun):
            mesh = self._nerf_mesh(scene)
        else:
            mesh = extract_mesh(
                scene,
                resolution=self.resolution,
                n_views=self.n_views,
                image_size=self.image_size,
                min_component_fraction=self.min_component_fraction,
                backend=self.backend,
                device=device,
                method=self.method,
                density_level=self.density_level,
            )
        save_mesh(self.output, mesh)
        print(f"Wrote {self.output}: {len(mesh.vertices):,} vertices, {len(mesh.faces):,} faces.")

    def _nerf_mesh(self, run):
        """A NeRF run's density level set (``studio.nerf.mesh``) in the input world."""
        from studio.export.transform import dataparser_points_to_world
        from studio.nerf.mesh import field_mesh

        mesh = field_mesh(run.field, resolution=self.resolution, level=self.density_level)
        mesh.vertices = dataparser_points_to_world(mesh.vertices, run.transform, run.scale).numpy()
        return mesh


def _describe(mesh, texture_size: Optional[int]) -> str:
    """Vertex and face counts of a result mesh, and its written texture size (``texture_size``, else
    its own) or "vertex colours"."""
    from studio.mesh.textured import TexturedMesh

    if isinstance(mesh, TexturedMesh):
        size = texture_size or mesh.texture.shape[0]
        return f"{len(mesh.verts):,} vertices, {len(mesh.faces):,} faces, {size}x{size} texture"
    return f"{len(mesh.vertices):,} vertices, {len(mesh.faces):,} faces, vertex colours"


@dataclass
class ExportPBR:
    """Bake a prd (inverse rendering) run into a PBR-textured .glb and its environment light (.exr)."""

    load_config: Path
    """Nerfstudio ``config.yml`` of a prd run."""
    output: Path
    """Output glTF binary (.glb): mesh with baseColor and metallicRoughness textures."""
    env_output: Optional[Path] = None
    """Output equirect .exr of the recovered light (default: <output stem>_env.exr beside --output)."""
    texture_size: int = 1024
    """Width = height of the baked textures, texels."""
    env_height: int = 256
    """Rows of the equirect light (width twice that)."""
    resolution: int = 192
    """Voxels along the longest side of the scene's bounds (mesh extraction)."""
    n_views: int = 60
    """Rendered views fused into the TSDF."""
    image_size: int = 256
    """Width = height of each rendered view, pixels."""
    min_component_fraction: float = 0.01
    """Drop connected pieces holding less than this share of the surface area."""
    neighbors: int = 8
    """Nearest Gaussians blended per texel."""
    device: Optional[str] = None
    """Torch device (default: cuda when available, else cpu)."""
    backend: Literal["auto", "torch", "studio", "gsplat"] = "auto"
    """Gaussian rasterizer backend (``auto``: gsplat on CUDA, studio on CPU)."""
    blend_low_progress: bool = True
    """Bake the albedo as p * PBR albedo + (1 - p) * an albedo estimated from the radiance field, so
    regions the PBR part never learned (low distillation progress p) keep the run's colours."""

    def inputs(self) -> list[Input]:
        return [
            Input("--load-config", Kind.CONFIG, self.load_config, required=True),
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".glb",), required=True),
            Input("--env-output", Kind.OUTPUT_FILE, self.env_output, suffixes=(".exr",)),
        ]

    def main(self) -> None:
        from studio.export.pbr import default_env_path, export_pbr

        env = self.env_output if self.env_output is not None else default_env_path(self.output)
        if self.texture_size < 16 or self.texture_size > 8192:
            raise StudioInputError(f"--texture-size {self.texture_size} must be between 16 and 8192.")
        if self.env_height < 4:
            raise StudioInputError(f"--env-height {self.env_height} must be at least 4.")
        info = export_pbr(
            self.load_config,
            self.output,
            env,
            texture_size=self.texture_size,
            env_height=self.env_height,
            resolution=self.resolution,
            n_views=self.n_views,
            image_size=self.image_size,
            min_component_fraction=self.min_component_fraction,
            k=self.neighbors,
            backend=self.backend,
            device=self.device or _default_device(),
            blend_low_progress=self.blend_low_progress,
        )
        if info["warning"]:
            print(info["warning"])
        print(
            f"Wrote {info['output']} ({info['glb_bytes']:,} bytes): {info['vertices']:,} vertices, {info['faces']:,} faces, "
            f"{self.texture_size}x{self.texture_size} baseColor + metallicRoughness textures "
            f"({100 * info['coverage']:.0f}% of texels in UV islands)."
        )
        h, w, _ = info["env_shape"]
        print(f"Wrote {info['env_output']} ({info['env_bytes']:,} bytes): {w}x{h} equirect environment light (linear).")


@dataclass
class ExportFeatures:
    """Export the 2D feature model a splat-distill run trained (the student) as a plain .safetensors
    feature model, usable by `studio eval feature-lift --model` and `studio.features.load_feature_model`."""

    load_config: Path
    """Nerfstudio ``config.yml`` of a splat-distill run."""
    output: Path
    """Output .safetensors file."""
    which: Literal["student", "teacher"] = "student"
    """The student (default) or its EMA teacher."""

    def inputs(self) -> list[Input]:
        return [
            Input("--load-config", Kind.CONFIG, self.load_config, required=True),
            Input("--output", Kind.OUTPUT_FILE, self.output, suffixes=(".safetensors",), required=True),
        ]

    def main(self) -> None:
        from studio.features.registry import save_feature_model
        from studio.models.runs import load_run

        run = load_run(self.load_config, device="cpu")
        if not hasattr(run.model, "plain_model"):
            raise StudioInputError(
                f"--load-config {self.load_config} is a {run.config.method_name} run; only splat-distill runs train a feature model."
            )
        model = run.model.plain_model(self.which)
        record = {"method": run.config.method_name, "which": self.which, "step": run.step}
        record["initial_model"] = run.config.pipeline.model.teacher
        save_feature_model(model, self.output, record)
        print(f"Wrote {self.output}: {self.which} of {self.load_config} (step {run.step}), {model.dim}-D features.")


COMMANDS = {"gaussians": ExportGaussians, "mesh": ExportMesh, "pbr": ExportPBR, "features": ExportFeatures}
