"""``--device`` of the studio commands: ``auto``, ``cpu`` or ``cuda`` to a torch device name."""

from __future__ import annotations

from studio.io import StudioInputError


def chosen_device(flag: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a CUDA device, else ``cpu``; ``cuda`` without one raises
    one input error; any other value is returned as it is."""
    import torch

    if flag == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if flag == "cuda" and not torch.cuda.is_available():
        raise StudioInputError("--device cuda was asked for but torch sees no CUDA device.")
    return flag
