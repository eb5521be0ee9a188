"""Small trainable heads on frozen features, and their local training loop.

A head is what the text agents federate: a frozen encoder produces embeddings once, and only
the head's few thousand parameters are trained, sent and averaged. Heads avoid BatchNorm so
that DP-SGD (Opacus) can compute per-sample gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from meshfl.models.threads import threads_for
from meshfl.models.training import train_minibatch

__all__ = ["MultiTaskHead", "multitask_loss", "predict_proba", "train_head"]


class MultiTaskHead(nn.Module):
    """A shared hidden layer with one linear classifier per task.

    Parameters
    ----------
    in_dim : int
        Feature dimension (the encoder's embedding size).
    n_classes : sequence of int
        Classes per task (e.g. threat classes and severities).
    hidden : int
        Width of the shared hidden layer; 0 makes each task a linear probe.
    dropout : float
        Dropout on the hidden layer during training.
    input_scale : float
        Fixed (not trained, not sent) factor on the input. Unit-norm sentence embeddings
        have coordinates of size ~1/sqrt(dim); scaling by sqrt(dim) gives them unit variance,
        which makes the gradients large enough for DP-SGD's clipping and noise.
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: Sequence[int],
        *,
        hidden: int = 64,
        dropout: float = 0.1,
        input_scale: float = 1.0,
    ):
        super().__init__()
        self.input_scale: torch.Tensor
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))
        if hidden > 0:
            self.body: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout)
            )
            width = hidden
        else:
            self.body = nn.Identity()
            width = in_dim
        self.tasks = nn.ModuleList(nn.Linear(width, k) for k in n_classes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits per task."""
        h = self.body(x * self.input_scale)
        return [task(h) for task in self.tasks]


def multitask_loss(logits: Sequence[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Sum over tasks of the mean cross-entropy; ``targets`` has one column per task."""
    return sum(
        (nn.functional.cross_entropy(out, targets[:, t]) for t, out in enumerate(logits)),
        torch.zeros(()),
    )


def train_head(
    head: nn.Module,
    features: np.ndarray,
    targets: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
) -> float:
    """Train ``head`` in place with Adam on (features, targets); returns the mean last-epoch loss.

    ``targets`` has one integer column per task; the loss is the sum of the tasks'
    cross-entropies. Shuffling uses a generator seeded with ``seed`` (deterministic).
    """
    return train_minibatch(
        head,
        features,
        targets,
        loss_fn=multitask_loss,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        weight_decay=weight_decay,
        target_dtype=torch.int64,
    )


def predict_proba(head: nn.Module, features: np.ndarray) -> list[np.ndarray]:
    """Class probabilities per task, each of shape ``(n, n_classes)``."""
    head.eval()
    with threads_for(len(features)), torch.inference_mode():
        logits = head(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
    return [torch.softmax(out, dim=-1).numpy() for out in logits]
