"""A closed-form classifier head from sufficient statistics of unit-norm embeddings.

Each MSP sums, over its records, what a Gaussian discriminant needs: the record count, the
sum of the (L2-normalised) embeddings, per class the count and the sum of the embeddings
(for every class but each task's first, which follows from the totals), and optionally the
second-moment matrix ``Σ x xᵀ`` (upper triangle). The sums add up across MSPs (which is what
secure aggregation computes anyway), and the classifier solves from the global sums alone:
linear discriminant analysis (LDA) with a shrunk within-class covariance, or, without the
second moment, nearest class mean with class priors (LDA with an isotropic covariance).
Hastie, Tibshirani & Friedman, "The Elements of Statistical Learning" (2009), §4.3; Ledoit
& Wolf (2004) for shrinkage.

Why it suits differential privacy: the statistics are released once, through one Gaussian
mechanism, instead of through hundreds of DP-SGD steps, and their noise averages out over
all the mesh's records. Under add/remove adjacency one record with unit-norm embedding
``x`` and class memberships ``z`` (one entry per non-first class of every task, clipped to
``‖z‖ ≤ √cap``) changes the packed statistics by at most
``√((1 + cap)(1 + count_scale²) + moment_scale²)`` in L2 (:func:`sensitivity`):

* count and embedding sum: ``count_scale`` and ``‖x‖ = 1``;
* class counts and class sums: ``count_scale·‖z‖`` and ``‖z‖·‖x‖``;
* second moment: ``‖x xᵀ‖_F = ‖x‖² = 1`` (the upper triangle holds each product at most
  once, so its norm is at most that).

Where every record is in exactly one class of the first task (categorical agents), the count
and embedding sum are redundant: ``total=False`` releases every class of the first task
instead (its counts and sums add up to them), and drops the ``1 +`` from the bound, which
becomes ``√(cap(1 + count_scale²) + moment_scale²)``: for two tasks, noise √(2/3) as large
for the same ε. Each class-0 sum then follows from the first task's sums, which also spares
the first task's class 0 the ``k`` noise draws of a difference.

Multi-label tasks (one binary task per label) fit the same frame: each label's class 1 is
"present", and ``cap`` bounds how many labels (plus other tasks) one record may count in.

Pure functions on arrays: the noise is added by the caller
(:func:`meshfl.privacy.mechanisms.add_gaussian_noise`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["DiscriminantHead", "StatisticsLayout", "memberships", "sensitivity", "statistics"]


@dataclass(frozen=True)
class StatisticsLayout:
    """Where each statistic sits in the packed vector.

    Order: ``[n, Σx (dim), class counts (members), class sums (members·dim),
    Σxxᵀ upper triangle (dim·(dim+1)/2, if second_moment), noise variance]``; with
    ``total=False`` there is no ``n`` and ``Σx``, and the first task has a column for each of
    its classes (every record must be in exactly one of them: they sum to ``n`` and ``Σx``).
    Counts are multiplied by ``count_scale`` and the second moment by ``moment_scale`` (they
    share the Gaussian mechanism's noise with the sums in those proportions). The last value is the
    variance of the noise on each packed coordinate (0 without DP): public, as it follows
    from the plan's ε, δ and rounds, and summed with the rest across MSPs.
    """

    dim: int
    task_sizes: tuple[int, ...]
    second_moment: bool = True
    count_scale: float = 1.0
    moment_scale: float = 1.0
    total: bool = True

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """Start of each task's first column among the members (its class 1's, or, for the
        first task without ``total``, its class 0's)."""
        starts, at = [], 0
        for t, k in enumerate(self.task_sizes):
            starts.append(at)
            at += k if (t == 0 and not self.total) else k - 1
        return tuple(starts)

    @property
    def members(self) -> int:
        """Classes with their own count and sum (all but each task's first, except for the
        first task without ``total``)."""
        explicit = 0 if self.total else 1
        return sum(k - 1 for k in self.task_sizes) + explicit

    @property
    def head_size(self) -> int:
        """Values before the class counts: ``n`` and ``Σx`` (``total``), or none."""
        return 1 + self.dim if self.total else 0

    @property
    def moment_size(self) -> int:
        return self.dim * (self.dim + 1) // 2 if self.second_moment else 0

    @property
    def size(self) -> int:
        """Length of the packed vector, its noise variance included."""
        return self.head_size + self.members * (1 + self.dim) + self.moment_size + 1

    @property
    def private(self) -> slice:
        """The coordinates that carry the Gaussian mechanism's noise (all but the variance)."""
        return slice(0, self.size - 1)


def memberships(targets: np.ndarray, layout: StatisticsLayout, cap: float) -> np.ndarray:
    """Class membership rows ``z`` of integer ``targets`` (one column per task), ‖z‖ ≤ √cap.

    A record in class ``k ≥ 1`` of task ``t`` has a 1 in that class's column; class 0 of every
    task has no column (it follows from the totals), except the first task's without
    ``layout.total`` (every class of it has one). Rows of norm above ``√cap`` are scaled
    down to it: that bounds the sensitivity (:func:`sensitivity`) whatever a record's labels.
    """
    targets = np.asarray(targets, dtype=np.int64)
    z = np.zeros((len(targets), layout.members), dtype=np.float64)
    for t, start in enumerate(layout.offsets):
        col = targets[:, t]
        if t == 0 and not layout.total:
            z[np.arange(len(col)), start + col] = 1.0
            continue
        rows = np.flatnonzero(col > 0)
        z[rows, start + col[rows] - 1] = 1.0
    norms = np.sqrt(z.sum(1))  # entries are 0/1
    scale = np.minimum(1.0, np.sqrt(cap) / np.maximum(norms, 1e-12))
    return z * scale[:, None]


def sensitivity(layout: StatisticsLayout, cap: float) -> float:
    """L2 sensitivity of :func:`statistics` to adding or removing one record."""
    a, b = layout.count_scale, layout.moment_scale if layout.second_moment else 0.0
    columns = 1.0 + cap if layout.total else cap
    return float(np.sqrt(columns * (1.0 + a * a) + b * b))


def statistics(features: np.ndarray, z: np.ndarray, layout: StatisticsLayout) -> np.ndarray:
    """The packed statistics of unit-norm ``features`` with memberships ``z`` (variance 0).

    Rows of ``features`` must have norm at most 1 (the encoder normalises them; rows
    above are scaled down here, so the sensitivity holds for any input).
    """
    x = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1)
    x = x / np.maximum(norms, 1.0)[:, None]
    a = layout.count_scale
    parts = [np.array([a * len(x)]), x.sum(0)] if layout.total else []
    parts += [
        a * z.sum(0),
        (z.T @ x).ravel(),
    ]
    if layout.second_moment:
        iu = np.triu_indices(layout.dim)
        parts.append(layout.moment_scale * (x.T @ x)[iu])
    parts.append(np.zeros(1))
    return np.concatenate(parts)


