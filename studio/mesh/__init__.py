"""Differentiable triangle rasterization (nvdiffrast-like): ``rasterize``, ``interpolate``, ``antialias``.

See ``studio.mesh.rasterize`` for the conventions; ``studio.cameras.clip_from_opencv`` builds
the clip-space matrix from an OpenCV camera.
"""

from studio.mesh.rasterize import BACKENDS, antialias, interpolate, rasterize, resolve_backend

__all__ = ["BACKENDS", "antialias", "interpolate", "rasterize", "resolve_backend"]
