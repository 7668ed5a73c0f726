"""The three stages of ``dreamcraft3d``: coarse Gaussians, mesh geometry, mesh texture (Sun et al. 2024).

Each stage object renders its own representation (Gaussians, a vertex-coloured mesh, a textured
mesh), computes its losses, says what its stage file holds, and changes the model once when it
is entered (mesh extraction, UV unwrapping), swapping the new parameters into their optimisers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Tuple

import torch
from torch import Tensor

from studio.cameras.nerfstudio import cameras_to_viewmats
from studio.cameras.sampling import OrbitViews, orbit_cameras
from studio.guidance import BSD, step_value
from studio.models.reference_losses import reference_losses
from studio.models.staged import Stage

MESH_GROUPS = ("mesh_verts", "mesh_colors", "texture")
"""Optimiser groups (and ``model.mesh`` entries) of the mesh stages."""
DMTET_GROUPS = ("dmtet_sdf", "dmtet_deform", "dmtet_color")
"""Optimiser groups (and ``model.dmtet`` entries) of the DMTet geometry stage."""


class CoarseStage(Stage):
    """Gaussians fitted to the reference view with hybrid score distillation; densified."""

    name = "coarse"

    def render(self, cameras) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.model.render_views(cameras)

    def schedule(self):
        return self.model.coarse_schedule

    def guidance_step(self) -> int:
        """Step the timestep schedule is read at (global for the coarse annealing)."""
        return self.model.step

    def after_step(self, step: int) -> None:
        self.model.densify(step)

    def saved_tensors(self) -> Dict[str, Tensor]:
        return {f"gaussians.{k}": v for k, v in self.model.gaussians.params.items()}

    def load_tensors(self, tensors: Dict[str, Tensor]) -> None:
        for k in list(self.model.gaussians.params.keys()):
            self.model.gaussians.params[k] = torch.nn.Parameter(tensors[f"gaussians.{k}"].clone())

    def get_loss_dict(self, outputs, batch) -> Dict[str, Tensor]:
        model, cfg = self.model, self.model.config
        ref, images, cond, uncond = model.guidance_inputs(outputs, batch)
        terms = reference_losses(ref["rgb"], ref["alpha"], ref["depth"], ref["background"], batch)
        weights = {"rgb": cfg.rgb_weight, "mask": cfg.mask_weight, "depth_rel": cfg.depth_rel_weight}
        losses = {f"ref_{k}": weights[k] * v for k, v in terms.items() if weights.get(k, 0) > 0}
        step = self.guidance_step()
        if cfg.nvs_sds_weight > 0:
            model.nvs_guidance.schedule = self.schedule()
            losses["sd_3d"] = cfg.nvs_sds_weight * model.nvs_guidance(images, cond, uncond, step)["loss_sds"]
        if model.text_guidance is not None and cfg.text_sds_weight > 0:
            model.text_guidance.schedule = self.schedule()
            tc, tu, negatives = model.text_conditions(batch)
            text_sds = model.text_guidance(images, tc, tu, step, negatives=negatives)
            losses["sd_2d"] = cfg.text_sds_weight * text_sds["loss_sds"]
        return losses


class GeometryStage(CoarseStage):
    """The mesh extracted from the Gaussians, its vertices and colours refined by the same losses
    plus an annealed normal consistency."""

    name = "geometry"

    @torch.no_grad()
    def enter(self) -> None:
        from studio.export.mesh import extract_mesh

        model, cfg = self.model, self.model.config
        mesh = extract_mesh(
            model.gaussians.activated().detach(),
            resolution=cfg.mesh_resolution,
            n_views=24,
            method=cfg.mesh_extraction,
            density_level=cfg.mesh_density_level,
            image_size=128,
            views_per_batch=4,
            backend=cfg.backend,
        )
        model.mesh_faces = torch.as_tensor(mesh.faces, dtype=torch.long, device=model.device)
        colors = torch.as_tensor(mesh.visual.vertex_colors[:, :3], dtype=torch.float32) / 255.0
        model.replace_param(model.mesh, "mesh_colors", colors)
        model.replace_param(model.mesh, "mesh_verts", torch.as_tensor(mesh.vertices, dtype=torch.float32))

    def render(self, cameras) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        return render_mesh_stage(self.model, cameras, textured=False)

    def schedule(self):
        return self.model.geometry_schedule

    def guidance_step(self) -> int:
        return self.model.step - self.model.stage_start(self.name)

    def after_step(self, step: int) -> None:
        """No densification once the scene is a mesh."""

    def saved_tensors(self) -> Dict[str, Tensor]:
        mesh = self.model.mesh
        return {
            **super().saved_tensors(),
            "mesh_verts": mesh["mesh_verts"],
            "mesh_colors": mesh["mesh_colors"],
            "mesh_faces": self.model.mesh_faces,
        }

    def load_tensors(self, tensors: Dict[str, Tensor]) -> None:
        super().load_tensors(tensors)
        model = self.model
        model.mesh_faces = tensors["mesh_faces"].long()
        model.mesh["mesh_verts"] = torch.nn.Parameter(tensors["mesh_verts"].clone())
        model.mesh["mesh_colors"] = torch.nn.Parameter(tensors["mesh_colors"].clone())

    def get_loss_dict(self, outputs, batch) -> Dict[str, Tensor]:
        from studio.mesh.regularizers import normal_consistency

        losses = super().get_loss_dict(outputs, batch)
        cfg = self.model.config
        half = max(1, cfg.stage_iters[1] // 2)
        start, end = cfg.normal_consistency_weight
        w = step_value([0, start, end, half], self.guidance_step())
        verts, faces, _ = self.surface()
        losses["normal_consistency"] = w * normal_consistency(verts, faces)
        return losses

    def surface(self) -> Tuple[Tensor, Tensor, Tensor]:
        """The stage's mesh: vertices [M,3] (differentiable), faces [F,3], vertex colours [M,3]."""
        mesh = self.model.mesh
        return mesh["mesh_verts"], self.model.mesh_faces, mesh["mesh_colors"].clamp(0, 1)


