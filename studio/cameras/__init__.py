"""Camera conventions and camera paths.

Convention everywhere (as gsplat): ``viewmat`` [4,4] world-to-camera with OpenCV axes (x right,
y down, z forward); ``K`` [3,3] pinhole in pixels with pixel (row i, col j) centred at
(j + 0.5, i + 0.5). NeRF-synthetic / Nerfstudio files store camera-to-world with OpenGL axes
(x right, y up, z backward); ``opengl_c2w_to_viewmat`` converts.
"""

from studio.cameras.clip import clip_from_opencv
from studio.cameras.convert import intrinsics_from_fov, opengl_c2w_to_viewmat, viewmat_to_opengl_c2w
from studio.cameras.paths import look_at, orbit_viewmats, views_around
from studio.cameras.rays import camera_rays

__all__ = [
    "camera_rays",
    "clip_from_opencv",
    "intrinsics_from_fov",
    "look_at",
    "opengl_c2w_to_viewmat",
    "orbit_viewmats",
    "viewmat_to_opengl_c2w",
    "views_around",
]
