"""``prd`` stage 2 (specular distillation): ``specular_stage paper`` raises p where the radiance
field is view-dependent; ``legacy`` adds no progress loss there."""

from __future__ import annotations

import math

import pytest
import torch
from nerfstudio.data.scene_box import SceneBox

from studio.cameras.nerfstudio import nerfstudio_cameras
from studio.gaussians.sh import eval_sh, sh_direction_std
from studio.methods.prd.model import PRDModelConfig

SIZE = 32
GRID = 16  # Gaussians per side of the square


def test_sh_direction_std_matches_sampled_directions():
    gen = torch.Generator().manual_seed(0)
    coeffs = torch.randn(5, 16, 3, generator=gen) * 0.3
    dirs = torch.nn.functional.normalize(torch.randn(100_000, 1, 3, generator=gen), dim=-1)
    for degree in (1, 3):
        sampled = eval_sh(degree, coeffs, dirs).std(dim=0)  # [5,3] over the directions
        torch.testing.assert_close(sh_direction_std(degree, coeffs), sampled, rtol=0.02, atol=1e-4)
    assert torch.equal(sh_direction_std(0, coeffs), torch.zeros(5, 3))  # the DC term alone does not vary
    # over a given set of directions: the population std of the colours seen along them
    views = torch.randn(7, 3, generator=gen)
    exact = eval_sh(3, coeffs[:, None], views).std(dim=1, unbiased=False)
    torch.testing.assert_close(sh_direction_std(3, coeffs, views), exact, rtol=1e-4, atol=1e-6)


def _flat_square_model(specular_stage: str):
    """A PRD model of GRID x GRID opaque flat splats on z = 0 in [-1, 1]^2, viewed from z = 3: the
    half x < 0 has strong degree 1-3 SH (view-dependent colour), the half x > 0 only a DC term."""
    cfg = PRDModelConfig(
        specular_stage=specular_stage,
        backend="torch",
        background_color="white",
        light_resolution=8,
        visibility_resolution=0,
        mask_band=0,
        sh_degree=3,
    )
    xs = (torch.arange(GRID) + 0.5) / GRID * 2.0 - 1.0
    gx, gy = torch.meshgrid(xs, xs, indexing="ij")
    points = torch.stack([gx.flatten(), gy.flatten(), torch.zeros(GRID * GRID)], -1)
    colors = torch.full((GRID * GRID, 3), 128, dtype=torch.uint8)
    scene_box = SceneBox(aabb=torch.tensor([[-1.5] * 3, [1.5] * 3]))
    angles = torch.arange(8) * (2 * math.pi / 8)  # training cameras on a cone above the square
    centers = torch.stack([2 * torch.cos(angles), 2 * torch.sin(angles), torch.full((8,), 3.0)], -1)
    metadata = {"camera_centers": centers}
    model = cfg.setup(scene_box=scene_box, num_train_data=8, metadata=metadata, seed_points=(points, colors))
    view_dependent = points[:, 0] < 0
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        params = model.gaussians.params
        params["scales"].copy_(torch.log(torch.tensor([1.2 / GRID, 1.2 / GRID, 1e-3])).expand_as(params["scales"]))
        params["opacities"].fill_(math.log(0.95 / 0.05))
        params["features_rest"].zero_()
        params["features_rest"][view_dependent] = torch.randn(int(view_dependent.sum()), 15, 3, generator=gen) * 0.4
    model.step = 10**6  # every SH degree active
    viewmat = torch.tensor([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 3], [0, 0, 0, 1]])
    focal = SIZE / 2 / 0.45  # the square fills most of the image
    K = torch.tensor([[focal, 0, SIZE / 2], [0, focal, SIZE / 2], [0, 0, 1]])
    camera = nerfstudio_cameras(viewmat[None], K, SIZE)
    return model, camera, view_dependent


def _specular_steps(specular_stage: str, steps: int = 20):
    """Enter stage 2 and take Adam steps on p with the stage's own render and loss; the ground
    truth is the radiance field's image (the pre-trained guidance). Returns (p [N], last losses)."""
    model, camera, view_dependent = _flat_square_model(specular_stage)
    with torch.no_grad():
        out = model.eval().render_gbuffers(camera)
        radiance = out["radiance"] * out["accumulation"] + (1.0 - out["accumulation"])
    batch = {"image": torch.cat([radiance, torch.ones(SIZE, SIZE, 1)], -1)}
    model.train()
    model.stage_index.fill_(1)
    model.stage.enter()
    progress = model.gaussians.params["progress"]
    optimizer = torch.optim.Adam([progress], lr=0.2)
    for _ in range(steps):
        losses = model.stage.get_loss_dict(model.stage.get_outputs(camera), batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    return torch.sigmoid(progress.detach())[:, 0], losses, view_dependent, model


@pytest.mark.parametrize("directions", ["train-views", "sphere"])
def test_specular_target_follows_view_dependence(directions):
    model, _, view_dependent = _flat_square_model("paper")
    model.config.view_dependence_directions = directions
    target = model.specular_progress_target()[:, 0]
    init = model.config.progress_init
    assert torch.allclose(target[~view_dependent], torch.full_like(target[~view_dependent], init))
    assert float(target[view_dependent].mean()) > 0.9  # colour std ~0.1-0.4 >> view_dependence_std[1]
    model.config.view_dependence_std = (1.0, 2.0)  # nothing counts as view-dependent
    assert torch.allclose(model.specular_progress_target(), torch.full_like(target[:, None], init))
    model.view_directions = None  # a model built without training cameras
    if directions == "train-views":
        with pytest.raises(ValueError, match="training cameras"):
            model.specular_progress_target()


@pytest.mark.parametrize("specular_stage", ["paper", "legacy"])
def test_stage2_raises_progress_where_radiance_is_view_dependent(specular_stage):
    p, losses, view_dependent, model = _specular_steps(specular_stage)
    init = model.config.progress_init
    vd, dc = float(p[view_dependent].mean()), float(p[~view_dependent].mean())
    if specular_stage == "paper":
        assert "specular_progress_loss" in losses
        # L_rgb holds p down where the (untrained) metal PBR image misses the guidance, so p
        # rises only part way in these steps; on the view-independent half it does not rise
        assert vd > 5 * init and vd > 10 * dc and dc <= init, (vd, dc)
    else:  # legacy: no progress loss; L_rgb alone does not raise p anywhere (the guidance fits already)
        assert "specular_progress_loss" not in losses
        assert float(p.max()) <= init * 1.01, (vd, dc)
