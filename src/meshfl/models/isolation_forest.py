"""A federated isolation forest whose structure does not depend on anyone's data.

An isolation forest (Liu, Ting & Zhou, "Isolation Forest", ICDM 2008) scores a point by how
quickly random axis-parallel splits isolate it: anomalies sit in sparse regions, so they end
up alone after few splits and get a short expected path length. The classic forest draws each
split from the range of the training points that reach the node, so the trees themselves
encode the data and cannot be shared between parties that must keep their data at home.

Half-space trees (Tan, Ting & Liu, "Fast anomaly detection for streaming data", IJCAI 2011)
show that the splits need not look at the data: a tree grown inside a fixed *workspace*, with
the data entering only as the *mass* (number of points) that reaches each node, detects
anomalies as well. meshfl combines the two:

* **Structure from public information.** Every split picks a feature and a threshold uniformly
  inside the node's current box, which starts at the mesh's PUBLIC feature bounds
  ``[low, high]`` and is narrowed by the ancestors' splits. Drawn with a PUBLIC seed, the trees
  are identical at every MSP, bit for bit, without a single message being exchanged.
  Thresholds drawn uniformly inside the box are already spread out, so the random perturbation
  of the workspace that half-space trees need (they always split at the midpoint) is not needed
  here.
* **Data only as leaf masses.** Each MSP pushes its rows down the trees and counts how many
  land in each leaf (:func:`leaf_counts`). That count vector is the whole federated update: the
  counts of the union of the MSPs' data are the sum of their counts, so the coordinator can add
  them under encryption (CKKS) and each MSP can add Gaussian noise for differential privacy
  (each row changes exactly one count per tree, so the L2 sensitivity is ``sqrt(n_trees)``).
* **Scores on sklearn's scale.** :func:`score_samples` turns the (summed, possibly noisy)
  masses into the isolation-forest score ``-2 ** (-E[h(x)] / c(psi))`` with the sign convention
  of :meth:`sklearn.ensemble.IsolationForest.score_samples`: values in ``[-1, 0)``, lower is
  more abnormal.

The path length of a point in one tree mimics a tree grown on a subsample of ``psi`` points
(``subsample_size``, 256 as in the paper and in scikit-learn). Each node's mass is rescaled to
that virtual subsample, ``m = mass / tree_total * psi``, and two differences between a fixed
tree and a classic one are accounted for:

* *Isolation before the leaf.* The classic tree stops splitting a node holding at most one
  point, so the path of ``x`` stops at the first node on its way down that holds ``m <= 1``
  virtual points: a point that lands in a near-empty region gets a short path even though
  the fixed tree goes on splitting there. If no node on the way is that light, the path ends
  at the leaf and adds ``c(m_leaf)``, the average path length of an unsuccessful search in a
  binary search tree (:func:`average_path_length`), for the unbuilt subtree below the leaf.
* *Splits that miss the data.* A classic tree draws every threshold between the smallest
  and largest point of its node, so every split separates points. A fixed tree drawn from
  wide public bounds often splits where one side is empty; the classic tree would not have
  made that split, so it must not lengthen the path of the points that go on to the full
  side. Each level therefore adds ``min(1, m_sibling)`` instead of 1, where ``m_sibling`` is
  the virtual mass on the other side of the split. Without this, every score drifts towards
  0 (normal) as the bounds widen relative to the data, and sklearn's ``-0.5`` threshold
  stops flagging anything; with it the scores keep sklearn's scale whatever the bounds.

So ``h(x) = sum of min(1, m_sibling) over the levels passed + c(m_leaf)`` (``c`` omitted
when the path stops early, where ``c(m <= 1) = 0`` anyway).

Masses of internal nodes are sums of the leaf counts below them, so the leaf counts are all a
forest needs. Noisy counts can be negative: the sums are taken over the raw counts, where the
zero-mean noise cancels, and each node's mass is clipped at zero only afterwards.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from numpy.typing import ArrayLike, NDArray

from meshfl.config.errors import ConfigError
from meshfl.config.validation import Count, Int, check

__all__ = [
    "ForestStructure",
    "MAX_DEPTH",
    "average_path_length",
    "concat_structures",
    "decision_function",
    "grow_structure",
    "leaf_counts",
    "leaf_index",
    "path_sums",
    "predict",
    "score_from_path_sums",
    "score_samples",
]

MAX_DEPTH = 16
Depth = Annotated[int, Int(1, MAX_DEPTH)]
_Subsample = Annotated[int, Int(2)]
"""Deepest tree :func:`grow_structure` builds: ``2**16`` leaves per tree is already far more
than any leaf-mass vector worth encrypting."""

# Elements of the (rows, trees) arrays leaf_index works on at once: small enough to stay in
# cache, which measured about twice as fast as one big gather over all rows.
_CHUNK_ELEMENTS = 1 << 15


@dataclass(frozen=True, eq=False)
class ForestStructure:
    """The data-independent part of a federated isolation forest.

    Each tree is a complete binary tree of depth ``depth`` stored heap-style: node ``i`` has
    children ``2 * i + 1`` (left, ``x[feature] < threshold``) and ``2 * i + 2`` (right,
    ``x[feature] >= threshold``); nodes ``0 .. 2**depth - 2`` are internal and the
    ``2**depth`` leaves are numbered ``0 .. 2**depth - 1`` from left to right.

    Parameters
    ----------
    feature : ndarray of int, shape (n_trees, 2**depth - 1)
        Feature each internal node splits on.
    threshold : ndarray of float, shape (n_trees, 2**depth - 1)
        Threshold each internal node splits at.
    depth : int
        Depth of every tree, in ``[1, 16]``.
    low, high : ndarray of float, shape (n_features,)
        The public feature bounds the splits were drawn from.

    Notes
    -----
    The arrays are copied and made read-only, so a structure can be shared safely. Compare two
    structures with :func:`numpy.array_equal` on their fields.
    """

    feature: NDArray[np.intp]
    threshold: NDArray[np.float64]
    depth: int
    low: NDArray[np.float64]
    high: NDArray[np.float64]

    def __post_init__(self) -> None:
        depth = check(self.depth, Depth, "depth", where="ForestStructure")
        low, high = _check_bounds(self.low, self.high)
        feature = np.array(self.feature, copy=True)
        threshold = np.array(self.threshold, dtype=np.float64, copy=True)
        n_internal = 2**depth - 1
        if feature.ndim != 2 or feature.shape[1] != n_internal or feature.shape[0] < 1:
            raise ConfigError(
                "The 'feature' array of ForestStructure must have shape (n_trees, 2**depth - 1) "
                f"= (n_trees, {n_internal}) with n_trees >= 1. Got shape {feature.shape} instead."
            )
        if not np.issubdtype(feature.dtype, np.integer):
            raise ConfigError(
                "The 'feature' array of ForestStructure must hold integer feature indices. "
                f"Got dtype {feature.dtype} instead."
            )
        feature = feature.astype(np.intp)
        if feature.min() < 0 or feature.max() >= low.shape[0]:
            raise ConfigError(
                "The 'feature' array of ForestStructure must hold feature indices in "
                f"[0, {low.shape[0] - 1}] (the bounds have {low.shape[0]} features). Got values "
                f"in [{feature.min()}, {feature.max()}] instead."
            )
        if threshold.shape != feature.shape:
            raise ConfigError(
                "The 'threshold' array of ForestStructure must have the same shape as 'feature' "
                f"{feature.shape}. Got shape {threshold.shape} instead."
            )
        if not np.all(np.isfinite(threshold)):
            raise ConfigError("The 'threshold' array of ForestStructure must be finite.")
        for name, value in (
            ("feature", feature),
            ("threshold", threshold),
            ("low", low),
            ("high", high),
        ):
            value.flags.writeable = False
            object.__setattr__(self, name, value)
        object.__setattr__(self, "depth", depth)

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return int(self.feature.shape[0])

    @property
    def n_leaves(self) -> int:
        """Number of leaves per tree, ``2**depth``."""
        return 2**self.depth

    @property
    def n_features(self) -> int:
        """Number of features a sample must have."""
        return int(self.low.shape[0])


def grow_structure(
    low: ArrayLike,
    high: ArrayLike,
    *,
    n_trees: int,
    depth: int,
    seed: int | np.random.Generator,
) -> ForestStructure:
    """Draw a forest's splits from public feature bounds and a public seed.

    Every internal node picks a feature uniformly at random and a threshold uniformly inside
    the node's box on that feature. The root's box is ``[low, high]``; a left child's box is
    its parent's with the upper edge on the split feature lowered to the threshold, a right
    child's with the lower edge raised to it (as in half-space trees). No data is involved, so
    every MSP that calls this with the same arguments gets the same forest.

    Parameters
    ----------
    low, high : array-like of float, shape (n_features,)
        Public bounds of each feature, finite, with ``low < high``. Points outside the bounds
        are still scored; they just follow the splits by comparison.
    n_trees : int
        Number of trees, at least 1.
    depth : int
        Depth of every tree, in ``[1, 16]``; each tree has ``2**depth`` leaves.
    seed : int or numpy.random.Generator
        Non-negative integer seed shared by the whole mesh, or a generator (which is
        advanced). Trees are drawn one after the other from a single stream, so the first
        ``k`` trees of a forest do not depend on ``n_trees``.

    Returns
    -------
    ForestStructure

    Examples
    --------
    >>> s = grow_structure([0.0, 0.0], [1.0, 10.0], n_trees=3, depth=2, seed=0)
    >>> s.feature.shape, s.n_leaves, s.n_features
    ((3, 3), 4, 2)
    """
    low_arr, high_arr = _check_bounds(low, high)
    n_trees = check(n_trees, Count, "n_trees", where="grow_structure")
    depth = check(depth, Depth, "depth", where="grow_structure")
    rng = _check_seed(seed)
    n_features = low_arr.shape[0]
    n_internal = 2**depth - 1

    feature = np.empty((n_trees, n_internal), dtype=np.intp)
    threshold = np.empty((n_trees, n_internal), dtype=np.float64)
    for t in range(n_trees):
        # Boxes of the nodes of the current level, left to right: shape (2**d, n_features).
        box_low = low_arr[None, :].copy()
        box_high = high_arr[None, :].copy()
        for d in range(depth):
            width = 2**d
            first = width - 1
            q = rng.integers(0, n_features, size=width)
            u = rng.random(size=width)
            nodes = np.arange(width)
            lo, hi = box_low[nodes, q], box_high[nodes, q]
            thr = lo + u * (hi - lo)
            # Rounding can put lo + u * (hi - lo) on hi itself; keep the split strictly inside.
            thr = np.where(thr >= hi, lo, thr)
            feature[t, first : first + width] = q
            threshold[t, first : first + width] = thr
            if d + 1 < depth:
                # Children of node p sit at 2p (left) and 2p + 1 (right) of the next level.
                box_low = np.repeat(box_low, 2, axis=0)
                box_high = np.repeat(box_high, 2, axis=0)
                box_high[2 * nodes, q] = thr
                box_low[2 * nodes + 1, q] = thr
    return ForestStructure(
        feature=feature, threshold=threshold, depth=depth, low=low_arr, high=high_arr
    )


def concat_structures(a: ForestStructure, b: ForestStructure) -> ForestStructure:
    """Join two forests into one with the trees of ``a`` followed by those of ``b``.

    Both must have the same depth and the same feature bounds. The leaf counts of the joined
    forest are ``np.concatenate([leaf_counts(a, X), leaf_counts(b, X)])``.

    Parameters
    ----------
    a, b : ForestStructure

    Returns
    -------
    ForestStructure
    """
    if a.depth != b.depth:
        raise ConfigError(
            "The 'b' forest of concat_structures must have the same depth as 'a' "
            f"({a.depth}). Got {b.depth} instead."
        )
    if not (np.array_equal(a.low, b.low) and np.array_equal(a.high, b.high)):
        raise ConfigError(
            "The 'b' forest of concat_structures must be grown from the same feature bounds "
            "as 'a'; grow both with the mesh's public bounds."
        )
    return ForestStructure(
        feature=np.concatenate([a.feature, b.feature]),
        threshold=np.concatenate([a.threshold, b.threshold]),
        depth=a.depth,
        low=a.low,
        high=a.high,
    )


def leaf_index(
    structure: ForestStructure, X: ArrayLike, *, allow_missing: bool = False
) -> NDArray[np.intp]:
    """Leaf each sample reaches in each tree.

    Parameters
    ----------
    structure : ForestStructure
    X : array-like of float, shape (n_samples, n_features)
        Samples. Values outside the bounds follow the splits by comparison.
    allow_missing : bool
        Accept missing (NaN) values: a missing value goes left at every split on its
        feature, as if it lay below every threshold, so the rows missing a feature share
        one region of it (many: a dense, normal region; few: an isolated, abnormal one).
        Without it NaN is refused.

    Returns
    -------
    ndarray of int, shape (n_samples, n_trees)
        Leaf numbers in ``[0, 2**depth)``, left to right.
    """
    X_arr = _check_samples(structure, X, allow_missing=allow_missing)
    n_samples, n_features = X_arr.shape
    n_trees, n_internal = structure.feature.shape
    out = np.empty((n_samples, n_trees), dtype=np.intp)
    if n_samples == 0:
        return out
    # Flat gathers are faster than 2-D fancy indexing: node (t, i) is t * n_internal + i,
    # feature q of row r is r * n_features + q.
    feature_flat = structure.feature.ravel()
    threshold_flat = structure.threshold.ravel()
    X_flat = X_arr.ravel()
    tree_offset = (np.arange(n_trees, dtype=np.intp) * n_internal)[None, :]
    chunk = max(1, _CHUNK_ELEMENTS // n_trees)
    for start in range(0, n_samples, chunk):
        stop = min(start + chunk, n_samples)
        row_offset = (np.arange(start, stop, dtype=np.intp) * n_features)[:, None]
        node = np.zeros((stop - start, n_trees), dtype=np.intp)
        for _ in range(structure.depth):
            flat = node + tree_offset
            x = X_flat[row_offset + feature_flat[flat]]
            node = 2 * node + 1 + (x >= threshold_flat[flat])  # NaN >= t is False: left
        out[start:stop] = node - n_internal
    return out


def leaf_counts(
    structure: ForestStructure, X: ArrayLike, *, allow_missing: bool = False
) -> NDArray[np.float64]:
    """Number of samples that reach each leaf: the federated update of the forest.

    Counts are additive over samples, so the counts of several MSPs' data sum to the counts
    of their union, exactly.

    Parameters
    ----------
    structure : ForestStructure
    X : array-like of float, shape (n_samples, n_features)
    allow_missing : bool
        Accept NaN (see :func:`leaf_index`).

    Returns
    -------
    ndarray of float64, shape (n_trees * 2**depth,)
        Tree-major: entry ``t * 2**depth + j`` counts the samples in leaf ``j`` of tree ``t``.
        Each tree's counts sum to ``n_samples``.
    """
    leaves = leaf_index(structure, X, allow_missing=allow_missing)
    n_leaves = structure.n_leaves
    offset = (np.arange(structure.n_trees, dtype=np.intp) * n_leaves)[None, :]
    counts = np.bincount((leaves + offset).ravel(), minlength=structure.n_trees * n_leaves)
    return counts.astype(np.float64)


def average_path_length(n: ArrayLike) -> NDArray[np.float64]:
    """Average path length of an unsuccessful search in a binary search tree of ``n`` points.

    ``c(n) = 2 H(n - 1) - 2 (n - 1) / n`` with the harmonic number approximated as
    ``H(i) ~ ln(i) + euler_gamma``, ``c(n) = 0`` for ``n <= 1`` and ``c(2) = 1``: the
    normalisation of Liu et al. (2008), computed exactly as scikit-learn's
    ``sklearn.ensemble._iforest._average_path_length``.

    Parameters
    ----------
    n : array-like of float
        Numbers of points (any shape).

    Returns
    -------
    ndarray of float64, same shape as ``n``

    Examples
    --------
    >>> average_path_length([0, 1, 2]).tolist()
    [0.0, 0.0, 1.0]
    """
    n_arr = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n_arr)
    out[n_arr == 2] = 1.0
    big = n_arr > 2
    m = n_arr[big]
    out[big] = 2.0 * (np.log(m - 1.0) + np.euler_gamma) - 2.0 * (m - 1.0) / m
    return out


def score_samples(
    structure: ForestStructure,
    counts: ArrayLike,
    X: ArrayLike,
    *,
    subsample_size: int = 256,
    allow_missing: bool = False,
) -> NDArray[np.float64]:
    """Anomaly score of each sample, on the scale of sklearn's ``IsolationForest``.

    Parameters
    ----------
    structure : ForestStructure
    counts : array-like of float, shape (n_trees * 2**depth,)
        Leaf counts as returned by :func:`leaf_counts`, usually summed over MSPs. Noisy
        (even negative) counts are accepted: node masses are sums of the raw counts, clipped
        at zero. Trees whose counts sum to zero or less carry no information and are left out
        of the average.
    X : array-like of float, shape (n_samples, n_features)
    subsample_size : int, default 256
        Size ``psi`` of the virtual subsample each tree stands for (at least 2).
    allow_missing : bool, default False
        Accept NaN (see :func:`leaf_index`).

    Returns
    -------
    ndarray of float64, shape (n_samples,)
        ``-2 ** (-E[h(x)] / c(psi))`` in ``[-1, 0)``: the LOWER, the MORE ABNORMAL, as in
        :meth:`sklearn.ensemble.IsolationForest.score_samples`.

    Notes
    -----
    Each tree's node masses are rescaled to ``psi`` virtual points. Going down, each level
    adds ``min(1, m_sibling)`` to the path (a split with nothing on the other side is one a
    classic isolation tree would not have made); the path stops at the first node holding at
    most one virtual point, and otherwise at the leaf, adding ``c(m_leaf)``. As masses are
    fractional, ``c`` is interpolated linearly between the integers around ``m``, where it
    equals :func:`average_path_length`; sklearn's closed form itself dips below zero for
    ``1 < m < 2``. See the module docstring for why.

    Examples
    --------
    >>> s = grow_structure([0.0], [1.0], n_trees=10, depth=4, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> counts = leaf_counts(s, rng.normal(0.5, 0.05, size=(500, 1)))
    >>> inlier, outlier = score_samples(s, counts, [[0.5], [0.98]])
    >>> bool(outlier < inlier)
    True
    """
    psi = check(subsample_size, _Subsample, "subsample_size", where="score_samples")
    path = _cached_path_lengths(structure, counts, psi)
    total, trees = _summed_paths(structure, path, X, allow_missing)
    return score_from_path_sums(total, trees, psi)


def path_sums(
    structure: ForestStructure,
    counts: ArrayLike,
    X: ArrayLike,
    *,
    subsample_size: int = 256,
    allow_missing: bool = False,
) -> tuple[NDArray[np.float64], int]:
    """Each sample's path lengths summed over the trees that hold mass, and how many do.

    The parts of :func:`score_samples` that add up over trees: the score of a forest made
    of several parts (e.g. one per round) is :func:`score_from_path_sums` of the parts'
    summed totals and tree counts, so a part's sums can be kept and not recomputed. A part
    whose trees all lack mass gives zeros and 0 trees.
    """
    psi = check(subsample_size, _Subsample, "subsample_size", where="path_sums")
    counts_arr = np.ascontiguousarray(counts, dtype=np.float64)
    checkable = counts_arr.shape == (structure.n_trees * structure.n_leaves,) and np.all(
        np.isfinite(counts_arr)
    )  # else _leaf_path_lengths says what is wrong
    if checkable and not np.any(counts_arr.reshape(structure.n_trees, -1).sum(axis=1) > 0):
        return np.zeros(len(np.asarray(X))), 0
    path = _cached_path_lengths(structure, counts_arr, psi)
    return _summed_paths(structure, path, X, allow_missing)


def score_from_path_sums(
    total: ArrayLike, trees: int, subsample_size: int = 256
) -> NDArray[np.float64]:
    """:func:`score_samples` from :func:`path_sums` (added over the forest's parts)."""
    if trees <= 0:
        raise ConfigError(
            "The 'counts' vector must hold some positive mass, but every tree's counts sum to "
            "zero or less. Train the forest with leaf_counts on some data first."
        )
    mean_path = np.asarray(total, dtype=np.float64) / trees
    return -np.exp2(-mean_path / float(average_path_length(subsample_size)))


def _summed_paths(
    structure: ForestStructure, path: NDArray[np.float64], X: ArrayLike, allow_missing: bool
) -> tuple[NDArray[np.float64], int]:
    leaves = leaf_index(structure, X, allow_missing=allow_missing)
    offset = (np.arange(structure.n_trees, dtype=np.intp) * structure.n_leaves)[None, :]
    h = path.ravel()[leaves + offset]
    valid = np.isfinite(path[:, 0])
    if valid.all():
        return h.sum(axis=1), structure.n_trees
    return h[:, valid].sum(axis=1), int(valid.sum())


def decision_function(
    structure: ForestStructure,
    counts: ArrayLike,
    X: ArrayLike,
    *,
    subsample_size: int = 256,
) -> NDArray[np.float64]:
    """:func:`score_samples` shifted by 0.5, sklearn's offset for ``contamination="auto"``.

    Negative values are outliers, positive values inliers.
    """
    return score_samples(structure, counts, X, subsample_size=subsample_size) + 0.5


def predict(
    structure: ForestStructure,
    counts: ArrayLike,
    X: ArrayLike,
    *,
    subsample_size: int = 256,
    threshold: float = -0.5,
) -> NDArray[np.int64]:
    """Label samples ``+1`` (inlier) or ``-1`` (outlier), as sklearn's ``predict`` does.

    A sample is an outlier when its :func:`score_samples` is below ``threshold``; the default
    ``-0.5`` matches sklearn's ``contamination="auto"``.
    """
    score = score_samples(structure, counts, X, subsample_size=subsample_size)
    return np.where(score < threshold, -1, 1).astype(np.int64)


# --------------------------------------------------------------------------- internals


_PATHS: OrderedDict[tuple[int, int, bytes], tuple[ForestStructure, NDArray[np.float64]]] = (
    OrderedDict()
)
_PATHS_LOCK = threading.Lock()


def _cached_path_lengths(
    structure: ForestStructure, counts: ArrayLike, psi: int
) -> NDArray[np.float64]:
    """:func:`_leaf_path_lengths`, remembered for the last few (structure, counts): every
    MSP of a simulated mesh scores its rows with the same global model."""
    counts_arr = np.ascontiguousarray(counts, dtype=np.float64)
    key = (id(structure), psi, hashlib.blake2b(counts_arr.tobytes(), digest_size=16).digest())
    with _PATHS_LOCK:
        hit = _PATHS.get(key)
        if hit is not None and hit[0] is structure:
            _PATHS.move_to_end(key)
            return hit[1]
    path = _leaf_path_lengths(structure, counts_arr, psi)
    path.setflags(write=False)
    with _PATHS_LOCK:
        _PATHS[key] = (structure, path)
        while len(_PATHS) > 8:
            _PATHS.popitem(last=False)
    return path


def _leaf_path_lengths(
    structure: ForestStructure, counts: ArrayLike, psi: int
) -> NDArray[np.float64]:
    """Path length ``h`` of a point reaching each leaf of each tree, shape (n_trees, n_leaves).

    Rows of trees without any (clipped) mass are NaN.
    """
    n_trees, n_leaves, depth = structure.n_trees, structure.n_leaves, structure.depth
    counts_arr = np.asarray(counts, dtype=np.float64)
    if counts_arr.shape != (n_trees * n_leaves,):
        raise ConfigError(
            "The 'counts' vector must have shape (n_trees * 2**depth,) = "
            f"({n_trees * n_leaves},), as leaf_counts returns for this forest. "
            f"Got shape {counts_arr.shape} instead."
        )
    if not np.all(np.isfinite(counts_arr)):
        raise ConfigError("The 'counts' vector must be finite. Got NaN or infinite entries.")
    # Node masses are sums of the RAW leaf counts, clipped only afterwards: zero-mean noise
    # cancels in the sums, whereas clipping each leaf first would pile the positive half of
    # the noise of every empty leaf into the internal nodes' masses.
    mass = counts_arr.reshape(n_trees, n_leaves)
    total = mass.sum(axis=1, keepdims=True)
    valid = total[:, 0] > 0
    if not np.any(valid):
        raise ConfigError(
            "The 'counts' vector must hold some positive mass, but every tree's counts sum to "
            "zero or less. Train the forest with leaf_counts on some data first."
        )
    scale = np.where(valid[:, None], psi / np.where(valid[:, None], total, 1.0), 0.0)

    path = np.zeros((n_trees, n_leaves))
    stopped = np.zeros((n_trees, n_leaves), dtype=bool)
    for d in range(depth + 1):
        size = 2 ** (depth - d)  # leaves under one node of level d
        node_mass = np.clip(mass.reshape(n_trees, 2**d, size).sum(axis=2), 0.0, None) * scale
        if d > 0:
            # The split into level d counts as much as it separates: fully when the sibling
            # holds at least one virtual point, not at all when it is empty (a classic tree
            # never splits outside its data, so it would not have made that split).
            sibling = node_mass.reshape(n_trees, -1, 2)[:, :, ::-1].reshape(n_trees, -1)
            step = np.repeat(np.minimum(sibling, 1.0), size, axis=1)
            path[~stopped] += step[~stopped]
        leaf_mass = np.repeat(node_mass, size, axis=1)
        if d < depth:
            stopped |= leaf_mass <= 1.0
        else:
            path[~stopped] += _interpolated_path_length(leaf_mass[~stopped])
    path[~valid] = np.nan
    return path


def _interpolated_path_length(m: NDArray[np.float64]) -> NDArray[np.float64]:
    """``c(m)`` for fractional masses: linear between ``c(floor(m))`` and ``c(ceil(m))``.

    Monotone and continuous, and equal to :func:`average_path_length` at integers.
    """
    lo = np.floor(m)
    frac = m - lo
    return (1.0 - frac) * average_path_length(lo) + frac * average_path_length(lo + 1.0)


def _check_seed(seed: object) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)) and seed >= 0:
        return np.random.default_rng(int(seed))
    raise ConfigError(
        "The 'seed' parameter must be a non-negative int shared by the whole mesh (or a "
        f"numpy.random.Generator). Got {seed!r} instead."
    )


