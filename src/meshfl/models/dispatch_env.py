"""A technician dispatch environment (pure numpy), and the greedy and random dispatchers.

One episode is one MSP's day: tickets arrive in order, and each is assigned on arrival to one
technician of the day's roster, who works their queue first come, first served. Assigning
ticket ``t`` to technician ``m`` fixes its schedule at once:

* work starts at ``max(arrival, m free, m's shift start)``;
* it lasts the travel (``travel_hours`` when the ticket is at another site than where ``m``
  last was) plus the effort, times ``unskilled_factor`` when ``m`` lacks the skill;
* the SLA is hit when it is done by ``arrival + sla_hours``;
* hours past the end of ``m``'s shift are overtime, paid ``overtime_rate`` times.

So the environment is deterministic given the actions, and a choice matters beyond its own
ticket only through the technician's queue and position. What a dispatcher can learn beyond
"least-loaded skilled technician" (:func:`greedy_choice`): keep the one specialist of a rare
skill free for that skill, weigh travel and effort, not just who is free first, and let
urgent tickets jump to the technician who finishes them first.

Many episodes (and several rollouts of each) run side by side: an :class:`EpisodeBatch` pads
them to the same number of tickets and technicians, and :func:`run` steps all of them at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np

__all__ = [
    "FEATURES",
    "EnvParams",
    "Episode",
    "EpisodeBatch",
    "Observation",
    "Outcome",
    "earliest_completion_choice",
    "greedy_choice",
    "random_choice",
    "run",
]

FEATURES: tuple[str, ...] = (
    "skilled",
    "wait",
    "effort",
    "travel",
    "time_to_sla",
    "shift_left",
    "generality",
    "reserve",
    "urgency",
    "load",
)
"""Features of one (ticket, technician) pair, in the order :class:`Observation` holds them."""


@dataclass(frozen=True)
class EnvParams:
    """Physics of the dispatch environment (the same for every MSP of a mesh)."""

    travel_hours: float = 0.75
    unskilled_factor: float = 2.5
    overtime_rate: float = 1.5


@dataclass(frozen=True)
class _Tickets:
    """The per-ticket arrays of an :class:`Episode` and of an :class:`EpisodeBatch`."""

    arrival: np.ndarray
    skill: np.ndarray
    priority: np.ndarray
    sla: np.ndarray
    effort: np.ndarray
    site: np.ndarray


_TICKET_FIELDS = tuple(f.name for f in fields(_Tickets))
"""Names of the per-ticket arrays, in their order."""


@dataclass(frozen=True)
class Episode(_Tickets):
    """One day of one MSP: its tickets (arrival order) and its technicians.

    Parameters
    ----------
    arrival, sla, effort : numpy.ndarray
        Per ticket: arrival hour, hours to the SLA deadline, hours of skilled work.
    skill, priority, site : numpy.ndarray
        Per ticket: skill index, priority 1 (urgent) to 4, site.
    tech_skills : numpy.ndarray
        ``(technicians, skills)`` booleans.
    shift_start, shift_end, tech_site : numpy.ndarray
        Per technician.
    """

    tech_skills: np.ndarray
    shift_start: np.ndarray
    shift_end: np.ndarray
    tech_site: np.ndarray

    def __post_init__(self) -> None:
        order = np.argsort(self.arrival, kind="stable")
        for name in _TICKET_FIELDS:
            object.__setattr__(self, name, np.asarray(getattr(self, name))[order])

    @property
    def tickets(self) -> int:
        """Number of tickets."""
        return len(self.arrival)

    @property
    def technicians(self) -> int:
        """Number of technicians."""
        return len(self.shift_start)


@dataclass(frozen=True)
class EpisodeBatch(_Tickets):
    """Episodes padded to common sizes, ``E`` rows (an episode may fill several rows).

    Ticket arrays are ``(E, T)`` with ``ticket_mask``; technician arrays ``(E, M)`` with
    ``tech_mask``; ``tech_skills`` is ``(E, M, S)``.
    """

    ticket_mask: np.ndarray
    tech_skills: np.ndarray
    shift_start: np.ndarray
    shift_end: np.ndarray
    tech_site: np.ndarray
    tech_mask: np.ndarray

    @classmethod
    def stack(cls, episodes: Sequence[Episode], *, repeats: int = 1) -> EpisodeBatch:
        """Pad ``episodes``; each fills ``repeats`` consecutive rows (for several rollouts)."""
        eps = [e for e in episodes for _ in range(repeats)]
        n, t_max = len(eps), max((e.tickets for e in eps), default=0)
        m_max = max((e.technicians for e in eps), default=0)
        s = eps[0].tech_skills.shape[1] if eps else 0

        def tickets(name: str, dtype: type, fill: float) -> np.ndarray:
            out: np.ndarray = np.full((n, t_max), fill, dtype=dtype)
            for i, e in enumerate(eps):
                out[i, : e.tickets] = getattr(e, name)
            return out

        def techs(name: str, dtype: type, fill: float) -> np.ndarray:
            out: np.ndarray = np.full((n, m_max), fill, dtype=dtype)
            for i, e in enumerate(eps):
                out[i, : e.technicians] = getattr(e, name)
            return out

        skills = np.zeros((n, m_max, s), dtype=bool)
        ticket_mask = np.zeros((n, t_max), dtype=bool)
        tech_mask = np.zeros((n, m_max), dtype=bool)
        for i, e in enumerate(eps):
            skills[i, : e.technicians] = e.tech_skills
            ticket_mask[i, : e.tickets] = True
            tech_mask[i, : e.technicians] = True
        return cls(
            arrival=tickets("arrival", np.float64, 0.0),
            skill=tickets("skill", np.int64, 0),
            priority=tickets("priority", np.int64, 4),
            sla=tickets("sla", np.float64, 1.0),
            effort=tickets("effort", np.float64, 0.0),
            site=tickets("site", np.int64, 0),
            ticket_mask=ticket_mask,
            tech_skills=skills,
            shift_start=techs("shift_start", np.float64, 0.0),
            shift_end=techs("shift_end", np.float64, 1.0),
            tech_site=techs("tech_site", np.int64, 0),
            tech_mask=tech_mask,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(rows, tickets, technicians)``."""
        return (self.arrival.shape[0], self.arrival.shape[1], self.shift_start.shape[1])