class DMTetGeometryStage(GeometryStage):
    """The released geometry stage: a DMTet (``studio.mesh.dmtet``) whose signed distance starts as
    ``level - D`` of the coarse Gaussians' opacity field ``D`` (the level set the vertex-edit
    stage meshes), on a Kuhn tet grid of ``mesh_resolution`` cubes over their bounds; the signed
    distance, a deformation of each grid vertex (at most half a cell, ``tanh``) and a colour per
    grid vertex are optimised by the same losses, the mesh re-extracted by marching tetrahedra
    every step (released ``tetrahedra-sdf-grid`` with ``isosurface_deformable_grid``)."""

    @torch.no_grad()
    def enter(self) -> None:
        from studio.export.density import opacity_field
        from studio.export.mesh import extraction_bounds
        from studio.gaussians.sh import sh_to_rgb

        model, cfg = self.model, self.model.config
        g = model.gaussians.activated().detach()
        box = extraction_bounds(g)
        model.dmtet_box.data = box.float().to(model.device)
        grid = model.dmtet_grid()
        lo, cell, dims = box[0].to(g.means.device), grid.cell, grid.dims
        density = opacity_field(g, lo, cell, dims).reshape(-1)
        rgb = sh_to_rgb(g.sh[:, 0]).clamp(0, 1)
        weighted = [opacity_field(replace(g, opacities=g.opacities * rgb[:, c]), lo, cell, dims) for c in range(3)]
        colour = torch.stack([w.reshape(-1) for w in weighted], -1) / density[:, None].clamp_min(1e-6)
        colour = torch.where(density[:, None] > 1e-6, colour, torch.full_like(colour, 0.5))
        level = cfg.mesh_density_level if cfg.mesh_density_level is not None else 0.1
        model.replace_param(model.dmtet, "dmtet_sdf", level - density)
        model.replace_param(model.dmtet, "dmtet_deform", torch.zeros(len(density), 3))
        model.replace_param(model.dmtet, "dmtet_color", colour.clamp(0, 1))

    def surface(self) -> Tuple[Tensor, Tensor, Tensor]:
        return self.model.dmtet_surface()

    def render(self, cameras) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        verts, faces, colors = self.surface()
        return render_triangles(self.model, cameras, verts, faces, {"color": colors})

    def saved_tensors(self) -> Dict[str, Tensor]:
        return {
            **CoarseStage.saved_tensors(self),
            "dmtet_box": self.model.dmtet_box,
            **{k: v for k, v in self.model.dmtet.items()},
        }

    def load_tensors(self, tensors: Dict[str, Tensor]) -> None:
        CoarseStage.load_tensors(self, tensors)
        model = self.model
        model.dmtet_box.data = tensors["dmtet_box"].float().to(model.dmtet_box.device)
        for k in list(model.dmtet.keys()):
            model.dmtet[k] = torch.nn.Parameter(tensors[k].clone())


