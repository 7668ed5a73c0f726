"""Render sheet: a PNG grid of test views (rows) x AOVs (columns) + the environment maps.

Columns: RGB over a grey checkerboard (alpha shown), albedo, roughness, metallic, world normal
(n/2+1/2), depth (near = bright), part ids (a colour per id), camera-space normal map, then one
column per relit environment. The last row shows the environment maps (tone-mapped) used.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from studio.scenes.toyworld.materials import linear_to_srgb


def _checker(h: int, w: int, cell: int = 8) -> np.ndarray:
    c = ((np.arange(h)[:, None] // cell + np.arange(w)[None] // cell) % 2).astype(np.float64)
    return (0.55 + 0.15 * c)[..., None].repeat(3, -1)


def _over(rgb_lin: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    h, w = alpha.shape
    a = alpha[..., None]
    return linear_to_srgb(rgb_lin) * a + _checker(h, w) * (1 - a)


def _ids(ids: np.ndarray) -> np.ndarray:
    out = np.zeros(ids.shape + (3,))
    for v in np.unique(ids):
        if v == 0:
            continue
        rng = np.random.default_rng(int(v))
        out[ids == v] = rng.uniform(0.2, 1.0, 3)
    return out


def _depth(d: np.ndarray, a: np.ndarray) -> np.ndarray:
    if not (a > 0).any():
        return np.zeros(d.shape + (3,))
    lo, hi = d[a > 0].min(), d[a > 0].max()
    v = np.where(a > 0, 1.0 - 0.8 * (d - lo) / max(hi - lo, 1e-6), 0.0)
    return v[..., None].repeat(3, -1)


def render_sheet(rows: list[dict], envs: dict[str, np.ndarray], meta: dict, tile: int = 128) -> np.ndarray:
    relit = [k for k in rows[0] if k.startswith("test_")]
    cols = ["rgba", "albedo", "roughness", "metallic", "normal", "depth", "id", "normalmap"] + relit
    pad, head = 4, 34
    W = len(cols) * (tile + pad) + pad
    env_h = tile // 2
    H = head + len(rows) * (tile + pad) + env_h + 2 * pad + 14
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text(
        (pad, 2),
        f"ToyWorld seed {meta['seed']} ({meta['kind']}, {meta['split']}): {meta['caption']}"[: W // 6],
        fill=(0, 0, 0),
    )
    for c, name in enumerate(cols):
        draw.text((pad + c * (tile + pad), head - 12), name, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        o = row["test"]
        a = o["alpha"]
        ncam = o["normal"] @ row["c2w"][:3, :3]
        tiles = [
            _over(o["rgb"], a),
            linear_to_srgb(o["albedo"]),
            o["roughness"][..., None].repeat(3, -1),
            o["metallic"][..., None].repeat(3, -1),
            (o["normal"] * 0.5 + 0.5) * a[..., None],
            _depth(o["depth"], a),
            _ids(o["id"]),
            (ncam * 0.5 + 0.5) * a[..., None],
        ] + [_over(row[k]["rgb"], row[k]["alpha"]) for k in relit]
        for c, t in enumerate(tiles):
            img = Image.fromarray((np.clip(t, 0, 1) * 255 + 0.5).astype(np.uint8)).resize((tile, tile), Image.NEAREST)
            canvas.paste(img, (pad + c * (tile + pad), head + r * (tile + pad)))
    y = head + len(rows) * (tile + pad) + pad
    x = pad
    for name, img in envs.items():
        t = img / (1.0 + img)  # Reinhard for display
        im = Image.fromarray((linear_to_srgb(t * 1.6) * 255 + 0.5).astype(np.uint8)).resize(
            (tile, env_h), Image.BILINEAR
        )
        canvas.paste(im, (x, y))
        draw.text((x, y + env_h + 1), f"env {name}", fill=(0, 0, 0))
        x += tile + pad
    return np.asarray(canvas)
