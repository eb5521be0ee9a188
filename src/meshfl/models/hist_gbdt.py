"""Histogram gradient-boosted trees for binary classification, grown one tree level at a time.

Gradient boosting (Friedman, "Greedy function approximation", Ann. Stat. 2001) fits trees to
the gradients of the loss; second-order boosting (Chen & Guestrin, "XGBoost", KDD 2016)
picks the split of a node that maximises

    gain = G_L² / (H_L + λ) + G_R² / (H_R + λ) - G² / (H + λ)

where ``G``, ``H`` are the sums of the rows' gradients and hessians in the node and its two
children, and gives a leaf the value ``-G / (H + λ)`` times the learning rate. Histogram
methods (Ke et al., "LightGBM", NeurIPS 2017) first map every feature value to one of a few
bins; the gain of every split of a node then follows from per-bin sums of ``g`` and ``h``
alone (cumulative sums over the bins), which is what makes the method federable: the
histogram of everyone's rows is the sum of each party's histogram, so parties can add them
under encryption and noise them for differential privacy (Maddock et al., "Federated
boosted decision trees with differential privacy", CCS 2022).

This module is the arithmetic, arrays in and arrays out:

* :func:`bin_edges` / :func:`bin_rows` — fixed bins laid out inside *public* feature ranges
  (linear or ``log1p``-spaced), so every party has the same bins without a message;
* :func:`logloss_gradients` — gradient ``p - y`` and hessian ``p (1 - p)`` of the binary
  log-loss, both bounded (``|g| < 1``, ``0 < h <= 1/4``), which bounds a row's influence on
  a histogram without clipping;
* :class:`Forest` — finished trees plus the tree being grown, in a fixed heap layout that
  packs into one flat float vector (:meth:`Forest.to_vector`);
* :func:`level_slots` and :func:`histograms` — route rows to the open nodes of the level
  being grown and sum their ``g``, ``h`` per node, feature and bin;
* :func:`grow_level` — from summed histograms: choose every open node's best split, set the
  children's leaf values, and close the level (pure and deterministic, so every party that
  replays it gets the same forest);
* :func:`random_structure`, :func:`leaf_sums`, :func:`grow_random_tree` — "totally random"
  trees whose splits come from a public seed: one exchange of leaf sums grows a whole tree
  (the cheap choice under differential privacy);
* :func:`predict_margin` and :func:`to_lightgbm` — score rows, and write the forest as a
  LightGBM text model that ``lightgbm.Booster(model_str=...)`` loads and scores the same.

**Missing values and categories** (:class:`BinLayout`). With ``missing=True`` every
feature's histogram gets one more bin, last, for missing (NaN) values; a split then also
learns which side they go (LightGBM's learned default direction: the gain is computed
with the missing bin's sums on the left and on the right, and the better one is kept),
and "missing or not" is itself a candidate split. A categorical feature's values are
category codes ``0 .. k-1`` from a *public* category list, ``k`` for any value not on
the list ("other") and ``k+1`` for missing; each code is its own bin. Its split is a set
of codes that go left, found as LightGBM and Fisher (1958) do for a binary target: sort
the node's categories by ``G / (H + λ)`` and scan the prefixes of that order. The set is
stored as a bit mask (hence at most 53 bins per categorical feature, exact in a float64)
and exports as a LightGBM categorical split.

Split semantics follow LightGBM: a row goes left when ``x <= threshold``. Thresholds are
bin edges and a row's bin is the number of edges strictly below its value, so "bin <= k"
and "x <= edge k" are the same test, and the exported model predicts exactly as this one.

Each tree takes at most ``depth`` exchanges (one per level) and uses the gradients of the
model *before* it, as in standard boosting. Its open nodes always carry leaf values from the
sums of the level above, so after every exchange the forest is a complete predictor. The
very first exchange is computed at margin 0 (nothing is known yet); :func:`grow_level` turns
those sums (``g = 1/2 - y``, ``h = 1/4``) back into counts and labels per bin, sets the base
margin to the log-odds of the pooled label mean (LightGBM's ``boost_from_average``), and
re-derives the gradients at that margin before choosing the root split, so no exchange is
spent on the base rate.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from meshfl.config.errors import ConfigError
from meshfl.config.validation import Float, Int, Skew, check, checked

__all__ = [
    "ABSENT",
    "BinLayout",
    "LEAF",
    "MAX_DEPTH",
    "SPLIT",
    "Forest",
    "GBDTParams",
    "bin_edges",
    "bin_rows",
    "forest_digest",
    "grow_level",
    "grow_random_tree",
    "leaf_sums",
    "random_structure",
    "histograms",
    "level_slots",
    "logloss_gradients",
    "predict_margin",
    "sigmoid",
    "thresholds",
    "to_lightgbm",
]

ABSENT, LEAF, SPLIT = 0, 1, 2
"""Node kinds in a tree's heap layout."""

MAX_DEPTH = 12
_Depth = Annotated[int, Int(1, MAX_DEPTH)]
_Rate = Annotated[float, Float("in (0, 1]", lambda v: 0 < v <= 1)]
"""Deepest tree supported: a level of ``2**11`` nodes is already more histograms than any
federation should encrypt per exchange."""

# The base rate is kept inside [_P_MIN, 1 - _P_MIN]: a noisy (DP) count can put its estimate
# at or beyond 0 or 1, and a base margin of +-35 would take many trees to undo.
_P_MIN = 1e-3
_FIELDS = 7  # kind, feature, bin, value, hessian, gain, rule
_LEGACY_FIELDS = 6  # vectors written before missing values and categories (no rule)
MAX_CATEGORY_BINS = 53
"""Most bins a categorical feature may use: its left set is a bit mask held exactly in a
float64 (integers up to 2**53)."""
_ALL_VALUES = float(np.finfo(np.float64).max)  # threshold of the "missing or not" split


