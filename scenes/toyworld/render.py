"""Monte-Carlo ground-truth renderer: environment lighting with visibility, by ray casting.

Per pixel, ``aa`` primary rays at stratified jittered positions inside the pixel (antialiasing,
as a renderer's pixel filter: alpha is the covered fraction, colour and the albedo, roughness,
metallic and normal AOVs are means over the covered rays); depth, distance and ids come from the
ray through the pixel centre (one sample, as Blender's Z and index passes). Per primary ray:

1. Primary ray -> first hit (trimesh's embree intersector): position, triangle, barycentrics,
   smooth shading normal (vertex normals interpolated; split at sharp edges), part id.
   Material = part's base colour x procedural solid texture (object-local point), roughness,
   metallic.
2. ``ceil(spp / aa)`` light directions per hit from a *one-sample MIS mixture* (balance heuristic over
   three strategies): environment importance sampling (luminance x solid angle, 50%), cosine
   hemisphere (diffuse, ``0.5 * (1 - s)``) and GGX half-vector sampling (``0.5 * s`` with
   ``s = 0.2 + 0.8 metallic``). Each direction ``l`` is weighted by
   ``f_r(n, v, l) (n.l) L_env(l) V(x, l) / p_mix(l)`` with
   ``p_mix = 0.5 p_env + 0.5 (1 - s) p_cos + 0.5 s p_ggx``: unbiased, and robust both for
   small bright suns (env sampling) and for sharp reflections (GGX sampling).
3. ``V(x, l)``: a shadow ray from the hit (offset along the geometric normal) towards ``l``;
   an occluded direction contributes 0.

This is *direct* lighting from the environment with exact visibility (one bounce: light that
reflects between objects before reaching the camera is ignored, i.e. occluded directions are
black rather than showing the occluder's radiance). It is not the split-sum approximation the
methods use, so soft shadows and self-occlusion are unmodelled by them, as on real data.

BRDF: ``studio.pbr.brdf.eval_brdf`` (GGX Cook-Torrance, height-correlated Smith, Schlick
Fresnel, ``alpha = roughness^2``, diffuse ``(1 - metallic) albedo / pi``), ``sample_ggx``,
``pdf_ggx``, ``sample_cosine_hemisphere`` — the same model the methods shade with.

Output is linear RGB; the dataset writer encodes sRGB. Randomness comes from a numpy
``Generator`` the caller seeds, so a render is a pure function of its inputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import trimesh

from studio.pbr.brdf import eval_brdf, pdf_ggx, sample_cosine_hemisphere, sample_ggx
from studio.scenes.toyworld.environments import EnvSampler
from studio.scenes.toyworld.scene import Geometry
from studio.scenes.toyworld.textures import eval_texture


def intersector(geom: Geometry):
    """An embree (if available) ray-mesh intersector for ``geom``, cached on the object."""
    if getattr(geom, "_rays", None) is None:
        try:
            from trimesh.ray.ray_pyembree import RayMeshIntersector

            geom._rays = RayMeshIntersector(geom.mesh)
        except Exception:  # noqa: BLE001 - fall back to trimesh's pure-python intersector
            geom._rays = trimesh.ray.ray_triangle.RayMeshIntersector(geom.mesh)
    return geom._rays


def camera_rays(
    c2w: np.ndarray, fov_x: float, width: int, height: int, offsets: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origins, unit world directions ``[H*W, 3]`` and the cosine to the optical axis ``[H*W]``.

    Pinhole at the image centre, OpenGL camera axes (looks along -z, +y up). Each ray goes
    through its pixel's centre, or through ``offsets [H*W, 2]`` (x right, y down, in pixels
    from the pixel's top-left corner, in [0, 1)) when given.
    """
    f = 0.5 * width / math.tan(0.5 * fov_x)
    j, i = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    j, i = j.reshape(-1), i.reshape(-1)
    if offsets is None:
        j, i = j + 0.5, i + 0.5
    else:
        j, i = j + offsets[:, 0], i + offsets[:, 1]
    d_cam = np.stack([(j - width / 2) / f, -(i - height / 2) / f, -np.ones_like(j)], -1)
    norm = np.linalg.norm(d_cam, axis=1)
    d = (d_cam / norm[:, None]) @ c2w[:3, :3].T
    o = np.broadcast_to(c2w[:3, 3], d.shape).copy()
    return o, d, 1.0 / norm


