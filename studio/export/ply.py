"""Gaussian scenes as PLY files in the standard 3DGS layout (Kerbl et al. 2023).

One ``vertex`` element, binary little-endian, float32 properties in this order:

    x y z  nx ny nz  f_dc_0..2  f_rest_0..44  opacity  scale_0..2  rot_0..3

* ``f_dc_c``: SH DC coefficient of channel c (rgb = 0.5 + 0.28209479 * f_dc).
* ``f_rest``: the higher SH bands, channel-major (the 15 R coefficients, then G, then B), each
  channel zero-padded to degree 3 (15 coefficients), so every file written here has 45.
* ``opacity``: logit of the opacity; ``scale_i``: log of the linear scales; ``rot``: (w, x, y, z),
  normalised; ``nx ny nz``: zeros (kept because other tools expect them).

Loading also accepts the degree 0-2 files other tools write (0, 9 or 24 ``f_rest`` properties),
any PLY format (ascii, either byte order) and numeric type, and files without ``nx ny nz``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement, PlyListProperty, PlyParseError

from studio.gaussians import Gaussians
from studio.io import StudioInputError, atomic_path
from studio.io.headers import check_ply, read_ply_header

MAX_SH_DEGREE = 3
N_REST_PER_CHANNEL = (MAX_SH_DEGREE + 1) ** 2 - 1  # 15
_REST_COUNTS = tuple(3 * ((d + 1) ** 2 - 1) for d in range(MAX_SH_DEGREE + 1))  # 0, 9, 24, 45 for degree 0..3
_OPACITY_EPS = 1e-6  # opacities are clamped to [eps, 1 - eps] before the logit (|logit| <= 13.8)
_SCALE_MIN = 1e-30  # scales are clamped to this before the log

_REQUIRED = (
    "x",
    "y",
    "z",
    "f_dc_0",
    "f_dc_1",
    "f_dc_2",
    "opacity",
    "scale_0",
    "scale_1",
    "scale_2",
    "rot_0",
    "rot_1",
    "rot_2",
    "rot_3",
)
_SIGNATURE = ("f_dc_0", "opacity", "scale_0", "rot_0")  # what tells a Gaussian PLY from a mesh PLY
PROPERTY_NAMES = (  # the 62 vertex properties written by ``save_gaussians_ply``, in file order
    ["x", "y", "z", "nx", "ny", "nz"]
    + [f"f_dc_{i}" for i in range(3)]
    + [f"f_rest_{i}" for i in range(3 * N_REST_PER_CHANNEL)]
    + ["opacity"]
    + [f"scale_{i}" for i in range(3)]
    + [f"rot_{i}" for i in range(4)]
)


def save_gaussians_ply(path: str | os.PathLike, gaussians: Gaussians) -> None:
    """Write ``gaussians`` to ``path`` as a standard 3DGS PLY (see the module docstring), atomically.

    Opacities are clamped to [1e-6, 1 - 1e-6] and scales to >= 1e-30 so the logit and log stay
    finite; quaternions are normalised (a zero quaternion becomes the identity).

    Raises:
        StudioInputError: the scene has SH degree > 3 or non-finite parameters.
    """
    g = gaussians.detach().to("cpu")
    if g.sh_degree > MAX_SH_DEGREE:
        raise StudioInputError(
            f"Cannot write SH degree {g.sh_degree} to {path}: the 3DGS PLY layout holds degree {MAX_SH_DEGREE} at most."
        )
    params = {"means": g.means, "quats": g.quats, "scales": g.scales, "opacities": g.opacities, "sh": g.sh}
    for name, t in params.items():
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise StudioInputError(f"Cannot write {path}: Gaussians.{name} holds {bad} non-finite values.")

    n = len(g)
    means = g.means.double()
    opacity = g.opacities.double().clamp(_OPACITY_EPS, 1.0 - _OPACITY_EPS)
    logit = torch.log(opacity) - torch.log1p(-opacity)
    log_scales = torch.log(g.scales.double().clamp_min(_SCALE_MIN))
    quats = g.quats.double()
    norm = quats.norm(dim=-1, keepdim=True)
    identity = quats.new_tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4)
    quats = torch.where(norm > 0, quats / norm.clamp_min(1e-300), identity)
    rest = torch.zeros(n, 3, N_REST_PER_CHANNEL, dtype=torch.float64)
    rest[:, :, : g.sh.shape[1] - 1] = g.sh[:, 1:, :].double().transpose(1, 2)  # channel-major

    columns = (
        torch.cat(
            [
                means,
                torch.zeros(n, 3, dtype=torch.float64),
                g.sh[:, 0, :].double(),
                rest.reshape(n, -1),
                logit[:, None],
                log_scales,
                quats,
            ],
            dim=1,
        )
        .to(torch.float32)
        .numpy()
    )
    vertex = np.empty(n, dtype=[(name, "<f4") for name in PROPERTY_NAMES])
    for i, name in enumerate(PROPERTY_NAMES):
        vertex[name] = columns[:, i]
    ply = PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<")
    with atomic_path(path) as tmp:
        ply.write(str(tmp))


def load_gaussians_ply(path: str | os.PathLike) -> Gaussians:
    """Read a 3DGS PLY (degree 0-3) into a float32 CPU ``Gaussians`` with activated parameters.

    The SH degree comes from the number of ``f_rest`` properties (0, 9, 24, 45 -> 0..3); a file
    written by ``save_gaussians_ply`` therefore always loads with degree 3. Quaternions are
    returned as stored; opacities are ``sigmoid(opacity)`` and scales ``exp(scale_i)``.

    Raises:
        StudioInputError: the file is missing, is not a PLY, is truncated, is a mesh PLY, lacks a
            required property, has an unexpected ``f_rest`` count, or holds non-finite values.
    """
    path = Path(path)
    check_ply(path, "Gaussian PLY file")  # header and size first: nothing is allocated for a bad file
    try:
        ply = PlyData.read(str(path), mmap=False)
    except PlyParseError as err:
        raise StudioInputError(f"{path} is not a readable PLY file (truncated or corrupt: {err}).") from None
    except (ValueError, EOFError, OSError, UnicodeDecodeError) as err:
        raise StudioInputError(f"{path} is not a readable PLY file ({err}).") from None

    if "vertex" not in ply:
        raise StudioInputError(f"{path} has no 'vertex' element, so it is not a Gaussian PLY.")
    element = ply["vertex"]
    names = [p.name for p in element.properties]
    missing = [name for name in _REQUIRED if name not in names]
    if missing:
        if any(e.name == "face" for e in ply.elements) and not any(name in names for name in _SIGNATURE):
            raise StudioInputError(
                f"{path} is a mesh PLY (it has faces and no Gaussian properties), not a Gaussian PLY."
            )
        raise StudioInputError(f"{path} is not a Gaussian PLY: its vertices lack the properties {', '.join(missing)}.")
    list_props = [p.name for p in element.properties if isinstance(p, PlyListProperty)]
    if list_props:
        raise StudioInputError(
            f"{path} has list-valued vertex properties ({', '.join(list_props)}), not a Gaussian PLY."
        )

    n_rest = sum(name.startswith("f_rest_") for name in names)
    rest_names = [f"f_rest_{i}" for i in range(n_rest)]
    if n_rest not in _REST_COUNTS or any(name not in names for name in rest_names):
        raise StudioInputError(
            f"{path} has {n_rest} f_rest properties; a 3DGS PLY has f_rest_0..f_rest_k-1 with k in 0, 9, 24 or 45."
        )

    data = element.data
    n = len(data)

    def columns(keys: list[str], dtype: type = np.float64) -> torch.Tensor:
        out = np.empty((n, len(keys)), dtype=dtype)
        for i, key in enumerate(keys):
            out[:, i] = data[key]
        return torch.from_numpy(out)

    means = columns(["x", "y", "z"])
    dc = columns([f"f_dc_{i}" for i in range(3)], np.float32)
    rest = columns(rest_names, np.float32).reshape(n, 3, n_rest // 3).transpose(1, 2)  # channel-major -> [N, K-1, 3]
    logit = columns(["opacity"])[:, 0]
    log_scales = columns([f"scale_{i}" for i in range(3)])
    quats = columns([f"rot_{i}" for i in range(4)])
    for label, t in (
        ("x/y/z", means),
        ("f_dc", dc),
        ("f_rest", rest),
        ("opacity", logit),
        ("scale", log_scales),
        ("rot", quats),
    ):
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise StudioInputError(f"{path} holds {bad} non-finite (NaN or inf) values in its {label} properties.")

    sh = torch.cat([dc[:, None, :], rest], dim=1)
    return Gaussians(
        means=means.float(),
        quats=quats.float(),
        scales=torch.exp(log_scales).float(),
        opacities=torch.sigmoid(logit).float(),
        sh=sh.float(),
    )


def is_gaussian_ply(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a PLY whose vertices carry 3DGS properties (f_dc_0, opacity, scale_0, rot_0).

    Reads only the header. A mesh or point-cloud PLY, or a file that is not a PLY, gives False.

    Raises:
        StudioInputError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise StudioInputError(f"{path} does not exist.")
    try:
        header = read_ply_header(path)
    except StudioInputError:
        return False
    vertex = header.element("vertex") if header is not None else None
    return vertex is not None and all(name in vertex.names for name in _SIGNATURE)
