"""Sparse3D's multiview-consistent prior on a Zero123 snapshot (``zero123-epipolar``): the epipolar
controller as a diffusers ControlNet, on a tiny random Zero123 built offline (``tiny_snapshots``)."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from tiny_snapshots import make_zero123  # noqa: E402 (tests/ is on sys.path)

from studio.cameras.convert import intrinsics_from_fov  # noqa: E402
from studio.cameras.paths import look_at  # noqa: E402
from studio.io.errors import StudioInputError  # noqa: E402
from studio.priors import load_prior  # noqa: E402
from studio.priors.base import Condition  # noqa: E402
from studio.priors.diffusers import StableZero123EpipolarPrior, Zero123EpipolarPrior, zero123_pose  # noqa: E402

pytestmark = pytest.mark.usefixtures("offline")

SIZE = 32  # pixels of the input views (the tiny Zero123 runs at 16 px, latents 8 x 8)
INPUTS = {2: ([10.0, 15.0], [0.0, 180.0]), 3: ([10.0, 15.0, 5.0], [0.0, 180.0, 270.0])}  # elevation, azimuth
TARGETS = ([20.0, 0.0], [40.0, 200.0])  # elevations, azimuths; nearest input views: 0 and 1
RADII = [2.0, 2.5, 1.8]


@pytest.fixture(scope="module")
def z123_dir(tmp_path_factory) -> Path:
    return make_zero123(tmp_path_factory.mktemp("zero123"))


def _orbit(elevations, azimuths, radii) -> torch.Tensor:
    """[N,4,4] OpenCV world-to-camera matrices at (elevation, azimuth (degrees), radius) about the
    origin, +Z up, azimuth from +X towards +Y."""
    mats = []
    for el, az, r in zip(elevations, azimuths, radii):
        el, az = math.radians(el), math.radians(az)
        eye = r * torch.tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        mats.append(look_at(eye, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])))
    return torch.stack(mats)


def _scene(k: int, seed: int = 0):
    """(views [K,3,S,S], view mats [K,4,4], K [3,3], target mats [2,4,4])."""
    els, azs = INPUTS[k]
    views = torch.rand(k, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    return views, _orbit(els, azs, RADII[:k]), intrinsics_from_fov(40.0, SIZE, SIZE), _orbit(*TARGETS, [2.2, 2.2])


def _perturb_zero_convs(prior: Zero123EpipolarPrior) -> None:
    """Make the controller act: its zero-initialised convolutions get random weights."""
    cn = prior.controlnet
    convs = [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for conv in convs:
            conv.weight.copy_(0.1 * torch.randn(conv.weight.shape, generator=gen))


def _cfg_batch(prior, cond: Condition):
    """(x_t [4,4,8,8], t [4], condition) of a CFG call: 2 conditional rows, then their null rows."""
    x = torch.randn(2, *prior.latent_shape, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([700, 250])
    both = Condition.cat([cond, prior.unconditional(cond)], [2, 2])
    return torch.cat([x, x]), torch.cat([t, t]), both


@pytest.mark.parametrize(
    "name,base,k", [("zero123-epipolar", "zero123", 2), ("stable-zero123-epipolar", "stable-zero123", 3)]
)
def test_fresh_controller_is_exactly_zero123(z123_dir, caplog, name, base, k):
    """Without controller files the prior is Zero123 on the nearest input view with the relative
    pose of its variant (a one-line warning says so); conditional and CFG null rows alike."""
    with caplog.at_level(logging.WARNING):
        prior = load_prior(f"{name}:{z123_dir}")
    assert "exactly Zero123" in caplog.text and "\n" not in caplog.records[-1].getMessage()
    plain = load_prior(f"{base}:{z123_dir}")
    assert isinstance(prior, Zero123EpipolarPrior) and prior.pose_variant == plain.pose_variant
    views, mats, K, targets = _scene(k)
    cond = prior.condition_views(views, mats, K, targets, K)
    V = prior.arch["view_size"]
    shapes = {key: tuple(v.shape) for key, v in cond.tensors.items()}
    assert shapes["views"] == (2, k, 3, V, V) and shapes["view_mats"] == (2, k, 4, 4)
    assert shapes["view_Ks"] == (2, k, 3, 3) and shapes["near_far"] == (2, 2) and shapes["clip"] == (2, 1, 32)
    # nearest input views: 0 for the first target, 1 for the second
    els, azs = INPUTS[k]
    pose = zero123_pose(TARGETS[0], TARGETS[1], 2.2, [els[0], els[1]], [azs[0], azs[1]], RADII[:2], variant=base)
    ref = plain.condition(image=views[[0, 1]], pose=pose)
    x, t, both = _cfg_batch(prior, cond)
    expected = Condition.cat([ref, plain.unconditional(ref)], [2, 2])
    with torch.no_grad():
        out, want = prior.predict(x, t, both), plain.predict(x, t, expected)
    assert out.shape == (4, *prior.latent_shape)
    assert torch.allclose(out, want, atol=1e-5, rtol=0.0)


def test_trained_controller_acts_on_conditional_rows_only(z123_dir):
    """With non-zero zero-convolutions the conditional rows change and read every input view (not
    only Zero123's reference); the CFG null rows and ``conditioning_scale = 0`` stay Zero123."""
    prior = load_prior(f"zero123-epipolar:{z123_dir}")
    views, mats, K, targets = _scene(3)
    cond = prior.condition_views(views, mats, K, targets, K)
    x, t, both = _cfg_batch(prior, cond)
    other = views.clone()
    other[2] = 1.0 - other[2]  # the view neither target takes as its reference
    cond_other = prior.condition_views(other, mats, K, targets, K)
    _, _, both_other = _cfg_batch(prior, cond_other)
    with torch.no_grad():
        before = prior.predict(x, t, both)
        assert torch.equal(prior.predict(x, t, both_other), before)  # Zero123 reads the reference only
        _perturb_zero_convs(prior)
        after = prior.predict(x, t, both)
        after_other = prior.predict(x, t, both_other)
        prior.conditioning_scale = 0.0
        off = prior.predict(x, t, both)
    assert (after[:2] - before[:2]).abs().amax() > 1e-3
    assert torch.equal(after[2:], before[2:])
    assert (after_other[:2] - after[:2]).abs().amax() > 1e-4  # the epipolar path sees view 2
    assert torch.equal(off, before)


def test_save_controller_and_reload(z123_dir, tmp_path, caplog):
    """A trained controller saved into a snapshot loads back (by name or as a plain folder) with
    the same predictions; ``trainable_parameters`` are exactly the controller's."""
    folder = shutil.copytree(z123_dir, tmp_path / "snapshot")
    prior = load_prior(f"zero123-epipolar:{folder}")
    trainable = {id(p) for p in prior.trainable_parameters()}
    controller = {id(p) for m in (prior.epipolar, prior.controlnet) for p in m.parameters()}
    assert trainable == controller and not trainable & {id(p) for p in prior.unet.parameters()}
    _perturb_zero_convs(prior)
    with torch.no_grad():
        for p in prior.epipolar.parameters():
            p.add_(0.01)
    prior.save_controller(folder)
    prior.save_controller(folder)  # replaces the previous files
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
    views, mats, K, targets = _scene(2)
    x, t, both = _cfg_batch(prior, prior.condition_views(views, mats, K, targets, K))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = load_prior(f"zero123-epipolar:{folder}")
        by_folder = load_prior(str(folder))
    assert "exactly Zero123" not in caplog.text and isinstance(by_folder, Zero123EpipolarPrior)
    with torch.no_grad():
        want = prior.predict(x, t, both)
        for loaded in (again, by_folder):
            got = loaded.predict(x, t, _cfg_batch(loaded, loaded.condition_views(views, mats, K, targets, K))[2])
            assert torch.allclose(got, want, atol=1e-6, rtol=0.0)
    assert not torch.allclose(want[:2], want[2:])  # the saved controller acts


def test_bad_folders_are_one_line_errors(z123_dir, tmp_path):
    no_unet = shutil.copytree(z123_dir, tmp_path / "no_unet")
    shutil.rmtree(no_unet / "unet")
    with pytest.raises(StudioInputError, match="unet") as err:
        load_prior(f"zero123-epipolar:{no_unet}")
    assert "\n" not in str(err.value)
    half = shutil.copytree(z123_dir, tmp_path / "half")
    StableZero123EpipolarPrior(half).controlnet.save_pretrained(half / "controlnet")
    with pytest.raises(StudioInputError, match="only one of") as err:
        load_prior(f"zero123-epipolar:{half}")
    assert "\n" not in str(err.value)
