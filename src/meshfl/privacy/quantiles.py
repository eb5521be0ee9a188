"""Differentially private quantiles, to choose the public bounds of numeric features.

The agents that bin or split numeric features (``client_health``, ``anomaly``, ``revenue``)
need public ``(low, high)`` bounds per feature, the same at every MSP. Bounds read off the
raw data leak it; bounds guessed too tight clip much of it (a revenue series given in
billions against bounds in millions is clipped whole). This module estimates quantiles
of an MSP's column under differential privacy, so an MSP can publish them as bounds.

**Mechanism: a noisy binary search over a public candidate grid.** The answer is a value
of a public, sorted grid (:func:`default_grid`: 0 and ``±m·10^k`` with six mantissas per
decade from ``1e-3`` to ``7e12``, or any grid given). To find the ``q``-quantile, each step
asks whether it lies at or below a grid value ``t`` through the sum over the rows of
``(1 - q)`` for ``x <= t`` and ``-q`` for ``x > t``: ``(1 - q)·n(x <= t) - q·n(x > t)``,
which is ``>= 0`` exactly when at least a share ``q`` of the rows lie at or below ``t``. One
row changes that sum by at most 1 (adding, removing or replacing it), so each answer is a
Gaussian mechanism of sensitivity 1, and needs no noisy count of the rows. The search takes
``ceil(log2(len(grid)))`` steps per quantile and column; all of them together are
``steps`` Gaussian mechanisms of noise multiplier ``sigma``: one
:class:`~meshfl.privacy.events.PrivacyEvent` ``("gaussian", sigma, 1.0, steps)`` that the
accountant composes exactly like the agents' own (adaptive composition of Gaussian
mechanisms; Dwork & Roth 2014, Thm. 3.20 and A.1; the search is the noisy binary search of
Karp & Kleinberg, SODA 2007, with the ``q``-weighted count of Gillenwater et al., "Differentially
private quantiles", ICML 2021, §2).

Where the quantile lies far from ``t``, the sum is at least ``min(q, 1 - q)·n`` away from 0
(the ``(1 - q)·n`` rows above a high quantile are all the evidence that ``t`` is too high),
and a wrong turn there sends the search far from the data. So the estimate is reliable when
``min(q, 1 - q)·n`` is several ``sigma``; :func:`dp_bounds` warns, at the MSP, when it is
under 3. Otherwise a wrong turn happens only near the target, and the rank error is a few
``sigma`` rows: at ε = 1 (δ = 1e-5) with 2 quantiles of one column, ``sigma`` ≈ 15 rows; at
ε = 0.1, ≈ 125. For the 1 % and 99 % quantiles of two columns at ε = 0.1 that takes some
60,000 values per column (about 20,000 at ε = 0.3, 7,000 at ε = 1), or quantiles nearer
the middle (``(0.05, 0.95)`` needs 5 times fewer rows). ``benchmarks/dp_quantiles.py``
measures it.

Cost: :func:`dp_bounds` calibrates ``sigma`` so that the event alone spends at most the
``epsilon`` it is given at ``delta`` (by :func:`meshfl.privacy.accountant.calibrate_noise`),
and with a ``ledger`` records the event under the agent's name *before* returning, so the
agent's later training plans with what is left of the MSP's budget. The noise comes from
:func:`meshfl.privacy.noise.noise_rng` (OS entropy at every call; no seed can reach it).
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from meshfl.config.errors import ConfigError
from meshfl.privacy import noise as _noise
from meshfl.privacy.events import PrivacyEvent

if TYPE_CHECKING:
    from meshfl.privacy.ledger import PrivacyLedger

__all__ = ["DPBounds", "default_grid", "dp_bounds", "dp_quantiles", "search_steps"]

_MANTISSAS = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)


def default_grid(low_exponent: int = -3, high_exponent: int = 12) -> NDArray[np.float64]:
    """The public candidate grid: 0 and ``±m·10^k``, ``m`` in 1, 1.5, 2, 3, 5, 7.

    Steps of at most 1.5x, from ``10**low_exponent`` to ``7·10**high_exponent``, both signs:
    193 values with the defaults, 8 search steps. A quantile is found to within one step
    of the grid (plus the noise's rank error); give a finer grid where the scale is known.

    Examples
    --------
    >>> g = default_grid(0, 1)
    >>> g[g >= 0].tolist()
    [0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 70.0]
    """
    if not (isinstance(low_exponent, int) and isinstance(high_exponent, int)) or (
        low_exponent > high_exponent
    ):
        raise ConfigError(
            "The 'low_exponent' and 'high_exponent' parameters of default_grid must be ints "
            f"with low_exponent <= high_exponent. Got {low_exponent!r}, {high_exponent!r}."
        )
    positive = np.array(
        [m * 10.0**k for k in range(low_exponent, high_exponent + 1) for m in _MANTISSAS]
    )
    return np.concatenate([-positive[::-1], [0.0], positive])


def search_steps(grid_size: int) -> int:
    """Noisy comparisons one quantile costs on a grid of ``grid_size`` values."""
    return max(1, math.ceil(math.log2(grid_size))) if grid_size > 1 else 0


def _checked_grid(grid: ArrayLike | None) -> NDArray[np.float64]:
    values = default_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    if values.ndim != 1 or values.size < 2 or not np.all(np.isfinite(values)):
        raise ConfigError(
            "The 'grid' parameter must be a 1-D array of at least 2 finite candidate values. "
            f"Got {grid!r} instead."
        )
    if not np.all(np.diff(values) > 0):
        raise ConfigError("The 'grid' parameter must be strictly increasing.")
    return values


def _checked_quantiles(quantiles: Sequence[float]) -> tuple[float, ...]:
    qs = tuple(float(q) for q in quantiles)
    if not qs or not all(0.0 < q < 1.0 for q in qs):
        raise ConfigError(
            f"The 'quantiles' parameter must hold values in (0, 1). Got {quantiles!r} instead."
        )
    return qs


def dp_quantiles(
    values: ArrayLike,
    quantiles: Sequence[float],
    *,
    noise_multiplier: float,
    grid: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Quantiles of one column by noisy binary search on a public grid.

    Each of the ``len(quantiles) * search_steps(len(grid))`` comparisons is a Gaussian
    mechanism of sensitivity 1 and noise multiplier ``noise_multiplier``; the caller
    accounts for them (:func:`dp_bounds` does). Missing (NaN) values are left out.

    Parameters
    ----------
    values : array-like of float
        The private column.
    quantiles : sequence of float
        Quantile levels in (0, 1).
    noise_multiplier : float
        Noise standard deviation of each comparison, in rows; > 0.
    grid : array-like of float, optional
        Public, strictly increasing candidates (default :func:`default_grid`).

    Returns
    -------
    numpy.ndarray
        One grid value per quantile: where the search ended.
    """
    if not (isinstance(noise_multiplier, (int, float)) and noise_multiplier > 0):
        raise ConfigError(
            "The 'noise_multiplier' parameter of dp_quantiles must be a float > 0 (no noise "
            f"is no privacy). Got {noise_multiplier!r} instead."
        )
    candidates = _checked_grid(grid)
    qs = _checked_quantiles(quantiles)
    x = np.asarray(values, dtype=np.float64).ravel()
    x = np.sort(x[~np.isnan(x)])
    n = x.size
    steps = search_steps(candidates.size)
    rng = _noise.noise_rng()  # fresh OS entropy for this release, never a seed
    drawn = rng.normal(0.0, float(noise_multiplier), size=(len(qs), steps))
    if _noise.observing():  # test-only audit (record_releases_for_tests)
        _noise.report_noise("gaussian", std=float(noise_multiplier), sensitivity=1.0, drawn=drawn)
    out = np.empty(len(qs))
    for i, q in enumerate(qs):
        lo, hi = 0, candidates.size - 1
        for step in range(steps):
            if lo >= hi:
                break
            mid = (lo + hi) // 2
            at_or_below = int(np.searchsorted(x, candidates[mid], side="right"))
            score = (1.0 - q) * at_or_below - q * (n - at_or_below)
            if score + drawn[i, step] >= 0.0:
                hi = mid
            else:
                lo = mid + 1
        out[i] = candidates[lo]
    return out


@dataclass(frozen=True)
class DPBounds:
    """Bounds estimated under differential privacy, and what they cost.

    Attributes
    ----------
    bounds : dict of str to (float, float)
        ``(low, high)`` per column, ready for an agent config's ``bounds``.
    quantiles : (float, float)
        The quantile levels ``low`` and ``high`` estimate.
    event : PrivacyEvent
        The mechanism applied: ``("gaussian", noise_multiplier, 1.0, steps)``.
    epsilon, delta : float
        Its cost alone, by the accountant, at ``delta``.
    """

    bounds: dict[str, tuple[float, float]]
    quantiles: tuple[float, float]
    event: PrivacyEvent
    epsilon: float
    delta: float


def dp_bounds(
    data: pd.DataFrame | Mapping[str, ArrayLike],
    columns: Sequence[str] | None = None,
    *,
    epsilon: float,
    delta: float,
    quantiles: tuple[float, float] = (0.01, 0.99),
    grid: ArrayLike | Mapping[str, ArrayLike] | None = None,
    accountant: Literal["prv", "rdp"] = "prv",
    ledger: PrivacyLedger | None = None,
    agent: str | None = None,
    key: str | None = None,
) -> DPBounds:
    """Public bounds for numeric columns, estimated privately as two quantiles each.

    Parameters
    ----------
    data : pandas.DataFrame or mapping of str to array
        The MSP's private rows.
    columns : sequence of str, optional
        The columns to bound (default: every numeric column of ``data``).
    epsilon, delta : float
        The privacy this estimate may spend, all columns together (ε > 0, δ in (0, 1)).
    quantiles : (float, float)
        The quantile levels of ``low`` and ``high``; ``(0.01, 0.99)`` by default: up to
        about 1 % of the values will then lie below ``low`` and 1 % above ``high`` (noise
        aside), counted by the agent's clip report. Both round outwards to the grid.
    grid : array-like, or mapping of column to array-like, optional
        Public candidate values (default :func:`default_grid`), one grid for all columns or
        one per column.
    accountant : {"prv", "rdp"}
        The accountant that calibrates the noise (as :func:`~meshfl.privacy.epsilon_spent`).
    ledger, agent, key : optional
        With a ledger, the event is recorded under ``agent`` (required then) and ``key``
        (default: a fresh random key) before the bounds are returned, so it counts against
        the MSP's budget for that agent.

    Returns
    -------
    DPBounds

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> frame = pd.DataFrame({"revenue": rng.lognormal(np.log(3e9), 0.5, 20_000)})
    >>> est = dp_bounds(frame, epsilon=1.0, delta=1e-5)
    >>> low, high = est.bounds["revenue"]
    >>> 5e8 <= low < 3e9 < high <= 2e10, est.epsilon <= 1.0
    (True, True)
    """
    from meshfl.privacy.accountant import calibrate_noise, epsilon_spent

    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(dict(data))
    if columns is None:
        columns = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c].dtype)]
    names = [str(c) for c in columns]
    absent = [c for c in names if c not in frame.columns]
    if not names or absent:
        raise ConfigError(
            "The 'columns' parameter of dp_bounds must name numeric columns of the data; "
            f"{'none were given' if not names else 'the data lacks ' + ', '.join(absent)}."
        )
    qs = _checked_quantiles(quantiles)
    if len(qs) != 2 or not qs[0] < qs[1]:
        raise ConfigError(
            "The 'quantiles' parameter of dp_bounds must be two levels (low, high) with "
            f"low < high. Got {quantiles!r} instead."
        )
    if ledger is not None and not agent:
        raise ConfigError(
            "The 'agent' parameter of dp_bounds is required with a ledger: the agent whose "
            "budget the estimate is charged to (e.g. 'client_health')."
        )
    grids = {
        c: _checked_grid(
            grid[c]
            if isinstance(grid, Mapping) and c in grid
            else (None if isinstance(grid, Mapping) else grid)
        )
        for c in names
    }
    steps = sum(len(qs) * search_steps(g.size) for g in grids.values())
    sigma = calibrate_noise(
        epsilon=epsilon,
        delta=delta,
        sample_rate=1.0,
        steps=steps,
        accountant=accountant,
        mechanism="gaussian",
    )
    event = PrivacyEvent("gaussian", noise_multiplier=sigma, sample_rate=1.0, steps=steps)
    if ledger is not None:
        assert agent is not None
        ledger.record(
            agent,
            key or f"dp-bounds:{secrets.token_hex(8)}",
            event,
            delta=delta,
            accountant=accountant,
        )
    bounds: dict[str, tuple[float, float]] = {}
    for c in names:
        column = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64)
        n = int(np.sum(~np.isnan(column)))
        margin = min(qs[0], 1.0 - qs[1]) * n / sigma
        if margin < 3.0:
            # Local only: the warning (and n) stay at the MSP.
            warnings.warn(
                f"dp_bounds: column {c!r} has {n} values; at epsilon={epsilon:g} the noise of "
                f"each comparison is {sigma:.0f} rows, against {min(qs[0], 1 - qs[1]) * n:.0f} "
                f"rows beyond the quantiles {qs}: the bounds may land far from the data. Give "
                "more epsilon, fewer columns per call, or quantiles nearer the middle "
                "(e.g. quantiles=(0.05, 0.95)).",
                UserWarning,
                stacklevel=2,
            )
        g = grids[c]
        low, high = dp_quantiles(column, qs, noise_multiplier=sigma, grid=g)
        # The search ends at the first grid value whose share at or below reaches q; for the
        # low bound take the grid value before it, so that (noise aside) at most a share q
        # lies below and at most 1 - q above: bounds round outwards, never inwards.
        below = g[g < low]
        low = float(below[-1]) if below.size else float(low)
        if not low < high:  # a constant column: widen to the next grid value
            above = g[g > low]
            high = float(above[0]) if above.size else float(low) + 1.0
        bounds[c] = (float(low), float(high))
    spent = epsilon_spent([event], delta=delta, accountant=accountant)
    return DPBounds(bounds, (qs[0], qs[1]), event, spent, float(delta))
