"""A Prophet-style additive forecaster whose shared part is fitted from summed statistics.

Log revenue of one series is modelled as

    log y_t = trend_t + x_tᵀβ + ε_t,

where ``x_t`` holds yearly Fourier terms and holiday indicators (functions of the calendar
only) and ``trend_t`` is the series' own piecewise-linear trend (intercept, slope and hinges
at changepoints, as in Prophet). Taylor & Letham, "Forecasting at scale", The American
Statistician 72(1), 2018.

The seasonal and holiday shape ``β`` is shared by all series; level and trend are not. Each
series profiles its own trend out before anything is summed (Frisch-Waugh-Lovell): with
``M_Z = I - Z(ZᵀZ)⁺Zᵀ`` the annihilator of the series' trend design ``Z``, the statistics

    A = (M_Z X)ᵀ(M_Z X),   b = (M_Z X)ᵀ w,   c = ‖M_Z w‖²

summed over series give the exact fixed-effects least-squares estimate of ``β``
(ridge-regularised): ``β = (ΣA + λI)⁻¹ Σb``. Because ``M_Z`` removes every constant, the
statistics do not depend on a series' scale: a large MSP counts as much per period as a
small one. ``A`` depends on the dates only (public calendar), ``b`` and ``c`` on the revenue.

Forecasting is local: given a series' history, the shared shape is subtracted, the trend
is refitted (ridge on the changepoint hinges, Prophet's sparse prior in Gaussian form; about
one changepoint per year of history) and extrapolated. Histories of two years or more also
fit their own amplitude of the shared shape and their own deviation from it, each under a
Gaussian prior centred on the shared shape (partial pooling at forecast time). Intervals
come from the residual variance, the local estimate shrunk towards the pooled one, plus the
uncertainty of the extrapolated trend and of ``β``.

Everything here is pure: arrays and calendars in, arrays out.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal, TypeVar, cast

import numpy as np
import pandas as pd

__all__ = [
    "HOLIDAYS",
    "AdditiveSpec",
    "Forecast",
    "Frequency",
    "SeriesDesign",
    "SharedFit",
    "Statistics",
    "clip_log",
    "fit_local",
    "fourier_features",
    "future_dates",
    "holiday_features",
    "infer_frequency",
    "mase",
    "noisy_mode_center",
    "prior_scales",
    "series_design",
    "series_statistics",
    "shared_features",
    "smape",
    "solve_shared",
    "statistics_sensitivity",
    "trend_design",
]

Frequency = Literal["weekly", "monthly"]

_DAYS_PER_YEAR = 365.25


def _new_year(year: int) -> pd.Timestamp:
    return pd.Timestamp(year=year, month=1, day=1)


def _thanksgiving(year: int) -> pd.Timestamp:
    # fourth Thursday of November (US)
    first = pd.Timestamp(year=year, month=11, day=1)
    return first + pd.Timedelta(days=(3 - first.weekday()) % 7 + 21)


def _christmas(year: int) -> pd.Timestamp:
    return pd.Timestamp(year=year, month=12, day=25)


def _quarter_ends(year: int) -> list[pd.Timestamp]:
    return [pd.Timestamp(year=year, month=m, day=1) + pd.offsets.MonthEnd(0) for m in (3, 6, 9, 12)]


HOLIDAYS: dict[str, Callable[[int], list[pd.Timestamp]]] = {
    "new_year": lambda y: [_new_year(y)],
    "thanksgiving": lambda y: [_thanksgiving(y)],
    "christmas": lambda y: [_christmas(y)],
    "quarter_end": _quarter_ends,
}
"""The public calendar: name → the holiday's dates in a year. A period's indicator is 1 when
one of them falls inside the period."""


@dataclass(frozen=True)
class AdditiveSpec:
    """The model's shape (everything but data).

    Parameters
    ----------
    yearly_order : int
        Fourier pairs of the yearly seasonality.
    holidays : tuple of str
        Names from :data:`HOLIDAYS`.
    n_changepoints : int
        Most trend changepoints of one series (fewer on short histories).
    changepoints_per_year : float
        Changepoints per year of the changepoint range (at least ``min_changepoints``, at
        most ``n_changepoints``): a fixed density, so that a 15-year history can follow
        its last years' trend as a 2-year one does. ``0`` places ``n_changepoints``.
    min_changepoints : int
        Fewest changepoints the density gives (short histories still get a few, as far as
        eight periods per segment allow).
    changepoint_range : float
        Share of a history, from its start, in which changepoints are placed.
    changepoint_prior_scale : float
        Prior standard deviation of a change of slope (log revenue per year).
    ridge : float
        Ridge penalty on the shared coefficients.
    interval_width : float
        Probability mass of the forecast intervals.
    variance_prior_dof : float
        Weight (in degrees of freedom) of the pooled residual variance when a series'
        own residual variance is estimated.
    amplitude_prior_scale : float
        Prior sd of a series' own change of the shared shape's amplitude (fitted locally,
        with the trend: the series' shape is ``(1 + g)·Xβ``); ``0`` keeps every series at
        the shared amplitude.
    own_shape_min_years : float
        Shortest history (years) whose own amplitude and own shape are fitted.
    own_shape_prior_scale : float
        Prior sd of the first Fourier pair of a series' own deviation from the shared shape
        (k-th pair: /k; holidays: 5 times, as :func:`prior_scales`), fitted locally with the
        trend on histories of ``own_shape_min_years`` or more: partial pooling at forecast
        time, the series' own years shrunk towards the federation's shape. ``0``: the
        shared shape alone.
    """

    yearly_order: int = 6
    holidays: tuple[str, ...] = tuple(HOLIDAYS)
    n_changepoints: int = 25
    changepoints_per_year: float = 1.0
    min_changepoints: int = 3
    changepoint_range: float = 0.8
    changepoint_prior_scale: float = 0.1
    ridge: float = 1.0
    interval_width: float = 0.8
    variance_prior_dof: float = 5.0
    amplitude_prior_scale: float = 0.5
    own_shape_min_years: float = 2.0
    own_shape_prior_scale: float = 0.2

    @property
    def n_features(self) -> int:
        """Length of the shared coefficient vector ``β``."""
        return 2 * self.yearly_order + len(self.holidays)


# -- calendar ------------------------------------------------------------------------------


def median_spacing_days(dates: pd.DatetimeIndex | Sequence[pd.Timestamp]) -> float:
    """The median spacing of sorted ``dates``, in days; ``ValueError`` for fewer than two."""
    stamps = np.asarray(dates, dtype="datetime64[s]").astype(np.int64)
    if len(stamps) < 2:
        raise ValueError("a series needs at least two dates to tell its frequency")
    return float(np.median(np.diff(stamps))) / 86_400


def infer_frequency(dates: pd.DatetimeIndex | Sequence[pd.Timestamp]) -> Frequency:
    """``"weekly"`` or ``"monthly"`` from the median spacing of sorted ``dates``.

    Raises ``ValueError`` for fewer than two dates or another spacing.
    """
    days = median_spacing_days(dates)
    if 6 <= days <= 8:
        return "weekly"
    if 27 <= days <= 32:
        return "monthly"
    raise ValueError(
        f"periods are {days:g} days apart; the revenue model needs weekly or monthly periods"
    )


def _step(frequency: Frequency) -> pd.DateOffset:
    return pd.DateOffset(weeks=1) if frequency == "weekly" else pd.DateOffset(months=1)


def future_dates(last: pd.Timestamp, horizon: int, frequency: Frequency) -> pd.DatetimeIndex:
    """The ``horizon`` period starts after ``last``."""
    step = _step(frequency)
    return pd.DatetimeIndex([last + step * (i + 1) for i in range(horizon)])


def _period_bounds(
    dates: pd.DatetimeIndex, frequency: Frequency
) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex]:
    return dates, pd.DatetimeIndex(dates + _step(frequency))


def fourier_features(dates: pd.DatetimeIndex, frequency: Frequency, order: int) -> np.ndarray:
    """``[sin(2πkτ), cos(2πkτ)]`` for k = 1..order, τ the period midpoint's fraction of a year."""
    start, end = _period_bounds(dates, frequency)
    mid = start + (end - start) / 2
    tau = (mid.day_of_year.to_numpy() - 1 + mid.hour.to_numpy() / 24.0) / _DAYS_PER_YEAR
    k = np.arange(1, order + 1)
    angle = 2 * np.pi * np.outer(tau, k)
    out = np.empty((len(dates), 2 * order))
    out[:, 0::2] = np.sin(angle)
    out[:, 1::2] = np.cos(angle)
    return out


def holiday_features(
    dates: pd.DatetimeIndex, frequency: Frequency, names: Sequence[str]
) -> np.ndarray:
    """1 where a holiday of ``names`` falls inside the period that starts at each date."""
    unknown = [n for n in names if n not in HOLIDAYS]
    if unknown:
        raise ValueError(f"unknown holidays {unknown}; known: {sorted(HOLIDAYS)}")
    start, end = _period_bounds(dates, frequency)
    out = np.zeros((len(dates), len(names)))
    if len(dates) == 0:
        return out
    years = range(int(start.year.min()) - 1, int(end.year.max()) + 2)
    s, e = start.as_unit("ns").asi8[:, None], end.as_unit("ns").asi8[:, None]
    for j, name in enumerate(names):
        days = (
            pd.DatetimeIndex([d for y in years for d in HOLIDAYS[name](y)])
            .as_unit("ns")
            .asi8[None, :]
        )
        out[:, j] = np.any((days >= s) & (days < e), axis=1)
    return out


def shared_features(
    dates: pd.DatetimeIndex, frequency: Frequency, spec: AdditiveSpec
) -> np.ndarray:
    """The shared design ``X``: Fourier terms, then holiday indicators (read-only)."""

    def build() -> np.ndarray:
        X = np.hstack(
            [
                fourier_features(dates, frequency, spec.yearly_order),
                holiday_features(dates, frequency, spec.holidays),
            ]
        )
        X.setflags(write=False)
        return X

    return _memo(("shared", _dates_key(pd.DatetimeIndex(dates)), frequency, spec), build)


def trend_design(t: np.ndarray, changepoints: np.ndarray) -> np.ndarray:
    """Piecewise-linear trend basis ``[1, t, max(0, t - c_j)...]`` (``t`` in years)."""
    t = np.asarray(t, dtype=np.float64)
    hinges = np.maximum(0.0, t[:, None] - np.asarray(changepoints)[None, :])
    return np.hstack([np.ones((len(t), 1)), t[:, None], hinges])


def _changepoints(t: np.ndarray, spec: AdditiveSpec) -> np.ndarray:
    # Prophet's placement: evenly (by period) in the first changepoint_range of the history;
    # short histories get fewer, so that each segment keeps about eight periods. Prophet's
    # fixed count (25, or 3 here before) is too few for long monthly histories, too many for
    # short ones: a density per year of the range follows the history's length.
    n = len(t)
    wanted = spec.n_changepoints
    if spec.changepoints_per_year > 0 and n > 1:
        years = float(t[-1] - t[0]) * spec.changepoint_range
        density = int(np.ceil(spec.changepoints_per_year * years - 1e-9))
        wanted = min(wanted, max(spec.min_changepoints, density))
    count = min(wanted, max(0, n // 8 - 1))
    if count == 0:
        return np.zeros(0)
    last = max(1, int(np.floor(spec.changepoint_range * (n - 1))))
    idx = np.linspace(0, last, count + 2)[1:-1].round().astype(int)
    return np.unique(t[idx])


# -- one series ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesDesign:
    """Everything about one series' history that follows from its dates alone.

    ``X`` is the shared design, ``Z`` the trend design, ``Q`` an orthonormal basis of
    ``Z``'s columns (so ``M_Z v = v - Q Qᵀ v``), ``X_tilde = M_Z X``.
    """

    dates: pd.DatetimeIndex
    frequency: Frequency
    origin: pd.Timestamp
    changepoints: np.ndarray
    X: np.ndarray
    Z: np.ndarray
    Q: np.ndarray
    X_tilde: np.ndarray

    @property
    def dof(self) -> int:
        """Residual degrees of freedom left after the series' own trend."""
        return len(self.dates) - self.Q.shape[1]

    def years(self, dates: pd.DatetimeIndex) -> np.ndarray:
        """Time since the history's first period, in years."""
        return _years_between(pd.DatetimeIndex(dates), self.origin)

    def annihilate(self, v: np.ndarray) -> np.ndarray:
        """``M_Z v``: ``v`` with its least-squares trend removed."""
        return v - self.Q @ (self.Q.T @ v)


def _years_between(dates: pd.DatetimeIndex, origin: pd.Timestamp) -> np.ndarray:
    """Whole days from ``origin`` to each date (``(dates - origin).days``), in years."""
    ns = dates.as_unit("ns").asi8 - origin.as_unit("ns").value
    return (ns // 86_400_000_000_000).astype(np.float64) / _DAYS_PER_YEAR


def series_design(
    dates: pd.DatetimeIndex, spec: AdditiveSpec, *, frequency: Frequency | None = None
) -> SeriesDesign:
    """The design of one series' history (``dates`` sorted, unique).

    It follows from the dates alone, so it is built once per distinct history and shared
    (read-only): a simulated mesh's MSPs mostly share their calendars.
    """
    dates = pd.DatetimeIndex(dates)
    freq = frequency or infer_frequency(dates)
    return _memo(
        ("design", _dates_key(dates), freq, spec), lambda: _series_design(dates, freq, spec)
    )


T = TypeVar("T")
_MEMO: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_MEMO_LOCK = threading.Lock()


def _dates_key(dates: pd.DatetimeIndex) -> bytes:
    unit = str(dates.dtype).encode()  # the same instants in another unit: another key
    return hashlib.blake2b(dates.asi8.tobytes() + unit, digest_size=16).digest()


def _memo(key: tuple[Any, ...], build: Callable[[], T]) -> T:
    """``build()``, remembered under ``key`` for the last 1,024 keys (results are read-only)."""
    with _MEMO_LOCK:
        if key in _MEMO:
            _MEMO.move_to_end(key)
            return cast(T, _MEMO[key])
    value = build()
    with _MEMO_LOCK:
        _MEMO[key] = value
        while len(_MEMO) > 1024:
            _MEMO.popitem(last=False)
    return value


def _series_design(dates: pd.DatetimeIndex, freq: Frequency, spec: AdditiveSpec) -> SeriesDesign:
    origin = dates[0]
    t = _years_between(dates, origin)
    changepoints = _changepoints(t, spec)
    X = shared_features(dates, freq, spec)
    Z = trend_design(t, changepoints)
    u, s, _ = np.linalg.svd(Z, full_matrices=False)
    Q = u[:, s > 1e-9 * s[0]]
    X_tilde = X - Q @ (Q.T @ X)
    for array in (changepoints, X, Z, Q, X_tilde):
        array.setflags(write=False)
    return SeriesDesign(dates, freq, origin, changepoints, X, Z, Q, X_tilde)


def clip_log(z: np.ndarray, center: float, radius: float) -> np.ndarray:
    """Log revenue relative to ``center``, clipped to ``[-radius, radius]``."""
    return np.clip(np.asarray(z, dtype=np.float64) - center, -radius, radius)


def noisy_mode_center(
    z: np.ndarray,
    *,
    low: float,
    high: float,
    noise_std: float,
    rng: np.random.Generator,
    bin_width: float = 1.0,
) -> float:
    """Where most of ``z`` lies, from a histogram with Gaussian noise on its counts.

    ``z`` is clipped into the public range ``[low, high]`` and binned; changing one value
    moves one count down and one up (L2 sensitivity √2), so with ``noise_std = sigma·√2`` the
    histogram is a Gaussian mechanism of multiplier sigma. The center is the count-weighted
    midpoint of the three bins around the largest smoothed noisy count (post-processing).
    With ``noise_std=0`` it is the exact histogram's.
    """
    edges = np.arange(low, high + bin_width, bin_width)
    counts, _ = np.histogram(np.clip(z, low, high - 1e-12), bins=edges)
    noisy = counts + rng.normal(0.0, noise_std, size=counts.shape) if noise_std > 0 else counts
    noisy = np.maximum(np.asarray(noisy, dtype=np.float64), 0.0)
    smooth = np.convolve(noisy, np.ones(3), mode="same")
    k = int(np.argmax(smooth))
    lo, hi = max(0, k - 1), min(len(noisy), k + 2)
    mids = (edges[:-1] + edges[1:]) / 2
    mass = noisy[lo:hi]
    if mass.sum() <= 0:
        return float(mids[k])
    return float(np.dot(mids[lo:hi], mass) / mass.sum())


# -- sufficient statistics -----------------------------------------------------------------


@dataclass(frozen=True)
class Statistics:
    """Summable sufficient statistics of the shared coefficients.

    ``c`` travels divided by ``c_scale`` (a public constant), which sets its share of the
    Gaussian mechanism's sensitivity against ``b``'s. ``noise_var`` is the variance of the
    differential-privacy noise on each entry of ``b`` (0 without DP): a function of public
    quantities only (noise multiplier, dates), summed like the rest so that the solve can
    shrink as much as the noise demands.
    """

    A: np.ndarray
    b: np.ndarray
    c: float
    n: float
    dof: float
    noise_var: float = 0.0

    @staticmethod
    def size(p: int) -> int:
        """Length of the packed vector for ``p`` shared features."""
        return p * (p + 1) // 2 + p + 4

    @staticmethod
    def zeros(p: int) -> Statistics:
        """Statistics of no data."""
        return Statistics(np.zeros((p, p)), np.zeros(p), 0.0, 0.0, 0.0)

    def __add__(self, other: Statistics) -> Statistics:
        return Statistics(
            self.A + other.A,
            self.b + other.b,
            self.c + other.c,
            self.n + other.n,
            self.dof + other.dof,
            self.noise_var + other.noise_var,
        )

    def pack(self, c_scale: float = 1.0) -> np.ndarray:
        """``[upper(A), b, c / c_scale, n, dof, noise_var]``."""
        iu = np.triu_indices(len(self.b))
        tail = [self.c / c_scale, self.n, self.dof, self.noise_var]
        return np.concatenate([self.A[iu], self.b, tail])

    @staticmethod
    def unpack(vector: np.ndarray, p: int, c_scale: float = 1.0) -> Statistics:
        """The inverse of :meth:`pack`."""
        vector = np.asarray(vector, dtype=np.float64)
        if vector.size != Statistics.size(p):
            raise ValueError(
                f"packed statistics of {p} features hold {Statistics.size(p)} values; "
                f"got {vector.size}"
            )
        iu = np.triu_indices(p)
        m = len(iu[0])
        A = np.zeros((p, p))
        A[iu] = vector[:m]
        A = A + A.T - np.diag(np.diag(A))
        b = vector[m : m + p].copy()
        c, n, dof, noise_var = vector[m + p :]
        return Statistics(A, b, float(c) * c_scale, float(n), float(dof), float(noise_var))


def series_statistics(design: SeriesDesign, w: np.ndarray) -> Statistics:
    """Statistics of one series with (centred, clipped) log revenue ``w``."""
    u = design.annihilate(np.asarray(w, dtype=np.float64))
    Xt = design.X_tilde
    return Statistics(Xt.T @ Xt, Xt.T @ u, float(u @ u), float(len(u)), float(design.dof))


def statistics_sensitivity(design: SeriesDesign, radius: float) -> tuple[float, float]:
    """L2 sensitivities of ``b`` and of ``c`` to one period's value (``|w_t| ≤ radius``).

    Replacing ``w_t`` by ``w_t + δ`` (``|δ| ≤ 2·radius``) moves ``b`` by ``δ·x̃_t`` and ``c`` by
    ``2δ·u_t + δ²(1 - h_tt)``, where ``u = M_Z w`` and ``h_tt`` is the trend's leverage of
    period t; ``|u_t| ≤ radius·(1 + Σ_s |H_ts|)``. Both bounds depend on the dates only.
    """
    if len(design.dates) == 0:
        return 0.0, 0.0
    delta = 2.0 * radius
    sens_b = delta * float(np.max(np.linalg.norm(design.X_tilde, axis=1)))
    H = design.Q @ design.Q.T
    u_max = radius * (1.0 + np.abs(H).sum(axis=1))
    lev = np.clip(np.diag(H), 0.0, 1.0)
    sens_c = float(np.max(2 * delta * u_max + delta**2 * (1 - lev)))
    return sens_b, sens_c


@dataclass(frozen=True)
class SharedFit:
    """The shared coefficients solved from summed statistics."""

    beta: np.ndarray
    precision: np.ndarray
    """``ΣA + λI``; without DP noise the covariance of ``beta`` is ``sigma2 · precision⁻¹``."""
    noise_cov: np.ndarray
    """Covariance of ``beta`` due to DP noise (zeros without DP)."""
    sigma2: float
    """Pooled residual variance of log revenue (NaN when unknown or drowned in DP noise)."""
    dof: float


def prior_scales(spec: AdditiveSpec, scale: float) -> np.ndarray:
    """Prior sd of each shared coefficient: ``scale/k`` for the k-th Fourier pair (smooth
    years), ``5·scale`` for holidays (a holiday moves a period's revenue by tens of percent)."""
    k = np.repeat(np.arange(1, spec.yearly_order + 1), 2)
    return np.concatenate([scale / k, np.full(len(spec.holidays), 5.0 * scale)])


def _psd(A: np.ndarray) -> np.ndarray:
    """``A`` symmetrised and projected onto the PSD cone; ``A`` itself when already PSD."""
    sym = (A + A.T) / 2
    values, vectors = np.linalg.eigh(sym)
    if values.size == 0 or values.min() >= -1e-9 * max(1.0, float(np.abs(values).max())):
        return A
    return cast(np.ndarray, (vectors * np.maximum(values, 0.0)) @ vectors.T)


def solve_shared(
    stats: Statistics,
    spec: AdditiveSpec,
    *,
    c_noise_std: float = 0.0,
    prior_scale: float | np.ndarray = 0.05,
) -> SharedFit:
    """Ridge solve ``β = (ΣA + λI)⁻¹ Σb`` and the pooled residual variance.

    With DP noise of variance ``s² = stats.noise_var`` on ``Σb`` (``ΣA`` is exact), ``Σb`` is
    read as an observation ``(ΣA + λI)β + e`` and ``β`` gets the posterior mean under a
    N(0, diag(τ²)) prior (``τ = prior_scale``, see :func:`prior_scales`):
    ``(ÃᵀÃ + s² diag(τ⁻²))⁻¹ Ãᵀ Σb`` with ``Ã = ΣA + λI``. Effects the
    data hardly inform (a holiday seen a few times) shrink to zero instead of to noise. With
    no data (``n = 0``) ``β = 0``: no seasonality, no holiday effects. The pooled residual
    variance is dropped (NaN) when the noise on ``c``, ``c_noise_std``, exceeds a tenth of
    the residual sum of squares.

    Under MSP-level DP ``ΣA`` is noisy too (a whole MSP's calendar is private): it is
    symmetrised and projected onto the positive semi-definite cone first (eigenvalues below
    0 set to 0), a post-processing that leaves an exact ``ΣA`` as it is.
    """
    p = len(stats.b)
    A = _psd(stats.A)
    if A is not stats.A:
        stats = Statistics(A, stats.b, stats.c, stats.n, stats.dof, stats.noise_var)
    precision = stats.A + spec.ridge * np.eye(p)
    s2 = max(stats.noise_var, 0.0)
    if s2 > 0:
        tau = np.broadcast_to(np.asarray(prior_scale, dtype=np.float64), (p,))
        gram = precision.T @ precision + np.diag(s2 / tau**2)
        inv = np.linalg.inv(gram)
        beta = inv @ precision.T @ stats.b
        noise_cov = s2 * inv @ precision.T @ precision @ inv
    else:
        beta = np.linalg.solve(precision, stats.b)
        noise_cov = np.zeros((p, p))
    rss = stats.c - 2 * beta @ stats.b + beta @ stats.A @ beta
    dof = max(stats.dof - p, 0.0)
    reliable = dof >= 1 and rss > 0 and c_noise_std <= 0.1 * rss
    sigma2 = float(rss / dof) if reliable else float("nan")
    return SharedFit(beta, precision, noise_cov, sigma2, dof)


# -- local fit and forecast ----------------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    """Point forecasts and intervals of log revenue at some dates."""

    dates: pd.DatetimeIndex
    mean: np.ndarray
    std: np.ndarray
    interval_width: float

    def bands(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(yhat, yhat_lower, yhat_upper)`` in revenue units (yhat is the median)."""
        q = NormalDist().inv_cdf(0.5 + self.interval_width / 2)
        return (
            np.exp(self.mean),
            np.exp(self.mean - q * self.std),
            np.exp(self.mean + q * self.std),
        )

    def frame(self) -> pd.DataFrame:
        """``date, yhat, yhat_lower, yhat_upper`` in revenue units (:meth:`bands` by date)."""
        yhat, lower, upper = self.bands()
        return pd.DataFrame(
            {"date": self.dates, "yhat": yhat, "yhat_lower": lower, "yhat_upper": upper}
        )


def fit_local(
    design: SeriesDesign,
    z: np.ndarray,
    shared: SharedFit,
    spec: AdditiveSpec,
    dates: pd.DatetimeIndex,
) -> Forecast:
    """Fit one series' trend on its history (``design``, log revenue ``z``) and predict ``dates``.

    The shared shape is subtracted; the trend (intercept, slope, hinges) is a ridge fit
    with a Gaussian prior of scale ``changepoint_prior_scale`` on each change of slope. On
    histories of ``own_shape_min_years`` or more the same ridge fit also takes the series'
    own amplitude of the shared shape (prior sd ``amplitude_prior_scale``) and its own
    deviation from it (prior sd ``own_shape_prior_scale``, by feature as
    :func:`prior_scales`): one series' years, shrunk towards the federation's shape. When
    DP noise drowns the shared shape (``β`` shrunk to 0), a long history still forecasts
    its own seasonality instead of a trend alone.
    """
    z = np.asarray(z, dtype=np.float64)
    shape = design.X @ shared.beta
    r = z - shape
    Z = design.Z
    n, k = Z.shape
    # residual variance of a plain linear trend sets the ridge weight of the hinges
    base, *_ = np.linalg.lstsq(Z[:, :2], r, rcond=None)
    s0 = float(np.sum((r - Z[:, :2] @ base) ** 2) / max(n - 2, 1))
    penalty = np.zeros(k)
    penalty[2:] = max(s0, 1e-8) / spec.changepoint_prior_scale**2
    # a year's shape seen once or twice says little of its amplitude: long histories only
    years = float(design.Z[-1, 1]) if n else 0.0  # the trend design's t of the last period
    amplitude = (
        spec.amplitude_prior_scale > 0
        and years >= spec.own_shape_min_years
        and float(shape @ shape) > 1e-12
    )
    if amplitude:
        # the series' own amplitude of the shared shape, 1 + g with g ~ N(0, scale²): a
        # souvenir shop's December swings more than a café's on the same calendar
        Z = np.hstack([Z, shape[:, None]])
        penalty = np.append(penalty, max(s0, 1e-8) / spec.amplitude_prior_scale**2)
        k += 1
    own_shape = spec.own_shape_prior_scale > 0 and years >= spec.own_shape_min_years
    if own_shape:
        Z = np.hstack([Z, design.X])
        tau = prior_scales(spec, spec.own_shape_prior_scale)
        penalty = np.append(penalty, max(s0, 1e-8) / tau**2)
        k += design.X.shape[1]
    gram = Z.T @ Z + np.diag(penalty) + 1e-9 * np.eye(k)
    theta = np.linalg.solve(gram, Z.T @ r)
    resid = r - Z @ theta
    local_dof = max(n - k, 0)
    pooled = shared.sigma2 if np.isfinite(shared.sigma2) else None
    if pooled is None:
        sigma2 = float(resid @ resid / max(local_dof, 1))
    else:
        prior = spec.variance_prior_dof
        sigma2 = float((resid @ resid + prior * pooled) / (local_dof + prior))
    sigma2 = max(sigma2, 1e-8)

    t = design.years(dates)
    Zf = trend_design(t, design.changepoints)
    Xf = shared_features(dates, design.frequency, spec)
    if amplitude:
        Zf = np.hstack([Zf, (Xf @ shared.beta)[:, None]])
    if own_shape:
        Zf = np.hstack([Zf, Xf])
    mean = Zf @ theta + Xf @ shared.beta
    trend_var = sigma2 * np.einsum("ij,ij->i", Zf @ np.linalg.inv(gram), Zf)
    beta_scale = pooled if pooled is not None else sigma2
    beta_cov = beta_scale * np.linalg.inv(shared.precision) + shared.noise_cov
    beta_var = np.einsum("ij,ij->i", Xf @ beta_cov, Xf)
    std = np.sqrt(sigma2 + trend_var + beta_var)
    return Forecast(pd.DatetimeIndex(dates), mean, std, spec.interval_width)


# -- accuracy ------------------------------------------------------------------------------


def smape(actual: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """Symmetric absolute percentage error of each point, in percent (0..200)."""
    a, f = np.asarray(actual, dtype=np.float64), np.asarray(forecast, dtype=np.float64)
    denom = np.abs(a) + np.abs(f)
    return np.where(denom > 0, 200.0 * np.abs(a - f) / np.where(denom > 0, denom, 1.0), 0.0)


def mase(actual: np.ndarray, forecast: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Absolute error of each point scaled by the history's one-step naive MAE.

    Hyndman & Koehler, "Another look at measures of forecast accuracy", IJF 22(4), 2006.
    """
    h = np.asarray(history, dtype=np.float64)
    scale = float(np.mean(np.abs(np.diff(h)))) if len(h) > 1 else float("nan")
    if not np.isfinite(scale) or scale <= 0:
        scale = float(np.mean(np.abs(h))) if len(h) else 1.0
    return np.abs(np.asarray(actual) - np.asarray(forecast)) / scale