@dataclass(frozen=True)
class BinLayout:
    """How the bins of a histogram map to feature values (the default: numeric bins only).

    Parameters
    ----------
    n_bins : int
        Value bins of a numeric feature (from its public bounds).
    missing : bool
        Whether every feature's histogram ends with one more bin, for missing (NaN) values;
        histograms are then ``n_bins + 1`` wide and splits learn a default direction.
    categorical : mapping of int to int
        Categorical features (global index) and the bins each uses: its public categories,
        one "other" bin and one "missing" bin (codes ``0 .. width-1``), at most
        ``min(n_bins + missing, 53)``.
    """

    n_bins: int
    missing: bool = False
    categorical: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self.n_bins, Annotated[int, Int(2, 1024)], "n_bins", where="BinLayout")
        most = min(self.width, MAX_CATEGORY_BINS)
        bad = {f: w for f, w in self.categorical.items() if not 2 <= w <= most or f < 0}
        if bad:
            raise ConfigError(
                f"The 'categorical' parameter of BinLayout maps feature indices to the bins "
                f"they use, each in [2, {most}]. Got {bad!r} instead."
            )
        object.__setattr__(self, "categorical", dict(self.categorical))

    @property
    def width(self) -> int:
        """Bins per feature in a histogram."""
        return self.n_bins + int(self.missing)

    @property
    def missing_bin(self) -> int | None:
        """Index of the missing-value bin of numeric features (None without one)."""
        return self.n_bins if self.missing else None

    def is_categorical(self, n_features: int) -> NDArray[np.bool_]:
        """Per global feature index, whether it is categorical."""
        out = np.zeros(max(n_features, 1 + max(self.categorical, default=-1)), dtype=bool)
        out[list(self.categorical)] = True
        return out


@dataclass(frozen=True)
class GBDTParams:
    """How trees are grown (LightGBM's names and meaning where one exists).

    Parameters
    ----------
    max_depth : int
        Levels of splits per tree, in ``[1, MAX_DEPTH]``; a tree has at most ``2**max_depth``
        leaves and takes at most ``max_depth`` exchanges.
    learning_rate : float
        Shrinkage of every leaf value, in ``(0, 1]``.
    lambda_l2 : float
        L2 regularisation of leaf values, ``>= 0``.
    min_child_hessian : float
        Smallest hessian sum a child may have (LightGBM ``min_sum_hessian_in_leaf``), ``>= 0``.
    min_split_gain : float
        Smallest gain a split must bring (LightGBM ``min_gain_to_split``), ``>= 0``.
    max_delta_step : float
        Bound on a leaf's raw value before shrinkage; ``0`` means none (as in LightGBM).
    """

    max_depth: int = 3
    learning_rate: float = 0.2
    lambda_l2: float = 1.0
    min_child_hessian: float = 1.0
    min_split_gain: float = 0.0
    max_delta_step: float = 0.0

    def __post_init__(self) -> None:
        where = "GBDTParams"
        check(self.max_depth, _Depth, "max_depth", where=where)
        check(self.learning_rate, _Rate, "learning_rate", where=where)
        for name in ("lambda_l2", "min_child_hessian", "min_split_gain", "max_delta_step"):
            check(getattr(self, name), Skew, name, where=where)


# -- bins ---------------------------------------------------------------------------------
@checked
def bin_edges(
    low: float, high: float, n_bins: Annotated[int, Int(2, 1024)], *, log: bool = False
) -> NDArray[np.float64]:
    """The ``n_bins - 1`` inner edges of ``n_bins`` bins covering ``[low, high]``.

    Parameters
    ----------
    low, high : float
        Public range of the feature, finite, ``low < high``. Values outside it fall into the
        first or last bin.
    n_bins : int
        Number of bins, in ``[2, 1024]``.
    log : bool
        Space the edges evenly in ``log1p(x - low)`` (for right-skewed features such as
        counts and amounts) instead of linearly.

    Returns
    -------
    numpy.ndarray
        Strictly increasing edges; bin ``k`` holds the values in ``(edge[k-1], edge[k]]``.

    Examples
    --------
    >>> bin_edges(0.0, 4.0, 4).tolist()
    [1.0, 2.0, 3.0]
    """
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(
            "The 'low' and 'high' parameters of bin_edges must be finite with low < high. "
            f"Got low={low!r}, high={high!r} instead."
        )
    if log:
        edges = low + np.expm1(np.linspace(0.0, np.log1p(high - low), n_bins + 1))[1:-1]
    else:
        edges = low + (high - low) * np.arange(1, n_bins) / n_bins
    if not np.all(np.diff(edges) > 0):
        raise ConfigError(
            f"The range [{low!r}, {high!r}] is too narrow for {n_bins} distinct bins in "
            "float64; widen it or use fewer bins."
        )
    return np.asarray(edges, dtype=np.float64)


def bin_rows(
    X: ArrayLike, edges: Sequence[NDArray[np.float64]], *, missing_bin: int | None = None
) -> NDArray[np.intp]:
    """Bin index of every value: the number of the feature's edges strictly below it.

    So ``bin <= k`` exactly when ``x <= edges[k]``, LightGBM's "go left" test. With
    ``missing_bin`` (:attr:`BinLayout.missing_bin`), missing (NaN) values get that bin;
    without it they fall in the last bin. A categorical feature's codes ``0 .. w-1`` bin
    to themselves with edges ``0.5, 1.5, ..., w-1.5``.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(edges):
        raise ConfigError(
            f"bin_rows needs an array of shape (n, {len(edges)}). Got shape {X.shape} instead."
        )
    out = np.empty(X.shape, dtype=np.intp)
    for f, e in enumerate(edges):
        out[:, f] = np.searchsorted(e, X[:, f], side="left")
    if missing_bin is not None:
        out[np.isnan(X)] = missing_bin
    return out


# -- loss ---------------------------------------------------------------------------------
def sigmoid(margin: ArrayLike) -> NDArray[np.float64]:
    """``1 / (1 + exp(-margin))``, as LightGBM computes it for ``objective=binary``.

    Below a margin of about -709 ``exp`` overflows to ``inf`` and the result is 0, the
    correctly rounded value; the overflow is expected there and not warned about.
    """
    with np.errstate(over="ignore"):
        return np.asarray(1.0 / (1.0 + np.exp(-np.asarray(margin, dtype=np.float64))))


def logloss_gradients(
    margin: ArrayLike, y: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gradient ``p - y`` and hessian ``p (1 - p)`` of the log-loss at ``margin``."""
    p = sigmoid(margin)
    y = np.asarray(y, dtype=np.float64)
    return p - y, p * (1.0 - p)


