"""studio.lift: pixel-aligned Gaussians, unprojection, feature lifting, the plane-sweep cost volume,
the MVSplat-style predictor, ToyWorld multi-view data (training split only) and the training loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from studio.cameras import look_at
from studio.lift import (
    GaussianPredictor,
    PixelGaussians,
    PredictorConfig,
    gaussians_from_depth,
    lift_features,
    load_predictor,
    render,
    render_features,
)
from studio.lift.cost_volume import build_cost_volume, depth_candidates, scale_intrinsics

TINY = PredictorConfig(stem_dim=8, feat_dim=16, attn_heads=2, num_depths=16, unet_dim=8, head_dim=8)


def _K(f: float, W: int, H: int) -> torch.Tensor:
    return torch.tensor([[f, 0.0, W / 2.0], [0.0, f, H / 2.0], [0.0, 0.0, 1.0]])


def _smooth(shape, generator, lo=0.0, hi=1.0, cells=4):
    """Smooth random field [..., H, W] (bicubic upsampling of a coarse grid), in [lo, hi]."""
    *lead, H, W = shape
    coarse = torch.rand(int(np.prod(lead or [1])), 1, cells, cells, generator=generator)
    up = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False).clamp(0, 1)
    return (lo + (hi - lo) * up).reshape(shape)


def _two_cameras(B: int = 1, baseline: float = 0.4, dist: float = 3.0):
    """Two cameras at z = -dist looking along +z (image x = world x, image y = world y), the second
    shifted by ``baseline`` along x: [B,2,4,4]."""
    up = torch.tensor([0.0, -1.0, 0.0])
    vms = [look_at(torch.tensor([dx, 0.0, -dist]), torch.tensor([dx, 0.0, 1.0 - dist]), up) for dx in (0.0, baseline)]
    return torch.stack(vms)[None].expand(B, 2, 4, 4).contiguous()


# ---------------------------------------------------------------------------------------------
# PixelGaussians: shapes, pixel order, unprojection, rendering round trips
# ---------------------------------------------------------------------------------------------


def test_pixel_order_and_unprojection():
    g0 = torch.Generator().manual_seed(0)
    B, V, H, W = 2, 2, 6, 8
    depth = 2.0 + torch.rand(B, V, H, W, generator=g0)
    colors = torch.rand(B, V, 5, H, W, generator=g0)
    viewmats = _two_cameras(B)
    Ks = _K(10.0, W, H).expand(B, V, 3, 3)
    g = gaussians_from_depth(depth, colors, viewmats, Ks).validate()
    assert isinstance(g, PixelGaussians)
    N = V * H * W
    assert g.means.shape == (B, N, 3) and g.quats.shape == (B, N, 4) and g.scales.shape == (B, N, 3)
    assert g.opacities.shape == (B, N) and g.colors.shape == (B, N, 5) and g.depth.shape == (B, V, H, W)
    for b, v, y, x in [(0, 0, 0, 0), (1, 1, 5, 7), (0, 1, 2, 3), (1, 0, 4, 1)]:
        i = v * H * W + y * W + x
        assert g.pixel_index(v, y, x) == i
        assert torch.equal(g.colors[b, i], colors[b, v, :, y, x])
        # the Gaussian of pixel (v, y, x) sits on that pixel's centre ray at view-space z = depth
        p = viewmats[b, v] @ torch.cat([g.means[b, i], torch.ones(1)])
        assert p[2] == pytest.approx(float(depth[b, v, y, x]), rel=1e-5)
        uv = (Ks[b, v] @ p[:3]) / p[2]
        assert uv[0] == pytest.approx(x + 0.5, abs=1e-4) and uv[1] == pytest.approx(y + 0.5, abs=1e-4)
    assert torch.equal(g.per_view(g.colors)[1, 1, 2, 3], colors[1, 1, :, 2, 3])
    assert torch.allclose(g.quats.norm(dim=-1), torch.ones(B, N), atol=1e-5)
    one = g.views([1]).validate()  # view 1's Gaussians alone keep their pixel order
    assert one.n_views == 1 and torch.equal(one.means, g.means[:, H * W :]) and torch.equal(one.depth, depth[:, 1:])


def test_quaternion_helpers():
    from studio.gaussians.rotation import quat_to_rotmat
    from studio.lift.gaussians import quat_multiply, rotmat_to_quat

    gen = torch.Generator().manual_seed(4)
    a = F.normalize(torch.randn(64, 4, generator=gen), dim=-1)
    b = F.normalize(torch.randn(64, 4, generator=gen), dim=-1)
    assert torch.allclose(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b), atol=1e-5)
    R = quat_to_rotmat(a)
    q = rotmat_to_quat(R)
    assert torch.allclose(quat_to_rotmat(q), R, atol=1e-5) and (q[:, 0] >= 0).all()


def test_depth_gaussians_reproduce_the_input_view():
    """Gaussians built from a known depth map and the image itself, rendered at the same camera,
    give back the image (small per-pixel scales), and the depth map."""
    gen = torch.Generator().manual_seed(1)
    H = W = 32
    depth = _smooth((1, 1, H, W), gen, 2.5, 3.5)
    image = _smooth((1, 1, 3, H, W), gen, cells=8)
    viewmats = _two_cameras()[:, :1]
    Ks = _K(40.0, W, H).expand(1, 1, 3, 3)
    g = gaussians_from_depth(depth, image, viewmats, Ks, scale=0.3, opacity=0.99)
    out = render(g, viewmats, Ks, W, H, background=torch.ones(3))  # DEFAULT_EPS2D dilation
    mask = out.alpha[0, 0, ..., 0] > 0.5
    assert mask.float().mean() > 0.9
    err = ((out.color[0, 0] - image[0, 0].permute(1, 2, 0)) ** 2).mean(-1)[mask].mean()
    psnr = -10 * math.log10(float(err))
    assert psnr > 30, psnr
    dep = out.depth[0, 0, ..., 0][mask]
    assert torch.allclose(dep, depth[0, 0][mask], rtol=0.02)


def test_lifting_round_trip_cosine():
    """Random D=16 patch features lifted from view A onto its Gaussians and rendered back at view A
    reproduce the (upsampled) input features: cosine > 0.99 where alpha > 0.5."""
    gen = torch.Generator().manual_seed(2)
    H = W = 32
    depth = _smooth((1, 2, H, W), gen, 2.5, 3.5)
    image = torch.rand(1, 2, 3, H, W, generator=gen)
    viewmats = _two_cameras()
    Ks = _K(40.0, W, H).expand(1, 2, 3, 3)
    g = gaussians_from_depth(depth, image, viewmats, Ks, scale=0.3, opacity=0.99)
    feats = torch.randn(1, 2, 16, H // 4, W // 4, generator=gen)  # teacher patch features
    lifted = lift_features(feats, g)
    assert lifted.shape == (1, 2 * H * W, 16)
    up = F.interpolate(feats[0], size=(H, W), mode="bilinear", align_corners=False)  # [V,16,H,W]
    assert torch.allclose(lifted[0, 5 * W + 7], up[0, :, 5, 7])  # view 0, pixel (5, 7)
    assert torch.allclose(lifted[0, H * W + 3 * W + 9], up[1, :, 3, 9])  # view 1, pixel (3, 9)
    for a in range(2):  # only view A's Gaussians, rendered at view A
        ga = gaussians_from_depth(depth[:, a : a + 1], image[:, a : a + 1], viewmats[:, a : a + 1], Ks[:, :1])
        fa = lift_features(feats[:, a : a + 1], ga)
        out = render_features(ga, fa, viewmats[:, a : a + 1], Ks[:, :1], W, H)
        mask = out.alpha[0, 0, ..., 0] > 0.5
        cos = F.cosine_similarity(out.color[0, 0], up[a].permute(1, 2, 0), dim=-1)[mask]
        assert mask.float().mean() > 0.9 and cos.min() > 0.99, (a, float(cos.min()))
    # lifting straight from [B,V,D,h,w] inside render_features, differentiable in the features
    feats.requires_grad_(True)
    out = render_features(g, feats, viewmats[:, :1], Ks[:, :1], W, H)
    assert out.color.shape == (1, 1, H, W, 16)
    out.color.square().sum().backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Cost volume
# ---------------------------------------------------------------------------------------------


def test_cost_volume_peaks_at_the_plane_depth():
    """A fronto-parallel textured plane at z = Z seen by two cameras (baseline along x): the cost
    volume's argmax over candidates is the candidate at Z for interior pixels."""
    h = w = 24
    f = 20.0
    near, far, D = torch.tensor([1.5]), torch.tensor([6.0]), 24
    depths = depth_candidates(near, far, D)
    m_true = 9
    Z = float(depths[0, m_true])
    disparity = 6  # whole pixels at the true depth: the warp samples view 1 exactly at pixel centres
    baseline = disparity * Z / f
    viewmats = _two_cameras(baseline=baseline, dist=0.0)  # cameras at x = 0 and x = baseline, z = 0
    Ks = _K(f, w, h).expand(1, 2, 3, 3)
    gen = torch.Generator().manual_seed(3)
    freqs = torch.rand(4, 2, generator=gen) * 4 + 1
    phase = torch.rand(4, generator=gen) * 2 * math.pi

    def texture(X, Y):  # 8 channels (cos, sin pairs: constant norm, so the dot product peaks at the match)
        arg = freqs[:, 0, None, None] * X + freqs[:, 1, None, None] * Y + phase[:, None, None]
        return torch.cat([torch.cos(arg), torch.sin(arg)])

    feats = []
    for v in range(2):
        ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        cam_x = (xs - w / 2) / f * Z  # camera-space point on the plane
        cam_y = (ys - h / 2) / f * Z
        c2w = torch.linalg.inv(viewmats[0, v])
        X = c2w[0, 0] * cam_x + c2w[0, 1] * cam_y + c2w[0, 2] * Z + c2w[0, 3]
        Y = c2w[1, 0] * cam_x + c2w[1, 1] * cam_y + c2w[1, 2] * Z + c2w[1, 3]
        feats.append(texture(X, Y))
    feats = torch.stack(feats)[None]  # [1,2,8,h,w]
    cost = build_cost_volume(feats, viewmats, Ks, depths)
    assert cost.shape == (1, 2, D, h, w)
    margin = disparity + 2  # keep away from the border the other view does not see
    arg = cost[0, 0, :, 2:-2, margin:-2].argmax(0)  # view 0 sees view 1's content shifted left
    assert (arg == m_true).float().mean() > 0.99, (arg == m_true).float().mean()
    arg1 = cost[0, 1, :, 2:-2, 2:-margin].argmax(0)
    assert (arg1 == m_true).float().mean() > 0.99, (arg1 == m_true).float().mean()
    # intrinsics on a 1/4 grid: u' = u / 4
    K4 = scale_intrinsics(Ks[0, 0], 0.25, 0.25)
    assert torch.allclose(K4, torch.tensor([[5.0, 0, 3.0], [0, 5.0, 3.0], [0, 0, 1.0]]))


