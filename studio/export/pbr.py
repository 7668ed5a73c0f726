"""PBR asset export of an inverse-rendering (``prd``) run: textured glTF mesh + environment light.

``export_pbr`` writes

* a glTF binary (.glb): the surface mesh of ``studio.export.mesh.extract_mesh`` (world
  coordinates of the input dataset), UV-unwrapped with xatlas, with a metallic-roughness PBR
  material whose ``baseColorTexture`` (sRGB-encoded albedo) and ``metallicRoughnessTexture``
  (linear; G = roughness, B = metallic, R = 255, unused) are baked from the Gaussians;
* the recovered environment light as an equirect .exr (linear radiance, Blender convention,
  rotated into the input world frame), next to it (``<stem>_env.exr``) or at ``env_output``.

Baking (``bake_pbr_textures``):

1. ``uv_unwrap``: xatlas charts packed into a ``texture_size`` square atlas with a few texels of
   padding between charts (vertices on seams are duplicated).
2. ``rasterize_uv``: the UV layout rasterized with ``studio.mesh.rasterize`` (UVs as clip-space
   x, y; z = 0, w = 1) -> per-texel triangle and barycentrics -> interpolated 3D positions.
   Texel (row i, col j) samples UV ((j + 0.5) / T, (i + 0.5) / T).
3. ``gaussian_lookup``: each texel position takes the attributes of its ``k`` nearest Gaussian
   means (opacity >= ``min_opacity``), weighted by ``opacity * exp(-0.5 m^2)`` (m: Mahalanobis
   distance under the Gaussian's covariance, each scale widened to ``sqrt(s^2 + sigma_min^2)``
   with ``sigma_min`` ~ the mesh's edge length, as the mesh is only voxel-accurate); the weights
   are normalised as a softmax of their logs, so a texel far from every Gaussian still takes its
   nearest one rather than nothing.
4. ``dilate``: texels outside the UV islands take the mean of their filled 8-neighbours,
   ``dilation`` times (so bilinear filtering and mipmaps do not bleed background into the
   seams); the remaining empty texels get the mean value.

The images are stored with row 0 at the top (v = 1), trimesh's UV convention (v up), which
trimesh flips into glTF's (v down) on export.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from torch import Tensor

from studio.io.errors import StudioInputError

PBR_KEYS = ("albedo", "roughness", "metallic")
LIGHT_KEY = "_model.light.log_radiance"


@dataclass
class PBRRun:
    """A loaded ``prd`` run in the input data's world coordinates.

    ``gaussians``: ``studio.gaussians.Gaussians`` (activated, world frame); ``albedo`` [N,3]
    (linear, [0,1]), ``roughness`` [N,1], ``metallic`` [N,1], ``progress`` [N,1], aligned with the
    Gaussians; ``light``: the ``CubemapLight`` (training frame); ``rotation`` [3,3]: the dataparser
    rotation A (training direction = A @ world direction).
    """

    gaussians: object
    albedo: Tensor
    roughness: Tensor
    metallic: Tensor
    progress: Tensor
    light: object
    rotation: Tensor


def load_pbr_run(config_path: str | os.PathLike, device: str = "cpu") -> PBRRun:
    """Load the Gaussians, PBR attributes and light of a ``prd`` run (``config.yml``).

    Goes through the same safe loaders as ``studio export gaussians|mesh`` (restricted YAML,
    ``weights_only`` checkpoint) and the same dataparser -> world transform.

    Raises:
        StudioInputError: missing files, or the run holds no PBR materials / light (not ``prd``).
    """
    from studio.gaussians.pbr import PBR_PARAM_NAMES, activate_pbr
    from studio.gaussians.trainable import PARAM_NAMES
    from studio.io.config_loader import load_trainer_config
    from studio.io.runs import checkpoint_gaussian_params, dataparser_transform, latest_checkpoint, load_checkpoint, world_gaussians
    from studio.pbr.cubemap import CubemapLight

    config_path = Path(config_path)
    config = load_trainer_config(config_path)
    model_cfg = getattr(getattr(config, "pipeline", None), "model", None)
    if getattr(model_cfg, "ablation", None) == "3dgs":
        raise StudioInputError(f"run {config_path.parent} is a prd '3dgs' ablation: it has no trained materials.")
    state = load_checkpoint(latest_checkpoint(config_path))["pipeline"]
    raw, missing = checkpoint_gaussian_params(state, PARAM_NAMES + tuple(PBR_PARAM_NAMES))
    if missing or LIGHT_KEY not in state:
        what = ", ".join(missing + ([] if LIGHT_KEY in state else ["light"]))
        raise StudioInputError(
            f"run {config_path.parent} is not a prd (inverse rendering) run: its checkpoint has no {what}."
        )
    transform, scale = dataparser_transform(config_path)
    gaussians = world_gaussians(raw, transform, scale, device)
    pbr = {k: v.detach().float() for k, v in activate_pbr(raw).items()}
    log_radiance = state[LIGHT_KEY].float()
    light = CubemapLight(int(log_radiance.shape[1]), learnable=False)
    with torch.no_grad():
        light.log_radiance.copy_(log_radiance)
    return PBRRun(
        gaussians=gaussians,
        albedo=pbr["albedo"].to(device),
        roughness=pbr["roughness"].to(device),
        metallic=pbr["metallic"].to(device),
        progress=pbr["progress"].to(device),
        light=light.to(device),
        rotation=torch.as_tensor(transform, dtype=torch.float32)[:3, :3].to(device),
    )


# ---- UV unwrap and rasterization ---------------------------------------------------------------
def uv_unwrap(vertices: np.ndarray, faces: np.ndarray, texture_size: int = 1024, padding: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas UV atlas of a triangle mesh.

    Args:
        vertices [V,3] float, faces [F,3] int; texture_size: atlas resolution, texels;
        padding: texels between charts.
    Returns:
        vmapping [V'] int64 (source vertex of each new vertex), faces [F,3] int64 into the new
        vertices, uv [V',2] float32 in [0,1] (u right, v up).
    """
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    vmapping, new_faces, uv = atlas[0]
    return vmapping.astype(np.int64), new_faces.astype(np.int64), uv.astype(np.float32)


