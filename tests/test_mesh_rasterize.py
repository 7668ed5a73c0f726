"""``studio.mesh``: the ``studio`` backend (cuda/ CPU kernels) against the ``torch`` reference,
and the reference against geometry (projection with K, perspective-correct barycentrics, depth,
culling, ties, watertightness).

Parity: forward bit-exact (both backends run the same float operations in the same order),
gradients ``||ga-gb|| / ||gb|| < 1e-3``. The first test builds the CPU extension (about a minute).
"""

from __future__ import annotations

import math

import pytest
import torch

from studio.cameras import clip_from_opencv, intrinsics_from_fov, look_at
from studio.mesh import antialias, interpolate, rasterize

GRAD_TOL = 1e-3


def random_scene(n: int, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[batch,3n,4] clip-space vertices and [n+2,3] faces: random triangles of mixed sizes, some
    behind the camera / crossing w = 0 / beyond near-far, and one exact duplicate (a depth tie)."""
    gen = torch.Generator().manual_seed(seed)
    centre = 2.4 * torch.rand(batch, n, 1, 3, generator=gen) - 1.2
    size = torch.where(torch.rand(batch, n, 1, 1, generator=gen) < 0.1, 0.8, 0.08)
    xyz = centre + size * torch.randn(batch, n, 3, 3, generator=gen)
    w = 1.0 + 2.0 * torch.rand(batch, n, 3, 1, generator=gen)
    verts = torch.cat([xyz * w, w], -1)
    verts[:, : n // 30, 0, 3] = -0.5  # crossing w = 0
    verts[:, n // 30 : n // 15, :, 3] = -1.0  # behind the camera
    faces = torch.arange(3 * n).reshape(n, 3)
    faces = torch.cat([faces, faces[n // 2 : n // 2 + 1], faces[n // 2 + 1 : n // 2 + 2].flip(-1)])  # duplicates
    return verts.reshape(batch, 3 * n, 4).contiguous(), faces


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _run(backend, verts_clip, faces, attr, width, height, seed=7):
    v = verts_clip.clone().requires_grad_(True)
    a = attr.clone().requires_grad_(True)
    bary, tri_id, depth = rasterize(v, faces, width, height, backend=backend)
    img = interpolate(a, bary, tri_id, faces, backend=backend)
    gen = torch.Generator().manual_seed(seed)
    loss = (img * torch.rand(img.shape, generator=gen)).sum() + (depth * torch.rand(depth.shape, generator=gen)).sum()
    loss.backward()
    return bary.detach(), tri_id, depth.detach(), img.detach(), v.grad, a.grad


@pytest.mark.parametrize(
    "n,batch,width,height,shared_attr,channels",  # 1-4 channels take unrolled kernels, others a generic one
    [(200, 1, 32, 24, True, 5), (1500, 2, 67, 45, False, 3), (3000, 1, 128, 128, True, 1), (800, 1, 40, 40, True, 4)],
)
def test_studio_matches_torch(n, batch, width, height, shared_attr, channels):
    verts_clip, faces = random_scene(n, batch, seed=n)
    gen = torch.Generator().manual_seed(1)
    attr = torch.rand(verts_clip.shape[1], channels, generator=gen)
    if not shared_attr:
        attr = torch.rand(batch, verts_clip.shape[1], channels, generator=gen)
    ref = _run("torch", verts_clip, faces, attr, width, height)
    out = _run("studio", verts_clip, faces, attr, width, height)
    assert (ref[1] >= 0).float().mean() > 0.3  # the scene covers the image substantially
    for a, b in zip(out[:4], ref[:4]):
        assert a.dtype == b.dtype and torch.equal(a, b)
    for a, b in zip(out[4:], ref[4:]):
        assert _rel(a, b) < GRAD_TOL


def test_auto_is_studio_and_backend_checked():
    verts_clip, faces = random_scene(50, 1)
    a = rasterize(verts_clip, faces, 16, 16)
    b = rasterize(verts_clip, faces, 16, 16, backend="studio")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError):
        rasterize(verts_clip, faces, 16, 16, backend="gsplat")


@pytest.mark.parametrize("backend", ["torch", "studio"])
def test_ties_culling_and_depth_range(backend):
    tri = torch.tensor([[-0.9, -0.9, 0.2, 1.0], [0.9, -0.9, 0.2, 1.0], [0.0, 0.9, 0.2, 1.0]])
    behind = tri.clone()
    behind[:, 2:] *= -1.0  # w < 0
    crossing = tri.clone()
    crossing[0, 3] = -0.1
    too_far = tri.clone()
    too_far[:, 2] = 1.5
    verts = torch.cat([behind, crossing, too_far, tri, tri])[None]
    faces = torch.arange(15).reshape(5, 3)
    faces = torch.cat([faces[:3], faces[4:5], faces[3:4]])  # the two identical triangles: ids 3 and 4
    _, tri_id, depth = rasterize(verts, faces, 16, 16, backend=backend)
    covered = tri_id >= 0
    assert covered.any() and (tri_id[covered] == 3).all()  # lower id wins the tie, culled ones never show
    assert torch.allclose(depth[covered], torch.tensor(0.2)) and (depth[~covered] == 0).all()


@pytest.mark.parametrize("backend", ["torch", "studio"])
def test_non_finite_vertices_cull_their_triangles(backend):
    tri = torch.tensor([[-0.9, -0.9, 0.2, 1.0], [0.9, -0.9, 0.2, 1.0], [0.0, 0.9, 0.2, 1.0]])
    nan_x, inf_w = tri.clone(), tri.clone()
    nan_x[1, 0] = float("nan")
    inf_w[2, 3] = float("inf")
    verts = torch.cat([nan_x, inf_w, tri])[None]
    faces = torch.arange(9).reshape(3, 3)
    _, tri_id, _ = rasterize(verts, faces, 16, 16, backend=backend)
    assert (tri_id >= 0).any() and (tri_id[tri_id >= 0] == 2).all()


def test_studio_rejects_out_of_range_faces():
    tri = torch.tensor([[[-0.9, -0.9, 0.2, 1.0], [0.9, -0.9, 0.2, 1.0], [0.0, 0.9, 0.2, 1.0]]])
    for bad in (3, -1):
        with pytest.raises(RuntimeError, match="out of range"):
            rasterize(tri, torch.tensor([[0, 1, bad]]), 8, 8, backend="studio")


def _camera(width=48, height=36):
    viewmat = look_at(torch.tensor([0.3, -2.5, 0.8]), torch.tensor([0.0, 0.1, 0.0]), torch.tensor([0.0, 0.0, 1.0]))
    K = intrinsics_from_fov(55.0, width, height)
    K[0, 2] += 1.7  # off-centre principal point
    K[1, 2] -= 2.3
    return viewmat, K, width, height


def test_clip_from_opencv_lands_on_the_pixel_of_K():
    viewmat, K, width, height = _camera()
    near, far = 0.1, 20.0
    clip = clip_from_opencv(viewmat, K, width, height, near, far)
    gen = torch.Generator().manual_seed(0)
    pts = 0.6 * (2 * torch.rand(20, 3, generator=gen) - 1)
    cam = pts @ viewmat[:3, :3].T + viewmat[:3, 3]
    uv = cam @ K.T
    uv = uv[:, :2] / uv[:, 2:]  # pixel coordinates, centres at +0.5
    h = torch.cat([pts, torch.ones(20, 1)], -1) @ clip.T
    ndc = h[:, :3] / h[:, 3:]
    assert torch.allclose(h[:, 3], cam[:, 2], atol=1e-5)  # w = camera z
    assert torch.allclose((ndc[:, 0] + 1) * width / 2, uv[:, 0], atol=1e-4)
    assert torch.allclose((ndc[:, 1] + 1) * height / 2, uv[:, 1], atol=1e-4)
    z = torch.tensor([near, far])
    zc = clip[2, 2] * 0 + (far + near) / (far - near) * z - 2 * far * near / (far - near)
    assert torch.allclose(zc / z, torch.tensor([-1.0, 1.0]))
    # a tiny triangle around each point is drawn exactly at the pixel K gives (row 0 = top)
    for p, (u, v) in zip(pts, uv):
        u_c, v_c = math.floor(u) + 0.5, math.floor(v) + 0.5  # move onto the pixel centre
        if not (0 <= u_c < width and 0 <= v_c < height):
            continue
        ray = torch.linalg.solve(K, torch.tensor([u_c, v_c, 1.0]))
        centre_cam = ray * (viewmat[:3, :3] @ p + viewmat[:3, 3])[2]
        offsets = 0.002 * torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]])
        world = (centre_cam + offsets - viewmat[:3, 3]) @ viewmat[:3, :3]
        vc = (torch.cat([world, torch.ones(3, 1)], -1) @ clip.T)[None]
        _, tri_id, _ = rasterize(vc, torch.tensor([[0, 1, 2]]), width, height)
        hits = (tri_id[0] == 0).nonzero().tolist()
        assert hits == [[math.floor(v), math.floor(u)]]


@pytest.mark.parametrize("backend", ["torch", "studio"])
def test_perspective_correct_barycentrics_and_depth(backend):
    """A slanted quad: interpolated world positions re-project onto each pixel centre, and depth
    equals the NDC z of the interpolated camera z."""
    viewmat, K, width, height = _camera()
    near, far = 0.5, 6.0
    clip = clip_from_opencv(viewmat, K, width, height, near, far)
    quad = torch.tensor([[-0.8, -0.3, -0.5], [0.8, 0.6, -0.5], [0.8, 0.9, 0.7], [-0.8, -0.2, 0.6]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    vc = (torch.cat([quad, torch.ones(4, 1)], -1) @ clip.T)[None]
    bary, tri_id, depth = rasterize(vc, faces, width, height, backend=backend)
    world = interpolate(quad, bary, tri_id, faces, backend=backend)[0]
    mask = tri_id[0] >= 0
    assert mask.sum() > 200
    cam = world[mask] @ viewmat[:3, :3].T + viewmat[:3, 3]
    uv = cam @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    rows, cols = mask.nonzero().unbind(-1)
    assert torch.allclose(uv[:, 0], cols + 0.5, atol=2e-3) and torch.allclose(uv[:, 1], rows + 0.5, atol=2e-3)
    z_ndc = (far + near) / (far - near) - 2 * far * near / (far - near) / cam[:, 2]
    assert torch.allclose(depth[0][mask], z_ndc, atol=1e-4)


def test_closed_mesh_is_watertight():
    """A finely tessellated sphere seen from outside: every pixel inside its silhouette is covered."""
    trimesh = pytest.importorskip("trimesh")
    sphere = trimesh.creation.icosphere(subdivisions=4)
    verts = torch.tensor(sphere.vertices, dtype=torch.float32)
    faces = torch.tensor(sphere.faces)
    width = height = 96
    viewmat = look_at(torch.tensor([0.0, -3.0, 0.0]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    K = intrinsics_from_fov(50.0, width, height)
    vc = (torch.cat([verts, torch.ones(len(verts), 1)], -1) @ clip_from_opencv(viewmat, K, width, height, 0.1, 10.0).T)[
        None
    ]
    _, tri_id, _ = rasterize(vc, faces, width, height)
    jj, ii = torch.meshgrid(torch.arange(width) + 0.5, torch.arange(height) + 0.5, indexing="xy")
    r = torch.hypot(jj - K[0, 2], ii - K[1, 2])
    inner = r < 0.95 * K[0, 0] / math.sqrt(3.0**2 - 1.0)  # well inside the (inscribed polytope's) silhouette
    assert (tri_id[0][inner] >= 0).all()


@pytest.mark.parametrize("d", [0.2, 0.8])
def test_antialias_blends_silhouettes_and_gives_position_gradients(d):
    """A white quad on black whose right edge is at x = 8 + d pixels: pixel column 8 (spanning
    [8, 9]) gets the coverage d, whichever side of its centre the edge is."""
    width, height = 16, 8
    x_edge = 2 * (8 + d) / width - 1
    verts = torch.tensor(
        [[-3.0, -3.0, 0.0, 1.0], [x_edge, -3.0, 0.0, 1.0], [x_edge, 3.0, 0.0, 1.0], [-3.0, 3.0, 0.0, 1.0]]
    )
    verts = verts[None].requires_grad_(True)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    bary, tri_id, depth = rasterize(verts, faces, width, height)
    color = interpolate(torch.ones(4, 1), bary, tri_id, faces)
    out = antialias(color, tri_id, depth, verts, faces)
    assert torch.allclose(out[0, :, :8], torch.ones(8, 8, 1))  # interior edge (the diagonal) is not blended
    assert torch.allclose(out[0, :, 8, 0], torch.full((8,), d), atol=1e-5)
    assert torch.allclose(out[0, :, 9:], torch.zeros(8, 7, 1))
    out[0, :, 8].sum().backward()
    # moving the edge right (x of vertices 1, 2) increases the coverage: d(sum)/dx = 8 rows * width/2
    assert torch.allclose(verts.grad[0, 1:3, 0].sum(), torch.tensor(8 * width / 2.0), rtol=1e-4)
