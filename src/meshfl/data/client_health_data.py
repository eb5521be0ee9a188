"""Client-health data: one row per managed client of an MSP, and whether it churned.

The ``client_health`` agent predicts churn risk from what an MSP's PSA and billing systems
already record about each client: ticket volume, SLA breaches, satisfaction surveys,
payment delays, contract age, seats, spend, services bought, first-response time and
days to the next renewal (:data:`CLIENT_HEALTH_SCHEMA`).

:func:`client_health` draws seeded synthetic rows with a known, deliberately non-linear
ground truth, so a tree model has something to find that a linear one would miss:

* a satisfaction *cliff* (churn jumps once CSAT falls below about 3.3),
* diminishing returns of SLA breaches (``log1p``),
* a step for clients paying more than 30 days late,
* a U-shape in contract age (new clients leave; long-standing ones stay),
* interactions: dissatisfaction matters far more inside the 60-day renewal window, and a
  ticket load high *for the client's size* signals trouble.

Clients come in three segments (``smb``, ``midmarket``, ``enterprise``) that differ in
size, spend, ticket volume and service level. :func:`client_health_partitions` gives each
simulated MSP its own segment mix (Dirichlet) and its own service quality (response time),
so MSPs differ in their feature distributions *and* churn rates: a model trained on one
MSP's mostly-SMB book transfers badly to another's enterprise book, which is the case for
federating.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from meshfl.config.errors import ConfigError
from meshfl.config.validation import Count, Positive, Seed, Skew, checked
from meshfl.data.partition import cut
from meshfl.data.schema import Column, Schema

__all__ = [
    "CLIENT_HEALTH_BOUNDS",
    "CLIENT_HEALTH_FEATURES",
    "CLIENT_HEALTH_LOG_FEATURES",
    "CLIENT_HEALTH_SCHEMA",
    "CLIENT_SEGMENTS",
    "client_health",
    "client_health_partitions",
]

CLIENT_HEALTH_FEATURES: tuple[str, ...] = (
    "tickets_per_month",
    "sla_breaches_90d",
    "csat",
    "billing_delay_days",
    "contract_age_months",
    "seats",
    "monthly_spend_usd",
    "services_count",
    "first_response_hours",
    "days_to_renewal",
)
"""The numeric features of :func:`client_health`, in column order."""

CLIENT_HEALTH_BOUNDS: dict[str, tuple[float, float]] = {
    "tickets_per_month": (0.0, 200.0),
    "sla_breaches_90d": (0.0, 30.0),
    "csat": (1.0, 5.0),  # 1-5 survey scale
    "billing_delay_days": (0.0, 120.0),  # accounts go to collections after 120 days
    "contract_age_months": (0.0, 120.0),
    "seats": (1.0, 5000.0),
    "monthly_spend_usd": (0.0, 250_000.0),
    "services_count": (1.0, 12.0),  # size of a typical MSP's service catalogue
    "first_response_hours": (0.0, 72.0),
    "days_to_renewal": (0.0, 365.0),  # annual contracts
}
"""Public ranges of every feature: the histogram bins are laid out inside them.

