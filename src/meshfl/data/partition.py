"""Split one data set over simulated MSPs the way real MSPs differ: non-IID.

MSPs serve different clients, so their labels are skewed (one sees mostly phishing, another
mostly brute force) and their sizes differ. :func:`partition` reproduces both, following
the Dirichlet label-skew scheme of Hsu, Qi and Brown, "Measuring the Effects of
Non-Identical Data Distribution for Federated Visual Classification" (2019): each class is
spread over the MSPs in proportions drawn from ``Dirichlet(alpha)``. Sizes are drawn
separately from a log-normal, and the two are reconciled by iterative proportional fitting,
so label skew and size skew are independent knobs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from meshfl.config.errors import ConfigError, DataSchemaError
from meshfl.config.validation import (
    Count,
    NonNegative,
    OpenUnit,
    Positive,
    Seed,
    Skew,
    checked,
)
from meshfl.data.schema import inherit_validation

__all__ = ["cut", "label_distribution", "partition", "train_test_split"]


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers summing to ``total`` in proportion to ``weights`` (Hamilton's method)."""
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    if short:
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def _fit_margins(
    weights: np.ndarray, rows: np.ndarray, cols: np.ndarray, iterations: int = 500
) -> np.ndarray:
    """Scale ``weights`` so its row sums are ``rows`` and column sums ``cols`` (IPF).

    Iterative proportional fitting keeps every cross ratio of ``weights``, i.e. the
    relative over- and under-representation of each class at each MSP that the Dirichlet
    draw produced, while meeting the class totals and the MSP sizes.
    """
    fitted = weights.astype(np.float64)
    # A tiny alpha can underflow a whole column of the draw to 0: its scaling is then 0/0
    # (NaN), which _round_matrix treats as no preference; no warning for it.
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(iterations):
            fitted *= (rows / fitted.sum(axis=1))[:, None]
            fitted *= (cols / fitted.sum(axis=0))[None, :]
            if np.allclose(fitted.sum(axis=1), rows, rtol=1e-9, atol=1e-6):
                break
    return fitted


