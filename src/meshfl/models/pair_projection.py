"""A trainable projection of frozen profile embeddings and a symmetric match score.

Partner matching with a Siamese ("two-tower" with shared weights) model, as in
Sentence-BERT's bi-encoder (Reimers & Gurevych, EMNLP 2019): both partners' frozen
embeddings ``x_a``, ``x_b`` go through the *same* linear projection ``z = P x + c``, and the
match score of the pair is a fixed symmetric bilinear form of the two projections,

.. math:: s(a, b) = (u_a \\cdot v_b + v_a \\cdot u_b) / \\sqrt{h},
          \\qquad z = [u; v],\\; u, v \\in \\mathbb{R}^h,

so ``s(a, b) = s(b, a)``. Cosine similarity would only reward partners that look alike; the
form above (``zᵀ J z'`` with ``J`` swapping the halves, eigenvalues ±1) lets the learned
``P`` express both *similarity* (shared regions, verticals, size) and *complementarity*
(a security shop and a cloud shop score high together, two security shops low). Candidates'
projections are computed once and every score is a dot product, so ranking a directory of
partners is one matrix product.

Training is pairwise contrastive: each labelled pair (a project that succeeded or failed)
pulls the two projections into agreement or pushes them apart through a logistic loss on
``s`` (the pair form of Hadsell, Chopra & LeCun, CVPR 2006). In-batch negatives (InfoNCE)
would make one pair's gradient depend on the other pairs in the batch, which sample-level
DP-SGD cannot clip; the pairwise loss keeps one pair = one record. All trainable parameters
sit in one ``nn.Linear``, so :func:`meshfl.privacy.dpsgd.train_private` computes exact
per-pair gradients with its fast path.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from meshfl.models.threads import threads_for
from meshfl.models.training import train_minibatch

__all__ = ["PairProjection", "pair_loss", "score_matrix", "score_pairs", "train_pairs"]


class PairProjection(nn.Module):
    """Shared linear projection of two profiles and their symmetric match score (a logit).

    Parameters
    ----------
    in_dim : int
        Features of one profile (e.g. the concatenated embeddings of its fields).
    dim : int
        Projection width, even (half "u", half "v"); the score has rank up to ``dim``.
    input_scale : float
        Fixed (not trained, not sent) factor on the input. Unit-norm embeddings have
        coordinates of size ~1/sqrt(d); scaling by sqrt(d) gives them unit variance, which
        keeps gradients large enough for DP-SGD's clipping and noise.
    """

    def __init__(self, in_dim: int, dim: int = 32, *, input_scale: float = 1.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even integer >= 2. Got {dim!r} instead.")
        self.dim = dim
        self.input_scale: torch.Tensor
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))
        self.proj = nn.Linear(in_dim, dim)
        # The log-odds of success of an average pair. A bias-free linear layer on a constant
        # input, so that every trainable parameter sits in an nn.Linear (DP-SGD's fast path).
        self.offset = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            # The "v" half starts at zero: every score starts at 0 (probability 1/2) instead
            # of at a random bilinear form that training would first have to undo, and the
            # gradient of "v" (which is u of the partner) is non-zero from the first step.
            self.proj.weight[dim // 2 :].zero_()
            self.proj.bias[dim // 2 :].zero_()
            self.offset.weight.zero_()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Projections of profiles, ``(..., in_dim) -> (..., dim)``."""
        out: torch.Tensor = self.proj(x * self.input_scale)
        return out

    def match(self, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
        """Symmetric bilinear score of projections (broadcasting over leading dimensions)."""
        h = self.dim // 2
        cross = (za[..., :h] * zb[..., h:]).sum(-1) + (za[..., h:] * zb[..., :h]).sum(-1)
        return cross / math.sqrt(h)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """Match logits of pairs, ``(B, 2, in_dim) -> (B,)``."""
        z = self.embed(pairs)  # one call of the linear layer for both partners
        bias = self.offset(torch.ones(len(pairs), 1, dtype=pairs.dtype, device=pairs.device))
        return self.match(z[:, 0], z[:, 1]) + bias[:, 0]


def pair_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean logistic (binary cross-entropy) loss of match logits against outcomes 1/0."""
    return nn.functional.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


def train_pairs(
    model: PairProjection,
    features: np.ndarray,
    targets: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
) -> float:
    """Train ``model`` in place with Adam on pairs; returns the mean last-epoch loss.

    ``features`` has shape ``(n, 2, in_dim)``, ``targets`` ``(n,)`` with 1 (success) or 0.
    Shuffling uses a generator seeded with ``seed`` (deterministic).
    """
    return train_minibatch(
        model,
        features,
        targets,
        loss_fn=pair_loss,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        weight_decay=weight_decay,
        target_dtype=torch.float32,
    )


def score_pairs(model: PairProjection, features: np.ndarray) -> np.ndarray:
    """Match logits of pairs ``(n, 2, in_dim)``, as float64 ``(n,)``."""
    model.eval()
    with threads_for(len(features)), torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
    return out.double().numpy()


def score_matrix(model: PairProjection, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Match logits of every profile in ``left`` with every one in ``right``: ``(n_l, n_r)``."""
    model.eval()
    with threads_for(len(left)), torch.inference_mode():
        za = model.embed(torch.from_numpy(np.ascontiguousarray(left, dtype=np.float32)))
        zb = model.embed(torch.from_numpy(np.ascontiguousarray(right, dtype=np.float32)))
        ones = torch.ones(1, 1, dtype=za.dtype)
        out = model.match(za[:, None, :], zb[None, :, :]) + model.offset(ones)[0, 0]
    return out.double().numpy()
