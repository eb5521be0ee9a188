"""Agent ``revenue``: revenue forecasting with a federated Prophet-style additive model.

Each MSP owns whole revenue series (weekly or monthly). The model (see
:mod:`meshfl.models.additive`) is log revenue = the series' own piecewise-linear trend + a
*shared* yearly shape (Fourier terms) and holiday effects. MSPs profile their own trend out
and send the sufficient statistics of the shared shape (``XᵀX``, ``Xᵀy``, ``yᵀy``, counts,
``weight=1``); the sum is exactly what one party holding every series would compute, and the
closed-form ridge solve gives the shared shape. Working on log revenue with each series' own
level and trend removed makes every period of every MSP count the same, whatever the MSP's
size. Forecasts adapt level and trend to the history they are given, locally.

Rounds: one exchange already gives the model; each further round is a fresh exchange whose
statistics are averaged with the earlier ones (the global vector keeps the count). Without
DP the statistics are the same every round, so later rounds change nothing; with DP each
round's noise is calibrated for the whole plan, so averaging r rounds gives about the noise
of one round at the full budget — rounds neither help nor hurt. One round is the natural
plan.

Privacy (``unit="sample"``): the unit is one period of one series — its revenue value (the
calendar of periods an MSP reports, hence ``XᵀX`` and the counts, is not protected). Log
revenue is centred on a noisy histogram mode and clipped to ``±clip_radius``, which bounds
what one period can change in ``Xᵀy`` and ``yᵀy``; Gaussian noise on the histogram and on
those statistics, each at multiplier ``sigma·√2``, composes to one Gaussian mechanism of
multiplier ``sigma`` (the round's event).

Privacy (``unit="msp"``): the unit is one whole MSP — all its series and dates, so its
calendar and history length (``XᵀX``, the counts) are private too. Each MSP computes its
statistics without DP (its own median centre), scales the whole vector (``XᵀX``, ``Xᵀy``,
``yᵀy``, counts; public per-coordinate scales :data:`MSP_SCALES` first) to norm
C = ``max_grad_norm`` and adds its share of the round's Gaussian noise to every entry
(:mod:`meshfl.federation.msp_privacy`); the slot of the noise variance carries its known,
public value. The sum is a weighted least-squares problem (each MSP's statistics weighted
by ``C/‖S_i‖``), solved like any other after a projection of the noisy ``XᵀX`` onto the
positive semi-definite cone (post-processing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from pydantic import Field, SkipValidation, field_validator, model_validator

from meshfl.agents.base import Agent, GlobalModel, PartitionRequest
from meshfl.agents.registry import register
from meshfl.agents.update import Update
from meshfl.config.base import MeshflConfig
from meshfl.config.errors import DataSchemaError
from meshfl.config.validation import Count, checked
from meshfl.data.revenue_data import REVENUE_SCHEMA, revenue_partitions, revenue_series
from meshfl.data.schema import Schema, is_validated, load_frame, remember_validated
from meshfl.models import additive, partial_pooling
from meshfl.privacy.budget import DPStep
from meshfl.privacy.events import Mechanism
from meshfl.privacy.mechanisms import add_gaussian_noise
from meshfl.privacy.noise import noise_rng

__all__ = ["Revenue", "RevenueConfig", "RevenueData", "RevenueModel", "SeriesData"]

MSP_SCALES = {"XtX": 0.005, "Xty": 0.05, "yty": 0.05, "counts": 0.0025}
"""Public scales of the packed statistics inside a unit='msp' release, undone after the
noise. Their ratios share the bound C among the blocks: scaled to norm C as they are,
``XᵀX`` (and the counts) would take about 96 % of it and ``Xᵀy``, which carries the seasonal
shape, 4 % (synthetic mesh, 40 periods an MSP). Noise on ``XᵀX`` moves ``β`` by about ``|β|``
times as much as noise on ``Xᵀy`` does: with ``|β| ≈ 0.2`` the error of ``β`` is smallest
for an ``XᵀX`` scale near a tenth of ``Xᵀy``'s; the counts only serve the pooled variance
(intervals) and get a twentieth. ``yᵀy`` travels divided by ``c_scale``, as always.

Their size sets which MSPs are scaled down to C: about 125 weekly periods of one series
fill it. Smaller MSPs keep their statistics as they are, so the sum weighs their periods as
the non-private sum does. Scaling every MSP to C (scales 20 times these) weighs every MSP
the same instead, a 40-period series as much as a 10-year one, and biases the shared shape
toward what short histories see: even without noise it kept only 0.70 of the federation's
gain over the seasonal-naive forecast on the synthetic mesh (these scales: 0.95), and with
noise no number of MSPs got it to 0.9 (benchmarks/msp_level_dp.py, docs/privacy.md)."""

_CHECKED = Schema("revenue data, checked and sorted by series and date", REVENUE_SCHEMA.columns)
"""What :meth:`Revenue.load_data` returns: valid, positive, one row per period, sorted."""


def _one_sorted_series(frame: pd.DataFrame) -> bool:
    """Whether ``frame`` holds one series whose dates strictly increase (sorted, no twice)."""
    if "series" in frame:
        names = frame["series"].to_numpy()
        if len(names) and not (names == names[0]).all():
            return False
    dates = frame["date"].to_numpy()
    return bool((dates[1:] > dates[:-1]).all())


def _default_index(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` indexed 0..n-1: itself where it already is (no copy), else re-indexed."""
    index = frame.index
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return frame
    return frame.reset_index(drop=True)


