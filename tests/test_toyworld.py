"""ToyWorld: determinism, AOV consistency, camera/mask agreement, captions, splits, CLI."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from studio.data import read_nerf_synthetic, validate_dataset
from studio.io.exr import encode_exr
from studio.pbr.envmap import read_envmap
from studio.scenes.toyworld import cameras, environments, render, shapes, splits
from studio.scenes.toyworld.dataset import MakeConfig, make_dataset
from studio.scenes.toyworld.scene import build_geometry, make_scene

REPO = Path(__file__).resolve().parents[1]
TINY = dict(n_train=3, n_test=2, res=40, spp=4, relight=("studio",), sheet_views=2, log=False)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tw") / "multi"
    make_dataset(out, MakeConfig(seed=3, kind="multi", **TINY))
    return out


def test_same_seed_same_bytes(tmp_path, tiny):
    again = tmp_path / "again"
    make_dataset(again, MakeConfig(seed=3, kind="multi", **TINY))
    assert _digest(again) == _digest(tiny)
    other = tmp_path / "other"
    make_dataset(other, MakeConfig(seed=4, kind="multi", **TINY))
    assert (other / "train" / "r_000.png").read_bytes() != (tiny / "train" / "r_000.png").read_bytes()


def test_layout_and_reader(tiny):
    assert validate_dataset(tiny).name == "NERF_SYNTHETIC"
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            for name in (
                f"r_{i:03d}.png",
                f"albedo_{i:04d}.png",
                f"roughness_{i:04d}.png",
                f"metallic_{i:04d}.png",
                f"normal_{i:04d}.exr",
                f"depth_{i:04d}.exr",
                f"id_{i:04d}.png",
                f"normalmap_{i:04d}.png",
            ):
                assert (tiny / split / name).is_file(), f"{split}/{name} missing"
    meta = json.loads((tiny / "meta.json").read_text())
    assert [r["split"] for r in meta["relight"]] == ["test_studio"]
    assert (tiny / "test_studio" / "r_001.png").is_file() and (tiny / meta["relight"][0]["file"]).is_file()
    assert read_envmap(tiny / meta["env"]["file"]).shape == (*environments.DEFAULT_SIZE, 3)
    assert (tiny / "gt_mesh.obj").is_file() and (tiny / "sheet.png").is_file()
    relit = json.loads((tiny / "transforms_test_studio.json").read_text())
    test = json.loads((tiny / "transforms_test.json").read_text())
    assert [f["transform_matrix"] for f in relit["frames"]] == [f["transform_matrix"] for f in test["frames"]]
    assert not list(tiny.parent.glob(".*tmp*")), "temporary build folder left behind"


def test_aovs_consistent(tiny):
    meta = json.loads((tiny / "meta.json").read_text())
    fs = read_nerf_synthetic(tiny, "train")
    gt = trimesh.load(tiny / "gt_mesh.obj", force="mesh")
    valid_ids = {e["id"] for e in meta["ids"]}
    for i, c2w in enumerate(fs.camera_to_worlds):
        rgba = np.asarray(Image.open(tiny / "train" / f"r_{i:03d}.png"))
        assert rgba.shape == (40, 40, 4)
        alpha = rgba[..., 3]
        mask = alpha > 0  # some primary ray hit (alpha = covered fraction: antialiased edges)
        assert 0.02 < mask.mean() < 0.9
        assert ((alpha > 0) & (alpha < 255)).any()  # fractional coverage on silhouettes
        ids = np.asarray(Image.open(tiny / "train" / f"id_{i:04d}.png")).astype(np.int64)
        centre = ids > 0  # id, depth: the pixel-centre ray (one sample, as Blender's passes)
        assert np.all(mask[centre]) and np.all(centre[alpha == 255])
        assert set(np.unique(ids[centre]).tolist()) <= valid_ids
        normal = read_envmap(tiny / "train" / f"normal_{i:04d}.exr")
        assert np.allclose(np.linalg.norm(normal[mask], axis=-1), 1.0, atol=1e-3)
        assert np.all(normal[~mask] == 0)
        depth = read_envmap(tiny / "train" / f"depth_{i:04d}.exr")[..., 0]
        # depth = view-space z of the first hit on gt_mesh along each pixel-centre ray
        o, d, cos_axis = render.camera_rays(c2w.astype(np.float64), 2 * math.atan(0.5 * fs.width / fs.fx), 40, 40)
        loc, ray, _ = trimesh.ray.ray_triangle.RayMeshIntersector(gt).intersects_location(o, d, multiple_hits=True)
        t = np.full(len(d), np.inf)
        np.minimum.at(t, ray, np.linalg.norm(loc - o[ray], axis=1))
        hit = np.isfinite(t).reshape(40, 40)
        assert (hit != centre).mean() < 0.01  # grazing pixels may differ
        both = hit & centre
        z = (t * cos_axis).reshape(40, 40)
        assert np.allclose(depth[both], z[both], rtol=1e-3, atol=1e-3)
        assert np.all(depth[~centre] == 0)
        for name in ("roughness", "metallic"):
            img = np.asarray(Image.open(tiny / "train" / f"{name}_{i:04d}.png"))
            assert img.ndim == 2 and np.all(img[~mask] == 0)


def test_alpha_is_pixel_coverage():
    """A box seen obliquely: on its silhouette, alpha is the covered fraction of each pixel
    (stratified primary rays; reference: 4x4 sub-pixel centres), not a 0/1 centre test."""
    desc = make_scene(0, "object")
    desc["objects"] = [
        {
            "category": "box",
            "shape_params": {},
            "size": 1.0,
            "transform": np.eye(4).tolist(),
            "parts": [
                {
                    "name": "box",
                    "index": 0,
                    "id": 256,
                    "material": {
                        "color": [0.5, 0.5, 0.5],
                        "texture": {"type": "none"},
                        "roughness": 1.0,
                        "metallic": 0.0,
                    },
                }
            ],
        }
    ]
    geom = build_geometry(desc)
    env = environments.EnvSampler(np.ones((32, 64, 3), np.float32))
    c2w = cameras.look_at([3.5, 1.5, 1.0], geom.center)  # edges oblique to the pixel grid
    out = render.render_view(geom, env, c2w, math.radians(40), 24, 24, 64, np.random.default_rng(0), aovs=False, aa=64)
    o, d, _ = render.camera_rays(c2w, math.radians(40), 96, 96)  # 4x4 centres per pixel
    fine = np.zeros(96 * 96)
    fine[render.surface(geom, o, d)["ray"]] = 1.0
    coverage = fine.reshape(24, 4, 24, 4).mean((1, 3))
    edge = (coverage > 0) & (coverage < 1)
    assert edge.sum() >= 8
    assert np.abs(out["alpha"] - coverage)[edge].mean() < 0.15
    assert np.abs(out["alpha"] - coverage).max() < 0.35  # two estimates of the same fraction


def _check_projection(root: Path, split: str) -> None:
    """gt_mesh vertices projected with the written cameras (OpenGL c2w) land on the alpha mask.

    Every vertex, occluded or not, projects inside the object's silhouette; a 1-pixel dilation
    absorbs vertices on the silhouette edge.
    """
    gt = trimesh.load(root / "gt_mesh.obj", force="mesh")
    fs = read_nerf_synthetic(root, split)
    H, W = fs.height, fs.width
    for i, c2w in enumerate(fs.camera_to_worlds):
        alpha = np.asarray(Image.open(fs.image_paths[i]))[..., 3] > 0
        pad = np.pad(alpha, 1)
        dil = np.zeros_like(alpha)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                dil |= pad[dy : dy + H, dx : dx + W]
        w2c = np.linalg.inv(c2w.astype(np.float64))
        p = gt.vertices @ w2c[:3, :3].T + w2c[:3, 3]
        assert np.all(p[:, 2] < 0), "mesh behind the camera (OpenGL cameras look along -z)"
        u = fs.cx + fs.fx * p[:, 0] / -p[:, 2]
        v = fs.cy - fs.fy * p[:, 1] / -p[:, 2]
        assert np.all((u >= 0) & (u < W) & (v >= 0) & (v < H)), "object leaves the frame"
        on = dil[v.astype(int), u.astype(int)]
        assert on.mean() > 0.995, f"{root.name} {split} view {i}: only {on.mean():.3f} of vertices on the mask"


def test_cameras_project_mesh_onto_mask(tiny):
    for split in ("train", "test"):
        _check_projection(tiny, split)


def test_caption_category_split(tiny):
    meta = json.loads((tiny / "meta.json").read_text())
    assert meta["caption"].startswith("a ") and len(meta["caption"]) > 8
    assert meta["category"] == "multi" and meta["split"] == "test"  # seed 3 is a test seed
    for seed in range(30):
        d = make_scene(seed, "object")
        assert d["category"] in shapes.CATEGORIES
        assert d["category"] in d["caption"]
    assert make_scene(12, "object")["caption"] == "a mushroom with a glossy mottled red cap"


def test_splits_respected():
    s = splits.load_splits()
    assert splits.split_of(5) == "test" and splits.split_of(123456) == "train"
    with pytest.raises(splits.HeldOutSceneError):
        splits.assert_trainable(5)
    with pytest.raises(splits.HeldOutSceneError):
        splits.assert_trainable(950)
    assert splits.split_of(123456, s["heldout_captions"][0], "torus") == "test"
    assert splits.split_of(123456, "a matte purple capsule", "capsule") == "test"
    assert splits.split_of(123456, "a matte teal snowman", "snowman") == "test"
    seeds = splits.training_seeds(20)
    assert len(set(seeds)) == 20 and all(splits.scene_split(x) == "train" for x in seeds)
    assert all(make_scene(x)["category"] not in s["heldout_categories"] for x in seeds)
    skipped = [x for x in range(seeds[0], seeds[-1]) if x not in seeds]
    for x in skipped:
        with pytest.raises(splits.HeldOutSceneError):
            splits.assert_trainable(x)
    assert all(splits.split_of(x) == "test" for x in splits.heldout_seeds(10))
    assert [splits.split_of(x) for x in splits.validation_seeds(100)] == ["validation"] * 100


def test_split_boundaries():
    expected = ["test", "test", "validation", "validation", "train"]
    assert [splits.split_of(x) for x in (0, 899, 900, 999, 1000)] == expected
    assert splits.scene_split(899) == "test" and splits.scene_split(900) == "validation"
    assert all(splits.is_heldout(splits.split_of(x)) for x in (0, 899, 900, 999))
    assert not splits.is_heldout(splits.split_of(1000)) and splits.HELDOUT == ("validation", "test")


def test_validation_captions_are_heldout_and_never_trained_on():
    s = splits.load_splits()
    val = s["validation_captions"]
    assert len(val) == 2 and set(val) < set(s["heldout_captions"])
    for c in s["heldout_captions"]:
        assert splits.caption_split(c) == ("validation" if c in val else "test")
        assert splits.split_of(123456, c) == splits.caption_split(c)  # a train-range seed: the caption decides
    assert splits.caption_split(f"{val[0]} and a satin brown torus") == "validation"  # multi-object caption
    assert splits.caption_split(f"{val[0]} and {s['heldout_captions'][0]}") == "test"  # any test part wins
    assert splits.caption_split("a matte red sphere") == "train"
    # the training filter (priors) keeps exactly the train split: no validation seed or caption
    seeds = splits.training_seeds(200)
    assert all(x >= 1000 for x in seeds)
    assert all(make_scene(x)["caption"] not in s["heldout_captions"] for x in seeds)
    skipped = [x for x in range(seeds[0], seeds[-1]) if x not in seeds]
    assert skipped and all(splits.is_heldout(splits.scene_split(x)) for x in skipped)
    assert not any(splits.scene_split(x) == "validation" for x in seeds)
    assert make_scene(1581)["caption"] in val and splits.scene_split(1581) == "validation"  # train-range seed
    with pytest.raises(splits.HeldOutSceneError):
        splits.assert_trainable(1581)
    assert 1581 not in splits.training_seeds(4, start=1579)


def test_environment_convention():
    img = environments.make_environment("sky")
    i, j = np.unravel_index(np.argmax(img.sum(-1)), img.shape[:2])
    H, W = img.shape[:2]
    u, v = (j + 0.5) / W, 1 - (i + 0.5) / H
    sun = np.array([0.5, 0.6, 0.62]) / np.linalg.norm([0.5, 0.6, 0.62])
    assert abs(u - (0.5 - math.atan2(sun[1], sun[0]) / (2 * math.pi))) < 2.0 / W
    assert abs(v - (0.5 + math.asin(sun[2]) / math.pi)) < 2.0 / H
    es = environments.EnvSampler(img)
    d = es.sample(np.random.default_rng(0).random((20000, 3)))
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0)
    # E[L / pdf] over env samples = integral of L over the sphere
    ref = (img.reshape(-1, 3) * np.repeat(environments.solid_angles(H, W), W)[:, None]).sum(0)
    est = (es.lookup(d) / es.pdf(d)[:, None]).mean(0)
    assert np.allclose(est, ref, rtol=0.05)


def test_sun_environment_is_a_small_dominant_sun():
    """``sun``: the brightest pixel is in SUN_DIRECTION, and the disc (within 3 deg) gives most of
    the irradiance of an upward surface (hard shadows), from a few pixels only."""
    img = environments.make_environment("sun")
    H, W = img.shape[:2]
    d = environments.directions(H, W).reshape(-1, 3)
    sun = np.array(environments.SUN_DIRECTION) / np.linalg.norm(environments.SUN_DIRECTION)
    assert float(d[np.argmax(img.sum(-1))] @ sun) > math.cos(math.radians(2.0))
    disc = d @ sun > math.cos(math.radians(3.0))
    lum = img.reshape(-1, 3) @ np.array([0.2126, 0.7152, 0.0722])
    weight = lum * np.clip(d[:, 2], 0, None) * np.repeat(environments.solid_angles(H, W), W)
    assert weight[disc].sum() > 0.7 * weight.sum() and disc.sum() < 40
    assert np.array_equal(img, environments.make_environment("sun"))


def test_furnace_diffuse_sphere():
    """Uniform env of radiance 1, grey rough dielectric sphere: radiance ~ albedo + specular albedo."""
    desc = make_scene(0, "object")
    desc["objects"] = [
        {
            "category": "sphere",
            "shape_params": {},
            "size": 1.0,
            "transform": np.eye(4).tolist(),
            "parts": [
                {
                    "name": "sphere",
                    "index": 0,
                    "id": 256,
                    "material": {
                        "color": [0.5, 0.5, 0.5],
                        "texture": {"type": "none"},
                        "roughness": 1.0,
                        "metallic": 0.0,
                    },
                }
            ],
        }
    ]
    geom = build_geometry(desc)
    env = environments.EnvSampler(np.ones((32, 64, 3), np.float32))
    c2w = cameras.look_at([3.0, 0.0, 0.5], geom.center)
    out = render.render_view(geom, env, c2w, math.radians(40), 32, 32, 64, np.random.default_rng(0))
    m = out["alpha"] > 0
    mean = out["rgb"][m].mean()
    assert 0.5 < mean < 0.6, mean  # Lambert 0.5 + rough dielectric specular (~0.04)


def test_exr_roundtrip(tmp_path):
    a = np.random.default_rng(0).normal(size=(33, 50, 3)).astype(np.float32) * 3
    (tmp_path / "a.exr").write_bytes(encode_exr(a))
    assert np.array_equal(read_envmap(tmp_path / "a.exr"), a)
    (tmp_path / "b.exr").write_bytes(encode_exr(a[..., 0], mantissa_bits=16))
    b = read_envmap(tmp_path / "b.exr")
    assert np.allclose(b[..., 0], a[..., 0], rtol=2e-5, atol=0) and np.array_equal(b[..., 0], b[..., 2])


def test_cli_make(tmp_path):
    out = tmp_path / "cli"
    t0 = time.time()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "studio.cli.main",
            "scenes",
            "make",
            "--output",
            str(out),
            "--seed",
            "1234",
            "--n-train",
            "3",
            "--n-val",
            "1",
            "--n-test",
            "2",
            "--res",
            "32",
            "--spp",
            "4",
            "--relight",
            "night",
            "--path",
            "forward",
            "--sheet",
            str(tmp_path / "sheet.png"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert time.time() - t0 < 30
    validate_dataset(out)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 1234 and meta["camera"]["path"] == "forward" and meta["caption"]
    assert meta["split"] == splits.scene_split(1234) and f"split {meta['split']}" in res.stdout
    val = read_nerf_synthetic(out, "val")
    test = read_nerf_synthetic(out, "test")
    assert len(val.image_paths) == 1 and (out / "val" / "depth_0000.exr").is_file()
    assert min(np.abs(val.camera_to_worlds[0] - t).max() for t in test.camera_to_worlds) > 1e-3
    assert (tmp_path / "sheet.png").read_bytes() == (out / "sheet.png").read_bytes()
    again = subprocess.run(
        [sys.executable, "-m", "studio.cli.main", "scenes", "make", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "not empty" in again.stderr
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "studio.cli.main",
            "scenes",
            "make",
            "--output",
            str(tmp_path / "x"),
            "--env",
            "nowhere",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "unknown environment" in bad.stderr
    assert not (tmp_path / "x").exists()


BUNDLED = sorted(p for p in (REPO / "scenes").glob("toyworld_*") if p.is_dir())


@pytest.mark.skipif(not BUNDLED, reason="no bundled ToyWorld scenes")
def test_bundled_scenes():
    total = sum(f.stat().st_size for p in BUNDLED for f in p.rglob("*") if f.is_file())
    assert total < 5 * 1024 * 1024, total
    for p in BUNDLED:
        validate_dataset(p)
        meta = json.loads((p / "meta.json").read_text())
        assert meta["split"] == splits.scene_split(meta["seed"], meta["kind"]) == "test"
        assert meta["caption"] and (p / "gt_mesh.obj").is_file()
        assert all((p / r["split"] / "r_000.png").is_file() for r in meta["relight"])
        for split in ("train", "test"):
            _check_projection(p, split)