def _check_bounds(
    low: ArrayLike, high: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    arrays = []
    for name, value in (("low", low), ("high", high)):
        try:
            arr = np.array(value, dtype=np.float64, copy=True)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"The '{name}' parameter must be a 1-D array of floats, one bound per feature. "
                f"Got {value!r} instead."
            ) from exc
        if arr.ndim != 1 or arr.shape[0] == 0:
            raise ConfigError(
                f"The '{name}' parameter must be a non-empty 1-D array, one bound per feature. "
                f"Got shape {arr.shape} instead."
            )
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ConfigError(
                f"The '{name}' bound of feature {bad[0]} must be finite. Got {arr[bad[0]]} instead."
            )
        arrays.append(arr)
    low_arr, high_arr = arrays
    if low_arr.shape != high_arr.shape:
        raise ConfigError(
            f"The 'high' parameter must have the same length as 'low' ({low_arr.shape[0]}). "
            f"Got {high_arr.shape[0]} instead."
        )
    bad = np.flatnonzero(~(low_arr < high_arr))
    if bad.size:
        i = bad[0]
        raise ConfigError(
            f"The 'high' bound of feature {i} must be greater than its 'low' bound "
            f"({low_arr[i]}). Got {high_arr[i]} instead."
        )
    return low_arr, high_arr


def _check_samples(
    structure: ForestStructure, X: ArrayLike, *, allow_missing: bool = False
) -> NDArray[np.float64]:
    try:
        X_arr = np.ascontiguousarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError("The 'X' parameter must be a 2-D array of floats.") from exc
    if X_arr.ndim != 2 or X_arr.shape[1] != structure.n_features:
        hint = " Use X.reshape(1, -1) for a single sample." if X_arr.ndim == 1 else ""
        raise ConfigError(
            f"The 'X' parameter must have shape (n_samples, {structure.n_features}), one column "
            f"per feature of the forest. Got shape {X_arr.shape} instead.{hint}"
        )
    if not allow_missing and np.isnan(X_arr).any():
        raise ConfigError(
            "The 'X' parameter must not contain NaN: a missing value has no side of a split. "
            "Impute it (e.g. with the feature's public midpoint) before scoring, or pass "
            "allow_missing=True to send missing values left at every split."
        )
    return X_arr