def rasterize_uv(uv: Tensor, faces: Tensor, texture_size: int) -> tuple[Tensor, Tensor]:
    """Rasterize a UV layout: per texel the covering triangle and its barycentrics.

    Args:
        uv [V,2] in [0,1]; faces [F,3] int; texture_size: T.
    Returns:
        bary [T,T,2], tri_id [T,T] int32 (-1 = no triangle); row i, column j samples UV
        ((j + 0.5) / T, (i + 0.5) / T), i.e. row 0 is v = 0 (bottom of the texture image).
    """
    from studio.mesh import rasterize

    uv = uv.float()
    clip = torch.cat([uv * 2.0 - 1.0, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], dim=1)
    bary, tri_id, _ = rasterize(clip[None].contiguous(), faces.to(torch.int32).contiguous(), texture_size, texture_size)
    return bary[0], tri_id[0]


# ---- Gaussian attribute lookup -----------------------------------------------------------------
def gaussian_lookup(
    points: Tensor,
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    attributes: Tensor,
    k: int = 8,
    sigma_min: float = 0.0,
    min_opacity: float = 0.05,
    chunk: int = 65536,
) -> Tensor:
    """Attributes of the Gaussians around ``points``, falloff- and opacity-weighted.

    Args:
        points [P,3] query positions (same frame and units as ``means``).
        means [N,3], quats [N,4] (wxyz), scales [N,3] (standard deviations), opacities [N] or [N,1]
        in (0,1); attributes [N,D].
        k: nearest means considered per point; sigma_min: added in quadrature to every scale
        (same length unit); min_opacity: Gaussians below it are ignored (all are used if none
        pass).
    Returns:
        [P,D]: sum_j w_j attr_j with w = softmax_j(log opacity_j - 0.5 m_j^2) over the k nearest.
    """
    from scipy.spatial import cKDTree

    from studio.render.projection import quat_to_rotmat

    device = points.device
    op = opacities.reshape(-1).float()
    keep = op >= min_opacity
    if not bool(keep.any()):
        keep = torch.ones_like(keep)
    means, quats, scales, op, attributes = means[keep].float(), quats[keep].float(), scales[keep].float(), op[keep], attributes[keep].float()
    k = max(1, min(int(k), len(means)))
    rot = quat_to_rotmat(F.normalize(quats, dim=-1))  # [N,3,3], columns = local axes
    inv_s = 1.0 / torch.sqrt(scales.square() + float(sigma_min) ** 2).clamp(min=1e-12)  # [N,3]
    log_op = torch.log(op.clamp(min=1e-8))
    tree = cKDTree(means.detach().cpu().numpy())
    out = torch.empty(len(points), attributes.shape[1], device=device)
    for start in range(0, len(points), chunk):
        p = points[start : start + chunk].float()
        _, idx = tree.query(p.detach().cpu().numpy(), k=k, workers=2)
        idx = torch.as_tensor(np.asarray(idx).reshape(len(p), k), device=device, dtype=torch.long)
        d = p[:, None, :] - means[idx]  # [P,k,3]
        local = torch.einsum("pkji,pkj->pki", rot[idx], d) * inv_s[idx]  # R^T d / s
        logw = log_op[idx] - 0.5 * local.square().sum(-1)  # [P,k]
        w = torch.softmax(logw, dim=1)
        out[start : start + chunk] = (w[..., None] * attributes[idx]).sum(1)
    return out


