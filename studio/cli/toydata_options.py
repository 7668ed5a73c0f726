"""``ToyDataOptions``: the ToyWorld training-data flags of ``studio prior train`` and ``studio features train``.

Both commands render (once, cached, shared between them) ToyWorld training-split views through
``studio.priors.toydata.load_or_make``; their ``Train`` dataclasses inherit these fields, so the
flags ``--data-seeds``, ``--data-views``, ``--data-spp``, ``--data-aa``, ``--workers`` and
``--cache-dir`` are the same in both. Keyword-only, so that a subclass may add positional fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(kw_only=True)
class ToyDataOptions:
    """What ToyWorld data to render for training, and where to cache it."""

    data_seeds: int = 2000
    """ToyWorld training seeds to render (single objects; held-out seeds/captions are skipped)."""
    data_views: int = 8
    """Random views per seed (toy-nvs pairs two views of one seed)."""
    data_spp: int = 64
    """Light samples per pixel of the training renders."""
    data_aa: int = 16
    """Primary rays per pixel of the training renders (16 x 64: about half the Monte-Carlo noise of 4 x 16)."""
    workers: int = 2
    """Processes that render the data."""
    cache_dir: Optional[Path] = None
    """Folder of the rendered data (default ~/.cache/distill-studio/priors-data)."""

    def data_config(self):
        """The ``studio.priors.toydata.DataConfig`` of these options."""
        from studio.priors.toydata import DataConfig

        return DataConfig(n_seeds=self.data_seeds, views=self.data_views, spp=self.data_spp, aa=self.data_aa)
