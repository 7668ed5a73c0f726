"""OpenCV camera (viewmat, K) -> OpenGL-style clip-space matrix for the triangle rasterizer."""

from __future__ import annotations

import torch
from torch import Tensor


def clip_from_opencv(
    viewmat: Tensor, K: Tensor, width: int, height: int, near: float = 0.01, far: float = 100.0
) -> Tensor:
    """The [...,4,4] matrix taking homogeneous world points to clip space for ``studio.mesh.rasterize``.

    Args:
        viewmat [...,4,4]: world-to-camera, OpenCV axes (x right, y down, z forward).
        K [...,3,3]: pinhole intrinsics in pixels, pixel (row i, col j) centred at (j + 0.5, i + 0.5)
            (skew K[0,1] is honoured).
        width, height: image size in pixels. near, far: depth range mapped to NDC z = -1 .. 1.
    Returns:
        ``P @ viewmat`` with, for a camera point (x, y, z):
            clip = (2 fx/W x + 2 s/W y + (2 cx/W - 1) z,  2 fy/H y + (2 cy/H - 1) z,
                    (f+n)/(f-n) z - 2 f n/(f-n),  z)
        so NDC x/w = 2 u/W - 1 and y/w = 2 v/H - 1 for the pixel position (u, v) given by K, and
        w = z (points behind the camera get w <= 0 and their triangles are culled).

    The y flip: OpenGL's projection matrices negate y (camera y up, NDC y = +1 at the top). Here
    camera y points down and is NOT negated, because the rasterizer (like nvdiffrast) puts
    NDC y = -1 at image row 0: row 0 is the top of the image, as in the OpenCV convention and
    in ``studio.render.rasterize``, and images need no flipping. Triangle winding as seen on
    screen is mirrored with respect to OpenGL, which does not matter (no face culling).
    """
    K = K.to(viewmat.dtype)
    batch = torch.broadcast_shapes(viewmat.shape[:-2], K.shape[:-2])
    P = torch.zeros(batch + (4, 4), dtype=viewmat.dtype, device=viewmat.device)
    fx, fy, skew, cx, cy = K[..., 0, 0], K[..., 1, 1], K[..., 0, 1], K[..., 0, 2], K[..., 1, 2]
    P[..., 0, 0] = 2.0 * fx / width
    P[..., 0, 1] = 2.0 * skew / width
    P[..., 0, 2] = 2.0 * cx / width - 1.0
    P[..., 1, 1] = 2.0 * fy / height
    P[..., 1, 2] = 2.0 * cy / height - 1.0
    P[..., 2, 2] = (far + near) / (far - near)
    P[..., 2, 3] = -2.0 * far * near / (far - near)
    P[..., 3, 2] = 1.0
    return P @ viewmat
