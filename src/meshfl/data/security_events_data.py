"""Seeded synthetic security events of an MSP's SIEM: log lines with threat class and severity.

Real MSP data cannot leave the MSP, so tests, examples and benchmarks of the ``threat_intel``
agent run on :func:`security_events`: log lines in the syslog, Windows-event, EDR,
mail-gateway and proxy formats an MSP's SIEM collects. The data is meant to be *learnable
but not trivial*: some templates are shared by two classes (a user mistyping a password
looks like one attempt of a brute-force run; a backup upload looks like exfiltration), and
labels carry noise. Its schema and label sets are in :mod:`meshfl.data.schemas`; the
template tables in :mod:`meshfl.data.security_event_templates` and
:mod:`meshfl.data.security_event_fields`.

Every draw comes from one :class:`numpy.random.Generator` seeded with ``seed``, so the same
arguments give the same frame on every platform.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from meshfl.config.validation import Count, Seed, Unit, checked
from meshfl.data.schemas import SEVERITIES, THREAT_CLASSES
from meshfl.data.security_event_fields import FIELDS, HOST_POOLS, SOURCE_HOSTS
from meshfl.data.security_event_templates import CLASS_TEMPLATES, SHARED_TEMPLATES
from meshfl.data.templates import replace_some

__all__ = ["security_events"]

# Share of each class among events, roughly what an MSP's SIEM sees after the noisiest
# informational events are filtered out: mostly benign, ransomware rare.
_CLASS_SHARES = np.array([0.45, 0.14, 0.09, 0.12, 0.05, 0.05, 0.06, 0.04])

# P(severity | class): correlated with the class, never determined by it.
_SEVERITY_GIVEN_CLASS = np.array(
    [
        [0.82, 0.14, 0.04, 0.00],  # benign
        [0.20, 0.50, 0.25, 0.05],  # brute_force
        [0.05, 0.25, 0.50, 0.20],  # malware
        [0.15, 0.50, 0.30, 0.05],  # phishing
        [0.02, 0.18, 0.45, 0.35],  # data_exfiltration
        [0.02, 0.20, 0.48, 0.30],  # privilege_escalation
        [0.10, 0.35, 0.40, 0.15],  # ddos
        [0.00, 0.05, 0.25, 0.70],  # ransomware
    ]
)

# Which shared pools each class draws from, and how often a class's event comes from one.
_CLASS_POOLS: dict[str, tuple[str, ...]] = {
    "benign": ("auth_fail", "big_transfer", "traffic_burst", "mail", "priv"),
    "brute_force": ("auth_fail",),
    "malware": ("file_activity", "exec"),
    "phishing": ("mail",),
    "data_exfiltration": ("big_transfer",),
    "privilege_escalation": ("priv", "exec"),
    "ddos": ("traffic_burst",),
    "ransomware": ("file_activity",),
}
_SHARED_RATE = {"benign": 0.15}
_SHARED_RATE_ATTACK = 0.2

_START = pd.Timestamp("2024-11-01 00:00:00")


class _Fields(dict[str, str]):
    """Lazy placeholder values for one log line: each drawn once, on first use."""

    def __init__(self, rng: np.random.Generator, row: Mapping[str, str]):
        super().__init__(row)
        self._rng = rng

    def __missing__(self, key: str) -> str:
        base = key if key in FIELDS else key.rstrip("0123456789").rstrip("_")
        value = FIELDS[base](self._rng)
        self[key] = value
        return value


def _event(rng: np.random.Generator, label: str, ts: pd.Timestamp) -> tuple[str, str, str]:
    """One event of class ``label`` at ``ts``: its host, log source and message."""
    rate = _SHARED_RATE.get(label, _SHARED_RATE_ATTACK)
    if rng.random() < rate:
        pool = _CLASS_POOLS[label][int(rng.integers(len(_CLASS_POOLS[label])))]
        templates = SHARED_TEMPLATES[pool]
    else:
        templates = CLASS_TEMPLATES[label]
    source, template = templates[int(rng.integers(len(templates)))]
    host = HOST_POOLS[SOURCE_HOSTS[source]](rng)
    row = {
        "syslog_ts": f"{ts:%b} {ts.day:2d} {ts:%H:%M:%S}",
        "iso_ts": f"{ts:%Y-%m-%dT%H:%M:%S}.{rng.integers(0, 1000):03d}Z",
        "epoch": f"{ts.timestamp():.0f}.{rng.integers(0, 1000):03d}",
        "clf_ts": f"{ts:%d/%b/%Y:%H:%M:%S} +0000",
        "host": host,
        "HOST": host.upper(),
    }
    return host, source, template.format_map(_Fields(rng, row))


@checked
def security_events(n: Count, *, seed: Seed = 0, label_noise: Unit = 0.03) -> pd.DataFrame:
    """Synthetic security events of an MSP's SIEM, labelled with threat class and severity.

    Parameters
    ----------
    n : int
        Number of events (rows), at least 1.
    seed : int, default 0
        Seed of the random generator; the same arguments give the same frame.
    label_noise : float, default 0.03
        Fraction of rows (rounded to a whole number) whose ``threat_class`` is replaced by
        another class drawn at random; the same fraction, drawn independently, for
        ``severity``. Real labels come from tired analysts.

    Returns
    -------
    pandas.DataFrame
        Columns ``timestamp`` (datetime64, sorted), ``host``, ``source`` (the log source:
        ``sshd``, ``firewall``, ``edr``, ``mail-gateway``, ``windows-security``, ``proxy``,
        ...), ``message`` (the raw log line), ``threat_class`` (one of
        :data:`THREAT_CLASSES`; about 45% benign) and ``severity`` (one of
        :data:`SEVERITIES`). Matches :data:`~meshfl.data.schemas.SECURITY_EVENTS_SCHEMA`.

    Examples
    --------
    >>> frame = security_events(5, seed=1)
    >>> list(frame.columns)
    ['timestamp', 'host', 'source', 'message', 'threat_class', 'severity']
    >>> frame.equals(security_events(5, seed=1))
    True
    """
    rng = np.random.default_rng(seed)

    classes = rng.choice(len(THREAT_CLASSES), size=n, p=_CLASS_SHARES)
    cumulative = np.cumsum(_SEVERITY_GIVEN_CLASS, axis=1)[classes]
    severities = np.minimum((rng.random((n, 1)) > cumulative).sum(axis=1), len(SEVERITIES) - 1)
    offsets = np.sort(rng.integers(0, 30 * 24 * 3600, size=n))
    times = _START + pd.to_timedelta(offsets, unit="s")

    hosts, sources, messages = [], [], []
    for c, ts in zip(classes, times, strict=True):
        host, source, message = _event(rng, THREAT_CLASSES[c], ts)
        hosts.append(host)
        sources.append(source)
        messages.append(message)

    classes = replace_some(rng, classes, len(THREAT_CLASSES), label_noise)
    severities = replace_some(rng, severities, len(SEVERITIES), label_noise)
    return pd.DataFrame(
        {
            "timestamp": times,
            "host": hosts,
            "source": sources,
            "message": messages,
            "threat_class": np.asarray(THREAT_CLASSES, dtype=object)[classes],
            "severity": np.asarray(SEVERITIES, dtype=object)[severities],
        }
    )
