"""Seeded synthetic MSP revenue series, and the schema of the revenue agent's data.

Each MSP owns one series (weekly or monthly periods). Series differ the way MSPs do: scale
(a few thousand to a few hundred thousand dollars a week), growth with one change of growth
rate, noise level, history length (a new MSP has months, an established one years). They
share the *shape* of the year, in relative terms, as businesses of one industry do: a
January slump, a summer dip, a fiscal-year-end budget flush in December, quarter-end
renewals, quiet Thanksgiving, Christmas and New-Year weeks. That shared shape is what a
federation can learn and a short history cannot.

Every series ends on the same date (:data:`DEFAULT_END`), so that held-out horizons of all
MSPs cover the same season.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import pandas as pd

from meshfl.config.errors import ConfigError
from meshfl.config.validation import Count, Seed, Skew, checked
from meshfl.data.partition import cut
from meshfl.data.schema import Column, Schema

__all__ = [
    "DEFAULT_END",
    "REVENUE_SCHEMA",
    "revenue_partitions",
    "revenue_series",
]

REVENUE_SCHEMA = Schema(
    "revenue data",
    (
        Column("date", "datetime", description="start of the period (week or month)"),
        Column("revenue", "number", description="revenue of the period (> 0)"),
        Column("series", "category", required=False, description="series id (one per MSP)"),
        Column(
            "is_holdout",
            "bool",
            required=False,
            description="true for held-out periods to forecast (evaluation only)",
        ),
    ),
)
"""Columns of revenue data: ``date``, ``revenue``; optional ``series``, ``is_holdout``."""

DEFAULT_END = pd.Timestamp("2025-12-29")
"""Start of the last period of every synthetic series (a Monday)."""

Frequency = Literal["weekly", "monthly"]


def _seasonal(dates: pd.DatetimeIndex, step: pd.DateOffset) -> np.ndarray:
    """The industry's yearly shape in log revenue (period average of a smooth curve)."""
    mid = dates + (dates + step - dates) / 2
    tau = (mid.day_of_year.to_numpy() - 1) / 365.25
    return (
        0.06 * np.cos(2 * np.pi * (tau - 0.96))  # high in December (budget flush)
        - 0.07 * np.exp(-(((tau - 0.02) / 0.05) ** 2))  # January slump
        - 0.06 * np.exp(-(((tau - 0.60) / 0.07) ** 2))  # August dip
        + 0.03 * np.sin(4 * np.pi * tau)
    )


def _holidays(dates: pd.DatetimeIndex, step: pd.DateOffset) -> np.ndarray:
    """Holiday effects in log revenue, by the share of the period they cover."""
    start, end = dates.as_unit("ns").asi8, (dates + step).as_unit("ns").asi8
    length_days = (end - start) / 86_400e9
    effects = np.zeros(len(dates))
    for year in range(int(dates.year.min()) - 1, int(dates.year.max()) + 2):
        nov1 = pd.Timestamp(year=year, month=11, day=1)
        thanksgiving = nov1 + pd.Timedelta(days=(3 - nov1.weekday()) % 7 + 21)
        events = [
            (pd.Timestamp(year=year, month=1, day=1), -0.7, 4),  # new-year shutdown
            (thanksgiving, -0.5, 2),
            (pd.Timestamp(year=year, month=12, day=24), -0.9, 4),  # Christmas closure
        ]
        for month in (3, 6, 9, 12):  # renewals booked on the quarter's last days
            last = pd.Timestamp(year=year, month=month, day=1) + pd.offsets.MonthEnd(0)
            events.append((last - pd.Timedelta(days=2), 1.2, 3))
        for day, effect_per_day, days in events:
            lo, hi = day.as_unit("ns").value, (day + pd.Timedelta(days=days)).as_unit("ns").value
            overlap = np.clip(np.minimum(end, hi) - np.maximum(start, lo), 0, None) / 86_400e9
            effects += effect_per_day * overlap / length_days
    return effects


