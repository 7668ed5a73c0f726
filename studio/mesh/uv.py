"""UV atlases: unwrap a mesh (xatlas), rasterize its layout to texels, grow texels past the charts.

Texture convention, for every texture array in studio (``TexturedMesh.texture``,
``studio.export.bake.BakedMesh``, ``studio.mesh.render``): ``uv`` in [0,1] with u right and v up;
a texture [T,T,C] holds at row i, column j the value at uv ((j + 0.5) / T, (i + 0.5) / T), so
row 0 is v = 0, as in OpenGL / nvdiffrast: rasterizing the UV layout and sampling a texture need
no flip. Image files (and glTF, whose texcoord origin is the image's top-left corner) store v = 1
in row 0: ``texture_image`` flips once, on the way to a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from studio.mesh.rasterize import interpolate, rasterize

if TYPE_CHECKING:
    from PIL import Image


def uv_unwrap(
    vertices: np.ndarray, faces: np.ndarray, texture_size: int = 1024, padding: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas UV atlas of a triangle mesh.

    Args:
        vertices [V,3] float, faces [F,3] int; texture_size: atlas resolution, texels;
        padding: texels between charts.
    Returns:
        vmapping [V'] int64 (source vertex of each new vertex; seam vertices are duplicated),
        faces [F,3] int64 into the new vertices, uv [V',2] float32 in [0,1] (u right, v up).
    """
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    vmapping, new_faces, uv = atlas[0]
    return vmapping.astype(np.int64), new_faces.astype(np.int64), uv.astype(np.float32)


def rasterize_uv(uv: Tensor, faces: Tensor, texture_size: int) -> tuple[Tensor, Tensor]:
    """Rasterize a UV layout (UVs as clip-space x, y; z = 0, w = 1): per texel the covering triangle.

    Args:
        uv [V,2] in [0,1]; faces [F,3] int; texture_size: T.
    Returns:
        bary [T,T,2], tri_id [T,T] int32 (-1 = no triangle), texel (i, j) at uv
        ((j + 0.5) / T, (i + 0.5) / T) (module docstring).
    """
    uv = uv.float()
    clip = torch.cat([uv * 2.0 - 1.0, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], dim=1)
    bary, tri_id, _ = rasterize(clip[None].contiguous(), faces.to(torch.int32).contiguous(), texture_size, texture_size)
    return bary[0], tri_id[0]


@dataclass
class UVAtlas:
    """A mesh's UV atlas and its rasterized layout.

    ``vmapping`` [V'] int64 (source vertex of each atlas vertex), ``faces`` [F,3] int64 into the
    atlas vertices, ``uv`` [V',2] float32, ``bary`` [T,T,2] and ``tri_id`` [T,T] int32 per texel.
    """

    vmapping: Tensor
    faces: Tensor
    uv: Tensor
    bary: Tensor
    tri_id: Tensor

    @property
    def covered(self) -> Tensor:
        """[T,T] bool: texels inside a chart."""
        return self.tri_id >= 0

    def texels(self, attributes: Tensor) -> Tensor:
        """Per-vertex ``attributes`` [V,D] of the source mesh, interpolated at the texel centres -> [T,T,D]."""
        attr = attributes.float()[self.vmapping]
        return interpolate(attr, self.bary[None], self.tri_id[None], self.faces.to(torch.int32))[0]


def uv_atlas(
    vertices: np.ndarray, faces: np.ndarray, texture_size: int, padding: int = 2, device: str | torch.device = "cpu"
) -> UVAtlas:
    """``uv_unwrap`` + ``rasterize_uv`` of a mesh (vertices [V,3], faces [F,3]), tensors on ``device``."""
    vmap, new_faces, uv = uv_unwrap(vertices, faces, texture_size, padding)
    faces_t = torch.as_tensor(new_faces, device=device)
    uv_t = torch.as_tensor(uv, device=device)
    bary, tri_id = rasterize_uv(uv_t, faces_t, texture_size)
    return UVAtlas(torch.as_tensor(vmap, device=device), faces_t, uv_t, bary, tri_id)


def dilate(image: Tensor, mask: Tensor, iterations: int = 8, fill_rest: bool = True) -> Tensor:
    """Grow an image past the border of its valid texels, so bilinear filtering and mipmaps do not
    bleed the background into the chart seams.

    Not ``kornia.morphology.dilation``: that takes the maximum of the neighbours, this their mean.

    Args:
        image [H,W,C]; mask [H,W] bool (valid texels); iterations: rings of texels added.
        fill_rest: texels still empty afterwards take the mean of the valid texels.
    Returns:
        [H,W,C]: valid texels unchanged, each new ring the mean of its valid 8-neighbours.
    """
    img = image.permute(2, 0, 1)[None].float() * mask[None, None]
    m = mask[None, None].float()
    kernel = torch.ones(1, 1, 3, 3, device=image.device)
    c = img.shape[1]
    for _ in range(int(iterations)):
        total = F.conv2d(img, kernel.expand(c, 1, 3, 3), padding=1, groups=c)
        count = F.conv2d(m, kernel, padding=1)
        grow = (m == 0) & (count > 0)
        img = torch.where(grow, total / count.clamp(min=1), img)
        m = torch.where(grow, torch.ones_like(m), m)
    out = img[0].permute(1, 2, 0)
    if fill_rest and bool(mask.any()):
        empty = m[0, 0] == 0
        out[empty] = image[mask].float().mean(0)
    return out


def to_uint8(texture: Tensor) -> np.ndarray:
    """Values in [0,1] (clamped) -> uint8 numpy array, rounded to the nearest level."""
    return (texture.detach() * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def texture_image(texture: np.ndarray) -> "Image.Image":
    """A uint8 texture [T,T,3] (row 0 = v = 0) as a PIL RGB image (row 0 = top = v = 1)."""
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(texture[::-1]))