def _round_matrix(fitted: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Non-negative integers with row sums ``rows`` and column sums ``cols``, near ``fitted``.

    Each class (row) in turn is spread over the MSPs with room left, in proportion to
    ``fitted`` (largest remainders), never beyond an MSP's remaining size. As the margins
    have the same total, the last class exactly fills what is left. This holds even where
    the fitting did not converge (a tiny alpha underflows the Dirichlet draw).
    """
    fitted = np.nan_to_num(np.maximum(fitted, 0.0))
    counts = np.zeros(fitted.shape, dtype=np.int64)
    room = cols.astype(np.int64).copy()
    for i, need in enumerate(rows.astype(np.int64)):
        while need > 0:
            open_ = room > 0
            weights = np.where(open_, fitted[i] + 1e-12, 0.0)
            take = np.minimum(_largest_remainder(int(need), weights), room)
            counts[i] += take
            room -= take
            need -= int(take.sum())
    return counts


@checked
def partition(
    frame: pd.DataFrame,
    num_msps: Count,
    *,
    label_column: str | None = None,
    alpha: Positive = 0.5,
    size_skew: Skew = 0.0,
    min_size: NonNegative = 10,
    seed: Seed = 0,
) -> list[pd.DataFrame]:
    """Split ``frame`` over ``num_msps`` simulated MSPs with label and size skew.

    Parameters
    ----------
    frame : pandas.DataFrame
        The rows to split.
    num_msps : int
        Number of MSPs, at least 1.
    label_column : str, optional
        Column whose distribution differs between MSPs. ``None`` splits IID.
    alpha : float, default 0.5
        Concentration of the Dirichlet distribution over MSPs drawn for each class: the
        smaller, the more each class concentrates on a few MSPs (0.1 is strongly non-IID,
        100 close to IID). ``float("inf")`` gives every MSP the global label distribution
        (a stratified IID split).
    size_skew : float, default 0.0
        Sigma of the log-normal from which MSP shares of the data are drawn: 0 gives equal
        sizes (to within one row), 1 sizes that differ several-fold.
    min_size : int, default 10
        Rows every MSP gets at least; ``num_msps * min_size`` must not exceed
        ``len(frame)``.
    seed : int, default 0
        Seed of the random generator; the same arguments give the same split.

    Returns
    -------
    list of pandas.DataFrame
        One frame per MSP, holding its rows in their original order with a fresh
        ``RangeIndex``. Every row of ``frame`` is in exactly one of them.

    Raises
    ------
    ConfigError
        If an argument is out of range, ``label_column`` is not a column of ``frame``, or
        the frame is too small for ``num_msps * min_size`` rows.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"y": ["a"] * 60 + ["b"] * 40})
    >>> parts = partition(frame, 4, label_column="y", alpha=0.3, seed=1)
    >>> [len(p) for p in parts], sum(len(p) for p in parts)
    ([25, 25, 25, 25], 100)
    """
    _check_partition_args(frame, num_msps, label_column, min_size)
    n = len(frame)
    rng = np.random.default_rng(seed)
    sizes = _msp_sizes(rng, n, num_msps, min_size, size_skew)
    codes, num_classes = _class_codes(frame, label_column)
    class_sizes = np.bincount(codes, minlength=num_classes)
    if label_column is None or math.isinf(alpha) or num_msps == 1:
        weights = np.ones((num_classes, num_msps))
    else:
        weights = rng.dirichlet(np.full(num_msps, alpha), size=num_classes)
        # A tiny alpha can underflow to exact zeros; keep every cell reachable so the
        # fitting can still meet every MSP's size.
        weights = np.maximum(weights, 1e-12)
    counts = _round_matrix(_fit_margins(weights, class_sizes, sizes), class_sizes, sizes)

    owner = np.empty(n, dtype=np.int64)
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(codes == c))
        owner[members] = np.repeat(np.arange(num_msps), counts[c])
    order = np.argsort(owner, kind="stable")  # each MSP's rows, in their original order
    ends = np.cumsum(np.bincount(owner, minlength=num_msps))
    parts = [
        _rows(frame, order[start:end])
        for start, end in zip(ends - np.diff(ends, prepend=0), ends, strict=True)
    ]
    inherit_validation(frame, *parts)
    return parts


def _check_partition_args(
    frame: pd.DataFrame, num_msps: int, label_column: str | None, min_size: int
) -> None:
    """What :func:`partition`'s types cannot say: the label is a column, the rows suffice."""
    func = "partition"
    if label_column is not None and label_column not in frame.columns:
        raise ConfigError(
            f"The 'label_column' parameter of {func} must name a column of the frame, or be "
            f"None for an IID split. Got {label_column!r}; the columns are "
            f"{', '.join(map(repr, frame.columns))}."
        )
    n = len(frame)
    if n == 0:
        raise DataSchemaError("partition got an empty frame; there are no rows to split.")
    if num_msps * min_size > n:
        most_msps = n // min_size if min_size else 0
        raise ConfigError(
            f"Cannot give each of {num_msps} MSPs at least min_size={min_size} rows: the frame "
            f"has only {n} rows. Lower 'min_size' to at most {n // num_msps}, lower "
            f"'num_msps' to at most {most_msps}, or pass more data."
        )


def _msp_sizes(
    rng: np.random.Generator, n: int, num_msps: int, min_size: int, size_skew: float
) -> np.ndarray:
    """Rows per MSP: ``min_size`` each, the rest shared by log-normal draws (or equally)."""
    shares = rng.lognormal(0.0, size_skew, size=num_msps) if size_skew > 0 else None
    spare = n - num_msps * min_size
    return min_size + _largest_remainder(spare, shares if shares is not None else np.ones(num_msps))


def _class_codes(frame: pd.DataFrame, label_column: str | None) -> tuple[np.ndarray, int]:
    """Each row's class code and the number of classes (one class without a label column)."""
    if label_column is None:
        return np.zeros(len(frame), dtype=np.int64), 1
    codes, uniques = pd.factorize(frame[label_column], use_na_sentinel=False)
    return codes, len(uniques)


