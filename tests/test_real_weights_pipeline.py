"""The real-weight path end to end on tiny random snapshots of every pretrained prior kind.

``ns-train dreamcraft3d`` goes through all three stages with Zero123 / Stable Zero123 as the
novel-view prior, DeepFloyd IF / Stable Diffusion as the text prior (view-dependent prompts) and a
DPT depth model making the depth label; ``ns-train sds`` runs VSD on Stable Diffusion. The
snapshots are built offline in the released layouts (``tiny_snapshots``) and loaded through the
same adapters and registry as real weights; nothing is downloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from tiny_snapshots import make_depth_model, make_if, make_sd, make_zero123  # noqa: E402 (tests/ is on sys.path)

NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))
IMAGE = Path(__file__).resolve().parents[1] / "scenes" / "toyworld_mushroom" / "test" / "r_000.png"

pytestmark = pytest.mark.usefixtures("offline")


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("snapshots")
    return {
        "sd": make_sd(root / "sd"),
        "if": make_if(root / "if"),
        "zero123": make_zero123(root / "zero123"),
        "depth": make_depth_model(root / "dpt"),
    }


def _ns_train(*args: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [NS_TRAIN, *args, "--output-dir", str(out), "--vis", "tensorboard"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.parametrize(
    "nvs,text",
    [("zero123", "if"), ("stable-zero123", "sd")],
    ids=["zero123+if", "stable-zero123+sd"],
)
def test_dreamcraft3d_all_stages_with_pretrained_priors(snapshots, tmp_path: Path, nvs: str, text: str):
    """Coarse -> geometry -> BSD texture with diffusers priors writes finite checkpoints and the
    textured mesh; the frozen pretrained weights stay out of the checkpoint."""
    import trimesh

    nvs_prior = f"stable-zero123:{snapshots['zero123']}" if nvs == "stable-zero123" else str(snapshots["zero123"])
    result = _ns_train(
        "dreamcraft3d",
        "--data",
        str(IMAGE),
        "--prompt",
        "a red glossy torus",
        "--pipeline.model.nvs-prior",
        nvs_prior,
        "--pipeline.model.text-prior",
        str(snapshots[text]),
        "--pipeline.model.texture-prior",  # the released texture stage: BSD on SD with the prompt
        "text",
        "--pipeline.model.texture-text-prior",
        str(snapshots["sd"]),
        "--pipeline.datamanager.depth-model",
        str(snapshots["depth"]),
        "--pipeline.model.stage-iters",
        "100",
        "4",
        "4",
        "--pipeline.model.bootstrap-every",
        "2",
        "--pipeline.model.finetune-steps",
        "1",
        "--pipeline.model.bootstrap-views",
        "2",
        "--pipeline.model.mesh-resolution",
        "32",
        "--pipeline.model.texture-size",
        "32",
        out=tmp_path / "runs",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = next((tmp_path / "runs").glob("*/dreamcraft3d/*"))
    scene = trimesh.load(run / "export" / "mesh.glb")
    mesh = next(iter(scene.geometry.values()))
    assert len(mesh.faces) > 0 and mesh.visual.material.baseColorTexture is not None
    ckpt = max((run / "nerfstudio_models").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["pipeline"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    prior_keys = [k for k in state if "guidance" in k]
    assert prior_keys and all("lora" in k or "camera" in k or "class_embedding" in k for k in prior_keys), prior_keys[
        :5
    ]
    assert not any("text_encoder" in k or "image_encoder" in k or ".vae." in k for k in state)


@pytest.mark.parametrize("guidance", ["vsd", "perp-neg"])
def test_sds_with_stable_diffusion(snapshots, tmp_path: Path, guidance: str):
    """VSD on a Stable Diffusion snapshot saves only the LoRA fake score (+ camera MLP); SDS with
    Perp-Neg saves nothing of the prior."""
    extra = ["--pipeline.model.guidance", "vsd"] if guidance == "vsd" else ["--pipeline.model.perp-neg", "True"]
    result = _ns_train(
        "sds",
        "--prompt",
        "a red glossy torus",
        "--pipeline.model.prior",
        str(snapshots["sd"]),
        *extra,
        "--max-num-iterations",
        "4",
        out=tmp_path / "runs",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ckpt = next((tmp_path / "runs").glob("*/sds/*/nerfstudio_models/*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["pipeline"]
    prior_keys = [k for k in state if "guidance" in k]
    if guidance == "vsd":
        assert prior_keys and all("lora" in k or "class_embedding" in k for k in prior_keys), prior_keys[:5]
    else:
        assert prior_keys == []


def test_prompts_embedded_then_text_encoder_released(snapshots):
    """After ``embed_prompts`` the text encoder is gone, the embedded prompts (and the null
    condition) still work, and a prompt that was not embedded is refused."""
    from studio.models.generation import GenerationModel
    from studio.priors import load_prior

    prior = load_prior(str(snapshots["if"]))
    conds = GenerationModel.embed_prompts(prior, ["a red torus, front view", "a red torus, back view", ""])
    assert prior.text_encoder is None and set(conds) == {"a red torus, front view", "a red torus, back view", ""}
    front, back = (conds[p].tensors["text"] for p in ("a red torus, front view", "a red torus, back view"))
    assert not torch.allclose(front, back)
    assert torch.equal(prior.unconditional(conds[""]).tensors["text"], conds[""].tensors["text"])
    with pytest.raises(ValueError, match="released"):
        prior.condition(text="a blue box")


def test_prior_spec_with_folder_picks_the_adapter(snapshots):
    """``stable-zero123:<folder>`` reads a Zero123-layout folder with Stable Zero123's pose; a plain
    folder is Zero123; a missing folder or a toy name with a folder is one clear error."""
    from studio.io.errors import StudioInputError
    from studio.priors import check_prior, load_prior

    folder = snapshots["zero123"]
    assert load_prior(str(folder)).pose_variant == "zero123"
    stable = load_prior(f"stable-zero123:{folder}", dtype="fp32")
    assert stable.pose_variant == "stable-zero123" and stable.unet.dtype == torch.float32
    check_prior(f"stable-zero123:{folder}")
    with pytest.raises(StudioInputError, match="does not exist"):
        check_prior("stable-zero123:/no/such/folder")
    with pytest.raises(StudioInputError, match="only the pretrained priors"):
        check_prior(f"toy-nvs:{folder}")


def test_depth_label_from_a_local_depth_model(snapshots):
    """The label is [H,W] in [0,1] inside the mask and 0 outside; 'disparity' is the reverse of
    'depth' (so Pearson against rendered depth keeps its sign)."""
    from studio.data.depth_estimation import DepthEstimator

    g = np.random.default_rng(0)
    rgb = g.random((40, 40, 3)).astype(np.float32)
    mask = np.zeros((40, 40), np.float32)
    mask[8:32, 10:30] = 1.0
    disparity = DepthEstimator(snapshots["depth"], output="disparity")(rgb, mask)
    depth = DepthEstimator(snapshots["depth"], output="depth")(rgb, mask)
    inside = mask > 0.5
    assert disparity.shape == (40, 40) and (disparity[~inside] == 0).all()
    assert disparity[inside].min() == 0.0 and disparity[inside].max() == pytest.approx(1.0)
    assert np.allclose(disparity[inside], 1.0 - depth[inside], atol=1e-5)