class TextureStage(Stage):
    """Geometry frozen; a UV texture optimised by the reference L1 and BSD (or SDS)."""

    name = "texture"

    @torch.no_grad()
    def enter(self) -> None:
        from studio.mesh.textured import unwrap_with_colors

        model, cfg = self.model, self.model.config
        mesh = model.mesh
        verts, faces, colors = (x.detach().cpu() for x in model.stages[1].surface())
        tm = unwrap_with_colors(verts, faces, colors, cfg.texture_size)
        model.mesh_faces = torch.as_tensor(tm.faces, dtype=torch.long, device=model.device)
        model.mesh_uv = torch.as_tensor(tm.uv, dtype=torch.float32, device=model.device)
        model.replace_param(mesh, "mesh_verts", torch.as_tensor(tm.verts, dtype=torch.float32))
        model.replace_param(mesh, "texture", torch.as_tensor(tm.texture, dtype=torch.float32))
        self.on_load()  # geometry frozen

    def on_load(self) -> None:
        """Geometry frozen (``requires_grad`` is not in checkpoints: a resumed run freezes it again)."""
        self.model.mesh["mesh_verts"].requires_grad_(False)

    def render(self, cameras) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        return render_mesh_stage(self.model, cameras, textured=True)

    def get_loss_dict(self, outputs, batch) -> Dict[str, Tensor]:
        model, cfg = self.model, self.model.config
        ref, images, cond, uncond = model.guidance_inputs(outputs, batch, model.texture_conditions)
        mask = batch["ref_mask"]
        eroded = 1.0 - torch.nn.functional.max_pool2d((1.0 - mask).permute(2, 0, 1)[None], 9, 1, 4)[0].permute(1, 2, 0)
        losses = {"ref_rgb": cfg.rgb_weight * ((ref["rgb"] - batch["ref_rgb"]).abs() * eroded).mean()}
        tstep = model.step - model.stage_start(self.name)
        guidance = model.texture_guidance
        if isinstance(guidance, BSD):
            if guidance.should_bootstrap(tstep):
                self.bootstrap(batch)
            out = guidance(images, cond, uncond, tstep)
            losses["bsd"] = cfg.texture_guidance_weight * out["loss_bsd"]
            losses["bsd_lora"] = cfg.render_score_weight * out["loss_bsd_lora"]
        else:
            losses["sds"] = cfg.texture_guidance_weight * guidance(images, cond, uncond, tstep)["loss_sds"]
        return losses

    def bootstrap(self, batch: Dict[str, Tensor]) -> None:
        """One BSD round on the model's ``bootstrap_orbit`` views."""
        model = self.model
        views, offsets = model.bootstrap_orbit(batch)
        cond, uncond = model.texture_conditions(batch, OrbitViews(*(v.to(model.device) for v in views)))
        size = model.texture_image_size
        # BSD renders under no_grad itself; its fine-tuning needs gradients
        model.texture_guidance.bootstrap(
            lambda cams: model.render_any(cams)[0].permute(0, 3, 1, 2),
            orbit_cameras(views, size),
            cond,
            uncond,
            azimuth_deg=offsets,
        )


def render_mesh_stage(model, cameras, textured: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The model's mesh (vertex colours, or its texture) rendered at ``cameras``: rgb [C,H,W,3],
    alpha and depth [C,H,W,1], background [3]."""
    mesh = model.mesh
    if textured:
        return render_triangles(
            model, cameras, mesh["mesh_verts"], model.mesh_faces, {}, model.mesh_uv, mesh["texture"].clamp(0, 1)
        )
    return render_triangles(
        model, cameras, mesh["mesh_verts"], model.mesh_faces, {"color": mesh["mesh_colors"].clamp(0, 1)}
    )


def render_triangles(
    model, cameras, verts: Tensor, faces: Tensor, vertex_attrs: Dict[str, Tensor], uv=None, texture=None
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """A triangle mesh (``verts`` [V,3], ``faces`` [F,3]; vertex colours in ``vertex_attrs`` or a
    ``uv`` [V,2] + ``texture`` [Th,Tw,3]) over the model's background at ``cameras``: rgb
    [C,H,W,3], alpha and depth [C,H,W,1], background [3]."""
    from studio.mesh.render import render_mesh

    viewmats, Ks, width, height = cameras_to_viewmats(cameras.to(model.device))
    bg = model.background()
    out = render_mesh(
        verts, faces, viewmats, Ks, width, height, vertex_attrs=vertex_attrs, uv=uv, texture=texture, background=bg
    )
    return out["rgb"], out["alpha"], out["depth"], bg


def dreamcraft3d_stages(model) -> List[Stage]:
    geometry = DMTetGeometryStage if model.config.geometry_representation == "dmtet" else GeometryStage
    return [CoarseStage(model), geometry(model), TextureStage(model)]