# -- the forest -----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Forest:
    """Boosted trees in heap layout, the last one possibly still growing.

    Node ``i`` of a tree has children ``2i + 1`` (left, ``x <= threshold``) and ``2i + 2``;
    a tree of depth ``D`` has ``2**(D+1) - 1`` node slots, each :data:`ABSENT`,
    :data:`LEAF` or :data:`SPLIT`.

    Parameters
    ----------
    depth : int
        The trees' maximum depth.
    base_margin : float
        Log-odds every prediction starts from (set by the first exchange).
    levels : ndarray of int, shape (n_trees,)
        Exchanges spent on each tree.
    kind, feature, bin : ndarray of int, shape (n_trees, 2**(depth+1) - 1)
        Node kind; split feature and bin (a split sends ``bin <= bin`` left).
    value, hessian, gain : ndarray of float, same shape
        Leaf value (shrunk), hessian sum of the node, and the split's gain.
    rule : ndarray of float, same shape
        A numeric split's default direction (1: missing values go left, 0: right); a
        categorical split's set of bins that go left, as a bit mask (see :class:`BinLayout`).
    """

    depth: int
    base_margin: float
    levels: NDArray[np.intp]
    kind: NDArray[np.intp]
    feature: NDArray[np.intp]
    bin: NDArray[np.intp]
    value: NDArray[np.float64]
    hessian: NDArray[np.float64]
    gain: NDArray[np.float64]
    rule: NDArray[np.float64]

    @classmethod
    def empty(cls, depth: int) -> Forest:
        """A forest without trees (predicts the base margin 0)."""
        depth = check(depth, _Depth, "depth", where="Forest")
        shape = (0, 2 ** (depth + 1) - 1)
        ints = np.zeros(shape, dtype=np.intp)
        floats = np.zeros(shape)
        return cls(
            depth, 0.0, np.zeros(0, np.intp), ints, ints, ints, floats, floats, floats, floats
        )

    @property
    def n_nodes(self) -> int:
        """Node slots per tree."""
        return 2 ** (self.depth + 1) - 1

    @property
    def n_trees(self) -> int:
        """Trees, the growing one included."""
        return int(self.levels.shape[0])

    @property
    def slots(self) -> int:
        """Open nodes a level can have at most: ``2**(depth - 1)``, the last level's width."""
        return int(2 ** (self.depth - 1))

    def is_finished(self, tree: int) -> bool:
        """Whether tree ``tree`` is complete (all levels spent, or no node left open)."""
        level = int(self.levels[tree])
        if level >= self.depth:
            return True
        first = 2**level - 1
        return not np.any(self.kind[tree, first : 2 * first + 1] == LEAF)

    def growing(self) -> tuple[int, int]:
        """``(tree, level)`` the next exchange grows; ``tree == n_trees`` starts a new tree."""
        if self.n_trees and not self.is_finished(self.n_trees - 1):
            return self.n_trees - 1, int(self.levels[-1])
        return self.n_trees, 0

    # -- flat vector -----------------------------------------------------------------------
    def to_vector(self) -> NDArray[np.float64]:
        """``[base_margin, (levels, kind, feature, bin, value, hessian, gain, rule) per tree]``."""
        blocks = [np.array([self.base_margin])]
        for t in range(self.n_trees):
            blocks.append(np.array([float(self.levels[t])]))
            for arr in (
                self.kind,
                self.feature,
                self.bin,
                self.value,
                self.hessian,
                self.gain,
                self.rule,
            ):
                blocks.append(np.asarray(arr[t], dtype=np.float64))
        return np.concatenate(blocks)

    @classmethod
    def from_vector(cls, vector: ArrayLike, depth: int) -> Forest:
        """Inverse of :meth:`to_vector`.

        Vectors written before splits had a ``rule`` (6 fields per node) still load, with
        every rule 0 (those models never saw a missing value or a category).
        """
        vector = np.asarray(vector, dtype=np.float64)
        empty = cls.empty(depth)
        block = 1 + _FIELDS * empty.n_nodes
        legacy = 1 + _LEGACY_FIELDS * empty.n_nodes
        if vector.ndim != 1 or vector.size < 1 or (vector.size - 1) % block == 0:
            n_fields = _FIELDS
        elif (vector.size - 1) % legacy == 0:
            n_fields = _LEGACY_FIELDS
        else:
            n_fields = 0
        if not n_fields or vector.ndim != 1 or vector.size < 1:
            raise ConfigError(
                f"A depth-{depth} forest vector holds 1 + k * {block} values (base margin, then "
                f"{block} per tree). Got {vector.size} values instead: was the model built with "
                "another max_depth?"
            )
        width = 1 + n_fields * empty.n_nodes
        trees = vector[1:].reshape(-1, width)
        fields = trees[:, 1:].reshape(len(trees), n_fields, empty.n_nodes)
        ints = np.rint(fields[:, :3]).astype(np.intp)
        rule = fields[:, 6].copy() if n_fields == _FIELDS else np.zeros_like(fields[:, 5])
        return cls(
            depth,
            float(vector[0]),
            np.rint(trees[:, 0]).astype(np.intp),
            ints[:, 0],
            ints[:, 1],
            ints[:, 2],
            fields[:, 3].copy(),
            fields[:, 4].copy(),
            fields[:, 5].copy(),
            rule,
        )

    def _with_tree(self) -> Forest:
        """A copy with one more (empty) tree at the end."""
        k = self.n_nodes
        zi, zf = np.zeros((1, k), np.intp), np.zeros((1, k))
        return Forest(
            self.depth,
            self.base_margin,
            np.append(self.levels, 0),
            np.vstack([self.kind, zi]),
            np.vstack([self.feature, zi]),
            np.vstack([self.bin, zi]),
            np.vstack([self.value, zf]),
            np.vstack([self.hessian, zf]),
            np.vstack([self.gain, zf]),
            np.vstack([self.rule, zf]),
        )

    def _copy(self, base_margin: float | None = None) -> Forest:
        return Forest(
            self.depth,
            self.base_margin if base_margin is None else base_margin,
            self.levels.copy(),
            self.kind.copy(),
            self.feature.copy(),
            self.bin.copy(),
            self.value.copy(),
            self.hessian.copy(),
            self.gain.copy(),
            self.rule.copy(),
        )


