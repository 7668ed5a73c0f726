"""The feature-lift protocol (``studio.eval.feature_lift``): geometry conventions, metrics, probes,
correspondence with an oracle and a random feature model, and the error for scenes without AOVs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from studio.eval import feature_lift as fl
from studio.io.errors import StudioInputError

RES = 48
SETTINGS = fl.ProbeSettings(resolution=RES, hidden=32, steps=120, corr_points=300)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A ToyWorld mushroom (two id parts), 6 train + 6 test orbit views at 48 px, all AOVs (~1 s)."""
    from studio.scenes.toyworld.dataset import MakeConfig, make_dataset

    out = tmp_path_factory.mktemp("feature_lift") / "mushroom"
    cfg = MakeConfig(seed=5, kind="object", n_train=6, n_test=6, res=RES, spp=1, aa=1, relight=(), sheet=False)
    make_dataset(out, cfg)
    return out


@pytest.fixture(scope="module")
def splits(scene) -> dict:
    return {s: fl.load_split(scene, s, RES) for s in ("train", "test")}


class LookupModel(torch.nn.Module):
    """A FeatureModel (name, dim, patch_size, image_size, prepare, forward) whose features are
    per-pixel maps computed beforehand from ground truth, found by the exact image."""

    patch_size = 1
    image_size = RES

    def __init__(self, name: str, maps: dict[bytes, torch.Tensor]):
        super().__init__()
        self.name = name
        self.table = maps
        self.dim = next(iter(maps.values())).shape[0]

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.table[im.numpy().tobytes()] for im in images.cpu()])


class RandomModel(torch.nn.Module):
    """Independent Gaussian noise per pixel (seeded by the image): correspondence at chance."""

    name, dim, patch_size, image_size = "random", 32, 1, RES

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for im in images:
            gen = torch.Generator().manual_seed(int(im.sum() * 1000) % 2**31)
            out.append(torch.randn(self.dim, *im.shape[-2:], generator=gen))
        return torch.stack(out)


