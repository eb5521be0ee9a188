"""Plain (non-private) local training: mini-batch Adam over a module, seeded and in place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["train_minibatch"]


def train_minibatch(
    module: nn.Module,
    features: np.ndarray,
    targets: np.ndarray,
    *,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
    target_dtype: torch.dtype = torch.int64,
) -> float:
    """Train ``module`` in place with Adam; returns the mean loss of the last epoch.

    Each epoch visits the records in an order drawn from a generator seeded with ``seed``
    (deterministic), in batches of ``batch_size``; ``loss_fn(module(x), y)`` is the batch's
    mean loss. The DP counterpart is :func:`meshfl.privacy.dpsgd.train_private`.
    """
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(targets)).to(target_dtype)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    module.train()
    last = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(module(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        last = total / max(count, 1)
    module.eval()
    return last