They are facts about the business (survey scales, contract terms, catalogue sizes), not
about any MSP's data, so every MSP can derive the same bins without a message.
"""

CLIENT_HEALTH_LOG_FEATURES: tuple[str, ...] = (
    "tickets_per_month",
    "sla_breaches_90d",
    "billing_delay_days",
    "seats",
    "monthly_spend_usd",
    "first_response_hours",
)
"""Right-skewed features whose bins are spaced evenly in ``log1p`` rather than linearly."""

CLIENT_SEGMENTS: tuple[str, ...] = ("smb", "midmarket", "enterprise")
"""Client segments of :func:`client_health`."""

CLIENT_HEALTH_SCHEMA = Schema(
    "client_health data",
    (
        Column("tickets_per_month", "number", description="support tickets per month"),
        Column("sla_breaches_90d", "number", description="SLA breaches in the last 90 days"),
        Column("csat", "number", description="mean satisfaction score, 1 (bad) to 5 (good)"),
        Column("billing_delay_days", "number", description="mean days invoices are paid late"),
        Column("contract_age_months", "number", description="months since the first contract"),
        Column("seats", "number", description="managed users"),
        Column("monthly_spend_usd", "number", description="monthly recurring revenue"),
        Column("services_count", "number", description="services the client buys"),
        Column("first_response_hours", "number", description="mean first-response time"),
        Column("days_to_renewal", "number", description="days until the contract renews"),
        Column("churned", "bool", required=False, description="left within the next quarter"),
        Column("segment", "category", required=False, description="smb/midmarket/enterprise"),
    ),
)
"""Columns of client-health data; ``churned`` is needed to train and evaluate, not to score."""

# Per segment: median seats, seats spread (log), price per seat, mean extra services,
# mean contract age (months), response-time factor (enterprise clients get priority).
_SEGMENT = {
    "smb": (15.0, 0.6, 60.0, 1.5, 24.0, 1.0),
    "midmarket": (150.0, 0.5, 45.0, 3.5, 36.0, 0.8),
    "enterprise": (1500.0, 0.5, 30.0, 5.5, 48.0, 0.5),
}
_POOLED_MIX = np.array([0.55, 0.30, 0.15])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _churn_logit(f: dict[str, np.ndarray]) -> np.ndarray:
    """The ground truth: log-odds of churn from the features (non-linear, interacting)."""
    csat, renewal = f["csat"], f["days_to_renewal"]
    age = f["contract_age_months"]
    expected_tickets = 0.5 * f["seats"] ** 0.55
    return (
        -2.1
        + 2.4 * _sigmoid(5.0 * (3.3 - csat))  # satisfaction cliff
        + 0.8 * np.log1p(f["sla_breaches_90d"])  # breaches, diminishing
        + 1.2 * (f["billing_delay_days"] > 30)  # paying late: money trouble or a dispute
        + 1.0 * (age < 6)
        - 0.5 * (age > 36)  # new clients leave, loyal ones stay
        - 0.25 * (np.minimum(f["services_count"], 8) - 3)  # more services, stickier
        + 1.6 * ((renewal < 60) & (csat < 3.7))  # unhappy at renewal time
        + 0.7 * (f["tickets_per_month"] > 2.0 * expected_tickets)  # overload for its size
        - 0.15 * np.log(f["seats"])  # small clients switch providers more easily
    )


def _clients(
    rng: np.random.Generator, segments: np.ndarray, quality: float
) -> dict[str, np.ndarray]:
    """Feature columns for clients of the given segments at an MSP of service ``quality``."""
    n = len(segments)
    params = np.array([_SEGMENT[s] for s in CLIENT_SEGMENTS])[segments]
    seat_median, seat_spread, price, extra_services, mean_age, response_factor = params.T
    lo = {k: v[0] for k, v in CLIENT_HEALTH_BOUNDS.items()}
    hi = {k: v[1] for k, v in CLIENT_HEALTH_BOUNDS.items()}

    def clip(name: str, x: np.ndarray) -> np.ndarray:
        return np.clip(x, lo[name], hi[name])

    seats = clip("seats", np.round(seat_median * np.exp(seat_spread * rng.standard_normal(n))))
    services = clip("services_count", 1.0 + rng.poisson(extra_services))
    spend = clip(
        "monthly_spend_usd",
        np.round(seats * price * (1 + 0.1 * services) * rng.lognormal(0.0, 0.25, n), 2),
    )
    age = clip("contract_age_months", np.round(rng.exponential(mean_age), 1))
    renewal = np.floor(rng.uniform(0.0, 365.0, n))
    tickets = clip(
        "tickets_per_month", np.round(0.5 * seats**0.55 * rng.lognormal(0.0, 0.55, n), 1)
    )
    response = clip(
        "first_response_hours",
        np.round(4.0 * response_factor * np.exp(0.45 * quality) * rng.lognormal(0.0, 0.6, n), 2),
    )
    breaches = clip(
        "sla_breaches_90d",
        rng.poisson(0.2 + 0.12 * np.sqrt(tickets) * (response / 4.0) ** 0.8).astype(float),
    )
    mood = rng.standard_normal(n)
    csat = clip(
        "csat",
        np.round(
            4.1 + 0.55 * mood - 0.3 * np.log1p(breaches) - 0.2 * np.log(response / 4.0 + 0.25), 1
        ),
    )
    # Most clients pay on time; some (more often the unhappy ones) let invoices slide.
    late = rng.uniform(size=n) < _sigmoid(-1.6 - 0.8 * mood)
    delay = clip(
        "billing_delay_days",
        np.round(np.where(late, rng.exponential(28.0, n), rng.exponential(2.5, n)), 1),
    )
    return {
        "tickets_per_month": tickets,
        "sla_breaches_90d": breaches,
        "csat": csat,
        "billing_delay_days": delay,
        "contract_age_months": age,
        "seats": seats,
        "monthly_spend_usd": spend,
        "services_count": services,
        "first_response_hours": response,
        "days_to_renewal": renewal,
    }


def _draw(
    rng: np.random.Generator, n: int, mix: np.ndarray, quality: float
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Features, churn and segment codes of ``n`` clients of one MSP."""
    segments = rng.choice(len(CLIENT_SEGMENTS), size=n, p=mix)
    features = _clients(rng, segments, quality)
    churned = rng.uniform(size=n) < _sigmoid(_churn_logit(features))
    return features, churned, segments


