"""3D Gaussian scenes: the parameter container and spherical-harmonics helpers."""

from studio.gaussians.container import Gaussians
from studio.gaussians.sh import SH_C0, eval_sh, num_sh_bases, rgb_to_sh, sh_to_rgb

__all__ = ["Gaussians", "SH_C0", "eval_sh", "num_sh_bases", "rgb_to_sh", "sh_to_rgb"]