# ---------------------------------------------------------------------------------------------
# The predictor
# ---------------------------------------------------------------------------------------------


def _orbit_batch(B: int, V: int, res: int):
    vms = []
    for b in range(B):
        row = []
        for v in range(V):
            a = 0.3 * v + 0.5 * b
            eye = torch.tensor([3.0 * math.cos(a), 3.0 * math.sin(a), 0.8])
            row.append(look_at(eye, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])))
        vms.append(torch.stack(row))
    Ks = _K(res / (2 * math.tan(math.radians(20))), res, res).expand(B, V, 3, 3).contiguous()
    return torch.stack(vms), Ks


@pytest.mark.parametrize("V", [2, 3])
def test_predictor_forward_and_gradients(V):
    torch.manual_seed(0)
    B, H = 2, 32
    model = GaussianPredictor(TINY)
    images = torch.rand(B, V, 3, H, H)
    viewmats, Ks = _orbit_batch(B, V, H)
    near, far = torch.full((B,), 1.5), torch.full((B,), 4.5)
    g = model(images, viewmats, Ks, near, far).validate()
    N = V * H * H
    assert g.means.shape == (B, N, 3) and g.colors.shape == (B, N, 3) and g.depth.shape == (B, V, H, H)
    for t in (g.means, g.quats, g.scales, g.opacities, g.colors, g.depth):
        assert torch.isfinite(t).all()
    assert (g.depth >= 1.5 - 1e-3).all() and (g.depth <= 4.5 + 1e-3).all()
    assert (g.opacities > 0).all() and (g.opacities < 1).all() and (g.colors >= 0).all() and (g.colors <= 1).all()
    assert (g.scales > 0).all()
    # means lie on the pixel rays at the predicted depth (pixel order)
    p = torch.einsum("ij,nj->ni", viewmats[1, V - 1, :3, :3], g.means[1, (V - 1) * H * H :]) + viewmats[1, V - 1, :3, 3]
    assert torch.allclose(p[:, 2], g.depth[1, V - 1].reshape(-1), rtol=1e-4)
    out = render(g, viewmats[:, :1], Ks[:, :1], H, H, background=torch.ones(3))
    loss = (out.color - 0.5).square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(gr is None or torch.isfinite(gr).all() for gr in grads)
    # every block receives gradient (zero-initialised output layers pass it to their inputs)
    for name in ("encoder", "attn", "refiner", "depth_refine", "gaussian_head", "opacity_head"):
        mod = getattr(model, name)
        assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in mod.parameters()), name
    assert model.last_aux["prob"].shape == (B, V, TINY.num_depths, H // 4, H // 4)


def test_predictor_rejects_bad_inputs():
    model = GaussianPredictor(TINY)
    viewmats, Ks = _orbit_batch(1, 2, 30)
    with pytest.raises(ValueError, match="multiple of 4"):
        model(torch.rand(1, 2, 3, 30, 30), viewmats, Ks, torch.ones(1), torch.full((1,), 5.0))
    with pytest.raises(ValueError, match="at least 2"):
        model(torch.rand(1, 1, 3, 32, 32), viewmats[:, :1], Ks[:, :1], torch.ones(1), torch.full((1,), 5.0))


# ---------------------------------------------------------------------------------------------
# Data and training
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data():
    from studio.lift.data import LiftDataConfig, make_data
    from studio.scenes.toyworld import splits

    cfg = LiftDataConfig(n_object=1, n_multi=1, views=3, res=32, aa=1, spp=1)
    scenes = [(splits.training_seeds(1, "object")[0], "object"), (splits.training_seeds(1, "multi")[0], "multi")]
    return cfg, make_data(cfg, scenes=scenes, workers=1)


def test_data_cameras_and_sampling(tiny_data, tmp_path):
    from studio.lift.data import LiftData

    cfg, data = tiny_data
    assert data.images.shape == (2, 3, 32, 32, 3) and data.images.dtype == np.uint8
    assert list(data.kinds) == ["object", "multi"]
    assert (data.near > 0).all() and (data.far > data.near).all()
    obj = data.depth > 0
    assert obj.any() and all((data.depth[s][obj[s]] >= data.near[s]).all() for s in range(2))
    assert all((data.depth[s][obj[s]] <= data.far[s]).all() for s in range(2))
    assert (data.images[data.alpha == 0] == 255).all()  # white background
    # cameras follow the rasterizer's convention: Gaussians unprojected from view 0's true depth
    # land on view 1's surface (rendered depth matches view 1's true depth on the object)
    s = 0
    depth = torch.from_numpy(data.depth[s : s + 1].astype(np.float32))
    depth = torch.where(depth > 0, depth, torch.full_like(depth, float(data.far[s])))
    img = torch.from_numpy(data.images[s : s + 1]).float().div(255).permute(0, 1, 4, 2, 3)
    vm, Ks = torch.from_numpy(data.viewmats[s : s + 1]), torch.from_numpy(data.Ks[s : s + 1])
    g = gaussians_from_depth(depth[:, :1], img[:, :1], vm[:, :1], Ks[:, :1], scale=0.7)
    out = render(g, vm[:, 1:2], Ks[:, 1:2], 32, 32)
    both = (data.alpha[s, 1] == 255) & (out.alpha[0, 0, ..., 0].numpy() > 0.9)
    rel = np.abs(out.depth[0, 0, ..., 0].numpy() - data.depth[s, 1].astype(np.float32))[both] / data.depth[s, 1][both]
    assert both.sum() > 30 and np.median(rel) < 0.03
    batch = data.sample([0, 1, 1], np.random.default_rng(0), n_targets=1)
    assert batch["context_images"].shape == (3, 2, 3, 32, 32) and batch["target_images"].shape == (3, 1, 3, 32, 32)
    assert batch["context_viewmats"].shape == (3, 2, 4, 4) and batch["near"].shape == (3,)
    assert torch.equal(batch["context_viewmats"][:, 0], torch.from_numpy(data.viewmats[[0, 1, 1], 0]))  # i=0, j=2
    assert torch.equal(batch["target_viewmats"][:, 0], torch.from_numpy(data.viewmats[[0, 1, 1], 1]))
    back = LiftData.load(data.save(tmp_path / "d.npz"))  # save/load round trip
    assert np.array_equal(back.images, data.images) and list(back.captions) == list(data.captions)


def test_data_refuses_heldout_seeds():
    from studio.lift.data import LiftDataConfig, make_data, render_scene
    from studio.scenes.toyworld import splits

    cfg = LiftDataConfig(n_object=1, n_multi=0, views=2, res=16, aa=1, spp=1)
    held = splits.heldout_seeds(1)[0]
    with pytest.raises(splits.HeldOutSceneError):
        make_data(cfg, scenes=[(held, "object")], workers=1)
    with pytest.raises(splits.HeldOutSceneError):
        render_scene(splits.validation_seeds(1)[0], "multi", cfg)
    assert all(k == "object" and splits.scene_split(s, k) == "train" for s, k in cfg.scenes())


def test_training_smoke_save_load_resume(tiny_data, tmp_path):
    from studio.lift.model import read_predictor_config
    from studio.lift.train import LiftTrainConfig, train_lift

    cfg_data, data = tiny_data
    out = tmp_path / "lift.safetensors"
    cfg = LiftTrainConfig(
        model=TINY,
        data=cfg_data,
        steps=3,
        batch=2,
        n_targets=1,
        warmup=1,
        ssim_weight=0.1,
        checkpoint=str(tmp_path / "state.pt"),
        checkpoint_every=2,
        log_every=1,
        output=str(out),
        device="cpu",
    )
    lines = []
    model, info = train_lift(cfg, data=data, log=lines.append)
    assert info["step"] == 3 and info["finished"] and math.isfinite(info["last"]["loss"])
    assert out.is_file() and (tmp_path / "state.pt").is_file()
    meta = read_predictor_config(out)
    assert meta["model"]["feat_dim"] == TINY.feat_dim and meta["training"]["steps"] == 3
    loaded = load_predictor(out)
    batch = data.sample([0, 1], np.random.default_rng(5), n_targets=1)
    args = (batch["context_images"], batch["context_viewmats"], batch["context_Ks"], batch["near"], batch["far"])
    with torch.no_grad():
        a, b = model(*args), loaded(*args)
    assert torch.allclose(a.means, b.means, rtol=1e-2, atol=1e-2)
    assert torch.allclose(a.colors, b.colors, atol=1e-2)
    # resuming a finished run does no more steps and keeps the weights
    model2, info2 = train_lift(cfg, data=data, resume=True, log=lines.append)
    assert info2["step"] == 3 and any("Resumed" in line for line in lines)
    for (k, p), q in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(p, q), k


@pytest.mark.slow
def test_training_runs_under_torchrun_ddp(tmp_path):
    """The same entry point runs as 2-process DDP (torchrun, gloo on CPU): one process renders the
    data and writes the weights, and the averaged gradients give other weights than one process."""
    from conftest import run_single_and_ddp
    from safetensors.torch import load_file

    args = "--steps 3 --batch 1 --n-targets 1 --warmup 1 --log-every 3 --seed 9 --workers 1".split()
    args += "--data.n-object 1 --data.n-multi 1 --data.views 3 --data.res 32 --data.aa 1 --data.spp 1".split()
    args += "--model.stem-dim 8 --model.feat-dim 16 --model.attn-heads 2 --model.num-depths 16".split()
    args += "--model.unet-dim 8 --model.head-dim 8".split()
    runs = run_single_and_ddp("studio.lift.train", args, tmp_path, timeout=600)
    for _, text in runs.values():
        assert text.count("Saved ") == 1 and text.count("Rendering ToyWorld lift data") <= 1, text[-3000:]
    a, b = load_file(str(runs["ddp"][0])), load_file(str(runs["single"][0]))
    assert a.keys() == b.keys()
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) > 0  # rank 1's batch counted