# -- routing and histograms ---------------------------------------------------------------
def _route(forest: Forest, tree: int, go_left: NDArray[np.bool_], node: NDArray[np.intp]) -> None:
    """One level down tree ``tree`` for every row at a SPLIT node (in place)."""
    split = forest.kind[tree, node] == SPLIT
    node[:] = np.where(split, 2 * node + 1 + (~go_left), node)


def _left_of_bins(
    forest: Forest,
    tree: int,
    node: NDArray[np.intp],
    b: NDArray[np.intp],
    layout: BinLayout | None,
) -> NDArray[np.bool_]:
    """Whether rows whose bin on their node's split feature is ``b`` go left."""
    left = b <= forest.bin[tree, node]
    if layout is None:
        return left
    rule = forest.rule[tree, node]
    if layout.missing:
        left = np.where(b == layout.missing_bin, rule != 0, left)
    if layout.categorical:
        cat = layout.is_categorical(int(forest.feature.max(initial=0)) + 1)
        bits = (rule.astype(np.int64) >> np.minimum(b, MAX_CATEGORY_BINS)) & 1
        left = np.where(cat[forest.feature[tree, node]], bits == 1, left)
    return left


def level_slots(
    forest: Forest, bins: NDArray[np.intp], *, layout: BinLayout | None = None
) -> NDArray[np.intp]:
    """Slot of each row among the open nodes of the level being grown, or ``-1``.

    Slot ``j`` of level ``l`` is heap node ``2**l - 1 + j``; rows that ended in a leaf closed
    at an earlier level belong to no slot. ``layout`` says how bins map to values (missing
    and categorical bins); default: numeric bins only.
    """
    tree, level = forest.growing()
    n = bins.shape[0]
    if tree == forest.n_trees:
        return np.zeros(n, dtype=np.intp)
    node = np.zeros(n, dtype=np.intp)
    rows = np.arange(n)
    for _ in range(level):
        f = forest.feature[tree, node]
        _route(forest, tree, _left_of_bins(forest, tree, node, bins[rows, f], layout), node)
    first = 2**level - 1
    open_ = (node >= first) & (forest.kind[tree, node] == LEAF)
    return np.where(open_, node - first, -1)


def histograms(
    bins: NDArray[np.intp],
    slot: NDArray[np.intp],
    grad: ArrayLike,
    hess: ArrayLike,
    *,
    n_slots: int,
    n_bins: int,
) -> NDArray[np.float64]:
    """Per slot, feature and bin: the sums of ``grad`` and ``hess``; shape (slots, F, bins, 2).

    Rows with slot ``-1`` are left out. A row adds to exactly one bin of every feature of its
    slot.
    """
    n_features = bins.shape[1]
    keep = slot >= 0
    b, s = bins[keep], slot[keep]
    index = (s[:, None] * n_features + np.arange(n_features)[None, :]) * n_bins + b
    size = n_slots * n_features * n_bins
    out = np.empty((size, 2))
    for c, w in enumerate((grad, hess)):
        weights = np.broadcast_to(np.asarray(w, dtype=np.float64)[keep][:, None], index.shape)
        out[:, c] = np.bincount(index.ravel(), weights=weights.ravel(), minlength=size)
    return out.reshape(n_slots, n_features, n_bins, 2)


