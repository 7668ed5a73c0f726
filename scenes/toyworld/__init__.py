"""ToyWorld: procedural scenes, Monte-Carlo ground truth and NeRF-synthetic datasets with AOVs.

``studio scenes make --output DIR --seed S`` (``studio.cli.scenes``) or
:func:`studio.scenes.toyworld.dataset.make_dataset`. See README.md in this folder and DESIGN.md
("ToyWorld"). The train / validation / test split of seeds, captions and categories is ``splits.json``.
"""

from studio.scenes.toyworld.scene import build_geometry, make_scene

__all__ = ["build_geometry", "make_scene"]
