"""Seeded synthetic MSP profiles and past joint projects, for the ``collaboration`` agent.

MSPs team up on projects that one of them cannot deliver alone: a help-desk shop brings in a
security specialist for a hospital's audit, a cloud MSP partners with a network installer
for a branch roll-out. Whether such a project succeeds depends on who the partners are, and
a partner's *profile* (services, certifications, regions, verticals, size) says most of it.

:func:`joint_projects` draws a population of MSP profiles written the way MSPs describe
themselves ("managed SOC, penetration testing"; "mid-sized, 64 staff"), pairs them into past
projects and decides each outcome by a hidden compatibility rule that the text reveals:

* **complementary services**: partners whose service lines differ succeed more often, and
  two MSPs offering the same lines compete for the same work and fail more often;
* **shared regions**: a partner who cannot send engineers on site is a liability;
* **shared verticals**: both know the client's industry;
* **matching size**: a 10-person shop and a 500-person firm work at different speeds;
* **certifications**: a project in a regulated vertical (healthcare, financial services,
  government) goes better when one of the partners holds that vertical's certification.

Outcomes are Bernoulli draws from a logistic of that score, so they are noisy, as real
project outcomes are. Every draw comes from one :class:`numpy.random.Generator` seeded with
``seed``, so the same arguments give the same frame on every platform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import pandas as pd

from meshfl.config.validation import Count, Int, Seed, checked
from meshfl.data.schema import Column, Schema

__all__ = [
    "COLLABORATION_SCHEMA",
    "PAIR_SCHEMA",
    "PROFILE_FIELDS",
    "PROFILE_SCHEMA",
    "REGIONS",
    "SERVICE_LINES",
    "VERTICALS",
    "joint_projects",
    "msp_profiles",
]

PROFILE_FIELDS: tuple[str, ...] = ("services", "certifications", "regions", "verticals", "size")
"""The fields of an MSP profile; pair data holds each twice, as ``a_<field>`` and ``b_<field>``."""

SERVICE_LINES: dict[str, tuple[str, ...]] = {
    "security": (
        "managed SOC",
        "endpoint detection and response",
        "vulnerability management",
        "penetration testing",
        "SIEM monitoring",
        "email security",
    ),
    "cloud": (
        "Azure migration",
        "AWS cloud management",
        "Microsoft 365 administration",
        "Kubernetes operations",
        "cloud cost optimisation",
    ),
    "network": (
        "SD-WAN deployment",
        "firewall management",
        "Wi-Fi design",
        "network monitoring",
        "structured cabling",
    ),
    "continuity": (
        "backup as a service",
        "disaster recovery",
        "business continuity planning",
        "data archiving",
    ),
    "helpdesk": (
        "24/7 help desk",
        "desktop support",
        "onsite field services",
        "IT asset management",
    ),
    "voice": ("hosted VoIP", "unified communications", "contact center platforms"),
    "development": (
        "custom software development",
        "Power BI reporting",
        "ERP integration",
        "web application hosting",
    ),
}
"""Service lines and the services MSPs list under each."""

REGIONS: tuple[str, ...] = (
    "Pacific Northwest",
    "California",
    "Texas",
    "Midwest",
    "New England",
    "Southeast US",
    "Ontario",
    "United Kingdom",
    "DACH",
    "Nordics",
    "Benelux",
    "Australia",
)
"""Regions an MSP can put engineers on site in."""

VERTICALS: tuple[str, ...] = (
    "healthcare",
    "financial services",
    "legal",
    "manufacturing",
    "education",
    "retail",
    "government",
    "nonprofit",
)
"""Client industries."""

# The certification a regulated vertical expects of its providers.
_REQUIRED_CERT = {
    "healthcare": "HIPAA",
    "financial services": "PCI DSS",
    "government": "CMMC Level 2",
}
_GENERIC_CERTS = (
    "ISO 27001",
    "SOC 2 Type II",
    "Microsoft Solutions Partner",
    "AWS Advanced Tier",
    "Cisco Premier Partner",
    "Cyber Essentials Plus",
)
# (tier word, fewest staff, most staff)
_SIZES = (("small", 4, 25), ("mid-sized", 26, 120), ("large", 121, 600))

PROFILE_SCHEMA = Schema(
    "MSP profile",
    (
        Column("services", "text", description="Services offered, e.g. 'managed SOC, SD-WAN'."),
        Column(
            "certifications",
            "text",
            required=False,
            description="Certifications held, e.g. 'ISO 27001, HIPAA' (missing: none).",
        ),
        Column("regions", "text", description="Regions served on site, e.g. 'Texas, Midwest'."),
        Column("verticals", "text", description="Client industries, e.g. 'healthcare, legal'."),
        Column("size", "text", description="Company size, e.g. 'mid-sized, 64 staff'."),
        Column("name", "text", required=False, description="The MSP's name (for display)."),
    ),
)
"""Schema of one MSP profile (a candidate partner in ``recommend``)."""


def _pair_columns() -> tuple[Column, ...]:
    columns = []
    for side, who in (("a", "first"), ("b", "second")):
        for col in PROFILE_SCHEMA.columns:
            columns.append(
                Column(
                    f"{side}_{col.name}",
                    col.kind,
                    required=col.required,
                    description=f"{col.description} (the {who} partner)",
                )
            )
    return tuple(columns)


PAIR_SCHEMA = Schema("collaboration pairs", _pair_columns())
"""Schema of partner pairs to score: both profiles, no outcome."""

COLLABORATION_SCHEMA = Schema(
    "collaboration data",
    (
        *_pair_columns(),
        Column(
            "outcome", "bool", description="Whether the joint project succeeded (1) or not (0)."
        ),
        Column("project", "text", required=False, description="What the project was about."),
    ),
)
"""Schema of the collaboration agent's data: one past joint project per row."""


