"""Ranking metrics of binary scores, in numpy: ROC AUC and average precision.

They equal scikit-learn's ``roc_auc_score`` and ``average_precision_score`` (ties
included), without scikit-learn's per-call argument validation, which costs more than the
metric itself on an MSP's few hundred held-out rows, and is paid by every simulated MSP in
every round.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

__all__ = ["average_precision", "roc_auc"]


def _binary(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} and {s.size}")
    if y.all() or not y.any():
        raise ValueError("ranking metrics need both classes among the labels")
    return y, s


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve: the chance a positive outscores a negative (ties count 1/2).

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, s = _binary(labels, scores)
    positives = int(y.sum())
    negatives = y.size - positives
    rank_sum = float(rankdata(s)[y].sum())  # Mann-Whitney U from average ranks
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """Average precision: precision at each distinct threshold, weighted by the recall gained.

    Examples
    --------
    >>> round(average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    y, s = _binary(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    ranked, hits = s[order], y[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
    true_pos = np.cumsum(hits)[last_of_threshold]
    precision = true_pos / (last_of_threshold + 1)
    recall = true_pos / true_pos[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))