@dataclass(frozen=True)
class Observation:
    """What a dispatcher sees when ticket ``t`` of every row arrives.

    ``features`` is ``(E, M, len(FEATURES))``; ``valid`` marks the technicians that may be
    chosen (``(E, M)``; all False in rows whose ticket ``t`` is padding). ``skilled``,
    ``start`` and ``completion`` are the raw ``(E, M)`` quantities the features come from.
    """

    t: int
    features: np.ndarray
    valid: np.ndarray
    skilled: np.ndarray
    start: np.ndarray
    completion: np.ndarray


Chooser = Callable[[Observation], np.ndarray]
"""A dispatcher: an observation in, one technician index per row out."""


@dataclass(frozen=True)
class Outcome:
    """Per ticket ``(E, T)``: action, SLA hit, paid hours, overtime; and what was observed.

    ``features`` (``(E, T, M, F)``) and ``valid`` (``(E, T, M)``) are kept only when
    :func:`run` is asked to (``record=True``), for policy-gradient training.
    """

    actions: np.ndarray
    hit: np.ndarray
    hours: np.ndarray
    overtime: np.ndarray
    ticket_mask: np.ndarray
    features: np.ndarray | None = None
    valid: np.ndarray | None = None

    def rewards(self, *, hours_cost: float) -> np.ndarray:
        """Per-ticket reward: 1 for a hit SLA, minus ``hours_cost`` per paid hour (0 on padding)."""
        r = self.hit.astype(np.float64) - hours_cost * self.hours
        return np.where(self.ticket_mask, r, 0.0)

    def totals(self) -> dict[str, float]:
        """Tickets, SLA hits, paid technician hours and overtime hours over the whole batch."""
        m = self.ticket_mask
        return {
            "tickets": float(m.sum()),
            "hits": float(self.hit[m].sum()),
            "hours": float(self.hours[m].sum()),
            "overtime": float(self.overtime[m].sum()),
        }


