"""Sparse3D: the epipolar multiview-consistent prior (geometry, ControlNet zero-init, files) and
``ns-train sparse3d`` end to end on 3 views of a bundled ToyWorld scene."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studio.cameras.convert import intrinsics_from_fov
from studio.cameras.sampling import orbit_viewmats
from studio.priors.epipolar import (
    EpipolarNVSPrior,
    camera_centres,
    nearest_view,
    orbit_angles,
    project,
    target_rays,
)
from studio.priors.toy import ToyNVSPrior, build_toy_prior, load_toy_prior, save_toy_prior

MUSHROOM = Path(__file__).resolve().parents[1] / "scenes" / "toyworld_mushroom"
NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))
SMALL = {"channels": [16, 32, 32], "n_res": 1, "heads": 2, "ctx_dim": 32}


def _mats(elev, azim, dist=2.5) -> torch.Tensor:
    e, a = torch.tensor(elev, dtype=torch.float32), torch.tensor(azim, dtype=torch.float32)
    return orbit_viewmats(e, a, torch.full_like(e, dist))


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory) -> tuple[EpipolarNVSPrior, Path]:
    """A toy-epipolar on a small random toy-nvs base (saved, so the controller file names it)."""
    root = tmp_path_factory.mktemp("epipolar")
    torch.manual_seed(0)
    nvs = build_toy_prior("toy-nvs", {"arch": SMALL})
    with torch.no_grad():  # a random base whose zero-initialised layers are not zero (an untrained UNet outputs 0)
        for p in nvs.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0.0, 0.02)
    base = save_toy_prior(nvs, root / "nvs.safetensors")
    prior = build_toy_prior("toy-epipolar", {"base": str(base), "arch": {"dim": 16, "depths": 8, "heads": 2}})
    return prior, save_toy_prior(prior, root / "epipolar.safetensors")


def test_orbit_geometry_round_trips():
    mats = _mats([20.0, -5.0, 60.0], [0.0, 135.0, -90.0], 2.5)
    elev, azim, dist = orbit_angles(mats)
    assert torch.allclose(torch.rad2deg(elev), torch.tensor([20.0, -5.0, 60.0]), atol=1e-4)
    assert torch.allclose(torch.rad2deg(azim), torch.tensor([0.0, 135.0, -90.0]), atol=1e-4)
    assert torch.allclose(dist, torch.full((3,), 2.5), atol=1e-5)
    # the origin is seen at the image centre; a point behind the camera is invalid
    K = intrinsics_from_fov(40.0, 32, 32)[None, None].expand(1, 3, 3, 3)
    behind = 2.0 * camera_centres(mats[:1])  # beyond camera 0, on the far side from the origin
    grid, valid = project(torch.stack([torch.zeros(3), behind[0]])[None], mats[None], K, 32)
    assert torch.allclose(grid[0, :, 0], torch.zeros(3, 2), atol=1e-5) and valid[0, :, 0].all()
    assert not valid[0, 0, 1]
    assert nearest_view(mats[None].expand(2, 3, 4, 4), _mats([10.0, 50.0], [120.0, -80.0])).tolist() == [1, 2]


def test_target_rays_pass_through_the_points_they_see():
    """A point projected into the target at pixel p lies on p's ray at its view depth: the epipolar
    samples of that pixel (points at view depths in [near, far]) contain it."""
    target = _mats([25.0], [40.0])
    K = intrinsics_from_fov(40.0, 32, 32)[None]
    grid = 16
    origin, direction, plucker = target_rays(target, K, 32, grid)
    assert torch.allclose(direction.norm(dim=-1), torch.ones(1, grid * grid), atol=1e-5)
    assert torch.allclose(plucker[..., 3:], torch.cross(origin, direction, dim=-1), atol=1e-5)
    pixel = 5 * grid + 11  # row 5, column 11 of the 16 x 16 lattice
    point = origin[0, pixel] + 2.1 * direction[0, pixel]
    uv, valid = project(point[None, None], target[:, None], K[:, None], 32)
    expected = (torch.tensor([11.5, 5.5]) * 2.0) / 32.0 * 2.0 - 1.0  # lattice centre in [-1, 1]
    assert valid.all() and torch.allclose(uv[0, 0, 0], expected, atol=1e-4)


def test_controller_starts_as_the_base_and_drops_with_cfg(tiny_prior):
    prior, _ = tiny_prior
    views = torch.rand(3, 3, 32, 32)
    inputs, targets = _mats([20.0] * 3, [0.0, 120.0, 240.0]), _mats([10.0, 30.0], [50.0, 200.0])
    K = intrinsics_from_fov(40.0, 32, 32)
    cond = prior.condition_views(views, inputs, K, targets, K)
    # the base sees the nearest input view with Zero123's relative pose
    assert torch.equal(cond.tensors["ref"], prior.encode(views[[0, 2]]))
    e0, a0, r0 = orbit_angles(inputs[[0, 2]])
    e1, a1, r1 = orbit_angles(targets)
    assert torch.allclose(cond.tensors["pose"], ToyNVSPrior.relative_pose(e0, a0, r0, e1, a1, r1), atol=1e-6)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([700, 200])
    both = type(cond).cat([cond, prior.unconditional(cond)], [2, 2])
    with torch.no_grad():
        assert torch.equal(prior.predict(x, t, cond), prior.base.predict(x, t, cond))  # zero-initialised
        before = prior.predict(torch.cat([x, x]), torch.cat([t, t]), both)
        for conv in [*prior.controlnet.zero_skips, prior.controlnet.zero_mid, prior.controlnet.cond_in]:
            conv.weight.normal_(0.0, 0.05)
        after = prior.predict(torch.cat([x, x]), torch.cat([t, t]), both)
        prior.conditioning_scale = 0.0
        off = prior.predict(x, t, cond)
        prior.conditioning_scale = 1.0
    assert (after[:2] - before[:2]).abs().max() > 1e-3  # the controller acts on the conditional rows
    assert torch.equal(after[2:], before[2:])  # and not on the CFG null rows
    assert torch.equal(off, prior.base.predict(x, t, cond))


def test_file_holds_only_the_controller(tiny_prior, tmp_path: Path):
    prior, _ = tiny_prior
    path = save_toy_prior(prior, tmp_path / "e.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith("base.") for k in keys)
    loaded = load_toy_prior(path)
    assert isinstance(loaded, EpipolarNVSPrior)
    for name, value in prior.saved_state().items():
        assert torch.equal(loaded.saved_state()[name], value.half().float()), name
    assert {p.data_ptr() for p in loaded.trainable_parameters()}.isdisjoint(
        p.data_ptr() for p in loaded.base.parameters()
    )


def test_embedded_toy_epipolar_loads_offline():
    from studio.priors import load_prior
    from studio.priors.registry import LOADERS

    if not LOADERS["toy-epipolar"].weights_file.is_file():
        pytest.fail("the embedded toy-epipolar weights are missing")
    prior = load_prior("toy-epipolar")
    assert isinstance(prior, EpipolarNVSPrior) and prior.config["training"]["finished"]
    assert sum(p.abs().sum() for p in prior.controlnet.zero_mid.parameters()) > 0  # trained, not zero-init


def _three_views(root: Path, frames=(0, 13, 26)) -> Path:
    """A NeRF-synthetic folder with three training views of the bundled mushroom (and its meta.json)."""
    meta = json.loads((MUSHROOM / "transforms_train.json").read_text())
    meta["frames"] = [meta["frames"][i] for i in frames]
    (root / "train").mkdir(parents=True)
    for f in meta["frames"]:
        shutil.copy(MUSHROOM / (f["file_path"] + ".png"), root / "train")
    (root / "transforms_train.json").write_text(json.dumps(meta))
    shutil.copy(MUSHROOM / "meta.json", root / "meta.json")
    return root


def _ns_train(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [NS_TRAIN, *args, "--vis", "tensorboard"], capture_output=True, text=True, env=env, timeout=900
    )


@pytest.mark.parametrize("csds", ["reference", pytest.param("classifier", marks=pytest.mark.slow)])  # ~40 s each
def test_sparse3d_trains_from_three_views(tiny_prior, tmp_path: Path, csds: str):
    _, prior_file = tiny_prior
    data = _three_views(tmp_path / "data")
    t2i = build_toy_prior("toy-t2i", {"arch": {**SMALL, "text_dim": 32}, "vocabulary": ["a", "mushroom"]})
    t2i_file = save_toy_prior(t2i, tmp_path / "t2i.safetensors")
    result = _ns_train(
        "sparse3d",
        "--data",
        str(data),
        "--preset",
        "tiny",
        "--pipeline.model.prior",
        str(prior_file),
        "--pipeline.model.category-prior",
        str(t2i_file),
        "--pipeline.model.csds",
        csds,
        "--max-num-iterations",
        "4",
        "--output-dir",
        str(tmp_path / "runs"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ckpt = next((tmp_path / "runs").glob("*/sparse3d/*/nerfstudio_models/*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["pipeline"]
    assert not any("prior" in k or "controlnet" in k for k in state)  # frozen priors stay out of the run


def test_sparse3d_refuses_bad_inputs(tiny_prior, tmp_path: Path):
    from studio.data.sparse_views import load_input_views
    from studio.io.errors import StudioInputError

    data = _three_views(tmp_path / "data")
    (data / "meta.json").unlink()  # no category: C-SDS must be told one
    args = ["sparse3d", "--data", str(data), "--preset", "tiny", "--pipeline.model.prior", str(tiny_prior[1])]
    args += ["--pipeline.model.csds", "classifier"]
    out = _ns_train(*args, "--output-dir", str(tmp_path / "runs"))
    assert out.returncode == 2 and "error:" in out.stderr and "--category NAME" in out.stderr
    assert not (tmp_path / "runs").exists()
    one = _three_views(tmp_path / "one", frames=(0,))
    with pytest.raises(StudioInputError, match="2 to 6 posed views"):
        load_input_views(one, 32)