def dilate(image: Tensor, mask: Tensor, iterations: int = 8, fill_rest: bool = True) -> Tensor:
    """Grow an image past the border of its valid texels.

    Args:
        image [H,W,C]; mask [H,W] bool (valid texels); iterations: rings of texels added.
        fill_rest: texels still empty afterwards take the mean of the valid texels.
    Returns:
        [H,W,C]: valid texels unchanged, each new ring the mean of its valid 8-neighbours.
    """
    img = image.permute(2, 0, 1)[None].float() * mask[None, None]
    m = mask[None, None].float()
    kernel = torch.ones(1, 1, 3, 3, device=image.device)
    c = img.shape[1]
    for _ in range(int(iterations)):
        total = F.conv2d(img, kernel.expand(c, 1, 3, 3), padding=1, groups=c)
        count = F.conv2d(m, kernel, padding=1)
        grow = (m == 0) & (count > 0)
        img = torch.where(grow, total / count.clamp(min=1), img)
        m = torch.where(grow, torch.ones_like(m), m)
    out = img[0].permute(1, 2, 0)
    if fill_rest and bool(mask.any()):
        empty = m[0, 0] == 0
        out[empty] = image[mask].float().mean(0)
    return out


# ---- baking ------------------------------------------------------------------------------------
@dataclass
class BakedMesh:
    """UV-mapped mesh with baked PBR textures.

    ``vertices`` [V,3] float32 (world units), ``faces`` [F,3] int64, ``uv`` [V,2] float32 (v up),
    ``base_color`` [T,T,3] uint8 (sRGB-encoded albedo), ``metallic_roughness`` [T,T,3] uint8
    (R = 255, G = roughness, B = metallic; linear), ``coverage`` [T,T] bool (texels inside a UV
    island). Image row 0 is the top of the texture (v = 1).
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    base_color: np.ndarray
    metallic_roughness: np.ndarray
    coverage: np.ndarray

    def to_trimesh(self) -> trimesh.Trimesh:
        """A ``trimesh.Trimesh`` with ``TextureVisuals`` and a glTF ``PBRMaterial`` (factors 1)."""
        from PIL import Image

        material = trimesh.visual.material.PBRMaterial(
            name="studio_pbr",
            baseColorTexture=Image.fromarray(self.base_color, mode="RGB"),
            metallicRoughnessTexture=Image.fromarray(self.metallic_roughness, mode="RGB"),
            baseColorFactor=[255, 255, 255, 255],
            metallicFactor=1.0,
            roughnessFactor=1.0,
            doubleSided=False,
        )
        visual = trimesh.visual.TextureVisuals(uv=self.uv, material=material)
        return trimesh.Trimesh(vertices=self.vertices, faces=self.faces, visual=visual, process=False)


@torch.no_grad()
def bake_pbr_textures(
    vertices: np.ndarray,
    faces: np.ndarray,
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    albedo: Tensor,
    roughness: Tensor,
    metallic: Tensor,
    *,
    texture_size: int = 1024,
    k: int = 8,
    sigma_min: Optional[float] = None,
    min_opacity: float = 0.05,
    padding: int = 2,
    dilation: int = 8,
) -> BakedMesh:
    """UV-unwrap a mesh and bake Gaussian PBR attributes into textures (module docstring).

    Args:
        vertices [V,3], faces [F,3]: the mesh, same frame as ``means``.
        means [N,3], quats [N,4], scales [N,3], opacities [N]: activated Gaussians;
        albedo [N,3] linear in [0,1], roughness [N,1], metallic [N,1] in [0,1].
        texture_size: T (square textures); k, min_opacity: see ``gaussian_lookup``;
        sigma_min: scale floor (length units; default: the mean edge length of the mesh);
        padding: texels between UV charts; dilation: texels grown past the charts.
    Returns:
        ``BakedMesh``.
    """
    from studio.mesh import interpolate
    from studio.pbr.tonemap import linear_to_srgb

    vertices = np.asarray(vertices, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        raise StudioInputError("the extracted mesh is empty: nothing to bake.")
    if sigma_min is None:
        edges = vertices[faces[:, [1, 2, 0]]] - vertices[faces]
        sigma_min = float(np.linalg.norm(edges, axis=-1).mean())
    vmap, new_faces, uv = uv_unwrap(vertices, faces, texture_size, padding)
    verts = vertices[vmap]
    device = means.device
    faces_t = torch.as_tensor(new_faces, device=device)
    bary, tri_id = rasterize_uv(torch.as_tensor(uv, device=device), faces_t, texture_size)
    pos = interpolate(torch.as_tensor(verts, device=device), bary[None], tri_id[None], faces_t.to(torch.int32))[0]  # [T,T,3]
    covered = tri_id >= 0
    attrs = torch.cat([albedo, roughness.reshape(-1, 1), metallic.reshape(-1, 1)], dim=1).float()
    values = torch.zeros(texture_size, texture_size, 5, device=device)
    if bool(covered.any()):
        values[covered] = gaussian_lookup(pos[covered], means, quats, scales, opacities, attrs, k=k, sigma_min=sigma_min, min_opacity=min_opacity)
    values = dilate(values, covered, dilation).clamp(0.0, 1.0)
    values = values.flip(0)  # row 0 = v = 1 (top of the image)
    base = linear_to_srgb(values[..., :3])
    mr = torch.stack([torch.ones_like(values[..., 3]), values[..., 3], values[..., 4]], dim=-1)

    def u8(x: Tensor) -> np.ndarray:
        return (x * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()

    return BakedMesh(
        vertices=verts.astype(np.float32),
        faces=new_faces,
        uv=uv,
        base_color=u8(base),
        metallic_roughness=u8(mr),
        coverage=covered.flip(0).cpu().numpy(),
    )


def save_glb(path: str | os.PathLike, mesh: trimesh.Trimesh) -> int:
    """Write ``mesh`` (with its material) as a glTF binary, atomically; returns the byte count."""
    from studio.io.atomic import atomic_write_bytes

    data = mesh.export(file_type="glb")
    atomic_write_bytes(path, data)
    return len(data)


# ---- environment light -------------------------------------------------------------------------
@torch.no_grad()
def environment_equirect(light, height: int = 256, width: Optional[int] = None, rotation: Optional[Tensor] = None) -> np.ndarray:
    """The light as a world-frame equirect image.

    Args:
        light: ``CubemapLight`` (training frame); height, width (default 2 * height): pixels;
        rotation [3,3]: dataparser rotation A (training direction = A @ world direction;
        default identity).
    Returns:
        [H,W,3] float32 linear radiance, Blender equirect convention (``studio.pbr.envmap``).
    """
    from studio.pbr.envmap import equirect_directions

    width = int(width or 2 * height)
    dev = light.log_radiance.device
    dirs = equirect_directions(int(height), width, device=dev)
    if rotation is not None:
        dirs = dirs @ torch.as_tensor(rotation, dtype=dirs.dtype, device=dev).T
    return light(dirs).float().cpu().numpy()


# ---- whole export ------------------------------------------------------------------------------
def default_env_path(output: str | os.PathLike) -> Path:
    """``<dir>/<stem>_env.exr`` beside the .glb ``output``."""
    output = Path(output)
    return output.with_name(f"{output.stem}_env.exr")


def export_pbr(
    config_path: str | os.PathLike,
    output: str | os.PathLike,
    env_output: Optional[str | os.PathLike] = None,
    *,
    texture_size: int = 1024,
    env_height: int = 256,
    resolution: int = 256,
    n_views: int = 60,
    image_size: int = 256,
    min_component_fraction: float = 0.01,
    k: int = 8,
    backend: str = "auto",
    device: str = "cpu",
) -> dict:
    """Extract, unwrap and bake a ``prd`` run; write the .glb and the environment .exr.

    Mesh options as ``studio export mesh`` (``extract_mesh``); ``texture_size``: texels per side
    of both textures; ``env_height``: rows of the equirect light (width twice that).
    Returns a summary dict (paths, sizes, counts).
    """
    from studio.export.mesh import extract_mesh
    from studio.io.exr import write_exr

    output = Path(output)
    env_path = Path(env_output) if env_output is not None else default_env_path(output)
    run = load_pbr_run(config_path, device=device)
    g = run.gaussians
    mesh = extract_mesh(
        g, resolution=resolution, n_views=n_views, image_size=image_size,
        min_component_fraction=min_component_fraction, backend=backend, device=device,
    )
    baked = bake_pbr_textures(
        np.asarray(mesh.vertices), np.asarray(mesh.faces), g.means, g.quats, g.scales, g.opacities,
        run.albedo, run.roughness, run.metallic, texture_size=texture_size, k=k,
    )
    glb_bytes = save_glb(output, baked.to_trimesh())
    env = environment_equirect(run.light, env_height, 2 * env_height, run.rotation)
    write_exr(env_path, env)
    return {
        "output": output,
        "env_output": env_path,
        "glb_bytes": glb_bytes,
        "env_bytes": env_path.stat().st_size,
        "vertices": len(baked.vertices),
        "faces": len(baked.faces),
        "texture_size": texture_size,
        "coverage": float(baked.coverage.mean()),
        "env_shape": tuple(env.shape),
    }
