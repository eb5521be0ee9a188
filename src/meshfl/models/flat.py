"""Flatten a torch module's trainable parameters into one vector and back.

The update contract carries one flat float vector per MSP; every torch agent packs its
trainable parameters with :func:`get_flat` and loads a global vector with :func:`set_flat`.
Only parameters with ``requires_grad`` are included: frozen encoders never travel.
"""

from __future__ import annotations

import numpy as np
import torch

from meshfl.config.errors import InvalidUpdateError

__all__ = ["flat_size", "get_flat", "set_flat"]


def _trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def flat_size(module: torch.nn.Module) -> int:
    """Number of trainable parameters (the length of the module's update vector)."""
    return sum(p.numel() for p in _trainable(module))


def get_flat(module: torch.nn.Module) -> np.ndarray:
    """The trainable parameters as one float64 vector, in ``module.parameters()`` order."""
    with torch.no_grad():
        parts = [p.detach().reshape(-1).to(torch.float64).cpu() for p in _trainable(module)]
    return torch.cat(parts).numpy() if parts else np.zeros(0)


def set_flat(module: torch.nn.Module, vector: np.ndarray) -> None:
    """Load a vector produced by :func:`get_flat` into the module's trainable parameters."""
    expected = flat_size(module)
    if vector.shape != (expected,):
        raise InvalidUpdateError(
            f"The model vector must have {expected} values for {type(module).__name__}. "
            f"Got shape {tuple(vector.shape)} instead."
        )
    offset = 0
    with torch.no_grad():
        for p in _trainable(module):
            n = p.numel()
            chunk = torch.from_numpy(np.asarray(vector[offset : offset + n]))
            p.copy_(chunk.reshape(p.shape).to(p.dtype))
            offset += n
