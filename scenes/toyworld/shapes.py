"""ToyWorld shapes: primitives and composites as trimesh meshes with named parts.

Every shape is a list of :class:`Part` (a closed triangle mesh in the object's local frame, Z up,
resting on ``z = 0`` after :func:`make_shape`). A part is the unit that gets one material and one
id in the ``id_XXXX.png`` AOV. Primitives have one part; composites (mushroom, table, snowman,
dumbbell) have several. Meshes are deterministic (no randomness here: proportions come from the
caller's ``params``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh
from trimesh import creation

PRIMITIVES = ("sphere", "box", "torus", "cone", "cylinder", "capsule")
COMPOSITES = ("mushroom", "table", "snowman", "dumbbell")
CATEGORIES = PRIMITIVES + COMPOSITES


@dataclass
class Part:
    """One material slot of a shape: ``name`` (e.g. ``"cap"``) and its closed mesh (local frame)."""

    name: str
    mesh: trimesh.Trimesh
    smooth_angle: float = 0.6  # radians; edges sharper than this keep flat (split) normals
    meta: dict = field(default_factory=dict)


def _T(x=0.0, y=0.0, z=0.0) -> np.ndarray:
    return trimesh.transformations.translation_matrix([x, y, z])


def _S(sx, sy, sz) -> np.ndarray:
    return np.diag([sx, sy, sz, 1.0])


def _moved(mesh: trimesh.Trimesh, matrix: np.ndarray) -> trimesh.Trimesh:
    mesh = mesh.copy()
    mesh.apply_transform(matrix)
    return mesh


def primitive(kind: str, p: dict | None = None) -> list[Part]:
    """One primitive of unit-ish size centred at the origin (Z up)."""
    p = p or {}
    if kind == "sphere":
        m = creation.icosphere(subdivisions=3, radius=0.6)
    elif kind == "box":
        m = creation.box(extents=p.get("extents", (0.9, 0.9, 0.9)))
    elif kind == "torus":
        m = creation.torus(p.get("major", 0.55), p.get("minor", 0.2), major_sections=64, minor_sections=32)
    elif kind == "cone":
        m = _moved(creation.cone(p.get("radius", 0.55), p.get("height", 1.2), sections=64), _T(z=-0.6))
    elif kind == "cylinder":
        m = creation.cylinder(p.get("radius", 0.45), p.get("height", 1.1), sections=64)
    elif kind == "capsule":
        m = creation.capsule(height=p.get("height", 0.7), radius=p.get("radius", 0.35), count=[32, 32])
    else:
        raise ValueError(f"unknown primitive {kind!r}; one of {PRIMITIVES}")
    return [Part(kind, m, smooth_angle=0.6 if kind != "box" else 0.1)]


def composite(kind: str, p: dict | None = None) -> list[Part]:
    """A composite object made of several named parts (local frame, Z up)."""
    p = p or {}
    if kind == "mushroom":
        stem = creation.cylinder(0.16, 0.7, sections=48)
        stem = _moved(stem, _T(z=0.35))
        cap = creation.icosphere(subdivisions=3, radius=0.5)
        cap = _moved(cap, _T(z=0.75) @ _S(1.0, 1.0, p.get("cap_flat", 0.55)))
        return [Part("stem", stem), Part("cap", cap)]
    if kind == "table":
        w, d, h = p.get("width", 1.2), p.get("depth", 0.8), p.get("height", 0.7)
        top = creation.box(extents=(w, d, 0.08), transform=_T(z=h - 0.04))
        legs = [
            creation.cylinder(
                0.05, h - 0.08, sections=24, transform=_T(sx * (w / 2 - 0.1), sy * (d / 2 - 0.1), (h - 0.08) / 2)
            )
            for sx in (-1, 1)
            for sy in (-1, 1)
        ]
        return [Part("top", top, smooth_angle=0.1), Part("legs", trimesh.util.concatenate(legs))]
    if kind == "snowman":
        r0, r1, r2 = 0.42, 0.3, 0.21
        z0, z1 = r0, 2 * r0 + r1 * 0.8
        z2 = z1 + r1 + r2 * 0.8
        body = trimesh.util.concatenate(
            [
                creation.icosphere(3, r0, transform=_T(z=z0)),
                creation.icosphere(3, r1, transform=_T(z=z1)),
                creation.icosphere(3, r2, transform=_T(z=z2)),
            ]
        )
        nose = creation.cone(0.05, 0.22, sections=24)
        nose = _moved(nose, _T(x=r2 * 0.9, z=z2) @ trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
        return [Part("body", body), Part("nose", nose)]
    if kind == "dumbbell":
        bar = creation.cylinder(
            0.07, 1.0, sections=32, transform=trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0])
        )
        weights = trimesh.util.concatenate(
            [
                creation.icosphere(3, 0.26, transform=_T(x=-0.55)),
                creation.icosphere(3, 0.26, transform=_T(x=0.55)),
            ]
        )
        return [Part("bar", bar), Part("weights", weights)]
    raise ValueError(f"unknown composite {kind!r}; one of {COMPOSITES}")


def make_shape(kind: str, params: dict | None = None, size: float = 1.0) -> list[Part]:
    """Build ``kind`` (a primitive or composite), scaled so its bounding-box diagonal is
    ``1.6 * size``, centred in x/y and resting on ``z = 0``."""
    parts = primitive(kind, params) if kind in PRIMITIVES else composite(kind, params)
    allv = np.concatenate([pt.mesh.vertices for pt in parts])
    lo, hi = allv.min(0), allv.max(0)
    scale = 1.6 * size / np.linalg.norm(hi - lo)
    shift = np.array([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]])
    M = _S(scale, scale, scale) @ _T(*shift)
    return [Part(pt.name, _moved(pt.mesh, M), pt.smooth_angle, pt.meta) for pt in parts]