def _join(items: list[str]) -> str:
    return ", ".join(items)


@dataclass(frozen=True)
class _Facts:
    """What a profile's text says, as sets: the input of the hidden rule."""

    lines: frozenset[str]
    regions: frozenset[str]
    verticals: frozenset[str]
    certs: frozenset[str]
    tier: int


def _profiles(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, list[_Facts]]:
    """``n`` profiles as text, and the facts behind each (for the hidden rule)."""
    lines = list(SERVICE_LINES)
    rows: list[dict[str, str]] = []
    facts: list[_Facts] = []
    for i in range(n):
        k_lines = int(rng.choice([1, 2, 2, 3]))
        own = [lines[j] for j in rng.choice(len(lines), size=k_lines, replace=False)]
        services: list[str] = []
        for line in own:
            names = SERVICE_LINES[line]
            take = int(rng.integers(1, min(3, len(names)) + 1))
            services += [names[j] for j in rng.choice(len(names), size=take, replace=False)]
        rng.shuffle(services)
        regions = [
            REGIONS[j]
            for j in rng.choice(len(REGIONS), size=int(rng.choice([1, 1, 2])), replace=False)
        ]
        verticals = [
            VERTICALS[j]
            for j in rng.choice(len(VERTICALS), size=int(rng.choice([1, 2, 2, 3])), replace=False)
        ]
        certs = [_REQUIRED_CERT[v] for v in verticals if v in _REQUIRED_CERT and rng.random() < 0.6]
        certs += [
            _GENERIC_CERTS[j]
            for j in rng.choice(len(_GENERIC_CERTS), size=int(rng.integers(0, 3)), replace=False)
        ]
        tier = int(rng.choice(3, p=[0.45, 0.4, 0.15]))
        word, low, high = _SIZES[tier]
        staff = int(rng.integers(low, high + 1))
        size = f"{word}, {staff} staff" if rng.random() < 0.5 else f"{word} ({staff} employees)"
        rows.append(
            {
                "name": f"MSP-{i:04d}",
                "services": _join(services),
                "certifications": _join(certs) if certs else "none",
                "regions": _join(regions),
                "verticals": _join(verticals),
                "size": size,
            }
        )
        facts.append(
            _Facts(frozenset(own), frozenset(regions), frozenset(verticals), frozenset(certs), tier)
        )
    return pd.DataFrame(rows), facts


@checked
def msp_profiles(n: Count, *, seed: Seed) -> pd.DataFrame:
    """``n`` seeded synthetic MSP profiles (columns of :data:`PROFILE_SCHEMA`).

    Examples
    --------
    >>> profiles = msp_profiles(3, seed=0)
    >>> list(profiles.columns)
    ['name', 'services', 'certifications', 'regions', 'verticals', 'size']
    """
    return _profiles(n, np.random.default_rng(seed))[0]


def _compatibility(a: _Facts, b: _Facts) -> float:
    """The hidden rule: log-odds that a project of partners ``a`` and ``b`` succeeds."""
    score = 0.8 * min(len(a.lines ^ b.lines), 3) - 1.6 * len(a.lines & b.lines)
    score += 1.8 if a.regions & b.regions else -1.2
    score += 1.0 * min(len(a.verticals & b.verticals), 2)
    score -= 1.0 * abs(a.tier - b.tier)
    certs = a.certs | b.certs
    for vertical in (a.verticals | b.verticals) & set(_REQUIRED_CERT):
        score += 0.6 if _REQUIRED_CERT[vertical] in certs else -0.7
    return score - 1.3


@checked
def joint_projects(
    n: Count, *, seed: Seed, n_profiles: Annotated[int, Int(2)] | None = None
) -> pd.DataFrame:
    """``n`` seeded synthetic past joint projects between MSPs (:data:`COLLABORATION_SCHEMA`).

    Parameters
    ----------
    n : int
        Projects (rows).
    seed : int
        Seeds the profiles, the pairing and the outcomes.
    n_profiles : int, optional
        Size of the MSP population the partners come from; default ``n // 5`` within
        ``[8, 200]``, so that an MSP appears in several projects, as in a partner network.

    Returns
    -------
    pandas.DataFrame
        One row per project: ``a_<field>`` and ``b_<field>`` for every profile field (and
        ``a_name``, ``b_name``), ``project`` and ``outcome`` (1 success, 0 failure).

    Examples
    --------
    >>> frame = joint_projects(6, seed=1)
    >>> frame["outcome"].isin([0, 1]).all()
    np.True_
    >>> frame.equals(joint_projects(6, seed=1))
    True
    """
    if n_profiles is None:
        n_profiles = min(200, max(8, n // 5))
    rng = np.random.default_rng(seed)
    profiles, facts = _profiles(n_profiles, rng)
    records = profiles.to_dict("records")
    rows = []
    for _ in range(n):
        i, j = (int(v) for v in rng.choice(n_profiles, size=2, replace=False))
        logit = _compatibility(facts[i], facts[j])
        outcome = int(rng.random() < 1.0 / (1.0 + np.exp(-logit)))
        verticals = sorted(facts[i].verticals | facts[j].verticals)
        row: dict[str, object] = {}
        for side, k in (("a", i), ("b", j)):
            for field, value in records[k].items():
                row[f"{side}_{field}"] = value
        client = verticals[int(rng.integers(len(verticals)))]
        row["project"] = f"joint project for a {client} client"
        row["outcome"] = outcome
        rows.append(row)
    return pd.DataFrame(rows)
