"""``studio.render.normals.depth_to_normal``: normals of a depth map, none across silhouettes."""

import torch

from studio.render.normals import depth_to_normal


def test_plane_normal_inside_and_nothing_on_the_silhouette():
    """A tilted plane seen through a disc-shaped mask: inside, the analytic plane normal; on the
    rim (a neighbour is uncovered, its depth unrelated) no normal rather than a wrong one."""
    h = w = 32
    K = torch.tensor([[[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]]])
    n_true = torch.nn.functional.normalize(torch.tensor([0.3, -0.2, -1.0]), dim=0)  # faces the camera
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    rays = torch.stack([(xs - 16) / 40, (ys - 16) / 40, torch.ones_like(xs)], -1)
    z = 2.0 / (rays @ -n_true)  # plane n.x = -2 (distance 2 along -n from the camera)
    disc = ((xs - 16) ** 2 + (ys - 16) ** 2) < 10**2
    depth = torch.where(disc, z, torch.full_like(z, 50.0))[None, ..., None]  # far background behind the rim
    alpha = torch.where(disc, 1.0, 0.2)[None, ..., None]
    normal = depth_to_normal(depth, alpha, K)[0]
    pad = torch.nn.functional.pad(disc[None, None].float(), (1, 1, 1, 1))[0, 0].bool()
    interior = disc & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    rim = disc & ~interior
    assert interior.sum() > 200 and rim.sum() > 20
    assert float((normal[interior] @ n_true).min()) > 0.999
    assert float(normal[rim].abs().max()) == 0.0
    assert float(normal[~disc].abs().max()) == 0.0