@functools.lru_cache(maxsize=1024)
def _calendar(
    end: pd.Timestamp, frequency: Frequency, periods: int
) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """The ``periods`` dates ending at ``end``, their seasonal and holiday shape, and their
    time in years before ``end``.

    Shared by every series of the same length and end (read-only): a mesh of simulated MSPs
    builds each calendar once.
    """
    step = _step(frequency)
    if frequency == "monthly":
        end = end.to_period("M").start_time  # monthly periods start on the 1st
    start = end - step * (periods - 1)
    dates = pd.date_range(start, periods=periods, freq="7D" if frequency == "weekly" else "MS")
    shape = _seasonal(dates, step) + _holidays(dates, step)
    # years before the last period (<= 0): whole days, as (dates - dates[-1]).days gives
    ns = dates.as_unit("ns").asi8
    t = ((ns - ns[-1]) // 86_400_000_000_000).astype(np.float64) / 365.25
    for array in (shape, t):
        array.setflags(write=False)
    return dates, shape, t


def _step(frequency: Frequency) -> pd.DateOffset:
    if frequency == "weekly":
        return pd.DateOffset(weeks=1)
    if frequency == "monthly":
        return pd.DateOffset(months=1)
    raise ConfigError(
        f"The 'frequency' parameter of revenue_series must be 'weekly' or 'monthly'. "
        f"Got {frequency!r} instead."
    )


@checked
def revenue_series(
    periods: Count,
    *,
    seed: Seed,
    frequency: Frequency = "weekly",
    end: pd.Timestamp | str = DEFAULT_END,
    series: str | None = None,
) -> pd.DataFrame:
    """One MSP's revenue series of ``periods`` periods ending at ``end``.

    Parameters
    ----------
    periods : int
        Number of periods (rows).
    seed : int
        Draws the MSP's scale, growth, change of growth, noise and how strongly it follows
        the industry's shape.
    frequency : {"weekly", "monthly"}
        Period length.
    end : Timestamp
        Start of the last period (for monthly series: the first of its month).
    series : str, optional
        The ``series`` column's value (default ``"msp-<seed>"``).

    Returns
    -------
    pandas.DataFrame
        Columns ``date``, ``revenue``, ``series``.
    """
    dates, revenue = _draw(periods, seed, frequency, pd.Timestamp(end))
    return pd.DataFrame(
        {
            "date": dates,
            "revenue": revenue,
            "series": series if series is not None else f"msp-{seed}",
        }
    )


def _draw(
    periods: int, seed: int, frequency: Frequency, end: pd.Timestamp
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """The dates and revenue of :func:`revenue_series` (the draw, without a frame)."""
    rng = np.random.default_rng([seed, 0x5EED])
    dates, calendar, t = _calendar(end, frequency, periods)
    per_year = 52.0 if frequency == "weekly" else 12.0
    scale = float(np.exp(rng.uniform(np.log(5e3), np.log(3e5)))) * (52.0 / per_year)
    growth = rng.normal(0.12, 0.10)  # log growth per year
    change = rng.normal(0.0, 0.12)  # change of growth at a random point
    at = rng.uniform(0.3, 0.8)
    noise = rng.uniform(0.02, 0.08) * (1.0 if frequency == "weekly" else 0.6)
    strength = rng.uniform(0.85, 1.15)
    t0 = t[0] * (1 - at)
    trend = growth * t + change * np.maximum(0.0, t - t0)
    shape = strength * calendar
    log_revenue = np.log(scale) + trend + shape + rng.normal(0.0, noise, size=periods)
    return dates, np.round(np.exp(log_revenue), 2)


@checked
def revenue_partitions(
    num_msps: Count,
    *,
    mean_periods: Count,
    seed: Seed,
    frequency: Frequency = "weekly",
    size_skew: Skew = 0.5,
    min_periods: Count = 30,
) -> list[pd.DataFrame]:
    """One series per MSP, with log-normally skewed history lengths.

    Lengths are ``mean_periods · exp(N(0, (2·size_skew)²))`` (renormalised to mean
    ``mean_periods``), at least ``min_periods``: some MSPs are new, some have years of
    history.
    """
    rng = np.random.default_rng([seed, 0xA11])
    factors = np.exp(rng.normal(0.0, 2 * size_skew, size=num_msps))
    lengths = np.maximum(min_periods, np.round(mean_periods * factors / factors.mean()))
    seeds = rng.integers(0, 2**31 - 1, size=num_msps)
    draws = [
        _draw(int(n), int(s), frequency, DEFAULT_END) for n, s in zip(lengths, seeds, strict=True)
    ]
    # One frame for the whole mesh, validated once and cut by index (the draws are those
    # of revenue_series).
    sizes = lengths.astype(int)
    names = np.array([f"msp-{i}" for i in range(num_msps)], dtype=object)
    whole = pd.DataFrame(
        {
            "date": np.concatenate([d[0].to_numpy() for d in draws]),
            "revenue": np.concatenate([d[1] for d in draws]),
            "series": np.repeat(names, sizes),
        }
    )
    return cut(REVENUE_SCHEMA.validate(whole), sizes)