def _series_groups(frame: pd.DataFrame, *, sort: bool) -> Iterable[tuple[Any, pd.DataFrame]]:
    """``(series name, rows)`` of a checked frame (sorted by series): one pair for a frame
    of one series, without pandas' groupby (most MSPs hold one; it is most of the cost)."""
    if "series" not in frame:
        return [("", frame)]
    names = frame["series"].to_numpy()
    if len(names) and names[0] == names[-1]:
        return [(names[0], frame)]
    return frame.groupby("series", sort=sort)


_SPACINGS = (
    (0.5, 1.5, "daily"),
    (85, 95, "quarterly"),
    (175, 190, "half-yearly"),
    (355, 375, "yearly"),
)
"""Spacings in days, other than weekly or monthly, that a revenue error names."""


def _frequency(dates: pd.DatetimeIndex, label: str) -> additive.Frequency:
    """The series' period, inferred from its dates; anything but weekly or monthly raises
    with a sentence naming the column and the periods it takes."""
    try:
        return additive.infer_frequency(dates)
    except ValueError:
        pass
    days = additive.median_spacing_days(dates)
    named = next((f" ({what})" for low, high, what in _SPACINGS if low <= days <= high), "")
    raise DataSchemaError(
        f"Column 'date' of the revenue data must hold one row per week or per month: the "
        f"revenue agent forecasts weekly or monthly series and infers which from the dates "
        f"(agent_config's 'frequency' applies to synthetic data only). {label} has dates "
        f"{days:g} days apart{named}. Give weekly or monthly revenue, one row per period."
    )


