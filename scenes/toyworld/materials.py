"""PBR materials of ToyWorld parts: base colour (+ procedural texture), roughness, metallic.

A material is a JSON-serialisable dict::

    {"color_name": "red", "color": [r, g, b] (linear), "texture": {...},
     "roughness": 0.2, "metallic": 0.0, "finish": "glossy"}

``finish`` is the word used in captions: ``glossy`` (roughness < 0.3), ``satin`` (< 0.6) or
``matte`` for dielectrics, ``polished metal`` / ``brushed metal`` for metals (metallic = 1).
The BRDF is GGX Cook-Torrance of :mod:`studio.pbr.brdf` (alpha = roughness^2, F0 = lerp(0.04,
color, metallic)). The ``albedo`` AOV is the textured base colour, also for metals (unlike
Blender's DiffCol pass, which is 0 for metals).
"""

from __future__ import annotations

import numpy as np

# name -> sRGB colour (converted to linear below)
PALETTE_SRGB = {
    "red": (0.80, 0.12, 0.10),
    "orange": (0.92, 0.48, 0.10),
    "yellow": (0.93, 0.80, 0.15),
    "green": (0.20, 0.62, 0.25),
    "teal": (0.10, 0.58, 0.58),
    "blue": (0.15, 0.30, 0.80),
    "purple": (0.52, 0.22, 0.70),
    "pink": (0.92, 0.48, 0.64),
    "white": (0.88, 0.88, 0.86),
    "grey": (0.50, 0.50, 0.50),
    "brown": (0.48, 0.30, 0.16),
    "black": (0.10, 0.10, 0.10),
}
METAL_SRGB = {"gold": (1.00, 0.78, 0.34), "silver": (0.95, 0.94, 0.92), "copper": (0.96, 0.64, 0.54)}


def srgb_to_linear(c):
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c):
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)


def finish_of(roughness: float, metallic: float) -> str:
    if metallic >= 0.5:
        return "polished metal" if roughness < 0.35 else "brushed metal"
    return "glossy" if roughness < 0.3 else ("satin" if roughness < 0.6 else "matte")


def make_material(color_name: str, roughness: float, metallic: float, texture: dict | None = None) -> dict:
    table = METAL_SRGB if color_name in METAL_SRGB else PALETTE_SRGB
    color = srgb_to_linear(table[color_name])
    return {
        "color_name": color_name,
        "color": [round(float(x), 5) for x in color],
        "texture": texture or {"type": "none"},
        "roughness": round(float(roughness), 4),
        "metallic": float(metallic),
        "finish": finish_of(roughness, metallic),
    }


def random_material(
    rng: np.random.Generator, allow_metal: bool = True, allow_texture: bool = True, color_name: str | None = None
) -> dict:
    """A random material: 25% metals (gold/silver/copper), dielectrics otherwise, optional texture."""
    if allow_metal and color_name is None and rng.random() < 0.25:
        name = str(rng.choice(list(METAL_SRGB)))
        return make_material(name, float(rng.uniform(0.1, 0.5)), 1.0)
    name = color_name or str(rng.choice(list(PALETTE_SRGB)))
    rough = float(rng.choice([rng.uniform(0.08, 0.25), rng.uniform(0.35, 0.55), rng.uniform(0.65, 0.95)]))
    texture = None
    if allow_texture and rng.random() < 0.4:
        kind = str(rng.choice(["checker", "stripes", "noise"]))
        other = [c for c in PALETTE_SRGB if c != name]
        c2name = "white" if name != "white" else str(rng.choice(other))
        if kind == "checker":
            texture = {
                "type": "checker",
                "scale": float(rng.uniform(3.0, 6.0)),
                "color2_name": c2name,
                "color2": [round(float(x), 5) for x in srgb_to_linear(PALETTE_SRGB[c2name])],
            }
        elif kind == "stripes":
            texture = {
                "type": "stripes",
                "scale": float(rng.uniform(4.0, 8.0)),
                "axis": int(rng.integers(0, 3)),
                "color2_name": c2name,
                "color2": [round(float(x), 5) for x in srgb_to_linear(PALETTE_SRGB[c2name])],
            }
        else:
            texture = {
                "type": "noise",
                "scale": float(rng.uniform(2.0, 6.0)),
                "amount": float(rng.uniform(0.3, 0.6)),
                "seed": int(rng.integers(0, 1 << 16)),
            }
    return make_material(name, rough, 0.0, texture)


# composite parts get plausible colours (the rest of the material is random)
PART_COLORS = {
    ("mushroom", "stem"): ["white", "brown"],
    ("mushroom", "cap"): ["red", "brown", "orange"],
    ("table", "top"): ["brown", "white", "black"],
    ("table", "legs"): ["black", "brown", "grey"],
    ("snowman", "body"): ["white"],
    ("snowman", "nose"): ["orange"],
    ("dumbbell", "bar"): ["grey", "black"],
    ("dumbbell", "weights"): ["black", "red", "blue"],
}