def run(
    batch: EpisodeBatch, choose: Chooser, params: EnvParams, *, record: bool = False
) -> Outcome:
    """Dispatch every ticket of every row of ``batch`` with ``choose``.

    Parameters
    ----------
    batch : EpisodeBatch
        The episodes.
    choose : callable
        ``choose(observation) -> (E,)`` technician indices; only rows whose ticket is real
        are read, and a chosen technician must be valid there.
    params : EnvParams
        Travel time, unskilled slowdown and overtime rate.
    record : bool
        Keep every observation's features (for training).

    Returns
    -------
    Outcome
    """
    e_count, t_count, m_count = batch.shape
    rows = np.arange(e_count)
    free = batch.shift_start.copy()
    where = batch.tech_site.copy()
    worked = np.zeros((e_count, m_count))
    n_skills = max(batch.tech_skills.shape[2], 1)
    holders = batch.tech_skills.sum(1)  # (E, S) technicians holding each skill
    rarity = np.where(holders > 0, 1.0 / np.maximum(holders, 1), 0.0)  # (E, S)
    generality = batch.tech_skills.sum(2) / n_skills  # (E, M)
    actions = np.zeros((e_count, t_count), dtype=np.int64)
    hit = np.zeros((e_count, t_count), dtype=bool)
    hours = np.zeros((e_count, t_count))
    overtime = np.zeros((e_count, t_count))
    feats = (
        np.zeros((e_count, t_count, m_count, len(FEATURES)), dtype=np.float32) if record else None
    )
    valids = np.zeros((e_count, t_count, m_count), dtype=bool) if record else None
    for t in range(t_count):
        real = batch.ticket_mask[:, t]
        valid = batch.tech_mask & real[:, None]
        arrival = batch.arrival[:, t, None]
        skill = batch.skill[:, t]
        skilled = batch.tech_skills[rows, :, skill]  # (E, M)
        start = np.maximum(arrival, free)
        travel = np.where(batch.site[:, t, None] != where, params.travel_hours, 0.0)
        duration = travel + batch.effort[:, t, None] * np.where(
            skilled, 1.0, params.unskilled_factor
        )
        completion = start + duration
        deadline = arrival + batch.sla[:, t, None]
        extra = np.maximum(0.0, completion - np.maximum(batch.shift_end, start))
        paid = duration + (params.overtime_rate - 1.0) * extra
        features = _features(
            batch, t, rows, skilled, start, travel, arrival, generality, rarity, worked
        )
        obs = Observation(t, features.astype(np.float32), valid, skilled, start, completion)
        act = np.asarray(choose(obs), dtype=np.int64)
        act = np.where(real, act, 0)
        if ((act < 0) | (act >= m_count)).any() or not valid[rows[real], act[real]].all():
            raise ValueError(f"a dispatcher chose a technician that is not on the roster (t={t})")
        if record:
            assert feats is not None and valids is not None
            feats[:, t] = obs.features
            valids[:, t] = valid
        actions[:, t] = act
        hit[:, t] = (completion <= deadline)[rows, act] & real
        hours[:, t] = np.where(real, paid[rows, act], 0.0)
        overtime[:, t] = np.where(real, extra[rows, act], 0.0)
        upd = rows[real]
        free[upd, act[real]] = completion[upd, act[real]]
        where[upd, act[real]] = batch.site[upd, t]
        worked[upd, act[real]] += duration[upd, act[real]]
    return Outcome(actions, hit, hours, overtime, batch.ticket_mask, feats, valids)


def _features(
    batch: EpisodeBatch,
    t: int,
    rows: np.ndarray,
    skilled: np.ndarray,
    start: np.ndarray,
    travel: np.ndarray,
    arrival: np.ndarray,
    generality: np.ndarray,
    rarity: np.ndarray,
    worked: np.ndarray,
) -> np.ndarray:
    """``(E, M, len(FEATURES))``: what each technician looks like for ticket ``t``."""
    skill = batch.skill[:, t]
    # the rarest *other* skill a technician holds: using them costs that skill's cover
    others = batch.tech_skills.copy()
    others[rows, :, skill] = False
    reserve = (others * rarity[:, None, :]).max(2)
    mean_worked = (worked * batch.tech_mask).sum(1, keepdims=True) / np.maximum(
        batch.tech_mask.sum(1, keepdims=True), 1
    )
    return np.stack(
        [
            skilled.astype(np.float64),
            (start - arrival) / 4.0,
            np.broadcast_to(batch.effort[:, t, None] / 4.0, start.shape),
            (travel > 0).astype(np.float64),
            np.broadcast_to(batch.sla[:, t, None] / 8.0, start.shape),
            np.clip((batch.shift_end - start) / 8.0, -1.0, 1.5),
            generality,
            reserve,
            np.broadcast_to((4 - batch.priority[:, t, None]) / 3.0, start.shape),
            worked / (mean_worked + 1.0),
        ],
        axis=-1,
    )


def greedy_choice(obs: Observation) -> np.ndarray:
    """The least-loaded skilled technician: the one free first among those with the skill.

    With no skilled technician on the roster, the one free first of all. Ties go to the
    first on the roster. This is the usual dispatch-desk rule; it ignores travel, effort,
    priority and whom the rest of the day will need.
    """
    any_skilled = (obs.skilled & obs.valid).any(1, keepdims=True)
    pool = obs.valid & (obs.skilled | ~any_skilled)
    return np.where(pool, obs.start, np.inf).argmin(1)


def earliest_completion_choice(obs: Observation) -> np.ndarray:
    """The technician who would finish the ticket first, skilled or not.

    A stronger rule than :func:`greedy_choice`: it counts travel, effort and the unskilled
    slowdown, not only who is free first. It still ignores priority, cost and whom the rest
    of the day will need.
    """
    return np.where(obs.valid, obs.completion, np.inf).argmin(1)


def random_choice(rng: np.random.Generator) -> Chooser:
    """A dispatcher that picks a technician uniformly at random from the roster."""

    def choose(obs: Observation) -> np.ndarray:
        u = rng.random(obs.valid.shape)
        return np.where(obs.valid, u, -1.0).argmax(1)

    return choose
