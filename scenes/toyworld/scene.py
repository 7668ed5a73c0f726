"""ToyWorld scene descriptions (from a seed) and their triangle geometry.

:func:`make_scene` turns ``(seed, kind)`` into a JSON-serialisable description: objects
(category, shape parameters, 4x4 object-to-world transform, parts with materials and ids;
the scene's bounding box is centred on the origin, world Z up),
caption, category. :func:`build_geometry` turns a description into one world-space triangle
mesh with per-face object/part ids and smooth shading normals (split at sharp edges).

Ids (``id_XXXX.png``): part ``p`` of object ``k`` has id ``256 * (k + 1) + p`` (0 = background),
so ``id // 256 - 1`` is the instance and ``id % 256`` the part; ``meta.json`` lists them.
Everything is a pure function of the seed (numpy ``default_rng(seed)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import trimesh

from studio.scenes.toyworld import captions, materials, shapes

SCENE_KINDS = ("object", "multi")


def _object(rng: np.random.Generator, category: str, size: float) -> dict:
    params: dict = {}
    if category == "box":
        params["extents"] = [round(float(x), 3) for x in rng.uniform(0.5, 1.0, 3)]
    elif category == "torus":
        params["minor"] = round(float(rng.uniform(0.14, 0.26)), 3)
    elif category in ("cone", "cylinder", "capsule"):
        params["radius"] = round(float(rng.uniform(0.3, 0.55)), 3)
    elif category == "mushroom":
        params["cap_flat"] = round(float(rng.uniform(0.4, 0.7)), 3)
    parts = []
    for p, part in enumerate(shapes.make_shape(category, params, size)):
        colors = materials.PART_COLORS.get((category, part.name))
        if colors:
            mat = materials.random_material(
                rng,
                allow_metal=category == "dumbbell",
                allow_texture=part.name in ("cap", "top"),
                color_name=str(rng.choice(colors)),
            )
        else:
            mat = materials.random_material(rng)
        parts.append({"name": part.name, "material": mat, "index": p})
    return {"category": category, "shape_params": params, "size": size, "parts": parts}


def make_scene(seed: int, kind: str = "object", categories: tuple[str, ...] = shapes.CATEGORIES) -> dict:
    """A scene description from ``seed``: one object (``kind="object"``) or 2-4 (``"multi"``)."""
    if kind not in SCENE_KINDS:
        raise ValueError(f"kind must be one of {SCENE_KINDS}, got {kind!r}")
    rng = np.random.default_rng([int(seed), SCENE_KINDS.index(kind)])
    objects = []
    if kind == "object":
        obj = _object(rng, str(rng.choice(list(categories))), 1.0)
        rot = trimesh.transformations.rotation_matrix(rng.uniform(0, 2 * math.pi), [0, 0, 1])
        obj["transform"] = rot.round(8).tolist()
        objects.append(obj)
    else:
        n = int(rng.integers(2, 5))
        placed: list[tuple[np.ndarray, float]] = []
        for k in range(n):
            size = float(rng.uniform(0.45, 0.7))
            obj = _object(rng, str(rng.choice(list(categories))), size)
            r = 0.8 * size  # bounding circle of the object in x/y (diagonal 1.6 * size)
            for _ in range(200):
                pos = rng.uniform(-1.1, 1.1, 2)
                if all(np.linalg.norm(pos - q) > r + rq + 0.05 for q, rq in placed):
                    break
            placed.append((pos, r))
            M = trimesh.transformations.rotation_matrix(rng.uniform(0, 2 * math.pi), [0, 0, 1])
            M[:2, 3] = pos
            obj["transform"] = M.round(8).tolist()
            objects.append(obj)
    _center(objects)
    ids = []
    for k, obj in enumerate(objects):
        for part in obj["parts"]:
            part["id"] = 256 * (k + 1) + part["index"]
            ids.append({"id": part["id"], "instance": k, "category": obj["category"], "part": part["name"]})
    return {
        "seed": int(seed),
        "kind": kind,
        "objects": objects,
        "ids": ids,
        "caption": captions.scene_caption(objects),
        "category": captions.scene_category(objects),
    }


def _center(objects: list[dict]) -> None:
    """Translate all objects so the scene's bounding box is centred on the world origin (as in
    NeRF-synthetic scenes: methods' scene boxes and random initialisations assume it)."""
    pts = []
    for obj in objects:
        M = np.asarray(obj["transform"])
        for part in shapes.make_shape(obj["category"], obj["shape_params"], obj["size"]):
            pts.append(part.mesh.vertices @ M[:3, :3].T + M[:3, 3])
    allp = np.concatenate(pts)
    shift = -(allp.min(0) + allp.max(0)) / 2
    for obj in objects:
        M = np.asarray(obj["transform"])
        M[:3, 3] += shift
        obj["transform"] = M.round(8).tolist()


@dataclass
class Geometry:
    """World-space render geometry of a scene."""

    mesh: trimesh.Trimesh  # split at sharp edges, with smooth vertex normals
    vertex_normals: np.ndarray  # [V, 3]
    face_id: np.ndarray  # [F] part id (256 * (instance + 1) + part)
    face_instance: np.ndarray  # [F]
    world_to_local: np.ndarray  # [n_instances, 4, 4]
    materials: dict  # id -> material dict
    gt_mesh: trimesh.Trimesh  # watertight parts, merged vertices (for gt_mesh.obj)
    center: np.ndarray
    radius: float


def build_geometry(desc: dict) -> Geometry:
    meshes, normals, fid, finst, gts, w2l, mats = [], [], [], [], [], [], {}
    for k, obj in enumerate(desc["objects"]):
        M = np.asarray(obj["transform"], dtype=np.float64)
        w2l.append(np.linalg.inv(M))
        parts = shapes.make_shape(obj["category"], obj["shape_params"], obj["size"])
        for part, pdesc in zip(parts, obj["parts"]):
            gt = part.mesh.copy()
            gt.apply_transform(M)
            gts.append(gt)
            sm = trimesh.graph.smooth_shade(part.mesh, angle=part.smooth_angle, facet_minarea=None)
            sm.apply_transform(M)
            meshes.append(sm)
            normals.append(np.asarray(sm.vertex_normals))
            fid.append(np.full(len(sm.faces), pdesc["id"], np.int64))
            finst.append(np.full(len(sm.faces), k, np.int64))
            mats[pdesc["id"]] = pdesc["material"]
    offs = np.cumsum([0] + [len(m.vertices) for m in meshes])
    mesh = trimesh.Trimesh(
        vertices=np.concatenate([m.vertices for m in meshes]),
        faces=np.concatenate([m.faces + o for m, o in zip(meshes, offs[:-1])]),
        process=False,
    )
    gt_mesh = trimesh.util.concatenate(gts)
    lo, hi = gt_mesh.bounds
    center = (lo + hi) / 2
    radius = float(np.linalg.norm(gt_mesh.vertices - center, axis=1).max())
    return Geometry(
        mesh,
        np.concatenate(normals),
        np.concatenate(fid),
        np.concatenate(finst),
        np.stack(w2l),
        mats,
        gt_mesh,
        center,
        radius,
    )
