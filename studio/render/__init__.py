"""Differentiable Gaussian rendering: ``rasterize`` and its pieces (projection, tiling, backends)."""

from studio.render.rasterize import BACKENDS, RenderOut, rasterize, resolve_backend

__all__ = ["BACKENDS", "RenderOut", "rasterize", "resolve_backend"]
