"""Turntables: orbit renders of a Gaussian scene or a triangle mesh, and contact sheets of frames.

Gaussians render with ``studio.render.rasterize`` (view-dependent SH colour). Meshes render on the
CPU by ray casting (trimesh, Embree when ``embreex`` is installed): flat Lambert shading from a
light beside the camera, times the base colour (texture, vertex or face colours, else grey).
Cameras orbit the scene centre about the scene's up axis (``up``, world +Z by default: the
Blender / NeRF-synthetic convention), from azimuth 0, at a distance where the bounding sphere fills
the view: ``studio.cameras.sampling.orbit_c2w``, the geometry of ``orbit_cameras`` without its
Nerfstudio ``Cameras`` (``studio render`` of a file does not import Nerfstudio).
All frames are ``uint8`` arrays [F, H, W, 3].
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch
import trimesh

from studio.cameras import intrinsics_from_fov, opengl_c2w_to_viewmat
from studio.cameras.sampling import OrbitSampler, orbit_c2w
from studio.gaussians import Gaussians, gaussian_bounds
from studio.render.rasterize import rasterize

Scene = Union[Gaussians, trimesh.Trimesh]

_DEFAULT_ALBEDO = np.array([0.7, 0.7, 0.7])
_AMBIENT = 0.25


def scene_bounds(scene: Scene) -> tuple[np.ndarray, float]:
    """Centre [3] and radius (world units, >= 1e-6) of a sphere that holds the scene.

    Meshes: the bounding-box centre and the farthest vertex. Gaussians (``gaussian_bounds``): the
    centre of the box spanning the 1st to 99th percentile of the means per axis and the 99th
    percentile of the distances to it (so a few floaters do not shrink the view), grown by three
    typical standard deviations.
    """
    if isinstance(scene, trimesh.Trimesh):
        center = scene.bounds.mean(axis=0)
        return center, max(float(np.linalg.norm(scene.vertices - center, axis=1).max()), 1e-6)
    center, radius = gaussian_bounds(
        scene.means.float().cpu(), scales=scene.scales.float(), quantile=0.01, scale_pad=3.0, sphere=True
    )
    return center.numpy(), max(radius, 1e-6)


def fit_distance(radius: float, fov_deg: float, margin: float = 1.1) -> float:
    """Camera distance at which a sphere of ``radius`` fits a view of ``fov_deg`` (with ``margin``)."""
    return margin * radius / math.sin(math.radians(fov_deg) / 2.0)


def render_gaussian_frames(
    gaussians: Gaussians,
    viewmats: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    backend: str = "auto",
    chunk: int = 4,
) -> np.ndarray:
    """Render ``gaussians`` into each camera (``chunk`` cameras per rasterizer call) -> uint8 [F,H,W,3]."""
    g = gaussians.detach()
    device = g.means.device
    bg = torch.tensor(background, dtype=torch.float32, device=device)
    frames = []
    with torch.no_grad():
        for start in range(0, viewmats.shape[0], chunk):
            vm = viewmats[start : start + chunk].to(device)
            Ks = K.to(device).expand(vm.shape[0], 3, 3)
            out = rasterize(
                g.means,
                g.quats,
                g.scales,
                g.opacities,
                g.sh,
                vm,
                Ks,
                width,
                height,
                background=bg,
                backend=backend,
                sh_degree=g.sh_degree,
            )
            frames.append(_to_uint8(out.color.cpu().numpy()))
    return np.concatenate(frames)


def render_mesh_frames(
    mesh: trimesh.Trimesh,
    viewmats: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Ray-cast ``mesh`` into each camera with flat Lambert shading -> uint8 [F,H,W,3]."""
    K_np = K.double().numpy()
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    dirs_cam = np.stack(
        [(cols - K_np[0, 2]) / K_np[0, 0], (rows - K_np[1, 2]) / K_np[1, 1], np.ones_like(cols)], axis=-1
    ).reshape(-1, 3)
    dirs_cam /= np.linalg.norm(dirs_cam, axis=1, keepdims=True)
    bg = np.asarray(background, dtype=np.float64)
    frames = []
    for viewmat in viewmats.double().numpy():
        rot, trans = viewmat[:3, :3], viewmat[:3, 3]
        origin = -rot.T @ trans
        dirs = dirs_cam @ rot  # rows of rot are the camera axes in world: d_world = R^T d_cam
        tri, ray, loc = mesh.ray.intersects_id(
            np.broadcast_to(origin, dirs.shape), dirs, multiple_hits=False, return_locations=True
        )
        # Light from behind the camera's upper right, so faces facing the viewer are lit.
        light = -rot[2] - 0.5 * rot[1] + 0.3 * rot[0]
        light /= np.linalg.norm(light)
        lambert = np.abs(mesh.face_normals[tri] @ light)
        shade = _AMBIENT + (1.0 - _AMBIENT) * lambert
        image = np.broadcast_to(bg, (height * width, 3)).copy()
        image[ray] = _albedo(mesh, tri, loc) * shade[:, None]
        frames.append(image.reshape(height, width, 3))
    return _to_uint8(np.stack(frames))