@dataclass(frozen=True)
class _Task:
    weights: np.ndarray  # (dim, k)
    bias: np.ndarray  # (k,)


class DiscriminantHead:
    """The classifier solved from summed (possibly noisy) statistics.

    Parameters
    ----------
    packed : ndarray
        Statistics of :class:`StatisticsLayout` ``layout``, summed over MSPs (their noise
        variances summed too, in the last coordinate).
    layout : StatisticsLayout
        Their layout.
    shrinkage : float
        Share of the within-class covariance replaced by its isotropic average
        (Ledoit-Wolf style), on top of the floor the noise sets. 1 gives nearest class mean.

    Notes
    -----
    Noise makes counts and covariances wrong in known ways; the solve guards against it:
    counts are floored at 1; the squared norms of noisy class means are debiased by their
    known noise variance; the covariance is shrunk toward the isotropic one
    (``(1 - Σπ_k‖μ_k‖²)/dim``, exact for unit vectors) by at least the ratio of its noise
    level (≈ 2·std·√dim / n, the spectral norm of a symmetric Gaussian matrix) to that
    isotropic variance, so that under heavy noise LDA becomes nearest class mean.
    """

    def __init__(self, packed: np.ndarray, layout: StatisticsLayout, *, shrinkage: float = 0.1):
        packed = np.asarray(packed, dtype=np.float64)
        if packed.size != layout.size:
            raise ValueError(
                f"closed-form statistics of this layout hold {layout.size} values; "
                f"got {packed.size}"
            )
        d, c, a = layout.dim, layout.members, layout.count_scale
        noise_std = float(np.sqrt(max(packed[-1], 0.0)))
        h = layout.head_size
        counts = packed[h : h + c] / a
        sums = packed[h + c : h + c + c * d].reshape(c, d)
        k0 = layout.task_sizes[0]
        if layout.total:
            n, total = packed[0] / a, packed[1 : 1 + d]
            total_draws = 1.0
        else:  # every record is in one class of the first task
            n, total = counts[:k0].sum(), sums[:k0].sum(0)
            total_draws = float(k0)
        n = max(n, 1.0)
        second = None
        if layout.second_moment:
            upper = packed[h + c + c * d : -1] / layout.moment_scale
            second = np.zeros((d, d))
            second[np.triu_indices(d)] = upper
            second = second + np.triu(second, 1).T
        self.layout = layout
        self.tasks: list[_Task] = []
        for t, (start, k) in enumerate(zip(layout.offsets, layout.task_sizes, strict=True)):
            # noise draws on each class's sum: class 0's is the total minus the others
            draws = np.ones(k)
            if t == 0 and not layout.total:
                task_counts = counts[start : start + k].copy()
                task_sums = sums[start : start + k].copy()
            else:
                task_counts = np.empty(k)
                task_sums = np.empty((k, d))
                task_counts[1:] = counts[start : start + k - 1]
                task_sums[1:] = sums[start : start + k - 1]
                task_counts[0] = n - task_counts[1:].sum()
                task_sums[0] = total - task_sums[1:].sum(0)
                draws[0] = total_draws + (k - 1)
            task_counts = np.maximum(task_counts, 1.0)
            self.tasks.append(
                _solve(
                    task_counts,
                    task_sums,
                    n,
                    second,
                    draws=draws,
                    shrinkage=shrinkage,
                    noise_std=noise_std,
                    moment_noise=noise_std / layout.moment_scale,
                )
            )

    def logits(self, features: np.ndarray) -> list[np.ndarray]:
        """Discriminant scores per task, each ``(n, k)``."""
        x = np.asarray(features, dtype=np.float64)
        return [x @ task.weights + task.bias for task in self.tasks]

    def predict_proba(self, features: np.ndarray) -> list[np.ndarray]:
        """Posterior class probabilities per task (softmax of the discriminant scores)."""
        out = []
        for logit in self.logits(features):
            logit = logit - logit.max(1, keepdims=True)
            p = np.exp(logit)
            out.append(p / p.sum(1, keepdims=True))
        return out


