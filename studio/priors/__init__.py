"""Diffusion priors: the interface guidance talks to (``DiffusionPrior``, ``Condition``), the
embedded ToyWorld priors (``toy-t2i``, ``toy-nvs``) and the name registry (``load_prior``).

Heavy pieces (models, training, data) are imported lazily from their modules.
"""

from studio.priors.base import Condition, DiffusionPrior, PredictionType, freeze
from studio.priors.registry import LOADERS, available_priors, check_prior, load_prior, register_prior

__all__ = [
    "Condition",
    "DiffusionPrior",
    "PredictionType",
    "freeze",
    "LOADERS",
    "available_priors",
    "check_prior",
    "load_prior",
    "register_prior",
]