def turntable(
    scene: Scene,
    n_frames: int = 60,
    size: int = 256,
    elevation_deg: float = 20.0,
    fov_deg: float = 40.0,
    up: Sequence[float] = (0.0, 0.0, 1.0),
    background: Sequence[float] = (1.0, 1.0, 1.0),
    backend: str = "auto",
) -> np.ndarray:
    """``n_frames`` square ``size`` renders on an orbit about ``up`` -> uint8 [F,size,size,3].

    ``backend`` is the Gaussian rasterizer backend (ignored for meshes).
    """
    center, radius = scene_bounds(scene)
    d = fit_distance(radius, fov_deg)
    views = OrbitSampler((elevation_deg, elevation_deg), (0.0, 360.0), (d, d), (fov_deg, fov_deg)).ring(n_frames)
    c2w = orbit_c2w(views.elevation, views.azimuth, views.distance, tuple(center.tolist()), tuple(up))
    viewmats, K = opengl_c2w_to_viewmat(c2w), intrinsics_from_fov(fov_deg, size, size)
    if isinstance(scene, trimesh.Trimesh):
        return render_mesh_frames(scene, viewmats, K, size, size, background)
    return render_gaussian_frames(scene, viewmats, K, size, size, background, backend)


def make_sheet(frames: np.ndarray, cols: int, fill: int = 255) -> np.ndarray:
    """Tile frames [F,H,W,C] row by row into one image [rows*H, cols*W, C]; empty cells get ``fill``."""
    n, h, w, c = frames.shape
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    sheet = np.full((rows * h, cols * w, c), fill, dtype=frames.dtype)
    for i, frame in enumerate(frames):
        r, q = divmod(i, cols)
        sheet[r * h : (r + 1) * h, q * w : (q + 1) * w] = frame
    return sheet


def _albedo(mesh: trimesh.Trimesh, tri: np.ndarray, loc: np.ndarray) -> np.ndarray:
    """Base colour in [0,1] [M,3] at hit points ``loc`` on faces ``tri``."""
    visual = mesh.visual
    if visual.kind == "texture":
        image, factor = _base_color(visual.material)
        if image is None or visual.uv is None:
            return np.broadcast_to(factor, (len(tri), 3))
        bary = trimesh.triangles.points_to_barycentric(mesh.triangles[tri], loc)
        uv = np.einsum("mk,mkj->mj", bary, visual.uv[mesh.faces[tri]])
        return trimesh.visual.color.uv_to_color(uv, image)[:, :3] / 255.0 * factor
    if visual.kind == "vertex":
        bary = trimesh.triangles.points_to_barycentric(mesh.triangles[tri], loc)
        vertex_rgb = visual.vertex_colors[:, :3].astype(np.float64) / 255.0
        return np.einsum("mk,mkj->mj", bary, vertex_rgb[mesh.faces[tri]])
    if visual.kind == "face":
        return visual.face_colors[tri, :3].astype(np.float64) / 255.0
    return np.broadcast_to(_DEFAULT_ALBEDO, (len(tri), 3))


def _base_color(material) -> tuple[object, np.ndarray]:
    """(texture image or None, RGB factor in [0,1]) of a trimesh material.

    glTF (PBR) multiplies the texture by ``baseColorFactor`` (white when unset); an OBJ-style
    material shows its texture as is, and its diffuse colour only when it has no texture.
    """
    if isinstance(material, trimesh.visual.material.PBRMaterial):
        factor = material.baseColorFactor
        rgb = np.ones(3) if factor is None else np.asarray(factor[:3], dtype=np.float64) / 255.0
        return material.baseColorTexture, rgb
    if material.image is not None:
        return material.image, np.ones(3)
    return None, np.asarray(material.diffuse[:3], dtype=np.float64) / 255.0


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0,1] -> uint8 (rounded, clipped)."""
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