@checked
def train_test_split(
    frame: pd.DataFrame, *, test_fraction: OpenUnit = 0.2, seed: Seed = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split one MSP's rows into a training and a held-out part at random.

    Parameters
    ----------
    frame : pandas.DataFrame
        The rows to split; at least 2.
    test_fraction : float, default 0.2
        Share of rows held out, in (0, 1); rounded to a whole number of rows and kept
        between 1 and ``len(frame) - 1`` so that neither part is empty.
    seed : int, default 0
        Seed of the shuffle that picks the held-out rows.

    Returns
    -------
    (train, test) : tuple of pandas.DataFrame
        Both keep the rows' original order (time series stay sorted) with a fresh
        ``RangeIndex``.

    Examples
    --------
    >>> import pandas as pd
    >>> train, test = train_test_split(pd.DataFrame({"x": range(10)}), test_fraction=0.3)
    >>> len(train), len(test)
    (7, 3)
    """
    n = len(frame)
    if n < 2:
        raise DataSchemaError(
            f"train_test_split needs at least 2 rows to leave a row on each side; the frame "
            f"has {n}."
        )
    n_test = min(max(round(n * test_fraction), 1), n - 1)
    held_out = np.zeros(n, dtype=bool)
    held_out[np.random.default_rng(seed).permutation(n)[:n_test]] = True
    train, test = _rows(frame, np.flatnonzero(~held_out)), _rows(frame, np.flatnonzero(held_out))
    inherit_validation(frame, train, test)
    return train, test


def _rows(frame: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """The rows at ``positions`` with a fresh ``RangeIndex`` (one copy, not two: simulated
    meshes split thousands of small frames)."""
    rows = frame.take(positions)
    rows.index = pd.RangeIndex(len(positions))
    return rows


def cut(whole: pd.DataFrame, sizes: Sequence[int] | np.ndarray) -> list[pd.DataFrame]:
    """``whole``'s rows as consecutive parts of ``sizes`` rows, each with a fresh
    ``RangeIndex`` and valid wherever ``whole`` was (a mesh drawn as one frame and validated
    once: a frame per MSP costs more than its rows at thousands of MSPs)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if int(sizes.sum()) != len(whole):
        raise ConfigError(
            f"cut: the sizes add up to {int(sizes.sum())}, but the frame has {len(whole)} rows."
        )
    ends = np.cumsum(sizes)
    parts = []
    for start, end in zip((ends - sizes).tolist(), ends.tolist(), strict=True):
        part = whole.iloc[start:end]
        part.index = pd.RangeIndex(end - start)
        parts.append(part)
    inherit_validation(whole, *parts)
    return parts


def label_distribution(parts: Sequence[pd.DataFrame], label_column: str) -> pd.DataFrame:
    """Count each label at each MSP, to see how skewed a partition is.

    Parameters
    ----------
    parts : sequence of pandas.DataFrame
        The MSPs' frames, as :func:`partition` returns them.
    label_column : str
        The column to count.

    Returns
    -------
    pandas.DataFrame
        One row per MSP (index ``msp``, 0-based) and one column per label (sorted), holding
        ``int64`` counts; a label absent at an MSP counts 0.

    Examples
    --------
    >>> import pandas as pd
    >>> parts = [pd.DataFrame({"y": ["a", "a", "b"]}), pd.DataFrame({"y": ["b"]})]
    >>> label_distribution(parts, "y").to_numpy().tolist()
    [[2, 1], [0, 1]]
    """
    func = "label_distribution"
    if isinstance(parts, pd.DataFrame) or not isinstance(parts, Sequence):
        raise ConfigError(
            f"The 'parts' parameter of {func} must be a list of DataFrames, one per MSP. "
            f"Got a {type(parts).__name__} instead."
        )
    counts = []
    for k, part in enumerate(parts):
        if not isinstance(part, pd.DataFrame):
            raise ConfigError(
                f"The 'parts' parameter of {func} must hold DataFrames; item {k} is a "
                f"{type(part).__name__}."
            )
        if label_column not in part.columns:
            raise ConfigError(
                f"The 'label_column' parameter of {func} must name a column of every part; "
                f"part {k} has no column {label_column!r} (its columns: "
                f"{', '.join(map(repr, part.columns))})."
            )
        counts.append(part[label_column].value_counts(dropna=False))
    table = pd.DataFrame(counts).fillna(0).astype(np.int64) if counts else pd.DataFrame()
    table = table.reindex(columns=sorted(table.columns, key=str))
    table.index = pd.RangeIndex(len(parts), name="msp")
    table.columns.name = label_column
    return table