class RevenueConfig(MeshflConfig):
    """Configuration of the ``revenue`` agent."""

    frequency: Literal["weekly", "monthly"] = Field(
        "weekly", description="Period of synthetic series (real data: inferred from dates)."
    )
    horizon: int = Field(13, ge=1, le=520, description="Held-out / forecast periods.")
    yearly_order: int = Field(6, ge=1, le=26, description="Fourier pairs of the yearly shape.")
    holidays: tuple[str, ...] = Field(
        tuple(additive.HOLIDAYS), description="Holiday indicators (names of HOLIDAYS)."
    )
    n_changepoints: int = Field(25, ge=0, le=50, description="Most trend changepoints.")
    changepoints_per_year: float = Field(
        1.0,
        ge=0,
        description="Changepoints per year of history (at least min_changepoints, at most "
        "n_changepoints; 0: always n_changepoints).",
    )
    min_changepoints: int = Field(3, ge=0, description="Fewest changepoints of a series.")
    changepoint_range: float = Field(0.8, gt=0, le=1)
    changepoint_prior_scale: float = Field(0.1, gt=0, description="Prior sd of a slope change.")
    ridge: float = Field(1.0, gt=0, description="Ridge penalty on the shared coefficients.")
    interval_width: float = Field(0.8, gt=0, lt=1)
    amplitude_prior_scale: float = Field(
        0.5,
        ge=0,
        description="Prior sd of a series' own scaling of the shared shape (fitted locally "
        "with the trend; 0: the shared amplitude).",
    )
    own_shape_prior_scale: float = Field(
        0.2,
        ge=0,
        description="Prior sd of a series' own deviation from the shared yearly shape "
        "(first Fourier pair; fitted locally on histories of own_shape_min_years or more; "
        "0: the shared shape alone).",
    )
    own_shape_min_years: float = Field(
        2.0, ge=0, description="Shortest history (years) whose own amplitude and shape are fitted."
    )
    min_history: int = Field(8, ge=4, description="Fewest training periods of a series.")
    clip_radius: float = Field(
        1.5, gt=0, description="Centred log revenue is clipped to ±this (bounds DP sensitivity)."
    )
    dp_prior_scale: float = Field(
        0.05,
        gt=0,
        description="Prior sd of the first Fourier pair (k-th: /k; holidays: x5); shrinks "
        "the shared effects as much as the DP noise on the statistics demands.",
    )
    revenue_bounds: tuple[float, float] = Field(
        (10.0, 1e9), description="Public range of one period's revenue (DP centring only)."
    )

    @field_validator("holidays")
    @classmethod
    def _known_holidays(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [h for h in value if h not in additive.HOLIDAYS]
        if unknown:
            raise ValueError(
                f"name holidays from {', '.join(sorted(additive.HOLIDAYS))}; "
                f"{', '.join(unknown)} is not one"
            )
        if len(set(value)) != len(value):
            raise ValueError("name each holiday once")
        return value

    @model_validator(mode="after")
    def _bounds_ordered(self) -> RevenueConfig:
        low, high = self.revenue_bounds
        if not 0 < low < high:
            raise ValueError("give revenue_bounds as (low, high) with 0 < low < high")
        return self

    def spec(self) -> additive.AdditiveSpec:
        """The model shape this config describes."""
        return additive.AdditiveSpec(
            yearly_order=self.yearly_order,
            holidays=self.holidays,
            n_changepoints=self.n_changepoints,
            changepoints_per_year=self.changepoints_per_year,
            min_changepoints=self.min_changepoints,
            changepoint_range=self.changepoint_range,
            changepoint_prior_scale=self.changepoint_prior_scale,
            ridge=self.ridge,
            interval_width=self.interval_width,
            amplitude_prior_scale=self.amplitude_prior_scale,
            own_shape_prior_scale=self.own_shape_prior_scale,
            own_shape_min_years=self.own_shape_min_years,
        )


@dataclass(frozen=True)
class SeriesData:
    """One series: its history (training periods) and, where marked, held-out periods."""

    series: str
    dates: pd.DatetimeIndex
    revenue: np.ndarray
    holdout: np.ndarray
    """Boolean mask over all periods; all False when nothing is held out."""
    design: additive.SeriesDesign
    """Design of the history (the periods not held out)."""

    @property
    def history(self) -> np.ndarray:
        """Revenue of the periods not held out."""
        return self.revenue[~self.holdout]


@dataclass(frozen=True)
class RevenueData:
    """Prepared local data: one :class:`SeriesData` per series."""

    series: tuple[SeriesData, ...]

    def __len__(self) -> int:
        return sum(len(s.dates) for s in self.series)

    @property
    def training_periods(self) -> int:
        """Periods not held out, over all series."""
        return sum(int((~s.holdout).sum()) for s in self.series)


@register
class Revenue(Agent[RevenueData]):
    """Revenue forecasts from a shared additive shape fitted on summed statistics."""

    name = "revenue"
    summary = "revenue forecasting"
    config_class = RevenueConfig
    fast_config = {"yearly_order": 3, "n_changepoints": 1}  # noqa: RUF012
    schema = REVENUE_SCHEMA
    metric = "neg_smape"
    label_column = "series"
    combine_uses_previous = True  # rounds average their statistics
    supports_msp_dp = True
    msp_contribution = "statistics"
    config: RevenueConfig

    def suggested_rounds(self) -> int:
        """One: a single exchange of the statistics is the whole fit."""
        return 1

    @property
    def spec(self) -> additive.AdditiveSpec:
        """The model's shape."""
        return self.config.spec()

    @property
    def stats_size(self) -> int:
        """Length of one round's update: packed statistics of the shared features."""
        return additive.Statistics.size(self.spec.n_features)

    @property
    def c_scale(self) -> float:
        # yᵀy travels divided by this public constant, so that its sensitivity (≈24·R²)
        # is about a quarter of Xᵀy's (≈6·R): the pooled variance only refines intervals,
        # so it gets the smaller share of the Gaussian mechanism.
        return 16.0 * self.config.clip_radius

    # -- data ------------------------------------------------------------------------
    def load_data(self, data: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
        if isinstance(data, pd.DataFrame) and is_validated(data, _CHECKED):
            return data  # it came out of this method (or is rows of what did)
        frame = load_frame(data, self.schema)
        revenue = frame["revenue"].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~(revenue > 0))
        if bad.size:
            raise DataSchemaError(
                "Column 'revenue' of the revenue data must hold positive numbers (the model "
                f"works on log revenue). Row {int(bad[0])} holds {revenue[bad[0]]!r}; drop or "
                "fill periods without revenue."
            )
        if _one_sorted_series(frame):  # most MSPs' frames: nothing to sort or to find twice
            return remember_validated(_default_index(frame), _CHECKED)
        keys = ["series", "date"] if "series" in frame else ["date"]
        dup = frame.duplicated(keys)
        if dup.any():
            row = frame.loc[dup].iloc[0]
            where = f" of series {row['series']!r}" if "series" in frame else ""
            raise DataSchemaError(
                f"The revenue data holds date {row['date']}{where} more than once; "
                "give one row per period (sum revenue per period first)."
            )
        return remember_validated(
            frame.sort_values(keys, kind="stable").reset_index(drop=True), _CHECKED
        )

    def synthetic_data(self, n: int, *, seed: int) -> pd.DataFrame:
        return revenue_series(n, seed=seed, frequency=self.config.frequency)

    def _periods_per_year(self) -> int:
        return 52 if self.config.frequency == "weekly" else 12

    def _partition_synthetic(self, request: PartitionRequest) -> list[pd.DataFrame]:
        """One series per MSP; ``samples_per_msp`` is the mean number of periods.

        ``alpha`` (label skew) has no meaning here: every MSP owns exactly one series.
        """
        shortest = self.config.horizon + max(self.config.min_history, self._periods_per_year() // 2)
        return revenue_partitions(
            request.num_msps,
            mean_periods=request.samples_per_msp,
            seed=request.seed,
            frequency=self.config.frequency,
            size_skew=request.size_skew,
            min_periods=shortest,
        )

    def split(
        self, frame: pd.DataFrame, *, test_fraction: float, seed: int
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Hold out the last ``horizon`` periods of every series (``test_fraction`` unused).

        The training frame is the history; the held-out frame is the whole series with
        ``is_holdout`` marking the periods to forecast, since a forecast needs the history.
        """
        frame = self.load_data(frame)
        groups = _series_groups(frame, sort=False)
        marks = []
        for name, group in groups:  # contiguous and in frame order: the frame is sorted
            keep = len(group) - self.config.horizon
            if keep < self.config.min_history:
                label = f"Series {name!r}" if name != "" else "The series"
                raise DataSchemaError(
                    f"{label} has {len(group)} periods; holding out horizon="
                    f"{self.config.horizon} leaves {keep}, fewer than min_history="
                    f"{self.config.min_history}. Give a longer history or a shorter horizon."
                )
            marks.append(np.arange(len(group)) >= keep)
        holdout = np.concatenate(marks) if marks else np.zeros(0, dtype=bool)
        # one series: its history is the first rows (a slice, not a boolean copy)
        train = frame.iloc[: int((~holdout).sum())] if len(marks) == 1 else frame[~holdout]
        if "is_holdout" in train:
            train = train.drop(columns=["is_holdout"])
        test = frame.assign(is_holdout=holdout)
        # Rows of a checked, sorted frame: checked and sorted still.
        return (
            remember_validated(_default_index(train), _CHECKED),
            remember_validated(_default_index(test), _CHECKED),
        )

    def prepare(self, frame: pd.DataFrame) -> RevenueData:
        frame = self.load_data(frame)
        groups = _series_groups(frame, sort=True)
        out = []
        for name, group in groups:
            dates = pd.DatetimeIndex(group["date"])
            revenue = group["revenue"].to_numpy(dtype=np.float64)
            holdout = (
                group["is_holdout"].to_numpy(dtype=bool)
                if "is_holdout" in group
                else np.zeros(len(group), dtype=bool)
            )
            label = f"Series {name!r}" if name != "" else "The series"
            periods = len(holdout) - int(holdout.sum())
            if periods < self.config.min_history:
                raise DataSchemaError(
                    f"{label} has {periods} periods of history; the revenue "
                    f"agent needs at least min_history={self.config.min_history}."
                )
            history = dates[~holdout] if holdout.any() else dates
            frequency = _frequency(history, label)
            try:
                design = additive.series_design(history, self.spec, frequency=frequency)
            except ValueError as err:
                raise DataSchemaError(f"{label}: {err}.") from None
            out.append(SeriesData(str(name), dates, revenue, holdout, design))
        return RevenueData(tuple(out))

    # -- federated learning ----------------------------------------------------------
    def init_vector(self, *, seed: int) -> np.ndarray:
        # packed statistics of no data, then the number of exchanges averaged so far
        return np.zeros(self.stats_size + 1)

    def update_size(self, vector: np.ndarray) -> int:
        return self.stats_size

    def privacy_shape(self, local: RevenueData) -> tuple[Mechanism, float, int]:
        # One Gaussian mechanism over all periods per round.
        return "gaussian", 1.0, 1

    def local_update(
        self,
        vector: np.ndarray,
        local: RevenueData,
        *,
        server_round: int,
        seed: int,
        dp: DPStep | None = None,
    ) -> Update:
        radius = self.config.clip_radius
        low, high = (float(np.log(v)) for v in self.config.revenue_bounds)
        stats = additive.Statistics.zeros(self.spec.n_features)
        sens_b = sens_c = 0.0
        clipped = 0
        for s in local.series:
            z = np.log(s.history)
            if dp is None:
                center = float(np.median(z))
            else:
                # the centre is part of the mechanism: a noisy histogram at multiplier sigma·√2
                # (its noise from OS entropy, never from the public seed)
                center = additive.noisy_mode_center(
                    z, low=low, high=high, noise_std=dp.noise_multiplier * 2.0, rng=noise_rng()
                )
            w = additive.clip_log(z, center, radius)
            clipped += int(np.sum(np.abs(z - center) > radius))
            stats = stats + additive.series_statistics(s.design, w)
            sb, sc = additive.statistics_sensitivity(s.design, radius)
            sens_b, sens_c = max(sens_b, sb), max(sens_c, sc)
        packed = stats.pack(self.c_scale)
        # counts of periods and series follow from the dates (not protected); how many
        # values were clipped depends on revenue, so it is reported only without DP
        metrics = {"examples": float(local.training_periods), "series": float(len(local.series))}
        if dp is None:
            metrics["clipped_periods"] = float(clipped)
            return Update(vector=packed, weight=1.0, metrics=metrics)
        p = self.spec.n_features
        m = p * (p + 1) // 2
        sensitivity = float(np.hypot(sens_b, sens_c / self.c_scale))
        multiplier = dp.noise_multiplier * np.sqrt(2.0)
        private = slice(m, m + p + 1)  # Xᵀy and yᵀy; XᵀX and the counts follow from dates
        packed[private] = add_gaussian_noise(
            packed[private], sensitivity=sensitivity, noise_multiplier=multiplier
        )
        packed[-1] = (multiplier * sensitivity) ** 2  # public: sigma and the dates fix it
        return Update(vector=packed, weight=1.0, metrics=metrics, privacy_event=dp.event())

    def _msp_scales(self) -> np.ndarray:
        """Public scales of the packed statistics (all but the noise slot) under unit='msp'."""
        p = self.spec.n_features
        m = p * (p + 1) // 2
        return np.concatenate(
            [
                np.full(m, MSP_SCALES["XtX"]),
                np.full(p, MSP_SCALES["Xty"]),
                [MSP_SCALES["yty"], MSP_SCALES["counts"], MSP_SCALES["counts"]],
            ]
        )

    def msp_statistics(self, vector: np.ndarray) -> np.ndarray:
        """What a unit='msp' release bounds to norm C: the statistics, publicly scaled.

        The trailing noise-variance slot is no statistic (0 without DP) and is left out;
        see :data:`MSP_SCALES` for the scales.
        """
        vector = np.asarray(vector, dtype=np.float64)
        if vector.size != self.stats_size:
            raise DataSchemaError(
                f"a revenue update with this config holds {self.stats_size} values; "
                f"got {vector.size}"
            )
        return vector[:-1] * self._msp_scales()

    def msp_noise_factor(self) -> float:
        """How much the noise slot of a unit='msp' release exceeds the variance on ``Xᵀy``.

        The solve reads ``Σb`` as the observation ``Ãβ + e`` (``Ã`` the noisy ``ΣA`` plus the
        ridge). Under MSP-level DP ``ΣA`` is noisy too, ``Ã = A + E``, so the observation's
        error is ``e_b - Eβ``: per entry of variance ``s² + s_A²·‖β‖²``, with ``s_A = s·r`` and
        ``r`` the ratio of the ``Xᵀy`` and ``XᵀX`` scales. ``‖β‖²`` is taken at its prior mean
        ``Σ τ_k²`` (:func:`additive.prior_scales`): ``1 + r²·Σ τ_k²`` (about 26 with the
        defaults), a function of public config only.
        """
        ratio = MSP_SCALES["Xty"] / MSP_SCALES["XtX"]
        tau = additive.prior_scales(self.spec, self.config.dp_prior_scale)
        return float(1.0 + ratio**2 * np.sum(tau**2))

    def msp_release(self, noisy: np.ndarray, *, noise_std: float, shares: int) -> np.ndarray:
        """The packed update from the noisy scaled statistics (post-processing).

        The scales are undone, and the last slot carries this MSP's share of the noise
        variance the solve must assume, ``(sigma·C/scale)²/shares`` on ``Xᵀy`` (and on the
        packed ``yᵀy``) times :meth:`msp_noise_factor` for the noise that ``XᵀX`` carries:
        public (sigma planned by the coordinator, C, the scales and the prior from the
        config), so the sum of ``k`` releases carries ``k/shares`` times the round's. The
        noise on ``XᵀX`` and on the counts is as many times larger as their scale is
        smaller than ``Xᵀy``'s (10 and 20 times, :data:`MSP_SCALES`).
        """
        unscaled = np.asarray(noisy, dtype=np.float64) / self._msp_scales()
        variance = (noise_std / MSP_SCALES["Xty"]) ** 2 / max(int(shares), 1)
        return np.concatenate([unscaled, [variance * self.msp_noise_factor()]])

    def noised_release(self, update: Update) -> tuple[np.ndarray, float] | None:
        """The noisy ``Xᵀy`` and ``yᵀy`` statistics; their noise variance travels last."""
        if update.privacy_event.mechanism != "gaussian":
            return None
        p = self.spec.n_features
        m = p * (p + 1) // 2
        variance = float(update.vector[-1])
        if not variance > 0:
            return None
        return update.vector[m : m + p + 1], float(np.sqrt(variance))

    def _exchanges(self, vector: np.ndarray) -> tuple[np.ndarray, float]:
        if vector.size != self.stats_size + 1:
            raise DataSchemaError(
                f"A revenue model vector with this config holds {self.stats_size + 1} values "
                f"(statistics of {self.spec.n_features} shared features and a count); got "
                f"{vector.size}. Was it made with another yearly_order or holidays?"
            )
        return vector[:-1], float(vector[-1])

    def combine(
        self, vector: np.ndarray, summed: np.ndarray, total_weight: float, *, server_round: int
    ) -> np.ndarray:
        stats, k = self._exchanges(np.asarray(vector, dtype=np.float64))
        mean = (stats * k + summed) / (k + 1)
        return np.concatenate([mean, [k + 1]])

    def shared_fit(self, vector: np.ndarray) -> additive.SharedFit:
        """The shared shape solved from a global vector's statistics (read-only).

        The last vector's fit is kept: every simulated MSP evaluates the same global model.
        """
        vector = np.asarray(vector, dtype=np.float64)
        key = hashlib.blake2b(vector.tobytes(), digest_size=16).digest()
        last = getattr(self, "_last_shared_fit", None)
        if last is not None and last[0] == key:
            return cast(additive.SharedFit, last[1])
        fit = self._solve_shared(vector)
        for array in (fit.beta, fit.precision, fit.noise_cov):
            array.setflags(write=False)
        self._last_shared_fit = (key, fit)
        return fit

    def _solve_shared(self, vector: np.ndarray) -> additive.SharedFit:
        packed, k = self._exchanges(vector)
        stats = additive.Statistics.unpack(packed, self.spec.n_features, self.c_scale)
        # the vector holds the mean of k exchanges: their noise variance adds up, over k²
        noise_var = stats.noise_var / max(k, 1.0)
        # CKKS sums carry ~1e-7 relative error: a variance that small is encryption noise
        if noise_var < 1e-6 * max(1.0, float(np.abs(stats.A).max(initial=0.0))):
            noise_var = 0.0
        stats = dataclasses.replace(stats, noise_var=noise_var)
        return additive.solve_shared(
            stats,
            self.spec,
            c_noise_std=self.c_scale * float(np.sqrt(noise_var)),
            prior_scale=additive.prior_scales(self.spec, self.config.dp_prior_scale),
        )

    def evaluate(self, vector: np.ndarray, local: RevenueData) -> dict[str, float]:
        """sMAPE (%), MASE and interval coverage over held-out periods of every series.

        Series with no held-out periods are scored in-sample (fitted values on their
        history). ``neg_smape`` (headline, higher is better) is ``-smape``.
        """
        shared = self.shared_fit(vector)
        smapes, mases, covered, naive = [], [], [], []
        for s in local.series:
            history = s.history
            target = s.holdout if s.holdout.any() else ~s.holdout
            yhat, lower, upper = additive.fit_local(
                s.design, np.log(history), shared, self.spec, s.dates[target]
            ).bands()
            actual = s.revenue[target]
            smapes.append(additive.smape(actual, yhat))
            naive.append(additive.smape(actual, seasonal_naive(s, s.design.frequency)))
            mases.append(additive.mase(actual, yhat, history))
            covered.append((actual >= lower) & (actual <= upper))
        sm = np.concatenate(smapes)
        return {
            "neg_smape": -float(sm.mean()),
            "baseline_neg_smape": -float(np.concatenate(naive).mean()),
            "smape": float(sm.mean()),
            "mase": float(np.concatenate(mases).mean()),
            "coverage": float(np.concatenate(covered).mean()),
            "examples": float(len(sm)),
        }

    def model(self, vector: np.ndarray) -> RevenueModel:
        return RevenueModel(self, vector)

    # -- personalization -------------------------------------------------------------
    def pool(self, frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
        """Several MSPs' series as one frame: each series named ``msp-<i>/<series>``.

        A series is keyed by its dates within one MSP, so two MSPs holding one unnamed
        series each (no ``series`` column) would otherwise read as one series with every
        date twice.
        """
        named = []
        for i, frame in enumerate(frames):
            own = frame["series"].astype(str) if "series" in frame else ""
            named.append(
                frame.assign(series=f"msp-{i}/" + own if "series" in frame else f"msp-{i}")
            )
        return pd.concat(named, ignore_index=True)

    def personalize(self, vector: np.ndarray, local: RevenueData, *, seed: int) -> np.ndarray:
        """Partial pooling of the shared effects: this MSP's own statistics and everyone else's.

        The others' statistics are the global ones less this MSP's own (when the global
        vector holds them); their solve ``β_o`` is a prior of precision ``κ·A_o`` (the
        others' periods, down-weighted by ``κ``): ``κ = 0`` is the MSP's own fit,
        ``κ = inf`` the federation's. ``κ`` is chosen on the MSP's own history, by how well
        each weight forecasts the last ``horizon`` periods from the periods before them
        (and, where the history allows, the ``horizon`` periods before those): the forecast
        the model is for, trend extrapolation included. Criteria that score the fit inside
        the history (marginal likelihood, leave-one-out) chose far more pooling than the
        forecasts bore out; they serve only where the history is too short to hold periods
        out (:func:`meshfl.models.partial_pooling.loo_prior_precision`, one weight for the
        yearly shape and one for the holidays). The result is statistics again
        (``A + P``, ``b + P β_o``), so :meth:`model`, :meth:`evaluate` and ``forecast`` read
        it as they read the global vector. No noise is added: the vector stays with the MSP.
        """
        glob = np.asarray(vector, dtype=np.float64)
        packed, k = self._exchanges(glob)
        own = self._own_statistics(local)
        total = additive.Statistics.unpack(packed, self.spec.n_features, self.c_scale)
        others = dataclasses.replace(
            total + additive.Statistics(-own.A, -own.b, -own.c, -own.n, -own.dof),
            noise_var=total.noise_var,
        )
        # a round this MSP sat out (fraction_train < 1) left its statistics out of the sum
        floor = -1e-6 * max(1.0, float(np.trace(total.A)))
        if others.n < 0.5 or np.linalg.eigvalsh(others.A).min() < floor:
            others = total
        if others.n < 0.5:  # nobody else's data: the MSP's own fit
            return np.concatenate([own.pack(self.c_scale), [1.0]])
        beta_o = self.shared_fit(np.concatenate([others.pack(self.c_scale), [max(k, 1.0)]])).beta
        h = self.config.horizon
        folds = [f for f in (self._fold(local, 0, h), self._fold(local, h, h)) if f is not None]
        if not folds:
            P = self._loo_precision(local, others.A, beta_o)
        else:
            omegas = self._forecast_weights(folds, others.A, beta_o)
            if all(np.isinf(w) for w in omegas):
                return glob
            P = sum(
                (min(w, 1e8) * u for w, u in zip(omegas, self._units(own, others.A), strict=True)),
                np.zeros_like(own.A),
            )
        return self._pooled(own, P, beta_o)

    def without_rows(
        self, vector: np.ndarray, everything: RevenueData, kept: RevenueData
    ) -> np.ndarray:
        """The global vector as if this MSP had sent the statistics of ``kept`` only, not of
        ``everything`` (its whole history, which the federation summed).

        What :func:`meshfl.agents.personalization.personalize` validates the global and
        pooled candidates with: a validation fold's held-out periods are in the MSP's
        history, hence in the global statistics; left there, the candidates built on them
        are scored on periods they have seen (the MSP's local-only candidate is not). The
        sum is exact without DP; with DP the noise stays. A vector that cannot hold the
        MSP's statistics (a round it sat out) is returned as it is.
        """
        glob = np.asarray(vector, dtype=np.float64)
        packed, k = self._exchanges(glob)
        total = additive.Statistics.unpack(packed, self.spec.n_features, self.c_scale)
        own, mine = self._own_statistics(everything), self._own_statistics(kept)
        others = total + additive.Statistics(-own.A, -own.b, -own.c, -own.n, -own.dof)
        floor = -1e-6 * max(1.0, float(np.trace(total.A)))
        if others.n < -0.5 or np.linalg.eigvalsh(others.A).min() < floor:
            return glob
        out = dataclasses.replace(others + mine, noise_var=total.noise_var)
        return np.concatenate([out.pack(self.c_scale), [k]])

    def _groups(self) -> list[np.ndarray]:
        """The yearly shape's coefficients and the holidays': pooled by weights of their own."""
        split = 2 * self.spec.yearly_order
        groups = [np.arange(split), np.arange(split, self.spec.n_features)]
        return [g for g in groups if g.size]

    def _units(self, own: additive.Statistics, A_others: np.ndarray) -> list[np.ndarray]:
        """Per group, ``A_o`` on it scaled to the MSP's own information there (``ω = 1``:
        as much as its own)."""
        units = []
        for g in self._groups():
            block = np.ix_(g, g)
            unit = np.zeros_like(A_others)
            ratio = float(np.trace(own.A[block])) / max(float(np.trace(A_others[block])), 1e-300)
            unit[block] = A_others[block] * ratio
            units.append(unit)
        return units

    def _pooled(self, own: additive.Statistics, P: np.ndarray, beta_o: np.ndarray) -> np.ndarray:
        mixed = additive.Statistics(
            own.A + P, own.b + P @ beta_o, own.c + float(beta_o @ P @ beta_o), own.n, own.dof
        )
        return np.concatenate([mixed.pack(self.c_scale), [1.0]])

    def _forecast_weights(
        self, folds: list[RevenueData], A_others: np.ndarray, beta_o: np.ndarray
    ) -> tuple[float, ...]:
        """The weights ``ω`` (one per group) whose forecasts of the folds' held-out periods
        score best; ties keep the smaller weights (the MSP's own data first)."""
        stats = [self._own_statistics(fold) for fold in folds]
        units = [self._units(own, A_others) for own in stats]
        best: tuple[float, ...] = (0.0,) * len(self._groups())
        best_score = -np.inf
        for omegas in itertools.product(partial_pooling.WEIGHT_GRID, repeat=len(best)):
            score = 0.0
            for fold, own, unit in zip(folds, stats, units, strict=True):
                P = sum((min(w, 1e8) * u for w, u in zip(omegas, unit, strict=True)), 0 * own.A)
                score += self.evaluate(self._pooled(own, P, beta_o), fold)["neg_smape"]
            if score > best_score + 1e-9:
                best, best_score = tuple(float(w) for w in omegas), score
        return best

    def _loo_precision(
        self, local: RevenueData, A_others: np.ndarray, beta_o: np.ndarray
    ) -> np.ndarray:
        designs = [s.design for s in local.series]
        clipped = []
        for s in local.series:
            z = np.log(s.history)
            clipped.append(additive.clip_log(z, float(np.median(z)), self.config.clip_radius))
        return partial_pooling.loo_prior_precision(
            [d.X_tilde for d in designs],
            [d.annihilate(w) for d, w in zip(designs, clipped, strict=True)],
            [np.einsum("ij,ij->i", d.Q, d.Q) for d in designs],
            A_others,
            beta_o,
            groups=self._groups(),
            ridge=self.spec.ridge,
        )

    def _own_statistics(self, local: RevenueData) -> additive.Statistics:
        update = self.local_update(self.init_vector(seed=0), local, server_round=1, seed=0)
        return additive.Statistics.unpack(update.vector, self.spec.n_features, self.c_scale)

    def _fold(self, local: RevenueData, skip: int, periods: int) -> RevenueData | None:
        """``local``'s histories less their last ``skip`` periods, the last ``periods`` of
        the rest held out; ``None`` where a series would keep fewer than ``min_history``."""
        out = []
        for s in local.series:
            n = int((~s.holdout).sum()) - skip
            keep = n - periods
            if keep < self.config.min_history:
                return None
            dates, revenue = s.dates[~s.holdout][:n], s.history[:n]
            try:
                design = additive.series_design(dates[:keep], self.spec)
            except ValueError:
                return None
            out.append(SeriesData(s.series, dates, revenue, np.arange(n) >= keep, design))
        return RevenueData(tuple(out)) if out else None


def seasonal_naive(series: SeriesData, frequency: str) -> np.ndarray:
    """The seasonal naive forecast of the periods :meth:`Revenue.evaluate` scores.

    Each held-out period gets the revenue of the same period a year before, as the history
    knows it (the last year of history repeats over longer horizons); the last value of the
    history where the history is shorter than a year. A series with nothing held out is
    scored in-sample: each period gets the period a year before, else the one before it.
    Periods are counted by position (a series has one row per period).
    """
    season = 52 if frequency == "weekly" else 12
    revenue = series.revenue
    if series.holdout.any():
        history = series.history
        last = len(history) - 1
        ahead = np.arange(1, int(series.holdout.sum()) + 1)
        if len(history) < season:
            return np.full(len(ahead), history[-1])
        lag = season * ((ahead - 1) // season + 1)
        return history[last + ahead - lag]
    index = np.arange(len(revenue))
    source = np.where(index >= season, index - season, np.maximum(index - 1, 0))
    return revenue[source]


class RevenueModel(GlobalModel):
    """The global revenue model: the shared yearly shape and holiday effects.

    Examples
    --------
    >>> import meshfl
    >>> result = meshfl.simulate(agent="revenue", num_msps=3, rounds=1, seed=0,
    ...                          samples_per_msp=80, progress=False)
    >>> history = result.partitions[0].train
    >>> fc = result.model.forecast(history, horizon=4)
    >>> list(fc.columns)
    ['series', 'date', 'yhat', 'yhat_lower', 'yhat_upper']
    >>> bool((fc["yhat_lower"] < fc["yhat"]).all() and (fc["yhat"] < fc["yhat_upper"]).all())
    True
    """

    agent: Revenue

    @property
    def coefficients(self) -> pd.Series:
        """The shared coefficients of log revenue, by feature name."""
        spec = self.agent.spec
        names = [
            f"{kind}_{k}" for k in range(1, spec.yearly_order + 1) for kind in ("sin", "cos")
        ] + [f"holiday_{h}" for h in spec.holidays]
        return pd.Series(self.agent.shared_fit(self.vector).beta, index=names)

    @checked
    def forecast(
        self,
        history: SkipValidation[pd.DataFrame | str | os.PathLike[str]],
        horizon: Count | None = None,
    ) -> pd.DataFrame:
        """Forecast the ``horizon`` periods after each series' history.

        Parameters
        ----------
        history : DataFrame or path
            Revenue data (``date``, ``revenue``, optional ``series``); rows marked
            ``is_holdout`` are ignored. Level and trend are fitted to it locally.
        horizon : int, optional
            Periods to forecast (default: the config's ``horizon``).

        Returns
        -------
        pandas.DataFrame
            ``series, date, yhat, yhat_lower, yhat_upper`` (``yhat`` is the median forecast;
            the interval holds ``interval_width`` of the predictive mass).
        """
        horizon = self.agent.config.horizon if horizon is None else horizon
        local = self.agent.prepare(self.agent.load_data(history))
        shared = self.agent.shared_fit(self.vector)
        frames = []
        for s in local.series:
            hist_dates = s.dates[~s.holdout]
            dates = additive.future_dates(hist_dates[-1], horizon, s.design.frequency)
            fc = additive.fit_local(s.design, np.log(s.history), shared, self.agent.spec, dates)
            frames.append(fc.frame().assign(series=s.series))
        out = pd.concat(frames, ignore_index=True)
        return out[["series", "date", "yhat", "yhat_lower", "yhat_upper"]]