def _frame(rng: np.random.Generator, n: int, mix: np.ndarray, quality: float) -> pd.DataFrame:
    return _as_frame(*_draw(rng, n, mix, quality))


def _as_frame(
    features: dict[str, np.ndarray], churned: np.ndarray, segments: np.ndarray
) -> pd.DataFrame:
    frame = pd.DataFrame(features)
    frame["churned"] = churned
    frame["segment"] = np.array(CLIENT_SEGMENTS)[segments]
    return frame


@checked
def client_health(n: Count, *, seed: Seed) -> pd.DataFrame:
    """``n`` seeded synthetic clients of an average MSP (55% SMB, 30% mid-market, 15% enterprise).

    Parameters
    ----------
    n : int
        Rows (clients), at least 1.
    seed : int
        Seed of every random draw.

    Returns
    -------
    pandas.DataFrame
        The columns of :data:`CLIENT_HEALTH_SCHEMA`; about 20% of clients churn.

    Examples
    --------
    >>> frame = client_health(5, seed=0)
    >>> list(frame.columns[-2:])
    ['churned', 'segment']
    """
    return _frame(np.random.default_rng([seed, 0x0C4E]), n, _POOLED_MIX, 0.0)


@checked
def client_health_partitions(
    num_msps: Count,
    *,
    samples_per_msp: Count,
    seed: Seed,
    alpha: Positive = 0.5,
    size_skew: Skew = 0.5,
    min_size: Count = 20,
) -> list[pd.DataFrame]:
    """Seeded client books of ``num_msps`` MSPs that differ as real MSPs do.

    Each MSP draws its segment mix from ``Dirichlet(alpha)`` (small ``alpha``: one MSP serves
    mostly small businesses, another mostly enterprises), its service quality (first-response
    time) from a normal distribution, and its size from a log-normal of spread ``size_skew``
    around ``samples_per_msp`` (at least ``min_size`` rows).
    """
    if min_size > samples_per_msp:
        raise ConfigError(
            "The 'samples_per_msp' parameter of client_health_partitions must be at least "
            f"min_size={min_size}. Got {samples_per_msp} instead."
        )
    rng = np.random.default_rng([seed, 0x0C4F])
    shares = rng.lognormal(0.0, size_skew, num_msps) if size_skew > 0 else np.ones(num_msps)
    sizes = np.maximum(min_size, np.round(shares / shares.mean() * samples_per_msp)).astype(int)
    draws = []
    for i in range(num_msps):
        msp_rng = np.random.default_rng([seed, 0x0C4F, i + 1])
        mix = msp_rng.dirichlet(np.full(len(CLIENT_SEGMENTS), alpha))
        # Keep every segment possible at every MSP, however rare.
        mix = (mix + 0.02) / (1 + 0.02 * len(CLIENT_SEGMENTS))
        quality = float(msp_rng.normal(0.0, 0.8))
        draws.append(_draw(msp_rng, int(sizes[i]), mix, quality))
    # One frame for the whole mesh, validated once and cut by index: a frame per MSP costs
    # more than its rows at thousands of MSPs (the draws are the same as one frame each).
    features = {k: np.concatenate([d[0][k] for d in draws]) for k in CLIENT_HEALTH_FEATURES}
    churned = np.concatenate([d[1] for d in draws])
    segments = np.concatenate([d[2] for d in draws])
    return cut(CLIENT_HEALTH_SCHEMA.validate(_as_frame(features, churned, segments)), sizes)
