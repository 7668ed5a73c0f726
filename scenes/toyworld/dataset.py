"""Write a ToyWorld scene as a NeRF-synthetic dataset with every AOV of DESIGN.md.

Layout of ``OUT/`` (Blender's compositor names; ``XXX`` = 3 digits, ``XXXX`` = 4 digits)::

    transforms_{train,val,test}.json    camera_angle_x + OpenGL camera-to-world per frame
    train/ val/ test/                   r_XXX.png        RGBA, sRGB 8-bit, straight alpha (0 = background)
                                        albedo_XXXX.png  textured base colour, sRGB 8-bit (also for metals)
                                        roughness_XXXX.png, metallic_XXXX.png   linear 8-bit grey
                                        normal_XXXX.exr  world-space unit normals (float32 RGB, 0 off-object)
                                        depth_XXXX.exr   view-space z > 0 (float32, R=G=B, 0 off-object)
                                        id_XXXX.png      16-bit grey: 256*(instance+1)+part, 0 = background
                                        normalmap_XXXX.png camera-space normals (OpenGL: x right, y up,
                                                         z to the camera) as RGB = n/2+1/2, with alpha;
                                                         for normal-space guidance
    test_<env>/r_XXX.png                the test cameras relit under environment <env>
    transforms_test_<env>.json          the same cameras, pointing at test_<env>/
    val_<env>/, transforms_val_<env>.json   the same for the val cameras (when ``n_val > 0``)
    envs/<env>.exr                      every environment used (float32 equirect, Blender convention)
    gt_mesh.obj                         ground-truth surface, world coordinates (Z up)
    meta.json                           scene description, caption, category, ids, materials,
                                        env/relight files, cameras, split (train/validation/test), renderer
    sheet.png                           render sheet: test views x AOVs (and relit views)

``val`` is its own split when ``n_val > 0``; otherwise ``transforms_val.json`` repeats the test
frames (as NeRF-synthetic scenes from Blender usually do). The folder is built beside ``OUT``
under a temporary name and renamed at the end, so a failed run leaves no half dataset.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from studio.io.exr import FLOAT, encode_exr
from studio.scenes.toyworld import cameras, environments, render, splits
from studio.scenes.toyworld.materials import linear_to_srgb
from studio.scenes.toyworld.scene import build_geometry, make_scene

GENERATOR = "toyworld-1"


@dataclass
class MakeConfig:
    seed: int = 0
    kind: str = "object"
    n_train: int = 40
    n_val: int = 0
    n_test: int = 8
    res: int = 128
    spp: int = 64
    aa: int = 16
    env: str = "sky"
    relight: tuple[str, ...] = ("studio", "sunset")
    path: str = "orbit"
    fov_deg: float = 40.0
    env_size: tuple[int, int] = environments.DEFAULT_SIZE
    aov_splits: tuple[str, ...] = ("train", "val", "test")
    sheet: bool = True
    sheet_views: int = 4
    log: bool = True
    extra: dict = field(default_factory=dict)


def to_u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _png(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path, optimize=False, compress_level=9)


def _write_view(folder: Path, i: int, out: dict, c2w: np.ndarray, aovs: bool) -> None:
    a = out["alpha"]
    rgba = np.concatenate([linear_to_srgb(out["rgb"]), a[..., None]], -1)  # straight alpha
    _png(folder / f"r_{i:03d}.png", to_u8(rgba))
    if not aovs:
        return
    _png(folder / f"albedo_{i:04d}.png", to_u8(linear_to_srgb(out["albedo"])))
    _png(folder / f"roughness_{i:04d}.png", to_u8(out["roughness"]))
    _png(folder / f"metallic_{i:04d}.png", to_u8(out["metallic"]))
    (folder / f"normal_{i:04d}.exr").write_bytes(encode_exr(out["normal"], FLOAT, mantissa_bits=12))
    (folder / f"depth_{i:04d}.exr").write_bytes(encode_exr(out["depth"], FLOAT, mantissa_bits=16))
    Image.fromarray(out["id"].astype(np.uint16)).save(folder / f"id_{i:04d}.png")
    ncam = out["normal"] @ c2w[:3, :3]  # world -> camera (rotation transpose applied on the right)
    nm = np.concatenate([ncam * 0.5 + 0.5, a[..., None]], -1)
    _png(folder / f"normalmap_{i:04d}.png", to_u8(nm))


def _transforms(fov_x: float, folder: str, poses: np.ndarray) -> dict:
    return {
        "camera_angle_x": fov_x,
        "frames": [{"file_path": f"./{folder}/r_{i:03d}", "transform_matrix": p.tolist()} for i, p in enumerate(poses)],
    }


def _sigterm(signum, frame):  # noqa: ARG001
    raise SystemExit(143)


def _check(cfg: MakeConfig) -> None:
    from studio.scenes.toyworld.scene import SCENE_KINDS

    if cfg.kind not in SCENE_KINDS:
        raise ValueError(f"--kind must be one of {SCENE_KINDS}")
    if cfg.path not in cameras.PATHS:
        raise ValueError(f"--path must be one of {cameras.PATHS}")
    for e in (cfg.env, *cfg.relight):
        if e not in environments.ENVIRONMENTS:
            raise ValueError(f"unknown environment {e!r}; one of {environments.ENVIRONMENTS}")
    if cfg.n_train < 1 or cfg.n_test < 1 or cfg.n_val < 0 or cfg.res < 8 or cfg.spp < 1 or cfg.aa < 1:
        raise ValueError("--n-train and --n-test must be >= 1, --n-val >= 0, --res >= 8, --spp >= 1 and --aa >= 1")
    if not 1.0 < cfg.fov_deg < 170.0:
        raise ValueError("--fov-deg must be in (1, 170)")


def make_dataset(output: Path, cfg: MakeConfig, overwrite: bool = False) -> dict:
    """Render scene ``cfg.seed`` into ``output`` (NeRF-synthetic + AOVs); returns meta.json's dict."""
    _check(cfg)
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"{output} exists and is not empty (pass overwrite to replace it)")
    t0 = time.time()
    desc = make_scene(cfg.seed, cfg.kind)
    geom = build_geometry(desc)
    fov = math.radians(cfg.fov_deg)
    radius = cameras.radius_for(geom.radius, fov)
    target = geom.center
    poses = {
        s: cameras.camera_path(cfg.path, n, s, target, radius, seed=cfg.seed)
        for s, n in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test))
        if n > 0
    }
    env_names = list(dict.fromkeys([cfg.env, *cfg.relight]))
    env_imgs = {e: environments.make_environment(e, cfg.env_size) for e in env_names}
    samplers = {e: environments.EnvSampler(img) for e, img in env_imgs.items()}

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    restore = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM also removes the temporary folder
        restore = signal.signal(signal.SIGTERM, _sigterm)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        sheet_rows: list[dict] = []
        (tmp / "envs").mkdir()
        for e, img in env_imgs.items():
            (tmp / "envs" / f"{e}.exr").write_bytes(encode_exr(img, FLOAT))
        jobs = [(s, s, cfg.env, s in cfg.aov_splits) for s in poses] + [
            (s, f"{s}_{e}", e, False) for s in ("val", "test") if s in poses for e in cfg.relight
        ]
        for split, folder, env_name, aovs in jobs:
            (tmp / folder).mkdir()
            t1 = time.time()
            for i, c2w in enumerate(poses[split]):
                rng = np.random.default_rng([cfg.seed, zlib.crc32(folder.encode()), i])
                out = render.render_view(
                    geom,
                    samplers[env_name],
                    c2w,
                    fov,
                    cfg.res,
                    cfg.res,
                    cfg.spp,
                    rng,
                    aa=cfg.aa,
                    aovs=aovs or (split == "test" and folder == "test" and i < cfg.sheet_views),
                )
                _write_view(tmp / folder, i, out, c2w, aovs)
                if split == "test" and i < cfg.sheet_views and cfg.sheet:
                    if folder == "test":
                        sheet_rows.append({"test": out, "c2w": c2w})
                    else:
                        sheet_rows[i][folder] = out
            if cfg.log:
                print(f"  {folder}: {len(poses[split])} views in {time.time() - t1:.1f}s", flush=True)
            tf = _transforms(fov, folder, poses[split])
            (tmp / f"transforms_{folder}.json").write_text(json.dumps(tf, indent=1))
        if "val" not in poses:
            shutil.copyfile(tmp / "transforms_test.json", tmp / "transforms_val.json")
        geom.gt_mesh.export(tmp / "gt_mesh.obj", file_type="obj", include_normals=False, include_texture=False)
        meta = {
            "generator": GENERATOR,
            "seed": cfg.seed,
            "kind": cfg.kind,
            "caption": desc["caption"],
            "category": desc["category"],
            "split": splits.scene_split(cfg.seed, cfg.kind),
            "objects": desc["objects"],
            "ids": desc["ids"],
            "env": {"name": cfg.env, "file": f"envs/{cfg.env}.exr", "convention": "blender-equirect-z-up"},
            "relight": [
                {
                    "name": e,
                    "file": f"envs/{e}.exr",
                    "split": f"test_{e}",
                    "transforms": f"transforms_test_{e}.json",
                    **(
                        {"val_split": f"val_{e}", "val_transforms": f"transforms_val_{e}.json"}
                        if "val" in poses
                        else {}
                    ),
                }
                for e in cfg.relight
            ],
            "camera": {
                "path": cfg.path,
                "fov_x_deg": cfg.fov_deg,
                "radius": radius,
                "target": target.tolist(),
                "n_train": cfg.n_train,
                "n_val": cfg.n_val,
                "n_test": cfg.n_test,
                "val_is_test": cfg.n_val == 0,
            },
            "res": cfg.res,
            "spp": cfg.spp,
            "aa": cfg.aa,
            "aov_splits": [s for s in poses if s in cfg.aov_splits],
            "aovs": {
                "r": "RGBA sRGB 8-bit, straight alpha = pixel coverage (aa stratified primary rays per pixel)",
                "albedo": "sRGB 8-bit textured base colour (metals keep their colour), mean over the pixel's covered rays",
                "roughness": "linear 8-bit perceptual roughness (GGX alpha = roughness^2), mean over covered rays",
                "metallic": "linear 8-bit, mean over covered rays",
                "normal": "EXR float32 (12 mantissa bits) world-space unit shading normal (normalised mean over covered "
                "rays), 0 off-object",
                "depth": "EXR float32 (16 mantissa bits) view-space z (distance along the optical axis) of the pixel-centre "
                "ray, R=G=B, 0 off-object",
                "id": "16-bit PNG, 256*(instance+1)+part of the pixel-centre ray, 0 = background (see ids)",
                "normalmap": "RGBA 8-bit camera-space normal (OpenGL axes) as n/2+1/2",
            },
            "renderer": "Monte-Carlo direct environment lighting with shadow-ray visibility, one-sample MIS "
            "(env 50% / GGX / cosine), GGX Cook-Torrance (studio.pbr.brdf); no interreflections",
            "bounds": {"center": geom.center.tolist(), "radius": geom.radius},
            **cfg.extra,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if cfg.sheet and sheet_rows:
            from studio.scenes.toyworld.sheet import render_sheet

            _png(tmp / "sheet.png", render_sheet(sheet_rows, env_imgs, meta))
        if output.exists():
            old = output.parent / f".{output.name}.old-{os.getpid()}"
            output.rename(old)
            tmp.rename(output)
            shutil.rmtree(old)
        else:
            tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
    if cfg.log:
        print(f"Wrote {output} ({desc['caption']!r}, split {meta['split']}, {time.time() - t0:.1f}s)", flush=True)
    return meta
