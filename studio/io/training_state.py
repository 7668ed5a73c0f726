"""Training-state checkpoints of the project's own training loops (embedded priors, the lift
predictor): one ``torch.save`` file of tensors and Python primitives (read back with
``weights_only=True``), written atomically so a killed run keeps its previous checkpoint, and
carrying the run's ``signature`` (a JSON-able dict of the settings a resumed run must share)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from studio.io.atomic import atomic_path


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a run with other settings."""


def save_training_state(path: Path, state: dict, signature: dict) -> None:
    """Write ``state`` plus ``signature`` (stored as JSON text) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save({**state, "signature": json.dumps(signature)}, tmp)


def load_training_state(path: Path, signature: dict) -> dict:
    """The state saved at ``path``; raises ``CheckpointMismatchError`` naming the settings whose values
    differ from ``signature`` (compared as JSON, so tuples and lists are equal)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    theirs = json.loads(state["signature"])
    ours = json.loads(json.dumps(signature))
    diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if diff:
        raise CheckpointMismatchError(f"{path} was written with other settings ({', '.join(diff)}); resume with those.")
    return state
