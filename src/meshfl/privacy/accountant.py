"""Privacy accounting: compose immutable :class:`PrivacyEvent` records into (ε, δ).

Every private event is a Poisson-subsampled Gaussian mechanism (noise multiplier sigma, sample
rate q, steps): DP-SGD inside an MSP, or the Gaussian mechanism on what an MSP sends
(q = 1). Two accountants, both giving upper bounds on ε:

``"prv"`` (default)
    Numerical composition of privacy loss random variables, Gopi, Lee and Wutschitz,
    "Numerical Composition of Differential Privacy", NeurIPS 2021. It is tight (within about
    1 % of Google's PLD accountant) and certifies small budgets such as ε = 0.1, δ = 1e-5.
    The PRV of one step is Opacus' ``PoissonSubsampledGaussianPRV``; the domain, the mesh and
    the error bounds follow Opacus' ``PRVAccountant``, and the ε read-out is Opacus'
    ``DiscretePRV.compute_epsilon`` (its upper bound). Two changes make it fast enough to
    calibrate noise once per MSP and round: the composition is one product of spectra on an
    FFT-friendly grid (Opacus convolves pairwise, on grids of any size), and the mesh and
    domain are rounded to powers of two so that the spectrum of each past event is computed
    once and reused (in a cache of at most 256 MiB). The result is the smaller of this bound
    and the RDP bound (both are upper bounds), so a numerical failure of the PRV, or a grid
    too large to build (ε in the hundreds), falls back to RDP rather than failing.

``"rdp"``
    Rényi DP of the sampled Gaussian mechanism at integer orders, Mironov, Talwar and
    Zhang, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", 2019 (§3.3),
    converted to (ε, δ) with Opacus' ``get_privacy_spent`` (Balle et al., "Hypothesis
    Testing Interpretations and Rényi Differential Privacy", AISTATS 2020, Thm. 21).

Why the RDP orders are extended. With Opacus' default orders (up to alpha = 63) the conversion
term log(1/δ) / (alpha - 1) alone keeps ε above ≈ 0.103 at δ = 1e-5, however much noise is added,
so ε = 0.1 could never be certified. The orders here run to alpha = 10⁴ (ε floor ≈ 1e-4).
Opacus' ``compute_rdp`` cannot evaluate such orders (``scipy.special.binom`` overflows past
alpha ≈ 1000 and its series for fractional orders loses all precision: it returns *negative*
RDP at large fractional alpha), so the integer-order sum is evaluated here as a log-sum-exp of
positive terms, which is exact to rounding at every order; it matches Opacus to 1e-12 where
Opacus is accurate (alpha ≤ 63). Fractional orders are left out: they are slow and
numerically fragile to evaluate, and tighten the bound by under 1 % for ε below about 10 (by
up to about 20 % at ε ≈ 40, where the PRV accountant is the better choice anyway).

Events whose mechanism is ``"none"`` are skipped: they are records of updates sent without
differential privacy, for which no ε exists. An event with a noise multiplier that is not a
positive finite number makes ε infinite.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Literal

import numpy as np
from pydantic import SkipValidation
from scipy import fft
from scipy.special import gammaln

from meshfl.config.errors import ConfigError, MeshflError
from meshfl.config.validation import Count, Float, checked
from meshfl.privacy.events import PrivacyEvent

__all__ = ["PrivacyBudgetExhausted", "calibrate_noise", "epsilon_spent"]

Accountant = Literal["prv", "rdp"]
Delta = Annotated[float, Float("in (0, 1)", lambda v: 0 < v < 1)]
_PRIVATE_MECHANISMS = ("dp-sgd", "gaussian")
_Epsilon = Annotated[float, Float("in (0, inf)", lambda v: 0 < v < math.inf)]
_Rate = Annotated[float, Float("in (0, 1]", lambda v: 0 < v <= 1)]
_Tolerance = Annotated[float, Float("in (0, 0.5)", lambda v: 0 < v < 0.5)]
_MAX_NOISE = 1e4  # calibrate_noise gives up beyond this noise multiplier

# (noise_multiplier, sample_rate, steps): one self-composed Poisson-subsampled Gaussian.
_Step = tuple[float, float, int]


class PrivacyBudgetExhausted(MeshflError):  # noqa: N818 - the name says the state
    """The next mechanism would take an MSP's ε past its budget, so the MSP declines.

    Attributes
    ----------
    spent : float or None
        ε already spent (before the declined mechanism), when known.
    budget : float or None
        The ε budget, when known.
    """

    def __init__(
        self, message: str, *, spent: float | None = None, budget: float | None = None
    ) -> None:
        super().__init__(message)
        self.spent = spent
        self.budget = budget


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@checked
def epsilon_spent(
    events: SkipValidation[Sequence[PrivacyEvent]],
    *,
    delta: Delta,
    accountant: Accountant = "prv",
) -> float:
    """ε at ``delta`` of the composition of all private ``events``.

    Parameters
    ----------
    events : sequence of PrivacyEvent
        Events of one unit of privacy (one agent of one MSP). ``"none"`` events are skipped.
    delta : float
        δ of the (ε, δ) guarantee, in (0, 1).
    accountant : {"prv", "rdp"}
        See the module docstring. Both return upper bounds; ``"prv"`` is the tighter.

    Returns
    -------
    float
        ε (0.0 without private events, ``inf`` if an event has no valid noise multiplier).

    Examples
    --------
    >>> from meshfl.privacy.events import PrivacyEvent
    >>> event = PrivacyEvent("dp-sgd", noise_multiplier=1.0, sample_rate=0.08, steps=200)
    >>> round(epsilon_spent([event], delta=1e-5), 1)
    7.8
    >>> epsilon_spent([], delta=1e-5)
    0.0
    """
    steps = _canonical(events, name="events", where="epsilon_spent")
    if steps is None:
        return math.inf
    if not steps:
        return 0.0
    return _epsilon(steps, delta, accountant)


@checked
def calibrate_noise(
    *,
    epsilon: _Epsilon,
    delta: Delta,
    sample_rate: _Rate,
    steps: Count,
    history: SkipValidation[Sequence[PrivacyEvent]] = (),  # _canonical checks it
    accountant: Accountant = "prv",
    unit: Literal["sample", "msp"] = "sample",
    mechanism: Literal["dp-sgd", "gaussian"] = "dp-sgd",
    tolerance: _Tolerance = 0.01,
) -> float:
    """The smallest noise multiplier with which one more mechanism keeps ε within budget.

    The new mechanism is ``PrivacyEvent(mechanism, sigma, sample_rate, steps, unit)``; the
    returned sigma satisfies ``epsilon_spent([*history, event(sigma)]) <= epsilon`` (with the same
    ``delta`` and ``accountant``), and is within a factor ``1 + tolerance`` of the smallest
    sigma that does.

    Parameters
    ----------
    epsilon : float
        The total ε budget (history included), > 0.
    delta : float
        δ of the guarantee, in (0, 1).
    sample_rate : float
        Poisson sampling rate of the new mechanism, in (0, 1]; 1 for the Gaussian mechanism.
    steps : int
        How many times the new mechanism is applied, >= 1.
    history : sequence of PrivacyEvent
        Events already spent from the same budget.
    accountant : {"prv", "rdp"}
        The accountant used for every ε (see :func:`epsilon_spent`).
    unit : {"sample", "msp"}
        Unit of privacy of the new event (recorded only; it does not change sigma).
    mechanism : {"dp-sgd", "gaussian"}
        Mechanism of the new event (recorded only; both are subsampled Gaussians).
    tolerance : float
        Relative precision of sigma, in (0, 0.5).

    Returns
    -------
    float
        The noise multiplier sigma.

    Raises
    ------
    PrivacyBudgetExhausted
        If ``history`` already spends ``epsilon``, or even sigma = 1e4 does not fit.
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> sigma = calibrate_noise(epsilon=1.0, delta=1e-5, sample_rate=0.01, steps=100)
    >>> from meshfl.privacy.events import PrivacyEvent
    >>> event = PrivacyEvent("dp-sgd", noise_multiplier=sigma, sample_rate=0.01, steps=100)
    >>> epsilon_spent([event], delta=1e-5) <= 1.0
    True
    """
    past = _canonical(history, name="history", where="calibrate_noise")
    return _Calibration(past, epsilon, delta, sample_rate, steps, accountant, tolerance).sigma()


@dataclass(frozen=True)
class _Calibration:
    """One :func:`calibrate_noise` search: ``past`` spent, one more mechanism to fit.

    In steps: :meth:`room` (is there budget left, under RDP or only under PRV?), then
    :meth:`rdp_sigma` (the RDP solution, an upper bracket for PRV) or :meth:`prv_start`
    (where PRV must start when only PRV leaves room), then the PRV solve from there.
    """

    past: tuple[_Step, ...] | None
    epsilon: float
    delta: float
    sample_rate: float
    steps: int
    accountant: Accountant
    tolerance: float

    def eps_of(self, accountant: Accountant) -> Callable[[float], float]:
        """ε of the history plus the new mechanism at noise multiplier sigma."""
        past = self.past or ()

        def eps(sigma: float) -> float:
            step = (sigma, self.sample_rate, self.steps)
            return _epsilon(_merge([*past, step]), self.delta, accountant)

        return eps

    def spent(self, accountant: Accountant) -> float:
        """ε the history already spent."""
        return _epsilon(self.past, self.delta, accountant) if self.past else 0.0

    def more(self) -> str:
        return (
            f", and even a noise multiplier of {_MAX_NOISE:g} on {self.steps} more step(s) at "
            f"sample rate {self.sample_rate:g} would exceed it"
        )

    def room(self) -> tuple[bool, float]:
        """``(rdp_fits, spent under RDP)``; raises if no accountant leaves room.

        RDP is cheap and never below the PRV result (which is min(PRV, RDP)), so wherever RDP
        finds room there is room, and the RDP sigma brackets the PRV search from above.
        """
        if self.past is None:
            raise _exhausted(math.inf, self.epsilon, self.delta)
        spent_rdp = self.spent("rdp")
        rdp_fits = spent_rdp < self.epsilon and self.eps_of("rdp")(_MAX_NOISE) <= self.epsilon
        spent = spent_rdp if rdp_fits else self.spent(self.accountant)
        if not rdp_fits and (
            spent >= self.epsilon
            or self.accountant == "rdp"
            or self.eps_of("prv")(_MAX_NOISE) > self.epsilon
        ):
            more = self.more() if spent < self.epsilon else ""
            raise _exhausted(spent, self.epsilon, self.delta, more)
        return rdp_fits, spent

    def rdp_sigma(self, spent_rdp: float) -> float:
        """The RDP-calibrated sigma (:func:`_solve` from the advanced-composition guess)."""
        guess = _initial_guess(self.epsilon - spent_rdp, self.delta, self.sample_rate, self.steps)
        return _solve(self.eps_of("rdp"), self.epsilon, guess, self.tolerance, floor=spent_rdp)

    def prv_start(self, spent: float) -> float:
        """Where the PRV search starts when only the PRV bound leaves room.

        The sigma that would fit the room left if ε added up (composition is sublinear, so it
        fits with a margin), never a sigma so small that its PRV needs a huge grid.
        """
        try:
            return _solve(
                _epsilon_of_new(self.delta, self.sample_rate, self.steps),
                self.epsilon - spent,
                1.0,
                self.tolerance,
            )
        except _NoRootError:
            return _MAX_NOISE

    def sigma(self) -> float:
        """The calibrated noise multiplier (see :func:`calibrate_noise`)."""
        rdp_fits, spent = self.room()
        try:
            if rdp_fits:
                sigma = self.rdp_sigma(spent)
                if self.accountant == "rdp":
                    return sigma
                floor = spent * self.eps_of("prv")(sigma) / self.eps_of("rdp")(sigma)
                floor = min(floor, 0.95 * self.epsilon)
            else:
                sigma, floor = self.prv_start(spent), spent
            return _solve(self.eps_of("prv"), self.epsilon, sigma, self.tolerance, floor=floor)
        except _NoRootError:  # only where numerical noise in ε defeats the checks above
            spent = self.spent(self.accountant)
            raise _exhausted(spent, self.epsilon, self.delta, self.more()) from None


def _epsilon_of_new(delta: float, sample_rate: float, steps: int) -> Callable[[float], float]:
    return lambda sigma: _epsilon(((sigma, sample_rate, steps),), delta, "rdp")


def _exhausted(spent: float, budget: float, delta: float, more: str = "") -> PrivacyBudgetExhausted:
    return PrivacyBudgetExhausted(
        f"The privacy budget is exhausted: ε = {spent:.4g} of the budget ε = {budget:g} "
        f"(δ = {delta:g}) is already spent{more}, so the MSP declines to take part. Raise the "
        "budget (DPConfig.epsilon) or start a new unit of privacy to train further.",
        spent=spent,
        budget=budget,
    )


# --------------------------------------------------------------------------------------------
# Canonical histories
# --------------------------------------------------------------------------------------------


def _canonical(
    events: Sequence[PrivacyEvent], *, name: str, where: str
) -> tuple[_Step, ...] | None:
    """The private events as sorted, merged (sigma, q, steps); ``None`` when ε is infinite.

    Composition is commutative, so order does not matter, and events with the same sigma and q
    add their steps: one cache key per distinct history.
    """
    out: list[_Step] = []
    for i, event in enumerate(events):
        if not isinstance(event, PrivacyEvent):
            raise ConfigError(
                f"The {name!r} parameter of {where} must hold PrivacyEvent objects. "
                f"Got {type(event).__name__} at position {i} instead."
            )
        if event.mechanism == "none":
            continue
        q, n, sigma = event.sample_rate, event.steps, event.noise_multiplier
        problem = None
        if event.mechanism not in _PRIVATE_MECHANISMS:
            problem = f"mechanism={event.mechanism!r}; it must be 'none', 'dp-sgd' or 'gaussian'"
        elif not (isinstance(q, (int, float)) and 0 <= q <= 1):
            problem = f"sample_rate={q!r}; it must be in [0, 1]"
        elif not (isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0):
            problem = f"steps={n!r}; it must be an integer >= 0"
        if problem is not None:
            raise ConfigError(f"Event {i} of {name!r} passed to {where} has {problem}.")
        if q == 0 or n == 0:
            continue  # nothing was released
        if not (math.isfinite(sigma) and sigma > 0):
            return None
        out.append((float(sigma), float(q), int(n)))
    return _merge(out)


def _merge(steps: Sequence[_Step]) -> tuple[_Step, ...]:
    merged: dict[tuple[float, float], int] = {}
    for sigma, q, n in steps:
        merged[sigma, q] = merged.get((sigma, q), 0) + n
    return tuple(sorted((sigma, q, n) for (sigma, q), n in merged.items()))


@lru_cache(maxsize=4096)
def _epsilon(steps: tuple[_Step, ...], delta: float, accountant: Accountant) -> float:
    eps_rdp = _rdp_epsilon(steps, delta)
    if accountant == "rdp" or not math.isfinite(eps_rdp):
        return eps_rdp
    return min(_prv_epsilon(steps, delta, eps_rdp), eps_rdp)


# --------------------------------------------------------------------------------------------
# RDP of the Poisson-subsampled Gaussian at integer orders (Mironov et al. 2019, §3.3)
# --------------------------------------------------------------------------------------------

_ORDERS = np.unique(
    np.concatenate([np.arange(2, 64), np.round(np.geomspace(64, 10_000, 40))])
).astype(np.int64)
# All (alpha, k) pairs, k = 0..alpha, flattened: log A_alpha = logsumexp_k of one term per pair.
_K = np.concatenate([np.arange(a + 1) for a in _ORDERS]).astype(np.float64)
_A = np.repeat(_ORDERS, _ORDERS + 1).astype(np.float64)
_LOG_BINOM = gammaln(_A + 1) - gammaln(_K + 1) - gammaln(_A - _K + 1)
_STARTS = np.concatenate([[0], np.cumsum(_ORDERS + 1)[:-1]])


@lru_cache(maxsize=8192)
def _rdp_one_step(sigma: float, q: float) -> np.ndarray:
    """RDP of one step at every order in ``_ORDERS``."""
    orders = _ORDERS.astype(np.float64)
    if q == 1.0:
        rdp = orders / (2 * sigma**2)
    else:
        terms = _LOG_BINOM + _K * math.log(q) + (_A - _K) * math.log1p(-q)
        terms += (_K * _K - _K) / (2 * sigma**2)
        peak = np.maximum.reduceat(terms, _STARTS)
        log_a = peak + np.log(
            np.add.reduceat(np.exp(terms - np.repeat(peak, _ORDERS + 1)), _STARTS)
        )
        # A_alpha >= 1 in exact arithmetic; rounding must not make the RDP negative.
        rdp = np.maximum(log_a, 0.0) / (orders - 1)
    rdp.setflags(write=False)
    return rdp


def _rdp_epsilon(steps: Sequence[_Step], delta: float) -> float:
    rdp = np.zeros(len(_ORDERS))
    for sigma, q, n in steps:
        rdp += n * _rdp_one_step(sigma, q)
    with warnings.catch_warnings():
        # Opacus warns when the best order is an extreme one: expected for tiny or huge ε.
        warnings.simplefilter("ignore")
        from opacus.accountants.analysis.rdp import get_privacy_spent  # opacus loads torch

        eps, _ = get_privacy_spent(orders=_ORDERS.astype(np.float64), rdp=rdp, delta=delta)
    # The conversion can dip below 0 for almost no privacy loss: (0, δ)-DP then holds.
    return max(float(eps), 0.0)


# --------------------------------------------------------------------------------------------
# PRV accountant (Gopi et al. 2021), composed in the Fourier domain
# --------------------------------------------------------------------------------------------

_EPS_ERROR_MAX = 2.0**-7  # ≈ 0.0078: absolute error of ε, as Opacus' default of 0.01
_EPS_ERROR_MIN = 2.0**-11  # ≈ 0.0005: keeps ε = 0.05 within 1 % without huge grids
_SPECTRUM_CACHE_BYTES = 256 * 2**20
_MAX_GRID = 2**23  # points; beyond this (ε in the hundreds, or huge step counts) RDP is used


def _prv_epsilon(steps: Sequence[_Step], delta: float, eps_rdp: float) -> float:
    delta_error = delta / 1000  # as Opacus
    # Relative precision: about 1 % of ε (RDP over-estimates ε, so this is on the safe side),
    # rounded down to a power of two so that nearby histories share a grid.
    eps_error = 2.0 ** math.floor(
        math.log2(min(max(0.01 * eps_rdp, _EPS_ERROR_MIN), _EPS_ERROR_MAX))
    )
    total = sum(n for _, _, n in steps)
    mesh = eps_error / math.sqrt(total * math.log(12 / delta_error) / 2)
    dt = 2.0 ** math.floor(math.log2(mesh))
    # Domain size as Opacus' compute_safe_domain_size (Gopi et al., remark 5.6).
    half_width = max(
        _rdp_epsilon(steps, delta_error / 4),
        max(_rdp_epsilon([(s, q, 1)], delta_error / (8 * total)) for s, q, _ in steps),
        eps_error,
    )
    half_cells = math.ceil(half_width + 3) * round(1 / dt)  # half-width in cells, an integer
    size = fft.next_fast_len(2 * half_cells + 2, real=True)
    size += size % 2
    if size > _MAX_GRID:
        return math.inf  # the caller falls back to the RDP bound
    try:
        spectrum = np.ones(size // 2 + 1, dtype=np.complex128)
        shift = 0.0
        for sigma, q, n in steps:
            spec, mean_shift = _spectrum(sigma, q, n, half_cells, dt, size)
            spectrum *= spec
            shift += n * mean_shift
        pmf = fft.irfft(spectrum, n=size)
        # The circular convolution of `total` grids starting at -half_cells·dt starts at
        # -total·half_cells·dt: roll the result back onto the grid [-half_cells·dt, ...).
        pmf = np.roll(pmf, -((total - 1) * half_cells) % size)
        t_min = -half_cells * dt
        from opacus.accountants.analysis.prv import DiscretePRV, Domain

        domain = Domain(t_min + shift, t_min + (size - 1) * dt + shift, size, shifts=shift)
        with np.errstate(all="ignore"):
            _, _, eps_upper = DiscretePRV(pmf=pmf, domain=domain).compute_epsilon(
                delta, delta_error, eps_error
            )
    except (RuntimeError, ValueError, FloatingPointError):
        return math.inf  # the caller falls back to the RDP bound
    if not math.isfinite(eps_upper):
        return math.inf
    return max(float(eps_upper), 0.0)


class _SpectrumCache:
    """Least-recently-used cache of event spectra, bounded in bytes, thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._items: OrderedDict[tuple[object, ...], tuple[np.ndarray, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> tuple[np.ndarray, float] | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[object, ...], value: tuple[np.ndarray, float]) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._bytes += value[0].nbytes
            while self._bytes > self._max_bytes and len(self._items) > 1:
                _, (old, _) = self._items.popitem(last=False)
                self._bytes -= old.nbytes


_SPECTRA = _SpectrumCache(_SPECTRUM_CACHE_BYTES)


def _spectrum(
    sigma: float, q: float, n: int, half_cells: int, dt: float, size: int
) -> tuple[np.ndarray, float]:
    """Spectrum of ``n`` self-compositions of one discretised step, and the step's mean shift.

    The step's PRV is truncated to the grid [-half_cells·dt, (size - half_cells - 1)·dt] and
    discretised on it; as in Opacus' ``discretize``, the grid is then shifted so that the
    discrete mean equals the continuous one (Gopi et al., §5).
    """
    key = (sigma, q, n, half_cells, dt, size)
    cached = _SPECTRA.get(key)
    if cached is not None:
        return cached
    t_min = -half_cells * dt
    t_max = t_min + (size - 1) * dt
    edges = t_min - dt / 2 + dt * np.arange(size + 1)
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV

    prv = PoissonSubsampledGaussianPRV(sample_rate=q, noise_multiplier=sigma)
    with np.errstate(all="ignore"):  # q = 1 makes log(1 - q) = -inf, by design
        cdf = _monotone_cdf(prv.cdf, edges)
        lo, hi = prv.cdf(np.array([t_min, t_max]))
    cdf = np.clip((cdf - lo) / (hi - lo), 0.0, 1.0)  # truncated to [t_min, t_max]
    cdf[edges <= t_min] = 0.0
    cdf[edges >= t_max] = 1.0
    pmf = np.diff(cdf)
    # mean_continuous - mean_discrete = trapezoid(cdf) - simpson(cdf) over the edges
    # (integration and summation by parts); Simpson is exact to O(dt⁴) here.
    simpson = dt / 3 * (cdf[0] + cdf[-1] + 4 * cdf[1:-1:2].sum() + 2 * cdf[2:-1:2].sum())
    trapezoid = dt * (cdf[1:-1].sum() + (cdf[0] + cdf[-1]) / 2)
    mean_shift = float(trapezoid - simpson)
    if not abs(mean_shift) < dt / 2:
        raise RuntimeError("Discrete mean differs significantly from continuous mean.")
    spec = fft.rfft(pmf) ** n
    _SPECTRA.put(key, (spec, mean_shift))
    return spec, mean_shift


def _monotone_cdf(cdf: Callable[[np.ndarray], np.ndarray], t: np.ndarray) -> np.ndarray:
    """``cdf(t)`` for sorted ``t``, evaluated only where it is neither 0 nor 1.

    Most of a wide grid lies where the CDF is exactly 0 (below log(1 - q), where a subsampled
    Gaussian's privacy loss has no mass) or rounds to 1; a coarse pass finds the rest.
    """
    stride = 1024
    coarse = np.asarray(cdf(t[::stride]), dtype=np.float64)
    positive = np.flatnonzero(coarse > 0)
    if len(positive) == 0:
        return np.asarray(cdf(t), dtype=np.float64)
    first = positive[0]  # the CDF is 0 up to coarse point first - 1
    ones = np.flatnonzero(coarse[first:] >= 1)
    last = first + ones[0] if len(ones) else len(coarse) - 1  # and 1 from coarse point last
    start, stop = max(first - 1, 0) * stride, min(last * stride + 1, len(t))
    out = np.zeros(len(t))
    out[start:stop] = cdf(t[start:stop])
    out[stop:] = 1.0
    return out


# --------------------------------------------------------------------------------------------
# Calibration: root finding in log sigma
# --------------------------------------------------------------------------------------------


def _initial_guess(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    # Gaussian mechanism under advanced composition: the right order of magnitude.
    return max(sample_rate * math.sqrt(2 * steps * math.log(1.25 / delta)) / epsilon, 0.3)


class _NoRootError(Exception):
    """Even the largest noise multiplier does not fit."""


def _solve(
    eps_of: Callable[[float], float],
    target: float,
    guess: float,
    tolerance: float,
    *,
    floor: float = 0.0,
) -> float:
    """Smallest sigma (to ``1 + tolerance``) with ``eps_of(sigma) <= target``.

    ε decreases in sigma towards about ``floor`` (< target: what the history already spent).
    The root of f(u) = log((ε - floor) / (target - floor)), u = log sigma, which is nearly
    linear (the new mechanism's share of ε is roughly proportional to 1 / sigma), is found
    by regula falsi with the Illinois modification; each probe lands just beside the
    predicted root so that the bracket closes in about two probes once the prediction is
    good. ``floor`` only shapes f, never its sign, so any value below ``target`` is safe.
    Always returns a sigma that was evaluated and fits; raises ``_NoRootError`` if 1e4 does not.
    """
    width = math.log1p(tolerance)
    nudge = 0.45 * width
    max_u = math.log(_MAX_NOISE)

    def f(u: float) -> float:
        eps = eps_of(math.exp(u))
        if eps == math.inf:
            return math.inf
        return math.log(max(eps - floor, 1e-300) / (target - floor))

    u = math.log(guess)
    fu = f(u)
    # Bracket: lo does not fit (f > 0), hi fits (f <= 0).
    if fu <= 0:
        hi, f_hi = u, fu
        step = max(min(-fu, 1.0), nudge)  # linear f with slope -1 has its root at u + f(u)
        while True:
            lo = hi - step
            f_lo = f(lo)
            if f_lo > 0:
                break
            hi, f_hi, step = lo, f_lo, 2 * step
            if hi < math.log(1e-6):
                return math.exp(hi)  # essentially no noise is needed
    else:
        lo, f_lo = u, fu
        step = max(min(fu, 1.0), nudge)
        while True:
            hi = min(lo + step, max_u)
            f_hi = f(hi)
            if f_hi <= 0:
                break
            if hi >= max_u:
                raise _NoRootError
            lo, f_lo, step = hi, f_hi, 2 * step

    side = 0  # +1: the last probe moved hi, -1: it moved lo (Illinois bookkeeping)
    weight_lo = weight_hi = 1.0
    for _ in range(100):
        if hi - lo <= width:
            break
        g_lo, g_hi = f_lo * weight_lo, f_hi * weight_hi
        if math.isfinite(g_lo) and math.isfinite(g_hi):
            x = lo + (hi - lo) * g_lo / (g_lo - g_hi)
            # Probe on the far side of the prediction from the end that moved last.
            x = x - nudge if side > 0 else x + nudge
        else:
            x = (lo + hi) / 2
        margin = 0.1 * (hi - lo)
        x = min(max(x, lo + margin), hi - margin)
        fx = f(x)
        if fx <= 0:
            hi, f_hi, weight_hi = x, fx, 1.0
            weight_lo = weight_lo / 2 if side > 0 else 1.0
            side = 1
        else:
            lo, f_lo, weight_lo = x, fx, 1.0
            weight_hi = weight_hi / 2 if side < 0 else 1.0
            side = -1
    return math.exp(hi)
