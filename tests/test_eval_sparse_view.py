"""``studio eval sparse-view`` without training: the sub-dataset of the chosen frames, the view
checks, the metrics on inputs with known answers, the variant flags and the ``ring`` camera path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_nerf_synthetic

from studio.data.nerf_synthetic import read_nerf_synthetic
from studio.eval import sparse_view as sv
from studio.eval.image_to_3d import mask_iou
from studio.io.errors import StudioInputError


def scene_with_extras(root: Path, n: int = 5) -> Path:
    """A NeRF-synthetic scene with distinct images per frame, a meta.json, a ground-truth mesh and a
    depth AOV beside every test image (a square of depth 2 + k / 10 in test view k, 0 elsewhere)."""
    import trimesh

    from studio.io.exr import write_exr

    write_nerf_synthetic(root, n=n, size=16)
    from PIL import Image

    for split in ("train", "test"):
        for i in range(n):
            rgba = np.zeros((16, 16, 4), np.uint8)
            rgba[4:12, 4:12] = (20 * i, 100, 200, 255)
            Image.fromarray(rgba).save(root / split / f"r_{i}.png")
            if split == "test":
                depth = np.zeros((16, 16), np.float32)
                depth[4:12, 4:12] = 2.0 + i / 10
                write_exr(root / "test" / f"depth_{i:04d}.exr", np.repeat(depth[..., None], 3, -1))
    (root / "meta.json").write_text(json.dumps({"caption": "a grey box", "category": "box"}))
    trimesh.creation.box().export(root / "gt_mesh.obj")
    return root


def test_subset_holds_only_the_chosen_frames_and_the_whole_test_split(tmp_path: Path):
    data = scene_with_extras(tmp_path / "scene")
    sub = sv.write_subset(data, [3, 0], tmp_path / "work" / "sub")
    src_train, src_test = read_nerf_synthetic(data, "train"), read_nerf_synthetic(data, "test")
    train, test = read_nerf_synthetic(sub, "train"), read_nerf_synthetic(sub, "test")

    assert [p.name for p in train.image_paths] == ["r_3.png", "r_0.png"]
    np.testing.assert_array_equal(train.camera_to_worlds, src_train.camera_to_worlds[[3, 0]])
    for a, b in zip(train.image_paths, src_train.image_paths[3::-3]):
        assert a.read_bytes() == b.read_bytes() and a.parent == sub / "train"
    assert sorted(p.name for p in (sub / "train").iterdir()) == ["r_0.png", "r_3.png"]
    meta = json.loads((sub / "transforms_train.json").read_text())
    assert meta["camera_angle_x"] == json.loads((data / "transforms_train.json").read_text())["camera_angle_x"]

    np.testing.assert_array_equal(test.camera_to_worlds, src_test.camera_to_worlds)
    assert [p.read_bytes() for p in test.image_paths] == [p.read_bytes() for p in src_test.image_paths]
    assert (test.width, test.fx) == (src_test.width, src_test.fx)
    # the method sees no ground truth beyond its input images: no mesh, no AOVs
    assert not (sub / "gt_mesh.obj").exists() and not list(sub.rglob("depth_*"))
    assert json.loads((sub / "meta.json").read_text())["category"] == "box"
    assert json.loads((sub / sv.SUBSET_RECORD).read_text())["views"] == [3, 0]

    sv.write_subset(data, [1, 2, 4], sub)  # an earlier sub-dataset is replaced
    assert [p.name for p in read_nerf_synthetic(sub, "train").image_paths] == ["r_1.png", "r_2.png", "r_4.png"]
    (tmp_path / "other").mkdir()
    with pytest.raises(StudioInputError, match="not a sparse-view sub-dataset"):
        sv.write_subset(data, [0, 1], tmp_path / "other")


@pytest.mark.parametrize(
    "views,message",
    [([0], "give 2 or 3"), ([0, 1, 2, 3], "give 2 or 3"), ([0, 5], "--views 5 is not a frame"),
     ([-1, 2], "--views -1 is not a frame"), ([2, 2], "twice")],
)  # fmt: skip
def test_check_views_refuses_bad_views(views, message):
    with pytest.raises(StudioInputError, match=message) as err:
        sv.check_views(views, 5)
    assert str(err.value).startswith("--views")
    assert sv.check_views([4, 0, 2], 5) == [4, 0, 2]


def test_bad_views_on_the_command_line_are_one_error_line_and_write_nothing(tmp_path: Path, capsys):
    from studio.cli.main import entrypoint

    data = write_nerf_synthetic(tmp_path / "scene", n=4, size=8)
    before = set(tmp_path.rglob("*"))
    for views in (["0", "9"], ["1"], ["0", "1", "2", "3"]):
        with pytest.raises(SystemExit) as stop:
            entrypoint(["eval", "sparse-view", "--data", str(data), "--output", str(tmp_path / "m.json"),
                        "--views", *views])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(err) == 1 and err[0].startswith("error: --views"), err
    assert set(tmp_path.rglob("*")) == before


def test_method_flags():
    from studio.models.registry import sparse_view_methods

    assert sv.METHOD in sparse_view_methods()  # both variants run the registered sparse-view method
    base = sv.train_command("ns-train", "sparse3d", Path("sub"), Path("runs"), ["--max-num-iterations", "5"])
    assert base[:2] == ["ns-train", "sparse3d"] and base[-2:] == ["--max-num-iterations", "5"]
    assert "--pipeline.model.csds" not in base
    sds = sv.train_command("ns-train", "sds", Path("sub"), Path("runs"), ["--pipeline.model.csds", "classifier"])
    assert sds[1] == "sparse3d"  # the baseline is the same method with its parts off
    flags = sds[sds.index("tensorboard") + 1 :]
    assert flags == ["--pipeline.model.controller", "False", "--pipeline.model.csds", "none",
                     "--pipeline.model.csds", "classifier"]  # fmt: skip
    with pytest.raises(StudioInputError):
        sv.train_command("ns-train", "nerfacto", Path("sub"), Path("runs"), [])


def test_mask_iou_and_depth_mae_known_answers():
    pred, true = torch.zeros(8, 8), torch.zeros(8, 8)
    pred[0:4, 0:4] = 0.9  # 16 pixels
    true[2:6, 0:4] = 0.6  # 16 pixels, 8 shared
    assert mask_iou(pred, true) == pytest.approx(8 / 24)
    assert mask_iou(torch.full((8, 8), 0.5), torch.zeros(8, 8)) == 1.0  # alpha 0.5 is not inside: both empty

    depth = torch.tensor([[2.0, 3.0], [0.0, 1e10]])
    alpha = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    mask = sv.true_depth_mask(depth, alpha)
    assert mask.tolist() == [[True, True], [False, False]]  # 0 (ToyWorld) and 1e10 (Blender) are background
    assert not sv.true_depth_mask(torch.tensor([[float("nan"), 2.0]]), torch.tensor([[1.0, 0.4]])).any()
    pred_depth = torch.tensor([[2.5, 1.0], [7.0, 7.0]])
    assert sv.depth_mae(pred_depth, depth, mask) == pytest.approx((0.5 + 2.0) / 2)
    assert sv.depth_mae(pred_depth, depth, torch.zeros(2, 2, dtype=torch.bool)) is None


def test_scores_of_a_known_render(tmp_path: Path):
    """A render that reproduces the test images with its depth 0.25 too far: mask IoU 1, depth MAE
    0.25 (over the masked pixels only); without depth AOVs depth_mae is null."""
    from studio.data.images import over_white, read_image

    data = scene_with_extras(tmp_path / "scene", n=3)
    test = read_nerf_synthetic(data, "test")
    truths = sv.read_test_depths(test)

    def render(c2w: np.ndarray):
        k = next(i for i, m in enumerate(test.camera_to_worlds) if np.allclose(m, c2w))
        rgba = read_image(test.image_paths[k])
        depth = torch.where(truths[k] > 0, truths[k] + 0.25, torch.full_like(truths[k], 5.0))
        return torch.from_numpy(over_white(rgba)).float(), torch.from_numpy(rgba[..., 3]), depth

    scores = sv.score_test_views(render, test)
    assert scores["mask_iou"] == 1.0 and scores["psnr"] > 60 and scores["ssim"] > 0.99
    assert scores["depth_mae"] == pytest.approx(0.25, abs=1e-3) and scores["lpips"] is None
    for path in data.glob("test/depth_*.exr"):
        path.unlink()
    assert sv.score_test_views(render, read_nerf_synthetic(data, "test"))["depth_mae"] is None


def test_centre_chamfer(tmp_path: Path):
    import trimesh

    gt = tmp_path / "box.obj"
    box = trimesh.creation.box()
    box.export(gt)
    on_surface = torch.from_numpy(np.asarray(trimesh.sample.sample_surface(box, 20000, seed=1)[0])).float()
    opacity = torch.ones(len(on_surface))
    assert sv.centre_chamfer(on_surface, opacity, gt) < 0.01
    shifted = sv.centre_chamfer(on_surface + torch.tensor([0.3, 0.0, 0.0]), opacity, gt)
    assert shifted > 0.05
    assert sv.centre_chamfer(on_surface, torch.full_like(opacity, 0.2), gt) is None  # no opaque Gaussian


def test_ring_path_spreads_the_inputs_and_never_repeats_a_test_view():
    from studio.eval.image_to_3d import orbit_of_c2w
    from studio.scenes.toyworld.cameras import RING_ELEVATION, camera_path

    train = camera_path("ring", 9, "train", np.zeros(3), 2.0)
    orbits = [orbit_of_c2w(c) for c in train]
    assert all(e == pytest.approx(RING_ELEVATION) and d == pytest.approx(2.0) for e, _, d in orbits)
    azimuths = [orbits[k][1] % 360 for k in (0, 3, 6)]
    assert azimuths == pytest.approx([0.0, 120.0, 240.0])
    for n_test in (4, 8, 9):
        test = camera_path("ring", n_test, "test", np.zeros(3), 2.0)
        gaps = np.linalg.norm(train[:, None, :3, 3] - test[None, :, :3, 3], axis=-1)
        assert gaps.min() > 2.0 * math.radians(4.0)  # at least ~5 deg of elevation apart