def _solve(
    counts: np.ndarray,
    sums: np.ndarray,
    n: float,
    second: np.ndarray | None,
    *,
    draws: np.ndarray,
    shrinkage: float,
    noise_std: float,
    moment_noise: float,
) -> _Task:
    """LDA of one task: weights ``Σ⁻¹μ_k`` and biases ``-½μ_kᵀΣ⁻¹μ_k + log π_k``.

    The noise on a class mean ``μ_k`` (variance ``v_k`` per coordinate) inflates
    ``μ_kᵀAμ_k`` by ``v_k·tr(A)`` on average, most for the rarest classes; the biases
    subtract it, or rare classes would never be predicted under DP.
    """
    d = sums.shape[1]
    means = sums / counts[:, None]
    priors = counts / counts.sum()
    # ``draws``: noise draws on each class's sum (a difference of released sums has several)
    mean_var = noise_std**2 * draws / counts**2
    square = np.sum(means * means, 1) - d * mean_var
    # unit vectors: total variance 1 = within-class trace + Σπ‖μ‖²
    isotropic = max(1.0 - float(priors @ np.clip(square, 0.0, 1.0)), 1e-3) / d
    if second is None:
        inv = np.eye(d) / isotropic
    else:
        within = (second - (sums.T / counts) @ sums) / n
        within = (within + within.T) / 2
        values, vectors = np.linalg.eigh(within)
        # where the noise on the covariance (spectral norm ≈ 2·std·√d / n) is as large as
        # the covariance itself, it tells nothing: shrink all the way to the isotropic one
        noise_level = 2.0 * moment_noise * np.sqrt(d) / n
        alpha = min(1.0, max(shrinkage, noise_level / isotropic))
        values = (1 - alpha) * values + alpha * isotropic
        values = np.maximum(values, 1e-3 * isotropic)
        inv = (vectors / values) @ vectors.T
    weights = inv @ means.T
    quadratic = np.sum(means.T * weights, 0) - mean_var * float(np.trace(inv))
    bias = -0.5 * quadratic + np.log(priors)
    return _Task(weights=weights, bias=bias)
