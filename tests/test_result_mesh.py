"""A mesh-stage run's final mesh (``studio.export.result_mesh``): ``studio export mesh --load-config``
of a dreamcraft3d run after its texture stage (textured .glb / .obj, ``--texture-size``), after its
geometry stage (vertex colours), after its coarse stage (extraction from the Gaussians); the run's
own ``export/mesh.glb`` is the same file; ``studio render`` of the exported meshes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import trimesh

from studio.cli.main import entrypoint
from studio.export.result_mesh import resize_texture, save_result_mesh, state_mesh
from studio.io.errors import StudioInputError
from studio.io.runs import latest_checkpoint, load_checkpoint
from studio.mesh.textured import TexturedMesh

NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))
IMAGE = Path(__file__).resolve().parents[1] / "scenes" / "toyworld_mushroom" / "test" / "r_000.png"
TEXTURE = 32
GEOMETRY_SAVE = 122
"""Coarse steps 0-119, geometry 120-123, texture 124-127: the checkpoint of step 122 is geometry-stage."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """config.yml of one tiny dreamcraft3d run (reference losses only, a random toy-nvs prior, SDS
    texture stage) after each stage: ``texture`` (the finished run), ``geometry`` (a copy holding
    only its step-122 checkpoint) and ``coarse`` (a copy whose checkpoint has the mesh tensors
    emptied, as before the geometry stage)."""
    from studio.priors.toy import build_toy_prior, save_toy_prior

    tmp = tmp_path_factory.mktemp("dreamcraft3d")
    nvs = build_toy_prior("toy-nvs", {"arch": {"channels": [16, 32, 32], "n_res": 1, "heads": 2, "ctx_dim": 32}})
    args = [
        NS_TRAIN,
        "dreamcraft3d",
        "--data",
        str(IMAGE),
        "--pipeline.model.nvs-prior",
        str(save_toy_prior(nvs, tmp / "nvs.safetensors")),
        "--pipeline.model.nvs-sds-weight",
        "0",
        "--pipeline.model.texture-guidance",
        "sds",
        "--pipeline.model.stage-iters",
        "120",
        "4",
        "4",
        "--pipeline.model.mesh-resolution",
        "24",
        "--pipeline.model.geometry-representation",  # the tiny preset edits vertices; DMTet is the default
        "dmtet",
        "--pipeline.model.texture-size",
        str(TEXTURE),
        "--pipeline.datamanager.resolution",
        "32",
        "--steps-per-save",
        str(GEOMETRY_SAVE),
        "--save-only-latest-checkpoint",
        "False",
        "--output-dir",
        str(tmp / "runs"),
        "--vis",
        "tensorboard",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    texture = next((tmp / "runs").glob("*/dreamcraft3d/*/config.yml"))
    geometry = _copy_run(texture, tmp / "geometry", lambda ckpt: ckpt.name == f"step-{GEOMETRY_SAVE:09d}.ckpt")
    coarse = _copy_run(geometry, tmp / "coarse", lambda ckpt: True)
    ckpt_path = latest_checkpoint(coarse)
    ckpt = load_checkpoint(ckpt_path)
    for key, value in ckpt["pipeline"].items():
        if key.startswith(("_model.mesh.", "_model.mesh_", "_model.dmtet.")):
            ckpt["pipeline"][key] = value[:0]
    torch.save(ckpt, ckpt_path)
    return {"texture": texture, "geometry": geometry, "coarse": coarse}


def _copy_run(config: Path, folder: Path, keep) -> Path:
    """A copy of the run of ``config`` in ``folder`` with only the checkpoints that ``keep``."""
    shutil.copytree(config.parent, folder, ignore=lambda d, names: [n for n in names if n == "nerfstudio_models"])
    (folder / "nerfstudio_models").mkdir()
    for ckpt in sorted((config.parent / "nerfstudio_models").glob("step-*.ckpt")):
        if keep(ckpt):
            shutil.copy(ckpt, folder / "nerfstudio_models" / ckpt.name)
    assert any((folder / "nerfstudio_models").iterdir())
    return folder / "config.yml"


def _state(config: Path) -> dict:
    return load_checkpoint(latest_checkpoint(config))["pipeline"]


def _export(config: Path, output: Path, *extra: str) -> None:
    entrypoint(["export", "mesh", "--load-config", str(config), "--output", str(output), *extra])


def _glb_mesh(path: Path) -> trimesh.Trimesh:
    scene = trimesh.load(path)
    assert len(scene.geometry) == 1
    return next(iter(scene.geometry.values()))


def _texture_array(material) -> np.ndarray:
    """The texture of a loaded trimesh material as uint8 [T,T,3] in ``studio.mesh.uv`` row order."""
    image = material.baseColorTexture if hasattr(material, "baseColorTexture") else material.image
    return np.asarray(image.convert("RGB"))[::-1]


def _as_uint8(texture: torch.Tensor) -> np.ndarray:
    return (texture.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def test_texture_stage_glb_is_the_models_mesh_and_the_runs_export(runs, tmp_path):
    config = runs["texture"]
    state = _state(config)
    out = tmp_path / "mesh.glb"
    _export(config, out)
    mesh = _glb_mesh(out)
    assert np.array_equal(mesh.vertices, state["_model.mesh.mesh_verts"].numpy())
    assert np.array_equal(mesh.faces, state["_model.mesh_faces"].numpy())
    assert np.allclose(mesh.visual.uv, state["_model.mesh_uv"].numpy(), atol=1e-6)
    assert np.array_equal(_texture_array(mesh.visual.material), _as_uint8(state["_model.mesh.texture"]))
    # the run's own export is written by the same writer from the same tensors
    assert out.read_bytes() == (config.parent / "export" / "mesh.glb").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.glb"]  # no temporary left


def test_texture_size_resamples_and_obj_reloads_with_its_texture(runs, tmp_path):
    config = runs["texture"]
    state = _state(config)
    out = tmp_path / "result.obj"
    _export(config, out, "--texture-size", "20")  # not a divisor of 32: area differs from bilinear
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.mtl", "result.obj", "result.png"]
    assert "mtllib result.mtl" in out.read_text() and "map_Kd result.png" in (tmp_path / "result.mtl").read_text()
    mesh = trimesh.load(out, force="mesh", process=False)
    texture = state["_model.mesh.texture"].clamp(0, 1)
    expected = F.adaptive_avg_pool2d(texture.permute(2, 0, 1)[None], 20)[0].permute(1, 2, 0)
    assert np.array_equal(_texture_array(mesh.visual.material), _as_uint8(expected))
    assert np.allclose(mesh.vertices, state["_model.mesh.mesh_verts"].numpy(), atol=1e-6)
    assert np.array_equal(mesh.faces, state["_model.mesh_faces"].numpy())
    # enlarged (bilinear): the mean colour is kept
    big = tmp_path / "big.glb"
    _export(config, big, "--texture-size", str(2 * TEXTURE))
    up = _texture_array(_glb_mesh(big).visual.material)
    assert up.shape == (2 * TEXTURE, 2 * TEXTURE, 3)
    assert np.abs(up.reshape(-1, 3).mean(0) - _as_uint8(texture).reshape(-1, 3).mean(0)).max() < 2.0


def test_textured_mesh_to_ply_is_refused(runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _export(runs["texture"], tmp_path / "mesh.ply")
    assert exit_info.value.code == 2
    assert "a .ply holds no texture" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", ["ply", "glb"])
def test_geometry_stage_writes_its_vertex_coloured_mesh(runs, tmp_path, suffix, capsys):
    """In the (DMTet) geometry stage the export is the DMTet marched at the checkpoint's signed
    distance, deformation and grid colours."""
    from studio.mesh.dmtet import deformable_surface, tet_grid

    config = runs["geometry"]
    state = _state(config)
    assert state["_model.mesh.texture"].shape[0] == 0 and state["_model.dmtet.dmtet_sdf"].shape[0] > 0
    verts, faces, colors = deformable_surface(
        tet_grid(*state["_model.dmtet_box"], int(state["_model.dmtet_resolution"])),
        *(state[f"_model.dmtet.dmtet_{k}"].float() for k in ("sdf", "deform")),
        state["_model.dmtet.dmtet_color"].float().clamp(0, 1),
    )
    assert len(faces) > 100
    out = tmp_path / f"mesh.{suffix}"
    _export(config, out)
    mesh = trimesh.load(out, force="mesh", process=False)
    assert np.allclose(mesh.vertices, verts.numpy(), atol=1e-6)
    assert np.array_equal(mesh.faces, faces.numpy())
    assert np.array_equal(mesh.visual.vertex_colors[:, :3], _as_uint8(colors))
    with pytest.raises(SystemExit):
        _export(config, tmp_path / "other.glb", "--texture-size", "64")
    assert "textured mesh only" in capsys.readouterr().err


def test_coarse_stage_falls_back_to_extraction(runs, tmp_path, capsys):
    out = tmp_path / "mesh.ply"
    _export(runs["coarse"], out, "--resolution", "24", "--n-views", "8", "--image-size", "32", "--method", "density")
    assert "the run's final mesh" not in capsys.readouterr().out
    assert len(trimesh.load(out, force="mesh").faces) > 0
    with pytest.raises(SystemExit):
        _export(runs["coarse"], tmp_path / "x.glb", "--texture-size", "64")
    assert "needs a run with a textured mesh" in capsys.readouterr().err
    assert state_mesh(_state(runs["coarse"]), prefix="_model.") is None


@pytest.mark.parametrize("suffix", ["glb", "obj"])
def test_render_exported_mesh_shows_its_texture(runs, tmp_path, suffix):
    mesh_path = tmp_path / f"mesh.{suffix}"
    _export(runs["texture"], mesh_path)
    out = tmp_path / "sheet.png"
    entrypoint(["render", str(mesh_path), "--output", str(out), "--frames", "4", "--size", "48"])
    frames = iio.imread(out).reshape(2, 48, 2, 48, 3).transpose(0, 2, 1, 3, 4).reshape(4, 48, 48, 3)
    obj = (frames < 250).any(-1)  # not the white background
    assert all(0.1 < m.mean() < 0.9 for m in obj)
    # the texture's colours (Lambert shading scales all channels alike): the object's mean
    # chromaticity is the texture's, not the grey of an untextured mesh (0.1 away here)
    texture = _state(runs["texture"])["_model.mesh.texture"].clamp(0, 1).reshape(-1, 3).mean(0).numpy()
    seen = frames[obj].mean(0)
    assert np.abs(seen / seen.sum() - texture / texture.sum()).max() < 0.05


def test_resize_texture_modes():
    tex = torch.rand(8, 8, 3)
    assert resize_texture(tex, 8) is tex
    assert torch.allclose(
        resize_texture(tex, 3), F.adaptive_avg_pool2d(tex.permute(2, 0, 1)[None], 3)[0].permute(1, 2, 0)
    )
    up = resize_texture(tex, 16)
    assert up.shape == (16, 16, 3) and up.min() >= 0 and up.max() <= 1


def test_save_result_mesh_obj_with_spaces_and_no_partial_files(tmp_path):
    mesh = TexturedMesh(
        torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        torch.tensor([[0, 1, 2]]),
        torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]),
        torch.full((4, 4, 3), 0.5),
    )
    save_result_mesh(tmp_path / "my mesh.obj", mesh)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my mesh.obj", "my_mesh.mtl", "my_mesh.png"]
    loaded = trimesh.load(tmp_path / "my mesh.obj", force="mesh", process=False)
    assert np.asarray(loaded.visual.material.image).shape[:2] == (4, 4)
    with pytest.raises(StudioInputError, match="holds no texture"):
        save_result_mesh(tmp_path / "x.ply", mesh)
    assert not (tmp_path / "x.ply").exists()
