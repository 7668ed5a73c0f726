"""``studio eval image-to-3d --camera default``: the weak-perspective similarity between the world a
method reconstructs in (recentred image, its default reference camera) and the dataset's world,
checked on an analytic scene rendered with the project's mesh renderer; and the ``--camera`` flag."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.cameras.convert import intrinsics_from_fov, opengl_c2w_to_viewmat
from studio.cameras.sampling import orbit_c2w
from studio.data.reference import ReferenceDataManagerConfig
from studio.data.single_image import load_reference
from studio.eval.image_to_3d import Similarity, default_camera_alignment, mesh_chamfer
from studio.mesh.render import render_mesh

GT_ORBIT = (30.0, 40.0, 2.5, 50.0)  # the dataset's reference camera: elevation, azimuth, distance, fov
W = 256  # dataset image side (pixels): fine enough that the recentring zoom adds little edge blockiness
S = 128  # recentred reference side (pixels)


def scene():
    """An asymmetric object near (not at) the origin: two boxes."""
    import trimesh

    body = trimesh.creation.box(extents=(0.5, 0.3, 0.35))
    arm = trimesh.creation.box(extents=(0.15, 0.15, 0.3))
    arm.apply_translation((0.2, 0.1, 0.3))
    mesh = trimesh.util.concatenate([body, arm])
    mesh.apply_translation((0.06, -0.04, 0.03))
    return mesh


def c2w_of(elev: float, az: float, dist: float) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3] = orbit_c2w(torch.tensor([elev]), torch.tensor([az]), torch.tensor([dist]))[0].double().numpy()
    return c2w


def focal(fov: float, size: int) -> float:
    return 0.5 * size / math.tan(0.5 * math.radians(fov))


def silhouette(mesh, c2w: np.ndarray, fov: float, size: int) -> np.ndarray:
    """[size,size] bool coverage of ``mesh`` seen by the OpenGL camera ``c2w`` (horizontal ``fov``)."""
    out = render_mesh(
        torch.from_numpy(np.asarray(mesh.vertices)).float(),
        torch.from_numpy(np.asarray(mesh.faces)).long(),
        opengl_c2w_to_viewmat(torch.from_numpy(c2w).float())[None],
        intrinsics_from_fov(fov, size, size)[None],
        size,
        size,
        backend="torch",
    )
    return out["alpha"][0, ..., 0].numpy() > 0.5


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def transformed(mesh, matrix: np.ndarray):
    out = mesh.copy()
    out.apply_transform(matrix)
    return out


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    """(GT mesh, recentred reference, method camera c2w and fov, the similarity)."""
    mesh = scene()
    elev, az, dist, fov = GT_ORBIT
    c2w_gt = c2w_of(elev, az, dist)
    mask = silhouette(mesh, c2w_gt, fov, W)
    rgba = np.zeros((W, W, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 128, mask * 255
    path = tmp_path_factory.mktemp("ref") / "ref.png"
    Image.fromarray(rgba).save(path)
    config = ReferenceDataManagerConfig()  # the method's defaults: recentring border and reference camera
    ref = load_reference(path, S, config.border_ratio)
    m_elev, m_az, m_dist, m_fov = config.reference_view
    c2w_m = c2w_of(m_elev, m_az, m_dist)
    sim = default_camera_alignment(c2w_gt, focal(fov, W), (W / 2, W / 2), c2w_m, focal(m_fov, S), ref.recentring)
    return mesh, ref, c2w_gt, c2w_m, m_fov, sim


def test_similarity_maps_the_default_camera_onto_the_reference_camera(aligned):
    mesh, ref, c2w_gt, c2w_m, m_fov, sim = aligned
    assert np.allclose(sim.rotation @ sim.rotation.T, np.eye(3), atol=1e-6) and np.linalg.det(sim.rotation) > 0
    mapped = sim.matrix() @ c2w_m  # the method's camera in the dataset's world (axes scaled by sim.scale)
    assert np.allclose(mapped[:3, :3] / sim.scale, c2w_gt[:3, :3], atol=1e-6)  # same axes: same view direction
    # camera_in_method inverts it: the dataset camera through the inverse similarity
    back = sim.camera_in_method(c2w_gt)
    assert np.allclose(back[:3, :3], c2w_m[:3, :3], atol=1e-6)
    assert np.allclose(np.cross(back[:3, 2], back[:3, 3] - sim.camera_in_method(np.eye(4))[:3, 3]), 0, atol=1e-6)
    # the same magnification f/d as the GT camera once the recentring zoom is undone
    zoom = math.sqrt(np.prod(ref.recentring.zoom()))
    d_mapped = float(np.linalg.norm(mapped[:3, 3] - sim.translation))
    assert focal(m_fov, S) / zoom / d_mapped == pytest.approx(focal(GT_ORBIT[3], W) / GT_ORBIT[2], rel=1e-6)


def test_the_ground_truth_in_the_method_frame_reproduces_what_the_method_saw(aligned):
    """The GT mesh mapped into the method's world and rendered at the method's default camera
    covers the recentred reference mask (load_reference's own output): the weak-perspective
    error is a pixel or two; a 20% scale error or a forgotten recentring shift is not."""
    mesh, ref, c2w_gt, c2w_m, m_fov, sim = aligned
    target = ref.mask > 0.5

    def seen(s: Similarity) -> float:
        return iou(silhouette(transformed(mesh, np.linalg.inv(s.matrix())), c2w_m, m_fov, S), target)

    assert seen(sim) > 0.9
    assert seen(sim._replace(scale=sim.scale * 1.2)) < 0.8
    no_shift = sim._replace(translation=np.zeros(3))
    assert seen(no_shift) < seen(sim) - 0.05


def test_test_views_and_mesh_land_on_the_ground_truth(aligned, tmp_path: Path):
    """A result known in the method's frame (the GT mesh through the inverse similarity, written as
    the methods export it) is scored in the dataset's frame: renders at mapped test cameras match
    the GT renders, and its Chamfer distance to the GT mesh vanishes with the similarity but not
    with a wrong scale."""
    from studio.mesh.textured import save_glb

    mesh, ref, c2w_gt, c2w_m, m_fov, sim = aligned
    in_method = transformed(mesh, np.linalg.inv(sim.matrix()))
    for elev, az in ((10.0, 200.0), (50.0, -70.0)):
        test = c2w_of(elev, az, 2.2)
        assert iou(silhouette(in_method, sim.camera_in_method(test), 40.0, 64), silhouette(mesh, test, 40.0, 64)) > 0.97
    pred, gt = tmp_path / "mesh.glb", tmp_path / "gt_mesh.obj"
    save_glb(pred, in_method)
    mesh.export(gt)
    assert mesh_chamfer(pred, gt, 5000, pred_to_gt=sim.matrix()) < 0.005
    assert mesh_chamfer(pred, gt, 5000, pred_to_gt=sim._replace(scale=sim.scale * 1.2).matrix()) > 0.02
    assert mesh_chamfer(pred, gt, 5000) > 0.05  # unaligned: the method's world is not the dataset's


def test_camera_flag_choices(tmp_path: Path, capsys):
    """--camera takes gt or default (default: default); anything else is one error line, exit 2."""
    from conftest import write_nerf_synthetic

    from studio.cli.eval import CAMERA_PROTOCOLS, ImageTo3D
    from studio.cli.main import entrypoint

    assert set(CAMERA_PROTOCOLS) == {"gt", "default"} and ImageTo3D.camera == "default"
    data = write_nerf_synthetic(tmp_path / "data")
    with pytest.raises(SystemExit) as err:
        entrypoint(["eval", "image-to-3d", "--data", str(data), "--output", str(tmp_path / "m.json"),
                    "--camera", "ortho"])  # fmt: skip
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "ortho" in lines[0] and "gt" in lines[0]
    assert not (tmp_path / "m.json").exists()


def test_generator_scores_under_both_camera_protocols(tmp_path: Path):
    """flashworld under --camera gt (the dataset's orbit) and default (its default cameras, the
    input recentred): both scored on the test views, the protocol and alignment recorded."""
    import json

    from test_flashworld import save_flashworld, small_model

    from studio.cli.main import entrypoint
    from studio.scenes.toyworld.dataset import MakeConfig, make_dataset

    make_dataset(
        tmp_path / "scene",
        MakeConfig(seed=3, kind="object", n_train=2, n_test=2, res=32, spp=1, aa=1, relight=(), sheet=False),
    )
    weights = save_flashworld(small_model(), tmp_path / "fw.safetensors")
    for camera in ("gt", "default"):
        out = tmp_path / f"{camera}.json"
        entrypoint(["eval", "image-to-3d", "--method", "flashworld", "--data", str(tmp_path / "scene"),
                    "--camera", camera, "--output", str(out), f"--method-args=--weights {weights}"])  # fmt: skip
        metrics = json.loads(out.read_text())
        assert metrics["camera"] == camera and metrics["psnr"] > 0 and 0 <= metrics["mask_iou"] <= 1
        assert (metrics["alignment"] is None) == (camera == "gt")
    matrix = np.array(json.loads((tmp_path / "default.json").read_text())["alignment"]["matrix"])
    assert matrix.shape == (4, 4) and np.isfinite(matrix).all()