def pixel_offsets(k: int, aa: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sub-pixel positions ``[n, 2]`` in [0, 1)^2 of primary ray ``k`` of ``aa`` for n pixels:
    cell k of a sqrt(aa) x sqrt(aa) grid, jittered per pixel, when aa is a square (stratified);
    uniform otherwise; the centre when aa == 1."""
    if aa == 1:
        return np.full((n, 2), 0.5)
    s = math.isqrt(aa)
    u = rng.random((n, 2))
    if s * s != aa:
        return u
    return (np.array([k % s, k // s], dtype=np.float64) + u) / s


def surface(geom: Geometry, origins: np.ndarray, dirs: np.ndarray) -> dict:
    """First hits of rays: index of hit rays, position, distance, normals, id, material maps."""
    rays = intersector(geom)
    loc, ray_idx, tri = rays.intersects_location(origins, dirs, multiple_hits=False)
    order = np.argsort(ray_idx, kind="stable")
    loc, ray_idx, tri = loc[order], ray_idx[order], tri[order]
    faces = geom.mesh.faces[tri]
    bary = trimesh.triangles.points_to_barycentric(geom.mesh.vertices[faces], loc)
    n = (geom.vertex_normals[faces] * bary[..., None]).sum(1)
    n /= np.linalg.norm(n, axis=1, keepdims=True).clip(1e-12)
    ng = np.asarray(geom.mesh.face_normals)[tri]
    v = -dirs[ray_idx]
    flip = (ng * v).sum(1) < 0  # seen from inside/back: face the viewer
    ng[flip] *= -1
    n[(n * v).sum(1) < 0] = n[(n * v).sum(1) < 0] - 2 * ((n * v).sum(1, keepdims=True) * v)[(n * v).sum(1) < 0]
    n /= np.linalg.norm(n, axis=1, keepdims=True).clip(1e-12)
    ids = geom.face_id[tri]
    inst = geom.face_instance[tri]
    albedo = np.zeros((len(tri), 3))
    rough = np.zeros(len(tri))
    metal = np.zeros(len(tri))
    ph = np.concatenate([loc, np.ones((len(loc), 1))], 1)
    for pid, mat in geom.materials.items():
        m = ids == pid
        if not m.any():
            continue
        local = np.einsum("nij,nj->ni", geom.world_to_local[inst[m]], ph[m])[:, :3]
        albedo[m] = eval_texture(mat["texture"], mat["color"], local)
        rough[m] = mat["roughness"]
        metal[m] = mat["metallic"]
    dist = np.linalg.norm(loc - origins[ray_idx], axis=1)
    return {
        "ray": ray_idx,
        "pos": loc,
        "dist": dist,
        "normal": n,
        "geo_normal": ng,
        "id": ids,
        "albedo": albedo,
        "roughness": rough,
        "metallic": metal,
        "view": v,
    }


def shade(
    geom: Geometry, hit: dict, env: EnvSampler, spp: int, rng: np.random.Generator, chunk: int = 1 << 18
) -> np.ndarray:
    """Monte-Carlo radiance towards the camera at each hit -> ``[n_hits, 3]`` linear RGB."""
    n_hit = len(hit["ray"])
    out = np.zeros((n_hit, 3))
    if n_hit == 0 or spp <= 0:
        return out
    rays = intersector(geom)
    eps = 1e-4 * max(geom.radius, 1.0)
    per = max(1, chunk // n_hit)
    done = 0
    while done < spp:
        s = min(per, spp - done)
        idx = np.repeat(np.arange(n_hit), s)
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        n = f32(hit["normal"][idx])
        v = f32(hit["view"][idx])
        alb = f32(hit["albedo"][idx])
        rough = f32(hit["roughness"][idx])[:, None]
        metal = f32(hit["metallic"][idx])[:, None]
        m = len(idx)
        u = rng.random((m, 6))
        c_spec = 0.5 * (0.2 + 0.8 * metal)  # probability of GGX sampling
        c_env = 0.5
        l_env = f32(env.sample(u[:, 1:4]))
        l_cos, _ = sample_cosine_hemisphere(n, f32(u[:, 4:6]))
        l_ggx, _, _ = sample_ggx(n, v, rough, f32(u[:, 4:6]))
        pick = f32(u[:, 0:1])
        l = torch.where(pick < c_env, l_env, torch.where(pick < c_env + c_spec, l_ggx, l_cos))
        l = l / l.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        nl = (n * l).sum(-1, keepdim=True)
        p_env = f32(env.pdf(l.numpy()))[:, None]
        p_mix = c_env * p_env + c_spec * pdf_ggx(n, v, l, rough) + (1 - c_env - c_spec) * nl.clamp(min=0) / math.pi
        f = eval_brdf(n, v, l, alb, rough, metal)
        L = f32(env.lookup(l.numpy()))
        contrib = f * nl.clamp(min=0) * L / p_mix.clamp(min=1e-12)
        contrib = torch.where(nl > 0, contrib, torch.zeros_like(contrib)).numpy().astype(np.float64)
        live = np.flatnonzero(contrib.max(1) > 0)
        if live.size:
            ng = hit["geo_normal"][idx[live]]
            ln = l.numpy()[live].astype(np.float64)
            org = hit["pos"][idx[live]] + eps * ng * np.sign((ng * ln).sum(1, keepdims=True) + 1e-12)
            blocked = rays.intersects_any(org, ln)
            contrib[live[blocked]] = 0.0
        out += contrib.reshape(n_hit, s, 3).sum(1)  # idx = repeat(arange(n_hit), s)
        done += s
    return out / spp


def render_view(
    geom: Geometry,
    env: EnvSampler,
    c2w: np.ndarray,
    fov_x: float,
    width: int,
    height: int,
    spp: int,
    rng: np.random.Generator,
    aovs: bool = True,
    aa: int = 16,
) -> dict:
    """Render one view with ``aa`` primary rays per pixel and about ``spp`` light samples per
    pixel (``ceil(spp / aa)`` per primary ray): ``rgb`` (linear, straight: mean radiance of the
    covered rays, [H,W,3]), ``alpha`` (covered fraction, [H,W]) and, with ``aovs``, ``albedo``,
    ``roughness``, ``metallic``, ``normal`` (world, unit; means over the covered rays, 0 off the
    object), and from the centre ray ``depth`` (view-space z > 0; 0 off the object), ``dist``
    (ray length) and ``id`` (uint16)."""
    P = width * height
    per_ray = max(1, -(-spp // aa))
    cover = np.zeros(P)
    sums = {
        "rgb": np.zeros((P, 3)),
        "albedo": np.zeros((P, 3)),
        "roughness": np.zeros(P),
        "metallic": np.zeros(P),
        "normal": np.zeros((P, 3)),
    }
    for k in range(aa):
        o, d, _ = camera_rays(c2w, fov_x, width, height, pixel_offsets(k, aa, P, rng))
        hit = surface(geom, o, d)
        r = hit["ray"]  # one hit per ray at most, so r has no repeats
        cover[r] += 1.0
        sums["rgb"][r] += shade(geom, hit, env, per_ray, rng)
        if aovs:
            for key in ("albedo", "roughness", "metallic", "normal"):
                sums[key][r] += hit[key]
    count = np.maximum(cover, 1.0)  # sums are 0 where no ray hit
    mean = {key: v / (count[:, None] if v.ndim == 2 else count) for key, v in sums.items()}

    def img(vals, ch, dtype=np.float32):
        return np.asarray(vals, dtype=dtype).reshape((height, width, ch) if ch > 1 else (height, width))

    out = {"rgb": img(mean["rgb"], 3), "alpha": img(cover / aa, 1)}
    if aovs:
        n = mean["normal"]
        n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        o, d, cos_axis = camera_rays(c2w, fov_x, width, height)
        centre = surface(geom, o, d)
        r = centre["ray"]

        def centre_img(vals, dtype=np.float32):
            a = np.zeros(P, dtype=dtype)
            a[r] = vals
            return a.reshape(height, width)

        out.update(
            albedo=img(mean["albedo"], 3),
            roughness=img(mean["roughness"], 1),
            metallic=img(mean["metallic"], 1),
            normal=img(n, 3),
            depth=centre_img(centre["dist"] * cos_axis[r]),
            dist=centre_img(centre["dist"]),
            id=centre_img(centre["id"], np.uint16),
        )
    return out
