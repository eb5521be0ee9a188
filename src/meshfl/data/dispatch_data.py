"""Seeded synthetic dispatch histories of MSPs: tickets, and the technician roster that took them.

One row is one ticket: the day (``episode``) it came in, its arrival hour, the skill it needs,
its priority, its SLA and the hours of work it took, and the site it was at. Every row also
carries the MSP's technician roster of that day as one compact string (:func:`format_roster`),
so a plain DataFrame or CSV holds a whole dispatch history, and any subset of days is still
a valid history.

MSPs differ the way real ones do (:func:`msp_profile`): roster size, who holds which skill
(a rare skill held by one specialist who also knows a common one), shifts, number of sites,
ticket mix (Dirichlet over skills), load and SLA contracts.

Roster string
-------------
Technicians are separated by ``;``. Each is ``skills@start-end@site``: the skills joined by
``+``, the shift's start and end hour, and the home site (an integer), e.g.
``"network+server@8-16@0; security+cloud@10-18@1"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from meshfl.config.errors import DataSchemaError
from meshfl.config.validation import Count, Positive, Seed, Skew, check, checked
from meshfl.data.schema import Column, Schema

__all__ = [
    "DISPATCH_SCHEMA",
    "DISPATCH_SKILLS",
    "MSPProfile",
    "Technician",
    "dispatch_history",
    "dispatch_partitions",
    "format_roster",
    "msp_profile",
    "parse_roster",
]

DISPATCH_SKILLS: tuple[str, ...] = ("network", "server", "desktop", "cloud", "security")
"""Skills of the synthetic MSPs; ``security`` is the rare specialist skill."""

DISPATCH_SCHEMA = Schema(
    "resource_allocation data",
    (
        Column("episode", "text", description="Dispatch day (or shift) the ticket belongs to."),
        Column("arrival_hour", "number", description="Hours from the day's start to arrival."),
        Column("skill", "category", description="Skill the ticket needs."),
        Column("priority", "integer", description="1 (most urgent) to 4."),
        Column("sla_hours", "number", description="Hours from arrival to the SLA deadline."),
        Column("effort_hours", "number", description="Hours of work by a skilled technician."),
        Column("site", "integer", description="Site of the ticket (travel between sites)."),
        Column("roster", "text", description="The day's technicians, see format_roster."),
    ),
)

_BASE_SLA = {1: 1.5, 2: 3.0, 3: 6.0, 4: 12.0}
_TECH = re.compile(
    r"^\s*(?P<skills>[^@;]+?)\s*@\s*(?P<start>\d+(?:\.\d+)?)\s*-\s*(?P<end>\d+(?:\.\d+)?)"
    r"\s*@\s*(?P<site>\d+)\s*$"
)


@dataclass(frozen=True)
class Technician:
    """One technician of a roster: skills, shift (hours of the day) and home site."""

    skills: tuple[str, ...]
    shift_start: float
    shift_end: float
    site: int


def format_roster(techs: Sequence[Technician]) -> str:
    """The compact roster string of ``techs`` (see the module docstring).

    Examples
    --------
    >>> format_roster([Technician(("network", "server"), 8, 16, 0)])
    'network+server@8-16@0'
    """
    return "; ".join(
        f"{'+'.join(t.skills)}@{t.shift_start:g}-{t.shift_end:g}@{t.site}" for t in techs
    )


def parse_roster(text: str) -> tuple[Technician, ...]:
    """Technicians of a roster string written by :func:`format_roster`.

    Raises
    ------
    DataSchemaError
        If the string is not ``skills@start-end@site`` entries separated by ``;``, or a
        shift does not end after it starts.

    Examples
    --------
    >>> parse_roster("network@8-16@0; security+cloud@10-18@1")[1].skills
    ('security', 'cloud')
    """
    techs = []
    for part in str(text).split(";"):
        if not part.strip():
            continue
        match = _TECH.match(part)
        if match is None:
            raise DataSchemaError(
                "Column 'roster' of the resource_allocation data must list technicians as "
                "'skills@start-end@site' separated by ';' (e.g. 'network+server@8-16@0; "
                f"security@10-18@1'). Got {part.strip()!r} in {str(text)[:80]!r}."
            )
        start, end = float(match["start"]), float(match["end"])
        if not end > start:
            raise DataSchemaError(
                f"Every shift in column 'roster' must end after it starts. Got {part.strip()!r}."
            )
        skills = tuple(s.strip() for s in match["skills"].split("+") if s.strip())
        techs.append(Technician(skills, start, end, int(match["site"])))
    if not techs:
        raise DataSchemaError(
            "Column 'roster' of the resource_allocation data must name at least one "
            f"technician. Got {str(text)!r}."
        )
    return tuple(techs)


@dataclass(frozen=True)
class MSPProfile:
    """How one synthetic MSP works: its roster and its ticket mix."""

    roster: tuple[Technician, ...]
    sites: int
    skill_mix: np.ndarray  # probability of each of DISPATCH_SKILLS
    priority_mix: np.ndarray  # probability of priorities 1..4
    sla_factor: float
    tickets_per_day: int


def msp_profile(rng: np.random.Generator, *, alpha: float = 0.5) -> MSPProfile:
    """Draw one MSP: roster, sites, ticket mix (``Dirichlet(alpha)`` over skills) and load."""
    n_skills = len(DISPATCH_SKILLS)
    common = n_skills - 1  # the last skill (security) is rare
    mix = rng.dirichlet(np.full(common, max(alpha, 0.05)) + 0.1)
    rare_share = rng.uniform(0.04, 0.12)
    skill_mix = np.append(mix * (1 - rare_share), rare_share)
    n_techs = int(rng.integers(3, 9))
    sites = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.25, 0.25, 0.25]))
    techs = []
    for i in range(n_techs):
        if i == 0:  # the specialist: the rare skill and one common one
            skills = [DISPATCH_SKILLS[-1], DISPATCH_SKILLS[int(rng.choice(common, p=mix))]]
        else:
            k = int(rng.integers(1, 4))
            picks = rng.choice(
                common, size=min(k, common), replace=False, p=mix * 0.7 + 0.3 / common
            )
            skills = [DISPATCH_SKILLS[int(j)] for j in picks]
        start = float(rng.choice([6.0, 7.0, 8.0, 9.0, 10.0, 11.0]))
        techs.append(Technician(tuple(skills), start, start + 8.0, int(rng.integers(sites))))
    priority_mix = rng.dirichlet(np.array([1.0, 2.5, 4.0, 2.5]) * 4)
    utilisation = rng.uniform(0.5, 1.1)
    tickets_per_day = max(4, round(utilisation * n_techs * 8.0 / 1.4))
    return MSPProfile(
        roster=tuple(techs),
        sites=sites,
        skill_mix=skill_mix,
        priority_mix=priority_mix,
        sla_factor=float(rng.uniform(0.6, 1.4)),
        tickets_per_day=tickets_per_day,
    )


def _day(
    profile: MSPProfile, n: int, rng: np.random.Generator, episode: str, roster: str
) -> pd.DataFrame:
    skill = rng.choice(len(DISPATCH_SKILLS), size=n, p=profile.skill_mix)
    priority = rng.choice(4, size=n, p=profile.priority_mix) + 1
    effort = rng.lognormal(np.log(0.9), 0.5, size=n) * np.where(
        skill == len(DISPATCH_SKILLS) - 1, 1.6, 1
    )
    sla = np.array([_BASE_SLA[int(p)] for p in priority]) * profile.sla_factor
    return pd.DataFrame(
        {
            "episode": episode,
            "arrival_hour": np.round(np.sort(rng.uniform(6.0, 17.0, size=n)), 3),
            "skill": np.asarray(DISPATCH_SKILLS)[skill],
            "priority": priority.astype(np.int64),
            "sla_hours": np.round(sla, 3),
            "effort_hours": np.round(np.clip(effort, 0.1, 8.0), 3),
            "site": rng.integers(profile.sites, size=n).astype(np.int64),
            "roster": roster,
        }
    )


def dispatch_history(
    n: int,
    *,
    seed: int | np.random.SeedSequence,
    profile: MSPProfile | None = None,
    prefix: str = "d",
) -> pd.DataFrame:
    """``n`` tickets of one MSP, day after day (the last day may be partial).

    Parameters
    ----------
    n : int
        Tickets.
    seed : int or numpy.random.SeedSequence
        Seeds the MSP's profile (unless given) and its tickets.
    profile : MSPProfile, optional
        The MSP; default: drawn with :func:`msp_profile`.
    prefix : str
        Start of the episode ids (``"<prefix>0000"``, ...), to keep MSPs' days apart.
    """
    n = check(n, Count, "n", where="dispatch_history")
    rng = np.random.default_rng(seed)
    profile = profile if profile is not None else msp_profile(rng)
    roster = format_roster(profile.roster)
    days, left, day = [], n, 0
    while left > 0:
        count = min(left, int(rng.poisson(profile.tickets_per_day)) or 1)
        days.append(_day(profile, count, rng, f"{prefix}{day:04d}", roster))
        left -= count
        day += 1
    return pd.concat(days, ignore_index=True)


@checked
def dispatch_partitions(
    num_msps: Count,
    *,
    samples_per_msp: Count,
    seed: Seed,
    alpha: Positive = 0.5,
    size_skew: Skew = 0.5,
) -> list[pd.DataFrame]:
    """Histories of ``num_msps`` different MSPs, sizes drawn log-normal (``size_skew``)."""
    root = np.random.SeedSequence([seed, 0xD15])
    children = root.spawn(num_msps + 1)
    raw = np.exp(size_skew * np.random.default_rng(children[0]).standard_normal(num_msps))
    sizes = np.maximum(1, np.round(raw / raw.sum() * num_msps * samples_per_msp)).astype(int)
    out = []
    for i, (child, size) in enumerate(zip(children[1:], sizes, strict=True)):
        rng = np.random.default_rng(child)
        profile = msp_profile(rng, alpha=alpha)
        # at least two days, so that every MSP can hold a later day out
        size = max(int(size), math.ceil(2.2 * profile.tickets_per_day))
        out.append(
            dispatch_history(size, seed=child.spawn(1)[0], profile=profile, prefix=f"m{i}-d")
        )
    return out