def _world_points(views: fl.SplitViews, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    flat, uv = fl.pixel_centres(views.valid[i])
    return flat, fl.unproject(uv, views.depth[i].reshape(-1)[flat], views.K, views.c2w[i])


def oracle_model(splits: dict, freqs: int = 32, sigma: float = 20.0, geometry: bool = False) -> LookupModel:
    """Random Fourier features of the true world point of each pixel (cosine similarity ~ a narrow
    Gaussian kernel of 3D distance), plus, with ``geometry``, depth, camera normals and one-hot ids."""
    gen = torch.Generator().manual_seed(0)
    B = torch.randn(3, freqs, generator=gen) * sigma
    classes = torch.unique(torch.cat([splits["train"].ids.unique(), splits["test"].ids.unique()]))
    maps = {}
    for views in splits.values():
        H, W = views.depth.shape[-2:]
        normals = fl.camera_normals(views.normals, views.c2w)
        for i in range(len(views.depth)):
            flat, X = _world_points(views, i)
            feat = torch.zeros(2 * freqs, H * W)
            proj = X @ B
            feat[:, flat] = torch.cat([proj.sin(), proj.cos()], 1).T
            feat = feat.reshape(-1, H, W)
            if geometry:
                onehot = (views.ids[i][None] == classes[:, None, None]).float()
                feat = torch.cat([views.depth[i][None], normals[i].permute(2, 0, 1), onehot, feat])
            maps[views.images[i].numpy().tobytes()] = feat
    return LookupModel("oracle", maps)


# ---------------------------------------------------------------------------------------- data
def test_load_split_shapes_and_aovs(splits):
    test = splits["test"]
    N = 6
    assert test.images.shape == (N, 3, RES, RES) and 0 <= test.images.min() and test.images.max() <= 1
    assert test.depth.shape == (N, RES, RES) and test.normals.shape == (N, RES, RES, 3)
    assert test.ids is not None and set(test.ids.unique().tolist()) <= {0, 256, 257}
    assert test.c2w.shape == (N, 4, 4) and test.K.shape == (3, 3)
    valid = test.valid
    assert 0.2 < valid.float().mean() < 0.8
    assert torch.allclose(test.normals[valid].norm(dim=-1), torch.ones(int(valid.sum())), atol=1e-3)
    assert (test.ids[~valid] == 0).float().mean() > 0.99  # background id where there is no surface


def test_find_scenes(scene, tmp_path):
    assert fl.find_scenes([scene]) == [scene]
    parent = tmp_path / "many"
    parent.mkdir()
    for name in ("b", "a"):
        (parent / name).symlink_to(scene, target_is_directory=True)
    (parent / "notes").mkdir()
    assert [p.name for p in fl.find_scenes([parent])] == ["a", "b"]
    with pytest.raises(StudioInputError, match="neither a NeRF-synthetic scene folder"):
        fl.find_scenes([parent / "notes"])


def test_scene_without_aovs_fails_with_one_line(scene, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(scene, bare)
    for path in (bare / "test").glob("depth_*.exr"):
        path.unlink()
    for path in (bare / "test").glob("normal_*.exr"):
        path.unlink()
    with pytest.raises(StudioInputError) as err:
        fl.evaluate_feature_lift(RandomModel(), [bare], SETTINGS)
    message = str(err.value)
    assert "\n" not in message
    assert str(bare) in message and "depth_XXXX.exr" in message and "normal_XXXX.exr" in message
    assert "test split" in message


# ------------------------------------------------------------------------------------ geometry
def test_unproject_project_roundtrip(splits):
    test = splits["test"]
    flat, uv = fl.pixel_centres(test.valid[0])
    X = fl.unproject(uv, test.depth[0].reshape(-1)[flat], test.K, test.c2w[0])
    uv2, z2 = fl.project(X, test.K, test.c2w[0])
    assert torch.allclose(uv2, uv, atol=1e-3)
    assert torch.allclose(z2, test.depth[0].reshape(-1)[flat], rtol=1e-5)


def test_points_lie_on_the_object_and_normals_face_the_camera(scene, splits):
    """Unprojected depth lands on the ground-truth mesh; camera-frame normals point to the camera."""
    import trimesh

    test = splits["test"]
    mesh = trimesh.load(scene / "gt_mesh.obj", force="mesh")
    flat, X = _world_points(test, 1)
    _, dist, _ = trimesh.proximity.closest_point(mesh, X.numpy().astype("float64"))
    pixel = float(test.depth[1][test.valid[1]].mean()) / float(test.K[0, 0])  # one pixel's footprint
    assert float(torch.tensor(dist).median()) < 0.05 * pixel
    normals = fl.camera_normals(test.normals, test.c2w)[1].reshape(-1, 3)[flat]
    _, uv = fl.pixel_centres(test.valid[1])
    rays = torch.stack([(uv[:, 0] - test.K[0, 2]) / test.K[0, 0], (uv[:, 1] - test.K[1, 2]) / test.K[1, 1]], -1)
    rays = torch.cat([rays, torch.ones(len(rays), 1)], -1)  # OpenCV: z forward
    assert ((normals * rays).sum(-1) < 0).float().mean() > 0.95


def test_projection_into_another_view_agrees_with_its_depth(splits):
    test = splits["test"]
    _, X = _world_points(test, 0)
    uv_b, vis = fl.visible_in(X, test.depth[1], test.K, test.c2w[1], fl.CORR_OCCLUSION_TOL)
    assert vis.float().mean() > 0.2  # neighbouring orbit views share much of the object
    # the surface point B sees at the nearest pixel centre is close to the projected point
    col, row = uv_b[vis, 0].floor().long(), uv_b[vis, 1].floor().long()
    centres = torch.stack([col.float() + 0.5, row.float() + 0.5], -1)
    Xb = fl.unproject(centres, test.depth[1][row, col], test.K, test.c2w[1])
    pixel = float(test.depth[1][test.valid[1]].mean()) / float(test.K[0, 0])
    assert float((Xb - X[vis]).norm(dim=-1).median()) < 1.0 * pixel


# ------------------------------------------------------------------------------------- metrics
def test_depth_metrics_are_scale_aligned():
    gt = torch.rand(2, 8, 8) + 2.0
    mask = torch.ones_like(gt, dtype=torch.bool)
    exact = fl.depth_metrics(gt / 3.0, gt, mask)
    assert exact["rmse"] < 1e-5 and exact["delta1"] == 1.0
    noisy = fl.depth_metrics(gt * torch.where(torch.rand_like(gt) < 0.5, 1.0, 2.0), gt, mask)
    assert noisy["rmse"] > 0.1 and noisy["delta1"] < 1.0


def test_normal_metrics_known_angle():
    angle = math.radians(20.0)
    gt = torch.zeros(1, 4, 4, 3)
    gt[..., 2] = 1.0
    pred = torch.zeros_like(gt)
    pred[..., 0], pred[..., 2] = math.sin(angle), math.cos(angle)
    out = fl.normal_metrics(pred, gt, torch.ones(1, 4, 4, dtype=torch.bool))
    assert abs(out["rmse_deg"] - 20.0) < 1e-3
    assert out["recall_11.25"] == 0.0 and out["recall_22.5"] == 1.0 and out["recall_30"] == 1.0


def test_mean_iou_and_angle_bins():
    gt = torch.tensor([0, 0, 1, 1, -1])
    pred = torch.tensor([0, 1, 1, 1, 0])
    assert abs(fl.mean_iou(pred, gt, 3) - (0.5 + 2 / 3) / 2) < 1e-6
    out = fl.correspondence_metrics(torch.tensor([1.0, 7.0, 30.0, 2.0]), torch.tensor([10.0, 45.0, 45.0, 120.0]))
    assert out["recall_5px"] == 0.5 and out["recall_10px"] == 0.75 and out["recall_20px"] == 0.75
    assert out["by_angle"] == {"0-30": 1.0, "30-60": 0.5, "60-90": None, "90+": 1.0}


# ------------------------------------------------------------------------------ correspondence
def _chance_recall(views: fl.SplitViews, radius: float) -> float:
    """Expected recall of a uniformly random object pixel of B: the mean fraction of B's object
    pixels within ``radius`` of an object pixel."""
    values = []
    for i in range(len(views.depth)):
        _, uv = fl.pixel_centres(views.valid[i])
        values.append(float((torch.cdist(uv, uv) < radius).float().mean()))
    return sum(values) / len(values)


def test_correspondence_oracle_is_exact_and_random_is_chance(splits):
    test = splits["test"]
    oracle, random = oracle_model(splits), RandomModel()
    results = {}
    for model in (oracle, random):
        feats = fl.extract_features(model, test.images)
        assert feats.shape == (6, model.dim, RES, RES)
        err, ang = fl.correspondence_errors(feats, test, SETTINGS, torch.Generator().manual_seed(0))
        assert len(err) == len(ang) > 1000 and 0 <= float(ang.min()) and float(ang.max()) <= 180
        results[model.name] = fl.correspondence_metrics(err, ang)
    assert results["oracle"]["recall_5px"] > 0.97
    chance = _chance_recall(test, 5.0)
    assert abs(results["random"]["recall_5px"] - chance) < 0.05, (results["random"], chance)
    bins = results["oracle"]["by_angle"]
    assert list(bins) == ["0-30", "30-60", "60-90", "90+"]
    assert all(v is None or v > 0.95 for v in bins.values()) and sum(v is not None for v in bins.values()) >= 2


# ----------------------------------------------------------------------------- whole protocol
def test_protocol_oracle_beats_random(scene):
    splits = {s: fl.load_split(scene, s, RES) for s in ("train", "test")}
    lines: list[str] = []
    good = fl.evaluate_feature_lift(oracle_model(splits, geometry=True), [scene], SETTINGS, progress=lines.append)
    bad = fl.evaluate_feature_lift(RandomModel(), [scene], SETTINGS)
    keys = [*fl.METRIC_KEYS, "corr_recall_10px_by_angle", "n_scenes", "n_test_views", "settings"]
    assert list(good) == keys and list(bad) == keys
    json.dumps(good)
    assert good["n_scenes"] == 1 and good["n_test_views"] == 6
    assert good["settings"] == bad["settings"] == SETTINGS.as_dict()
    assert lines[-1].startswith("done (seconds:")
    assert good["depth_rmse"] < 0.5 * bad["depth_rmse"] and good["depth_delta1"] > 0.99
    assert good["normal_recall_30"] > bad["normal_recall_30"] + 0.3
    assert good["normal_rmse_deg"] < bad["normal_rmse_deg"]
    assert good["seg_miou"] > 0.6 and good["seg_miou"] > bad["seg_miou"] + 0.3  # 120 steps: under-trained
    assert good["corr_recall_5px"] > 0.97 and bad["corr_recall_20px"] < 0.8
    for key in fl.METRIC_KEYS:
        assert isinstance(good[key], float) and math.isfinite(good[key]), key


# -------------------------------------------------------------------- studio eval feature-lift
CLI_FLAGS = ["--steps", "5", "--resolution", "32", "--device", "cpu"]


def _model_file(tmp_path: Path, name: str, seed: int) -> Path:
    """A small random toy-vit written like `studio features train` writes one (not the embedded weights)."""
    from studio.features.registry import save_feature_model
    from studio.features.vit import ToyViT

    torch.manual_seed(seed)
    return save_feature_model(ToyViT({"dim": 32, "depth": 1, "heads": 2}), tmp_path / f"{name}.safetensors")


def _studio(argv: list[str]) -> None:
    from studio.cli.main import entrypoint

    entrypoint(argv)


def _one_error_line(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        _studio(argv)
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert stop.value.code == 2, err
    assert len(errors) == 1 and "Traceback" not in out + err, err
    return errors[0]


def test_cli_scene_without_aovs_is_one_error_line_and_no_output(scene, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(scene, bare)
    for path in [*(bare / "test").glob("depth_*.exr"), *(bare / "test").glob("normal_*.exr")]:
        path.unlink()
    model = _model_file(tmp_path, "student", 0)
    out = tmp_path / "metrics.json"
    base = ["eval", "feature-lift", "--data", str(bare), "--output", str(out), *CLI_FLAGS]
    error = _one_error_line([*base, "--model", str(model)], capsys)
    assert error.startswith("error: --data") and str(bare) in error and "depth_XXXX.exr" in error
    error = _one_error_line([*base, "--model", str(tmp_path / "no_such.safetensors")], capsys)
    assert "--model" in error and "no_such.safetensors" in error
    error = _one_error_line([*base, "--model", str(model), str(model)], capsys)  # two models need --compare
    assert "--compare" in error
    assert not out.exists()


def test_cli_writes_every_metric_and_prints_the_table(scene, tmp_path, capsys):
    model = _model_file(tmp_path, "student", 0)
    out = tmp_path / "metrics.json"
    _studio(["eval", "feature-lift", "--model", str(model), "--data", str(scene), "--output", str(out), *CLI_FLAGS])
    metrics = json.loads(out.read_text())
    for key in fl.METRIC_KEYS:
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["n_scenes"] == 1 and metrics["n_test_views"] == 6
    assert metrics["settings"]["steps"] == 5 and metrics["settings"]["resolution"] == 32
    printed = capsys.readouterr().out
    assert "feature-lift on 1 scene(s)" in printed and "corr_recall_10px" in printed and "seg_miou" in printed
    assert f"Wrote {out}" in printed


def test_cli_compare_writes_both_models(scene, tmp_path, capsys):
    a, b = _model_file(tmp_path, "a", 1), _model_file(tmp_path, "b", 2)
    out = tmp_path / "compare.json"
    argv = ["eval", "feature-lift", "--compare", "--model", str(a), "--model", str(b)]
    _studio([*argv, "--data", str(scene), "--output", str(out), *CLI_FLAGS])
    metrics = json.loads(out.read_text())
    assert list(metrics) == ["models"] and list(metrics["models"]) == [str(a), str(b)]
    for result in metrics["models"].values():
        assert set(fl.METRIC_KEYS) <= set(result) and result["settings"]["steps"] == 5
    assert metrics["models"][str(a)]["depth_rmse"] != metrics["models"][str(b)]["depth_rmse"]
    assert "depth_rmse" in capsys.readouterr().out
