"""Seeded synthetic host metrics of an MSP's monitoring, with labelled injected anomalies.

Real MSP data cannot leave the MSP, so tests, examples and benchmarks of the ``anomaly``
agent run on :func:`operational_metrics`: host metrics that follow per-workload regimes, and
injected anomalies that range from blatant spikes to values that are only odd in
combination. Its schema, features and their public bounds are in :mod:`meshfl.data.schemas`.

Every draw comes from one :class:`numpy.random.Generator` seeded with ``seed``, so the same
arguments give the same frame on every platform.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd

from meshfl.config.validation import Count, Float, Seed, checked
from meshfl.data.schemas import OPS_METRIC_BOUNDS, OPS_METRIC_FEATURES
from meshfl.data.templates import pick

AnomalyFraction = Annotated[float, Float("in [0, 0.5]", lambda v: 0 <= v <= 0.5)]

__all__ = ["WORKLOAD_PROFILES", "operational_metrics"]

WORKLOAD_PROFILES: tuple[str, ...] = ("web", "database", "batch", "file_server", "vdi")
"""Workload profiles of the hosts in :func:`operational_metrics`."""

_START = pd.Timestamp("2024-11-01 00:00:00")  # as in security_events_data

_PROFILE_SHARES = np.array([0.30, 0.20, 0.15, 0.15, 0.20])

# Per profile and feature: (center, spread, scale). "linear" features are
# center + spread * z; "log" features are center * exp(spread * z), i.e. log-normal with
# median ``center``: throughput, latency and counts are skewed to the right.
_SCALES = ("linear", "linear", "log", "log", "log", "log", "log", "log")
_REGIMES: dict[str, tuple[tuple[float, float], ...]] = {
    #              cpu         mem          disk        net_in      net_out     latency
    #              errors       conns
    "web": ((40, 12), (45, 8), (15, 0.5), (90, 0.45), (220, 0.45), (70, 0.35),
            (0.6, 0.5), (1200, 0.4)),
    "database": ((50, 12), (82, 5), (220, 0.4), (50, 0.4), (80, 0.4), (12, 0.4),
                 (0.15, 0.5), (250, 0.35)),
    "batch": ((82, 8), (60, 12), (140, 0.45), (15, 0.6), (10, 0.6), (150, 0.4),
              (0.4, 0.6), (25, 0.5)),
    "file_server": ((15, 5), (38, 7), (170, 0.45), (140, 0.5), (190, 0.5), (20, 0.35),
                    (0.25, 0.5), (180, 0.4)),
    "vdi": ((35, 10), (68, 8), (35, 0.45), (25, 0.45), (55, 0.45), (35, 0.35),
            (0.3, 0.5), (70, 0.4)),
}  # fmt: skip

# Two latent factors per profile (loadings on each feature) give each regime its own
# correlations: web traffic drives network and connections; database load drives memory,
# disk and latency; batch jobs drive cpu, memory and disk; and so on.
_LOADINGS: dict[str, np.ndarray] = {
    "web": np.array(
        [[0.7, 0.2, 0.1, 0.85, 0.85, 0.4, 0.3, 0.85], [0.0, 0.5, 0.3, 0.0, 0.0, 0.5, 0.4, 0.1]]
    ),
    "database": np.array(
        [[0.75, 0.5, 0.8, 0.5, 0.6, 0.6, 0.2, 0.7], [0.0, 0.3, 0.3, 0.0, 0.0, 0.4, 0.5, 0.0]]
    ),
    "batch": np.array(
        [[0.8, 0.6, 0.7, 0.2, 0.2, 0.3, 0.1, 0.2], [0.0, 0.3, 0.0, 0.6, 0.6, 0.2, 0.3, 0.3]]
    ),
    "file_server": np.array(
        [[0.3, 0.2, 0.85, 0.75, 0.75, 0.3, 0.1, 0.6], [0.0, 0.4, 0.0, 0.0, 0.0, 0.5, 0.3, 0.0]]
    ),
    "vdi": np.array(
        [[0.7, 0.7, 0.4, 0.5, 0.7, 0.3, 0.1, 0.8], [0.0, 0.0, 0.4, 0.0, 0.0, 0.6, 0.4, 0.0]]
    ),
}
# Interactive workloads follow the working day; batch and databases much less so.
_DIURNAL = {"web": 0.9, "database": 0.4, "batch": -0.5, "file_server": 0.6, "vdi": 1.2}

_ANOMALY_KINDS = ("spike", "correlation_break", "profile_mix", "saturation", "outage")


def _regime(rng: np.random.Generator, profile: str, hours: np.ndarray) -> np.ndarray:
    """Normal metrics of ``len(hours)`` rows of one profile (before clipping)."""
    m = len(hours)
    loadings = _LOADINGS[profile]
    unique = np.sqrt(np.clip(1.0 - (loadings**2).sum(axis=0), 0.05, None))
    factors = rng.standard_normal((m, 2))
    # Working hours (8-18 h) raise the first factor; the cosine peaks at 13 h.
    factors[:, 0] += _DIURNAL[profile] * np.cos(2 * np.pi * (hours - 13.0) / 24.0)
    z = factors @ loadings + rng.standard_normal((m, len(OPS_METRIC_FEATURES))) * unique
    return _from_z(profile, z)


def _from_z(profile: str, z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    for j, ((center, spread), scale) in enumerate(zip(_REGIMES[profile], _SCALES, strict=True)):
        out[:, j] = (
            center + spread * z[:, j] if scale == "linear" else center * np.exp(spread * z[:, j])
        )
    return out


def _inject(
    rng: np.random.Generator, x: np.ndarray, profile: str, hour: float, kind: str
) -> np.ndarray:
    """One anomalous version of the metrics row ``x`` of a host of ``profile``."""
    lo = np.array([OPS_METRIC_BOUNDS[f][0] for f in OPS_METRIC_FEATURES])
    hi = np.array([OPS_METRIC_BOUNDS[f][1] for f in OPS_METRIC_FEATURES])
    x = x.copy()
    d = len(x)
    if kind == "spike":  # one or two metrics jump far above their regime
        for j in rng.choice(d, size=int(rng.integers(1, 3)), replace=False):
            x[j] = max(x[j], lo[j] + (hi[j] - lo[j]) * rng.uniform(0.35, 1.0))
    elif kind == "correlation_break":  # features that move together move apart
        loadings = _LOADINGS[profile][0]
        z = rng.standard_normal(d) * 0.5
        linked = np.flatnonzero(loadings >= 0.5)
        signs = rng.permutation(np.resize([1.0, -1.0], len(linked)))
        z[linked] = signs * rng.uniform(3.0, 4.5, size=len(linked))
        x = _from_z(profile, z[None, :])[0]
    elif kind == "profile_mix":  # half the metrics look like another workload, stressed
        other = pick(rng, tuple(p for p in WORKLOAD_PROFILES if p != profile))
        y = _regime(rng, other, np.array([hour]))[0]
        y = _from_z(other, np.full((1, d), 2.5))[0] * 0.5 + y * 0.5
        cols = rng.choice(d, size=d // 2, replace=False)
        x[cols] = y[cols]
    elif kind == "saturation":  # the host is out of a resource and everything queues
        x[0] = rng.uniform(96.0, 100.0)
        x[1] = rng.uniform(93.0, 100.0)
        x[5] = rng.uniform(500.0, 2000.0)
        x[6] = rng.uniform(5.0, 40.0)
    else:  # outage: the service is down, clients time out
        x[0] = rng.uniform(0.0, 3.0)
        x[2:5] = rng.uniform(0.0, 0.5, size=3)
        x[5] = rng.uniform(1500.0, 2000.0)
        x[6] = rng.uniform(50.0, 100.0)
        x[7] = rng.uniform(0.0, 5.0)
    return x


def _hosts(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Host names, each row's host and each row's profile.

    A fixed fleet per profile, sized so a host has a few dozen samples.
    """
    fleet = max(5, n // 40)
    host_profile = rng.choice(len(WORKLOAD_PROFILES), size=fleet, p=_PROFILE_SHARES)
    host_profile[: len(WORKLOAD_PROFILES)] = np.arange(len(WORKLOAD_PROFILES))
    numbers = np.zeros(len(WORKLOAD_PROFILES), dtype=int)
    host_names = []
    for p in host_profile:
        numbers[p] += 1
        prefix = ("web", "db", "batch", "fs", "vdi")[p]
        host_names.append(f"{prefix}-{numbers[p]:02d}")
    row_host = rng.integers(0, fleet, size=n)
    profiles = host_profile[row_host]
    return host_names, row_host, profiles


def _inject_anomalies(
    rng: np.random.Generator, x: np.ndarray, profiles: np.ndarray, hours: np.ndarray, count: int
) -> np.ndarray:
    """Replace ``count`` random rows of ``x`` (in place) by anomalies; which rows they are."""
    n = len(x)
    is_anomaly = np.zeros(n, dtype=bool)
    if count:
        rows = np.sort(rng.choice(n, size=count, replace=False))
        is_anomaly[rows] = True
        for i in rows:
            kind = pick(rng, _ANOMALY_KINDS)
            x[i] = _inject(rng, x[i], WORKLOAD_PROFILES[profiles[i]], hours[i], kind)
    return is_anomaly


@checked
def operational_metrics(
    n: Count, *, seed: Seed = 0, anomaly_fraction: AnomalyFraction = 0.05
) -> pd.DataFrame:
    """Synthetic host metrics of an MSP's monitoring, with labelled injected anomalies.

    Each host runs one workload profile (``web``, ``database``, ``batch``, ``file_server``,
    ``vdi``) whose metrics follow their own multivariate regime: its own means, spreads and
    correlations (a database's memory and disk I/O rise together, a web server's traffic
    and connections), with a daily cycle for interactive workloads.

    Parameters
    ----------
    n : int
        Number of rows (one host at one 5-minute sample), at least 1.
    seed : int, default 0
        Seed of the random generator; the same arguments give the same frame.
    anomaly_fraction : float, default 0.05
        Fraction of rows (rounded to a whole number, at most 0.5) replaced by anomalies of
        five kinds: a spike in one or two metrics, a break of the profile's correlations,
        a mix of metrics typical of another profile, saturation, and an outage.

    Returns
    -------
    pandas.DataFrame
        Columns ``timestamp`` (sorted), ``host``, ``profile``, the
        :data:`~meshfl.data.schemas.OPS_METRIC_FEATURES` (float64, inside
        :data:`~meshfl.data.schemas.OPS_METRIC_BOUNDS`; ``open_connections`` holds whole
        numbers) and ``is_anomaly`` (bool). Matches
        :data:`~meshfl.data.schemas.OPS_METRICS_SCHEMA`.

    Examples
    --------
    >>> frame = operational_metrics(200, seed=3, anomaly_fraction=0.1)
    >>> int(frame["is_anomaly"].sum())
    20
    >>> bool((frame["cpu_pct"] <= 100).all())
    True
    """
    rng = np.random.default_rng(seed)

    host_names, row_host, profiles = _hosts(rng, n)

    slots = np.sort(rng.integers(0, 14 * 24 * 12, size=n))  # 5-minute slots over 2 weeks
    times = _START + pd.to_timedelta(slots * 5, unit="min")
    hours = (slots * 5 / 60.0) % 24.0

    x = np.empty((n, len(OPS_METRIC_FEATURES)))
    for p, name in enumerate(WORKLOAD_PROFILES):
        rows = np.flatnonzero(profiles == p)
        if rows.size:
            x[rows] = _regime(rng, name, hours[rows])

    is_anomaly = _inject_anomalies(rng, x, profiles, hours, round(anomaly_fraction * n))

    lo = np.array([OPS_METRIC_BOUNDS[f][0] for f in OPS_METRIC_FEATURES])
    hi = np.array([OPS_METRIC_BOUNDS[f][1] for f in OPS_METRIC_FEATURES])
    x = np.clip(np.round(x, 2), lo, hi)
    x[:, -1] = np.round(x[:, -1])

    frame = pd.DataFrame(
        {
            "timestamp": times,
            "host": np.asarray(host_names, dtype=object)[row_host],
            "profile": np.asarray(WORKLOAD_PROFILES, dtype=object)[profiles],
        }
    )
    for j, feature in enumerate(OPS_METRIC_FEATURES):
        frame[feature] = x[:, j]
    frame["is_anomaly"] = is_anomaly
    return frame
