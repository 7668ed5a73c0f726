"""3D Gaussian scenes: the parameter container, spherical-harmonics helpers, orientations and bounds."""

from studio.gaussians.bounds import gaussian_bounds
from studio.gaussians.container import Gaussians
from studio.gaussians.rotation import quat_to_rotmat
from studio.gaussians.sh import SH_C0, eval_sh, num_sh_bases, rgb_to_sh, sh_to_rgb

__all__ = [
    "Gaussians",
    "SH_C0",
    "eval_sh",
    "gaussian_bounds",
    "num_sh_bases",
    "quat_to_rotmat",
    "rgb_to_sh",
    "sh_to_rgb",
]
