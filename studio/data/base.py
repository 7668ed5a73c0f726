"""``StudioDataManager``: the constructor the project's Nerfstudio data managers share.

Nerfstudio's ``DataManager.__init__`` takes no arguments and sets up training and evaluation from
``train_dataset`` / ``eval_dataset``, so a subclass must set those (and ``config``, ``device``,
``test_mode``, ...) before calling it. ``StudioDataManager.__init__`` takes the arguments Nerfstudio's
``DataManagerConfig.setup`` passes, stores them, calls the subclass's ``setup_data`` (which sets the
datasets and whatever else the data manager needs) and then Nerfstudio's ``DataManager.__init__``.
"""

from __future__ import annotations

from typing import Literal, Union

import torch
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig


class StudioDataManager(DataManager):
    """A Nerfstudio ``DataManager`` whose subclasses set themselves up in ``setup_data``."""

    def __init__(
        self,
        config: DataManagerConfig,
        device: Union[torch.device, str] = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ):
        self.config = config
        self.device = device
        self.test_mode = test_mode
        self.world_size, self.local_rank = world_size, local_rank
        self.setup_data()
        super().__init__()

    def setup_data(self) -> None:
        """Set ``train_dataset`` and ``eval_dataset`` (and the subclass's own state) from ``self.config``."""
        raise NotImplementedError
