"""The viser viewer of ``studio view`` (installed as ``studio.viewer``).

Modules: ``scene`` (open a Gaussian PLY, a mesh or a run's config.yml), ``camera`` (viser's client
camera <-> our OpenCV viewmat/K), ``gaussian_renderer`` (per-client render loops with adaptive
resolution), ``app`` (the server: starts first, loads the scene after, serves until Ctrl-C).
Nothing here imports torch at module level, so the server answers before the heavy imports.
"""