# -- growing ------------------------------------------------------------------------------
def _leaf_output(g: NDArray[np.float64], h: NDArray[np.float64], p: GBDTParams) -> NDArray[Any]:
    # A hessian sum is never negative without noise; under DP a noisy one can be, and
    # h + λ near 0 would give an unbounded leaf (margins of ±1e3 and more, which overflowed
    # exp). The sum is taken at 0 or more, so |w| <= |g| / λ.
    h = np.maximum(np.asarray(h, dtype=np.float64), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(h + p.lambda_l2 > 0, -g / (h + p.lambda_l2), 0.0)
    if p.max_delta_step > 0:
        w = np.clip(w, -p.max_delta_step, p.max_delta_step)
    return np.asarray(w)


def _leaf_gain(g: NDArray[np.float64], h: NDArray[np.float64], p: GBDTParams) -> NDArray[Any]:
    # Loss reduction of the leaf at its (possibly clipped) output w: -(2 g w + (h + λ) w²);
    # without clipping that is g² / (h + λ).
    w = _leaf_output(g, h, p)
    return np.asarray(-(2.0 * g * w + (h + p.lambda_l2) * w * w))


def _recenter(
    hist: NDArray[np.float64], used: NDArray[np.bool_] | None = None
) -> tuple[NDArray[np.float64], float]:
    """First-exchange sums (at margin 0) → sums at the base margin, and that margin."""
    count = 4.0 * hist[..., 1]  # h = 1/4 per row at margin 0
    positives = count / 2.0 - hist[..., 0]  # g = 1/2 - y
    # Every feature's histogram covers the same rows: average the F totals (under DP noise
    # this divides the variance of the estimate by F).
    mask = np.ones(hist.shape[1:3], dtype=bool) if used is None else used
    n = np.where(mask, count, 0.0).sum(axis=-1).mean()
    pos = np.where(mask, positives, 0.0).sum(axis=-1).mean()
    rate = float(pos / n) if n > 0 else 0.5
    rate = min(max(rate, _P_MIN), 1.0 - _P_MIN)
    base = math.log(rate / (1.0 - rate))
    out = np.stack([count * rate - positives, count * rate * (1.0 - rate)], axis=-1)
    return out, base


def grow_level(
    forest: Forest,
    hist: ArrayLike,
    params: GBDTParams,
    *,
    features: Sequence[int] | None = None,
    layout: BinLayout | None = None,
) -> Forest:
    """The forest after one exchange: the open nodes split from the summed histograms.

    Parameters
    ----------
    forest : Forest
        The forest the exchange started from (its :meth:`Forest.growing` level).
    hist : array-like, shape (forest.slots, n_features, n_bins, 2)
        Summed gradient/hessian histograms of the level's open nodes (see
        :func:`histograms`); slots of nodes that are not open are ignored. Hessian sums may
        be noisy (negative); a child must hold at least ``min_child_hessian``.
    params : GBDTParams
        How to split (``params.max_depth`` must equal ``forest.depth``).
    features : sequence of int, optional
        The feature index of each histogram row, when the histograms cover a subset of the
        features (per-tree feature sampling); default ``0 .. n_features - 1``.
    layout : BinLayout, optional
        Missing-value bins and categorical features (then ``n_bins`` is
        ``layout.width``); default: numeric bins only.

    Returns
    -------
    Forest
        A new forest; ``forest`` is not changed. Every open node either splits (its
        children become open leaves valued from the histogram's left and right sums) or
        becomes a closed leaf valued from its own sums.
    """
    hist = _checked_level_hist(forest, hist, params, features, layout)
    index = np.arange(hist.shape[1]) if features is None else np.asarray(features, np.intp)
    used = _used_bins(hist.shape[-2], index, layout)
    tree, level = forest.growing()
    out = forest._copy()
    if tree == forest.n_trees:
        if forest.n_trees == 0:
            hist, base = _recenter(hist, used)
            out = out._copy(base_margin=base)
        out = out._with_tree()
        out.kind[tree, 0] = LEAF
    lr = params.learning_rate
    first = 2**level - 1
    best = _best_splits(hist, params, index, used, layout)
    floor = max(params.min_child_hessian, 0.0)
    for j in range(2**level):
        node = first + j
        if out.kind[tree, node] != LEAF:
            continue
        gain = best.gain[j]
        h_node = float(max(best.h_tot[j], 0.0))
        out.hessian[tree, node] = h_node
        if gain > params.min_split_gain and math.isfinite(gain):
            out.kind[tree, node] = SPLIT
            out.feature[tree, node] = int(index[best.feature[j]])
            out.bin[tree, node] = best.bin[j]
            out.rule[tree, node] = best.rule[j]
            out.gain[tree, node] = gain
            out.value[tree, node] = lr * float(_leaf_output(best.g_tot[j], best.h_tot[j], params))
            for child, g, h in (
                (2 * node + 1, best.g_left[j], best.h_left[j]),
                (2 * node + 2, best.g_right[j], best.h_right[j]),
            ):
                out.kind[tree, child] = LEAF
                out.value[tree, child] = lr * float(_leaf_output(g, h, params))
                out.hessian[tree, child] = float(max(h, 0.0))
        elif best.h_tot[j] >= floor and best.h_tot[j] + params.lambda_l2 > 0:
            # Closed: the node's own sums value it (under DP a fresh, F-fold averaged estimate).
            out.value[tree, node] = lr * float(_leaf_output(best.g_tot[j], best.h_tot[j], params))
        elif node == 0:
            out.value[tree, node] = 0.0
        # else: a (noisy) hessian below the floor; keep the value the node got as a child
    out.levels[tree] += 1
    return out


def _checked_level_hist(
    forest: Forest,
    hist: ArrayLike,
    params: GBDTParams,
    features: Sequence[int] | None,
    layout: BinLayout | None,
) -> np.ndarray:
    """``hist`` as float64, checked against the forest, ``params`` and ``features``."""
    array = np.asarray(hist, dtype=np.float64)
    if params.max_depth != forest.depth:
        raise ConfigError(
            f"grow_level got params.max_depth={params.max_depth} for a forest of depth "
            f"{forest.depth}; they must match."
        )
    if array.ndim != 4 or array.shape[0] != forest.slots or array.shape[3] != 2:
        raise ConfigError(
            f"grow_level needs histograms of shape ({forest.slots}, n_features, n_bins, 2). "
            f"Got shape {array.shape} instead."
        )
    if features is not None and len(features) != array.shape[1]:
        raise ConfigError(
            f"grow_level got {len(features)} feature indices for histograms of "
            f"{array.shape[1]} features; give one per histogram row."
        )
    if layout is not None and array.shape[2] != layout.width:
        raise ConfigError(
            f"grow_level got histograms of {array.shape[2]} bins per feature for a layout of "
            f"{layout.width} (n_bins={layout.n_bins}, missing={layout.missing})."
        )
    return array


def _used_bins(width: int, index: NDArray[np.intp], layout: BinLayout | None) -> np.ndarray:
    """Per histogram row and bin, whether a row can land there (a categorical feature uses
    only its first bins; under DP the others hold noise alone)."""
    used = np.ones((len(index), width), dtype=bool)
    if layout is not None:
        for r, f in enumerate(index):
            if int(f) in layout.categorical:
                used[r, layout.categorical[int(f)] :] = False
    return used


@dataclass(frozen=True)
class _Best:
    """The best split of every open slot, and the sums it leaves on each side."""

    g_tot: np.ndarray
    h_tot: np.ndarray
    gain: np.ndarray
    feature: np.ndarray  # histogram row
    bin: np.ndarray
    rule: np.ndarray
    g_left: np.ndarray
    h_left: np.ndarray
    g_right: np.ndarray
    h_right: np.ndarray


def _gains(
    g_left: np.ndarray,
    h_left: np.ndarray,
    g_right: np.ndarray,
    h_right: np.ndarray,
    g_tot: np.ndarray,
    h_tot: np.ndarray,
    params: GBDTParams,
) -> np.ndarray:
    """Gain of every candidate split (``-inf`` where a child is too light or not finite)."""
    floor = max(params.min_child_hessian, 0.0)
    valid = (h_left >= floor) & (h_right >= floor)
    valid &= (h_left + params.lambda_l2 > 0) & (h_right + params.lambda_l2 > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gain = (
            _leaf_gain(g_left, h_left, params)
            + _leaf_gain(g_right, h_right, params)
            - _leaf_gain(g_tot, h_tot, params)
        )
    return np.where(valid & np.isfinite(gain), gain, -np.inf)


def _best_splits(
    hist: np.ndarray,
    params: GBDTParams,
    index: NDArray[np.intp],
    used: np.ndarray,
    layout: BinLayout | None,
) -> _Best:
    """Per open slot, the best split over all features, thresholds and directions.

    Numeric candidates are ``bin <= b`` (and, with a missing bin, whether missing values
    join the left side); categorical ones are prefixes of the categories sorted by
    ``G / (H + λ)``. Ties go to the first numeric candidate in (feature, bin, direction)
    order, then to the first categorical feature: deterministic, so every party that
    replays this on the same sums grows the same tree.
    """
    G, H = hist[..., 0], hist[..., 1]
    g_tot = np.where(used, G, 0.0).sum(axis=-1).mean(axis=-1)  # (slots,)
    h_tot = np.where(used, H, 0.0).sum(axis=-1).mean(axis=-1)
    n_slots = G.shape[0]
    missing = layout is not None and layout.missing
    if missing:
        # thresholds b = 0 .. n_bins-1 (the last: "missing or not"); direction 0 sends the
        # missing bin right, 1 left
        cg, ch = np.cumsum(G[..., :-1], axis=-1), np.cumsum(H[..., :-1], axis=-1)
        g_left = np.stack([cg, cg + G[..., -1:]], axis=-1)
        h_left = np.stack([ch, ch + H[..., -1:]], axis=-1)
    else:
        g_left = np.cumsum(G, axis=-1)[..., :-1, None]
        h_left = np.cumsum(H, axis=-1)[..., :-1, None]
    g_right = g_tot[:, None, None, None] - g_left
    h_right = h_tot[:, None, None, None] - h_left
    gain = _gains(
        g_left,
        h_left,
        g_right,
        h_right,
        g_tot[:, None, None, None],
        h_tot[:, None, None, None],
        params,
    )
    categorical = [r for r, f in enumerate(index) if layout and int(f) in layout.categorical]
    gain[:, categorical] = -np.inf
    n_thr, n_dir = gain.shape[2], gain.shape[3]
    out = {k: np.zeros(n_slots) for k in ("gain", "rule", "gl", "hl", "gr", "hr")}
    feat, bins = np.zeros(n_slots, np.intp), np.zeros(n_slots, np.intp)
    for j in range(n_slots):
        flat = int(np.argmax(gain[j])) if gain[j].size else 0
        f, rest = divmod(flat, n_thr * n_dir) if gain[j].size else (0, 0)
        b, d = divmod(rest, n_dir)
        out["gain"][j] = gain[j].flat[flat] if gain[j].size else -np.inf
        feat[j], bins[j], out["rule"][j] = f, b, float(d)
        if gain[j].size:
            out["gl"][j], out["hl"][j] = g_left[j, f, b, d], h_left[j, f, b, d]
            out["gr"][j], out["hr"][j] = g_right[j, f, b, d], h_right[j, f, b, d]
        for r in categorical:
            width = layout.categorical[int(index[r])] if layout else 0
            cg, ch = G[j, r, :width], H[j, r, :width]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = cg / (np.maximum(ch, 0.0) + max(params.lambda_l2, 1e-12))
            order = np.argsort(ratio, kind="stable")
            gl, hl = np.cumsum(cg[order])[:-1], np.cumsum(ch[order])[:-1]
            cat_gain = _gains(gl, hl, g_tot[j] - gl, h_tot[j] - hl, g_tot[j], h_tot[j], params)
            k = int(np.argmax(cat_gain))
            if cat_gain[k] > out["gain"][j]:
                out["gain"][j] = cat_gain[k]
                feat[j], bins[j] = r, 0
                out["rule"][j] = float(sum(1 << int(c) for c in order[: k + 1]))
                out["gl"][j], out["hl"][j] = gl[k], hl[k]
                out["gr"][j], out["hr"][j] = g_tot[j] - gl[k], h_tot[j] - hl[k]
    return _Best(
        g_tot,
        h_tot,
        out["gain"],
        feat,
        bins,
        out["rule"],
        out["gl"],
        out["hl"],
        out["gr"],
        out["hr"],
    )


# -- totally random trees -------------------------------------------------------------------
def random_structure(
    depth: int,
    features: Sequence[int],
    n_bins: int,
    rng: np.random.Generator,
    *,
    layout: BinLayout | None = None,
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """A complete tree's splits drawn without data: ``(feature, bin)`` per internal node.

    Every internal node (heap ``0 .. 2**depth - 2``) splits on a feature drawn uniformly
    from ``features`` at a bin drawn uniformly from ``0 .. n_bins - 2``. Drawn from a public
    seed, every party gets the same tree; only the leaf sums then depend on data, which is
    what makes these trees cheap under differential privacy (Maddock et al. 2022, "totally
    random" trees: no budget is spent choosing splits, and one exchange grows a tree).
    """
    n_internal = 2**depth - 1
    feature = rng.choice(np.asarray(features, dtype=np.intp), size=n_internal)
    bins = rng.integers(0, n_bins - 1, size=n_internal)
    if layout is not None:  # a categorical split "code <= b" stays among its used codes
        for i, f in enumerate(feature):
            if int(f) in layout.categorical:
                bins[i] %= layout.categorical[int(f)] - 1
    return np.asarray(feature, dtype=np.intp), np.asarray(bins, dtype=np.intp)


def leaf_sums(
    feature: NDArray[np.intp],
    split_bin: NDArray[np.intp],
    bins: NDArray[np.intp],
    grad: ArrayLike,
    hess: ArrayLike,
) -> NDArray[np.float64]:
    """Sums of ``grad`` and ``hess`` per leaf of a complete tree; shape ``(2**depth, 2)``."""
    n_internal = feature.shape[0]
    n = bins.shape[0]
    node = np.zeros(n, dtype=np.intp)
    rows = np.arange(n)
    while True:
        inner = node < n_internal
        if not inner.any():
            break
        f = feature[np.minimum(node, n_internal - 1)]
        b = split_bin[np.minimum(node, n_internal - 1)]
        go_right = bins[rows, f] > b
        node = np.where(inner, 2 * node + 1 + go_right, node)
    leaf = node - n_internal
    n_leaves = n_internal + 1
    g = np.bincount(leaf, weights=np.asarray(grad, dtype=np.float64), minlength=n_leaves)
    h = np.bincount(leaf, weights=np.asarray(hess, dtype=np.float64), minlength=n_leaves)
    return np.stack([g, h], axis=-1)


def grow_random_tree(
    forest: Forest,
    feature: NDArray[np.intp],
    split_bin: NDArray[np.intp],
    sums: ArrayLike,
    params: GBDTParams,
    *,
    layout: BinLayout | None = None,
) -> Forest:
    """The forest with one more complete tree of the given splits, valued from leaf sums.

    ``sums`` (shape ``(2**depth, 2)``) are the summed gradient and hessian per leaf (see
    :func:`leaf_sums`). As in :func:`grow_level`, the very first tree's sums are taken at
    margin 0 and set the base margin first. :func:`leaf_sums` sends a row right when its
    bin is above the split's, so missing values (the last bin) go right, and a
    categorical split sends codes ``0 .. b`` left (its rule records that set).
    """
    table = np.asarray(sums, dtype=np.float64)
    n_leaves = 2**forest.depth
    if table.shape != (n_leaves, 2) or feature.shape != (n_leaves - 1,):
        raise ConfigError(
            f"grow_random_tree needs {n_leaves - 1} splits and leaf sums of shape "
            f"({n_leaves}, 2) for depth {forest.depth}. Got {feature.shape[0]} splits and "
            f"sums of shape {table.shape} instead."
        )
    out = forest._copy()
    if forest.n_trees == 0:
        recentered, base = _recenter(table[None, None])
        table = recentered[0, 0]
        out = out._copy(base_margin=base)
    out = out._with_tree()
    t = out.n_trees - 1
    first_leaf = n_leaves - 1
    out.kind[t, :first_leaf] = SPLIT
    out.kind[t, first_leaf:] = LEAF
    out.feature[t, :first_leaf] = feature
    out.bin[t, :first_leaf] = split_bin
    if layout is not None:
        for i, f in enumerate(feature):
            if int(f) in layout.categorical:
                out.rule[t, i] = float((1 << (int(split_bin[i]) + 1)) - 1)
    G, H = table[:, 0], table[:, 1]
    out.value[t, first_leaf:] = params.learning_rate * _leaf_output(G, H, params)
    out.hessian[t, first_leaf:] = np.maximum(H, 0.0)
    for node in range(first_leaf - 1, -1, -1):  # internal hessians: sums of the children
        out.hessian[t, node] = out.hessian[t, 2 * node + 1] + out.hessian[t, 2 * node + 2]
    out.levels[t] = forest.depth
    return out


# -- prediction and export ------------------------------------------------------------------
def thresholds(forest: Forest, edges: Sequence[NDArray[np.float64]]) -> NDArray[np.float64]:
    """Each SPLIT node's threshold (the edge above its bin); 0 elsewhere."""
    out = np.zeros(forest.kind.shape)
    split = forest.kind == SPLIT
    for t, node in zip(*np.nonzero(split), strict=True):
        f, b = forest.feature[t, node], forest.bin[t, node]
        # b == len(edges): every value goes left ("missing or not"; needs a missing bin)
        out[t, node] = edges[f][b] if b < len(edges[f]) else _ALL_VALUES
    return out


def predict_margin(
    forest: Forest,
    X: ArrayLike,
    edges: Sequence[NDArray[np.float64]],
    *,
    trees: int | None = None,
    layout: BinLayout | None = None,
    start: int = 0,
    margin: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Raw score (log-odds) of every row: base margin plus the leaf values of the first
    ``trees`` trees (default: all, the growing one included).

    Sums in LightGBM's order, with the base margin folded into the first tree, so that the
    exported model reproduces these numbers to the last bit. With ``layout``, a missing
    (NaN) numeric value follows its split's default direction, and a categorical feature's
    values are its codes (see :class:`BinLayout`). ``start`` and ``margin``: go on from the
    margin of the first ``start`` trees (as this function returned it), to the same bits.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    count = forest.n_trees if trees is None else trees
    if count == 0:
        return np.full(n, forest.base_margin)
    if start and (margin is None or not 0 < start <= count):
        raise ConfigError(
            f"predict_margin goes on from 'start' trees (0 < start <= {count}) with their "
            f"'margin'. Got start={start!r} and margin={'None' if margin is None else '...'}."
        )
    thr = thresholds(forest, edges)
    rows = np.arange(n)
    margin = np.zeros(n) if not start else np.array(margin, dtype=np.float64)
    for t in range(start, count):
        node = np.zeros(n, dtype=np.intp)
        for _ in range(forest.depth):
            x = X[rows, forest.feature[t, node]]
            _route(forest, t, _left_of_values(forest, t, node, x, thr, layout), node)
        leaf = forest.value[t, node]
        margin = margin + (leaf + forest.base_margin if t == 0 else leaf)
    return np.asarray(margin, dtype=np.float64)


def forest_digest(forest: Forest, trees: int) -> bytes:
    """A digest of what the margins of the first ``trees`` trees depend on (their nodes and
    leaf values, the base margin): equal digests, equal :func:`predict_margin`."""
    digest = hashlib.sha256(np.float64(forest.base_margin).tobytes())
    digest.update(np.int64(trees).tobytes())
    for arr in (forest.kind, forest.feature, forest.bin, forest.value, forest.rule):
        digest.update(np.ascontiguousarray(arr[:trees]).tobytes())
    return digest.digest()


def _left_of_values(
    forest: Forest,
    t: int,
    node: NDArray[np.intp],
    x: NDArray[np.float64],
    thr: NDArray[np.float64],
    layout: BinLayout | None,
) -> NDArray[np.bool_]:
    """Whether rows with value ``x`` on their node's split feature go left."""
    left = x <= thr[t, node]
    if layout is None:
        return left
    rule = forest.rule[t, node]
    if layout.missing:
        left = np.where(np.isnan(x), rule != 0, left)
    if layout.categorical:
        cat = layout.is_categorical(int(forest.feature.max(initial=0)) + 1)
        with np.errstate(invalid="ignore"):
            code = np.clip(np.nan_to_num(x, nan=0.0), 0, MAX_CATEGORY_BINS).astype(np.int64)
        bits = (rule.astype(np.int64) >> code) & 1
        left = np.where(cat[forest.feature[t, node]], bits == 1, left)
    return left


def _fmt(value: float) -> str:
    return repr(float(value))  # shortest text that reads back as the same double


def _tree_text(
    forest: Forest,
    t: int,
    thr: NDArray[np.float64],
    shift: float,
    shrinkage: float,
    layout: BinLayout | None = None,
) -> str:
    internal: list[int] = []
    leaves: list[int] = []

    def visit(node: int) -> None:
        if forest.kind[t, node] == SPLIT:
            internal.append(node)
            visit(2 * node + 1)
            visit(2 * node + 2)
        else:
            leaves.append(node)

    visit(0)
    inner_id = {node: i for i, node in enumerate(internal)}
    leaf_id = {node: i for i, node in enumerate(leaves)}

    def child(node: int) -> str:
        return str(inner_id[node]) if node in inner_id else str(-(leaf_id[node] + 1))

    def join(values: Sequence[str]) -> str:
        return " ".join(values)

    # decision_type bits (LightGBM): 1 categorical, 2 default left, 4-8 missing type
    # (0 None: NaN read as 0; 2 NaN: missing values take the default direction).
    thresholds, kinds, boundaries, words = [], [], [0], []
    for n in internal:
        f = int(forest.feature[t, n])
        if layout is not None and f in layout.categorical:
            mask = int(forest.rule[t, n])
            n_words = max(1, (mask.bit_length() + 31) // 32)
            words += [str((mask >> (32 * i)) & 0xFFFFFFFF) for i in range(n_words)]
            thresholds.append(str(len(boundaries) - 1))
            boundaries.append(len(words))
            kinds.append("1")
        elif layout is not None and layout.missing:
            thresholds.append(_fmt(thr[t, n]))
            kinds.append(str(8 | (2 if forest.rule[t, n] != 0 else 0)))
        else:
            thresholds.append(_fmt(thr[t, n]))
            kinds.append("2")  # numerical, default left, missing type None
    lines = [
        f"num_leaves={len(leaves)}",
        f"num_cat={len(boundaries) - 1}",
        f"split_feature={join([str(forest.feature[t, n]) for n in internal])}",
        f"split_gain={join([_fmt(forest.gain[t, n]) for n in internal])}",
        f"threshold={join(thresholds)}",
        f"decision_type={join(kinds)}",
        f"left_child={join([child(2 * n + 1) for n in internal])}",
        f"right_child={join([child(2 * n + 2) for n in internal])}",
        f"leaf_value={join([_fmt(forest.value[t, n] + shift) for n in leaves])}",
        f"leaf_weight={join([_fmt(forest.hessian[t, n]) for n in leaves])}",
        f"internal_value={join([_fmt(forest.value[t, n] + shift) for n in internal])}",
        f"internal_weight={join([_fmt(forest.hessian[t, n]) for n in internal])}",
        *(
            [f"cat_boundaries={join([str(b) for b in boundaries])}", f"cat_threshold={join(words)}"]
            if len(boundaries) > 1
            else []
        ),
        "is_linear=0",
        f"shrinkage={_fmt(shrinkage)}",
    ]
    return "\n".join(lines) + "\n"


def to_lightgbm(
    forest: Forest,
    edges: Sequence[NDArray[np.float64]],
    *,
    feature_names: Sequence[str],
    bounds: Sequence[tuple[float, float]],
    learning_rate: float,
    layout: BinLayout | None = None,
) -> str:
    """The forest as a LightGBM text model (``objective=binary sigmoid:1``).

    With ``layout``, numeric splits carry missing type NaN and their learned default
    direction, and categorical splits export as LightGBM categorical splits over the
    codes: LightGBM then predicts on the same encoded matrix as :func:`predict_margin`
    (category codes, NaN for missing numeric values).

    ``lightgbm.Booster(model_str=...)`` loads it; its ``predict`` equals
    ``sigmoid(predict_margin(...))``. The base margin is added to the first tree's leaves
    (as LightGBM's ``boost_from_average`` does); leaf values already include shrinkage.
    Row counts per node are not known to anyone (only hessian sums were exchanged), so
    ``leaf_count`` / ``internal_count`` are left out: LightGBM predicts without them, but
    ``pred_contrib`` (SHAP values) needs them and returns NaN.
    """
    names = [str(n) for n in feature_names]
    if len(names) != len(edges) or len(bounds) != len(edges):
        raise ConfigError(
            f"to_lightgbm needs one feature name and one (low, high) bound per feature "
            f"({len(edges)}). Got {len(names)} names and {len(bounds)} bounds instead."
        )
    bad = [n for n in names if not n or any(c.isspace() for c in n)]
    if bad:
        raise ConfigError(
            f"LightGBM feature names cannot be empty or contain white space; rename {bad!r}."
        )
    thr = thresholds(forest, edges)
    blocks = []
    if forest.n_trees == 0:
        blocks.append(
            "num_leaves=1\nnum_cat=0\nsplit_feature=\nsplit_gain=\nthreshold=\ndecision_type=\n"
            f"left_child=\nright_child=\nleaf_value={_fmt(forest.base_margin)}\nleaf_weight=0\n"
            f"internal_value=\ninternal_weight=\nis_linear=0\nshrinkage={_fmt(learning_rate)}\n"
        )
    for t in range(forest.n_trees):
        shift = forest.base_margin if t == 0 else 0.0
        blocks.append(_tree_text(forest, t, thr, shift, learning_rate, layout))
    header = [
        "tree",
        "version=v4",
        "num_class=1",
        "num_tree_per_iteration=1",
        "label_index=0",
        f"max_feature_idx={len(names) - 1}",
        "objective=binary sigmoid:1",
        f"feature_names={' '.join(names)}",
        "feature_infos="
        + " ".join(
            ":".join(str(c) for c in range(layout.categorical[f]))
            if layout is not None and f in layout.categorical
            else f"[{_fmt(lo)}:{_fmt(hi)}]"
            for f, (lo, hi) in enumerate(bounds)
        ),
    ]
    text = "\n".join(header) + "\n\n"
    for i, block in enumerate(blocks):
        text += f"Tree={i}\n{block}\n\n"
    return text + "end of trees\n\npandas_categorical:null\n"
