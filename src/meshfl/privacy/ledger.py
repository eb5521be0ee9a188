"""``PrivacyLedger``: what an MSP has spent, per agent, on disk and surviving restarts.

One append-only JSON-lines file per agent, ``<directory>/ledger-<agent>.jsonl``; each line
records one :class:`~meshfl.privacy.events.PrivacyEvent` under a key (for example
``"<run id>:<round>:<session>"``) and is chained to the line before it::

    {"key": "run-1:3:9f..", "event": {...}, "agent": "threat_intel", "time": "2025-...+00:00",
     "prev": "<hash of the line before>", "hash": "<sha256 of this line, prev included>"}

Beside it, the *high-water mark* ``ledger-<agent>.hwm`` (replaced atomically: temporary
file, fsync, rename) holds the number of lines, the hash at the head of the chain and ε spent
so far. ``ledger-<agent>.lock`` is the lock file of :meth:`PrivacyLedger.hold`.

The rules that keep ε from ever being under-counted:

* a record is flushed and fsynced (and, when it creates the file, so is the directory), then
  the mark is replaced, before :meth:`PrivacyLedger.record` returns; callers record *before*
  the update leaves the MSP (write-ahead). A crash can only over-count;
* a key is recorded at most once, so a replayed message is never counted twice;
* reading verifies the chain and the mark. A ledger that is missing while its mark exists,
  that holds fewer lines than its mark, whose chain breaks, or whose lines differ from what
  the mark recorded, raises :class:`LedgerCorruptError` naming the file and saying how to
  recover. So does any line that does not parse. A ledger is never reset silently: that would
  let ε exceed the budget. The way to go on after a loss is :meth:`PrivacyLedger.acknowledge_loss`,
  which counts as spent the most ε that anything still shows — never a fresh budget;
* a last line without its newline is a write that a crash cut short. Its update may have
  left, so the safe reading is "spent": it is counted if its key and event can be read (and
  completed by the next record), and otherwise refused;
* :meth:`PrivacyLedger.epsilon` never reports less than the ε the mark recorded;
* :meth:`PrivacyLedger.hold` is a lock across threads and processes (``fcntl``), held by
  :func:`~meshfl.federation.msp_privacy.train_round` from planning a round to recording it:
  two runs on one state directory take turns, and the one that waited re-reads the ledger.

Ledgers written by the previous version (lines without ``prev``/``hash``) still load; the chain
starts after their lines and covers them (the first chained line carries a hash of them).
The chain and the mark catch accidents and naive edits, not an attacker who can rewrite
both files: the coordinator's mirror (:meth:`PrivacyLedger.check_against`) is the check that
lives outside the MSP.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from meshfl.config.errors import ConfigError, MeshflError
from meshfl.privacy.accountant import Accountant, epsilon_spent
from meshfl.privacy.events import PrivacyEvent
from meshfl.privacy.report import reported_epsilon

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the in-process lock still applies
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_TIMEOUT_S",
    "HighWaterMark",
    "LedgerBehindError",
    "LedgerBusyError",
    "LedgerCorruptError",
    "PrivacyLedger",
]

logger = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 600.0
"""How long :meth:`PrivacyLedger.hold` waits for another run's round by default (seconds)."""

_AGENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PREFIX, _SUFFIX, _MARK, _LOCK = "ledger-", ".jsonl", ".hwm", ".lock"
_MECHANISMS = ("none", "dp-sgd", "gaussian")
_UNITS = ("sample", "msp")
_ACCOUNTANTS = ("prv", "rdp")
_GENESIS = "0" * 64
_REL_TOLERANCE = 1e-6  # check_against: floating-point noise, not privacy


class LedgerCorruptError(MeshflError):
    """A privacy ledger (or its high-water mark) cannot be trusted to hold all that was spent.

    The message names the file, says what is wrong and how to recover. meshfl never repairs
    or resets a ledger on its own: forgetting spent privacy would let ε exceed the budget.
    """


class LedgerBehindError(LedgerCorruptError):
    """The ledger shows less ε than the coordinator's mirror recorded for this MSP."""


class LedgerBusyError(MeshflError):
    """Another run held the ledger's lock for longer than this run would wait.

    Attributes
    ----------
    waited : float
        Seconds this run waited.
    """

    def __init__(self, message: str, *, waited: float) -> None:
        super().__init__(message)
        self.waited = waited


@dataclass(frozen=True)
class HighWaterMark:
    """What the ledger held after its last record, kept in a file of its own.

    Attributes
    ----------
    lines : int
        Lines of the ledger file.
    head : str
        Hash at the head of the chain after those lines.
    epsilons : tuple of (accountant, delta, epsilon)
        ε spent after those lines, at the (accountant, δ) pairs that recorded it.
    """

    lines: int
    head: str
    epsilons: tuple[tuple[str, float, float], ...] = ()

    def epsilon(self, accountant: str, delta: float) -> float | None:
        """ε recorded for exactly this accountant and δ, or ``None``."""
        found = [e for a, d, e in self.epsilons if a == accountant and d == delta]
        return max(found) if found else None

    def floor(self, delta: float, accountant: str | None = None) -> float:
        """The most ε this mark proves was spent at ``delta`` (0.0 when it proves nothing).

        ε at a δ no larger than a recorded one is at least the recorded ε. With an
        ``accountant``, only its records count (each accountant is a different upper bound).
        """
        found = [
            e for a, d, e in self.epsilons if d >= delta and (accountant is None or a == accountant)
        ]
        return max(found, default=0.0)


@dataclass
class _Tail:
    """Bytes after the last newline: a write that a crash cut short."""

    size: int
    key: str | None = None
    event: PrivacyEvent | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class _State:
    """One read of a ledger, verified."""

    records: list[tuple[str, PrivacyEvent]] = field(default_factory=list)
    lost_keys: set[str] = field(default_factory=set)
    lines: int = 0
    head: str = _GENESIS
    heads: list[str] = field(default_factory=lambda: [_GENESIS])
    chained: int = 0
    valid_bytes: int = 0
    needs_newline: bool = False
    tail: _Tail | None = None
    mark: HighWaterMark | None = None
    exists: bool = False

    @property
    def keys(self) -> set[str]:
        return {key for key, _ in self.records} | self.lost_keys


# One reentrant lock per lock file, shared by every PrivacyLedger of the process.
class _Hold:
    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.depth = 0
        self.handle: IO[bytes] | None = None


_HOLDS: dict[Path, _Hold] = {}
_HOLDS_GUARD = threading.Lock()


class PrivacyLedger:
    """An MSP's persistent record of the privacy it spent, one file per agent.

    Parameters
    ----------
    directory : str or os.PathLike
        The MSP's ledger directory (created if missing). A new instance on the same
        directory, for example after a restart, sees the same events.
    lock_timeout : float
        Seconds :meth:`hold` (and so :meth:`record`) waits for another run that holds the
        ledger, before raising :class:`LedgerBusyError` (default :data:`LOCK_TIMEOUT_S`;
        ``math.inf`` waits for ever).

    Examples
    --------
    >>> import tempfile
    >>> from meshfl.privacy.events import PrivacyEvent
    >>> ledger = PrivacyLedger(tempfile.mkdtemp())
    >>> event = PrivacyEvent("dp-sgd", noise_multiplier=1.1, sample_rate=0.01, steps=100)
    >>> ledger.record("threat_intel", "run-1:1", event)
    True
    >>> ledger.record("threat_intel", "run-1:1", event)  # a replay is not counted twice
    False
    >>> ledger.events("threat_intel") == [event]
    True
    >>> 0 < ledger.epsilon("threat_intel", delta=1e-5) < 1
    True
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, lock_timeout: float = LOCK_TIMEOUT_S
    ) -> None:
        if not isinstance(directory, (str, os.PathLike)):
            raise ConfigError(
                "The 'directory' parameter of PrivacyLedger must be a path (str or "
                f"os.PathLike). Got {directory!r} instead."
            )
        if (
            not isinstance(lock_timeout, (int, float))
            or isinstance(lock_timeout, bool)
            or not lock_timeout >= 0
        ):
            raise ConfigError(
                "The 'lock_timeout' parameter of PrivacyLedger must be a number of seconds "
                f">= 0 (math.inf to wait for ever). Got {lock_timeout!r} instead."
            )
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._lock_timeout = float(lock_timeout)

    @property
    def directory(self) -> Path:
        """The ledger directory."""
        return self._directory

    def __repr__(self) -> str:
        return f"PrivacyLedger({str(self._directory)!r})"

    def path(self, agent: str) -> Path:
        """The file that holds ``agent``'s events."""
        return self._directory / f"{_PREFIX}{_check_agent(agent)}{_SUFFIX}"

    def mark_path(self, agent: str) -> Path:
        """The file that holds ``agent``'s high-water mark."""
        return self._directory / f"{_PREFIX}{_check_agent(agent)}{_MARK}"

    def lock_path(self, agent: str) -> Path:
        """The lock file of :meth:`hold` (never delete it while a run may hold it)."""
        return self._directory / f"{_PREFIX}{_check_agent(agent)}{_LOCK}"

    # -- the lock --------------------------------------------------------------------------

    @contextlib.contextmanager
    def hold(self, agent: str, *, timeout: float | None = None) -> Iterator[None]:
        """Hold ``agent``'s ledger: no other thread or process records meanwhile.

        :func:`~meshfl.federation.msp_privacy.train_round` holds it from planning a round to
        recording it, so that two runs on one state directory plan one after the other,
        each from what the other recorded. Reentrant within a thread; :meth:`record` and
        :meth:`acknowledge_loss` take it too. Reading does not wait for it.

        Raises
        ------
        LedgerBusyError
            When another run holds it for longer than ``timeout`` (default: the ledger's
            ``lock_timeout``) seconds.
        """
        path = self.lock_path(agent)
        wait = self._lock_timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + wait
        with _HOLDS_GUARD:
            hold = _HOLDS.setdefault(path.resolve(), _Hold())
        acquired = (
            hold.rlock.acquire() if math.isinf(wait) else hold.rlock.acquire(timeout=max(wait, 0))
        )
        if not acquired:
            raise self._busy(agent, wait)
        try:
            if hold.depth == 0:
                # Like a restart, a directory removed under a running MSP is made again: only
                # the coordinator's mirror (check_against) can tell what it held.
                self._directory.mkdir(parents=True, exist_ok=True)
                hold.handle = _flock_until(path, deadline)
                if hold.handle is None:
                    raise self._busy(agent, wait)
            hold.depth += 1
            try:
                yield
            finally:
                hold.depth -= 1
                if hold.depth == 0 and hold.handle is not None:
                    _unlock(hold.handle)
                    hold.handle = None
        finally:
            hold.rlock.release()

    def _busy(self, agent: str, waited: float) -> LedgerBusyError:
        return LedgerBusyError(
            f"Privacy ledger {self.path(agent)} of agent {agent!r} is held by another run on "
            f"this MSP's state directory, and this run waited {waited:g} s for it. Runs that "
            "share a state directory take turns, one round (planning, training, recording) "
            "at a time, so this one gives up rather than plan from a ledger that is about to "
            "change. Retry when the other run's round is recorded, or wait longer with "
            "PrivacyLedger(..., lock_timeout=...).",
            waited=waited,
        )

    # -- writing -----------------------------------------------------------------------------

    def record(
        self,
        agent: str,
        key: str,
        event: PrivacyEvent,
        *,
        delta: float | None = None,
        accountant: Accountant = "prv",
    ) -> bool:
        """Append ``event`` under ``key``, durably; ``False`` (nothing written) if ``key`` is there.

        Call it before the update that ``event`` describes leaves the MSP.

        Parameters
        ----------
        agent : str
            The agent's name (an identifier, e.g. ``"threat_intel"``).
        key : str
            What makes the event unique, e.g. ``"<run id>:<round>:<session>"``.
        event : PrivacyEvent
            The mechanism applied.
        delta, accountant : optional
            With ``delta``, ε spent after this record (at ``delta``, by ``accountant``) is
            kept in the high-water mark: no report will show less, even if the file is lost.

        Returns
        -------
        bool
            ``True`` if the event was recorded, ``False`` if ``key`` already was.

        Raises
        ------
        LedgerCorruptError
            When the ledger cannot be trusted (nothing is written).
        LedgerBusyError
            When another run holds the ledger for longer than ``lock_timeout``.
        """
        path = self.path(agent)
        if not isinstance(key, str) or not key:
            raise ConfigError(
                f"The 'key' parameter of PrivacyLedger.record must be a non-empty str. "
                f"Got {key!r} instead."
            )
        _check_event(event)
        if delta is not None:
            _check_accounting(delta, accountant, "PrivacyLedger.record")
        with self.hold(agent):
            state = self._read(agent)
            if key in state.keys:
                return False
            lines, head = self._write_record(path, agent, state, key, event)
            epsilons = _merge_epsilons(state.mark.epsilons if state.mark else ())
            if delta is not None:
                events = [e for _, e in state.records]
                spent = epsilon_spent([*events, event], delta=delta, accountant=accountant)
                if state.mark is not None:
                    spent = max(spent, state.mark.floor(delta, accountant))
                epsilons = _merge_epsilons((*epsilons, (accountant, float(delta), spent)))
            _write_mark(self.mark_path(agent), agent, HighWaterMark(lines, head, epsilons))
        return True

    def _write_record(
        self, path: Path, agent: str, state: _State, key: str, event: PrivacyEvent
    ) -> tuple[int, str]:
        """Write ``event``'s line (after completing a torn last record); new line count, head."""
        head, lines = state.head, state.lines
        repaired = b""
        if state.tail is not None:  # a torn record, counted as spent: complete it
            tail = state.tail
            assert tail.key is not None and tail.event is not None
            repaired, head = _line(
                agent,
                tail.key,
                tail.event,
                prev=head,
                stamp=str(tail.fields.get("time", "")) or None,
                recovered="a crash cut this record short; counted as spent",
            )
            lines += 1
        new, head = _line(agent, key, event, prev=head)
        lines += 1
        if state.tail is not None:
            data = _read_bytes(path)
            assert data is not None
            _replace(path, data[: state.valid_bytes] + repaired + new)
        else:
            self._append(path, new, newline_first=state.needs_newline)
        return lines, head

    def _append(self, path: Path, line: bytes, *, newline_first: bool) -> None:
        created = not path.exists()
        with open(path, "ab") as handle, _os_lock(handle, exclusive=True):
            handle.write((b"\n" if newline_first else b"") + line)
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            _fsync_directory(self._directory)

    def acknowledge_loss(
        self,
        agent: str,
        *,
        delta: float,
        accountant: Accountant = "prv",
        epsilon: float | None = None,
    ) -> float:
        """Accept that ``agent``'s ledger was lost or damaged, and go on counting it as spent.

        The recovery when :class:`LedgerCorruptError` (or :class:`LedgerBehindError`) was
        raised and no backup can be restored. It counts as spent the most ε that anything
        still shows: the high-water mark's ε at ``delta``, the ε of the lines still readable,
        and ``epsilon`` (for example the coordinator's mirror for this MSP). Never a fresh
        budget. The damaged file is kept as ``ledger-<agent>.jsonl.damaged-<UTC time>``; the
        new ledger starts with one line that records that ε as one Gaussian event (whose ε at
        ``delta`` is at least it, by both accountants) and the keys still readable, so that
        replays stay declined.

        Parameters
        ----------
        agent : str
            The agent's name.
        delta : float
            δ of the run's budget (``DPConfig.delta``).
        accountant : {"prv", "rdp"}
            The run's accountant, for the ε of the readable lines.
        epsilon : float, optional
            ε known to be spent from elsewhere. Required when the mark holds no ε at
            ``delta`` or the file ends with a record whose event cannot be read.

        Returns
        -------
        float
            ε that the ledger now shows at ``delta``.

        Raises
        ------
        MeshflError
            When the ledger is intact and nothing shows more ε than it does (nothing to
            acknowledge), or when nothing says what was spent (pass ``epsilon``).
        """
        path = self.path(agent)
        _check_accounting(delta, accountant, "PrivacyLedger.acknowledge_loss")
        _check_known_epsilon(epsilon)
        with self.hold(agent):
            state, records, lost_keys, mark = self._loss_evidence(agent, delta, accountant, epsilon)
            spent, loss_event = self._loss_spent(state, records, mark, delta, accountant, epsilon)
            shown, aside = self._write_loss(
                agent, records, lost_keys, spent, loss_event, delta, accountant
            )
        logger.warning(
            "%s: acknowledged a loss; ε=%.4g at δ=%g is counted as spent%s.",
            path,
            shown,
            delta,
            f" (the damaged file is kept as {aside.name})" if aside.exists() else "",
        )
        return shown

    def _loss_evidence(
        self, agent: str, delta: float, accountant: Accountant, epsilon: float | None
    ) -> tuple[_State | None, list[tuple[str, PrivacyEvent]], set[str], HighWaterMark | None]:
        """What still shows ``agent``'s spending: the intact state (or ``None``), the records
        and lost keys still readable, and the high-water mark.

        Raises :class:`MeshflError` when there is nothing to acknowledge, or nothing says what
        was spent.
        """
        path, mark_path = self.path(agent), self.mark_path(agent)
        try:
            state: _State | None = self._read(agent)
        except LedgerCorruptError:
            state = None
        if state is not None:
            current = self._epsilon_of(state, delta, accountant)
            if epsilon is None or epsilon <= current:
                raise MeshflError(
                    f"Privacy ledger {path} is intact and shows ε={current:.4g} at "
                    f"δ={delta:g}; there is nothing to acknowledge"
                    + (f" (epsilon={epsilon!r} is not more)." if epsilon is not None else ".")
                )
            return state, state.records, state.lost_keys, state.mark
        records, lost_keys, unreadable = _salvage(_read_bytes(path), agent)
        mark = _salvage_mark(_read_bytes(mark_path), agent)
        vouched = mark is not None and any(d >= delta for _, d, _ in mark.epsilons)
        if epsilon is None and (unreadable or not vouched):
            why = (
                "its last record cannot be read"
                if unreadable
                else "its high-water mark holds no ε at this δ"
            )
            raise MeshflError(
                f"Privacy ledger {path} was lost or damaged and {why}, so nothing says how "
                "much privacy was spent. Pass the ε known to be spent, e.g. "
                "acknowledge_loss(..., epsilon=<the coordinator's mirror for this MSP>) "
                "or epsilon=<the budget> to count the whole budget as spent."
            )
        return None, records, lost_keys, mark

    def _loss_spent(
        self,
        state: _State | None,
        records: list[tuple[str, PrivacyEvent]],
        mark: HighWaterMark | None,
        delta: float,
        accountant: Accountant,
        epsilon: float | None,
    ) -> tuple[float, PrivacyEvent]:
        """The most ε anything still shows, and one Gaussian event that spends at least it."""
        events = [e for _, e in records]
        known = [epsilon_spent(events, delta=delta, accountant=accountant)]
        if mark is not None:
            known.append(mark.floor(delta))
        if state is not None:
            known.append(self._epsilon_of(state, delta, accountant))
        if epsilon is not None:
            known.append(float(epsilon))
        spent = max(known)
        units = {e.unit for e in events if e.is_private}
        loss_event = _equivalent_gaussian(
            spent, delta, unit=units.pop() if len(units) == 1 else "sample"
        )
        return spent, loss_event

    def _write_loss(
        self,
        agent: str,
        records: list[tuple[str, PrivacyEvent]],
        lost_keys: set[str],
        spent: float,
        loss_event: PrivacyEvent,
        delta: float,
        accountant: Accountant,
    ) -> tuple[float, Path]:
        """Set the damaged file aside and start the ledger with the loss; ε shown, aside path."""
        path, mark_path = self.path(agent), self.mark_path(agent)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        aside = path.with_name(f"{path.name}.damaged-{stamp}")
        line, head = _line(
            agent,
            f"acknowledged-loss:{stamp}",
            loss_event,
            prev=_GENESIS,
            loss={
                "epsilon": spent,
                "delta": float(delta),
                "accountant": accountant,
                "damaged_file": aside.name if path.exists() else None,
                "keys": sorted({k for k, _ in records} | lost_keys),
            },
        )
        shown = max(epsilon_spent([loss_event], delta=delta, accountant=accountant), spent)
        # The mark first: a crash before the new file is in place leaves a ledger that is
        # still refused, and a second acknowledge_loss sees this ε.
        _write_mark(mark_path, agent, HighWaterMark(1, head, ((accountant, delta, shown),)))
        if path.exists():
            try:
                os.link(path, aside)
            except OSError:  # pragma: no cover - a file system without hard links
                aside.write_bytes(path.read_bytes())
        _replace(path, line)
        return shown, aside

    # -- reading -----------------------------------------------------------------------------

    def events(self, agent: str) -> list[PrivacyEvent]:
        """``agent``'s events, oldest first (empty if it never spent any)."""
        return [event for _, event in self._read(agent).records]

    def keys(self, agent: str) -> set[str]:
        """The keys under which ``agent``'s events were recorded."""
        return self._read(agent).keys

    def epsilon(self, agent: str, *, delta: float, accountant: Accountant = "prv") -> float:
        """ε that ``agent`` has spent at ``delta`` (see :func:`~meshfl.privacy.epsilon_spent`).

        Never less than the high-water mark recorded for this accountant at this δ (or a
        larger one).
        """
        return self._epsilon_of(self._read(agent), delta, accountant)

    def high_water_mark(self, agent: str) -> HighWaterMark | None:
        """``agent``'s high-water mark, or ``None`` before its first chained record."""
        data = _read_bytes(self.mark_path(agent))
        return None if data is None else self._parse_mark(data, agent)

    def check_against(
        self,
        agent: str,
        epsilon_mirror: float,
        *,
        delta: float,
        accountant: Accountant = "prv",
        budget: float | None = None,
    ) -> float:
        """ε the ledger shows; raises :class:`LedgerBehindError` if below ``epsilon_mirror``.

        For the coordinator's check: ``epsilon_mirror`` is the largest ε this MSP reported
        for ``agent`` (the coordinator's mirror of its ledger). A ledger that shows less lost
        events — deleted together with its mark, or restored from an older copy — and
        training on it would spend privacy again.

        Parameters
        ----------
        agent : str
            The agent's name.
        epsilon_mirror : float
            The largest ε the coordinator holds for this MSP and agent.
        delta, accountant
            The run's δ and accountant (``DPConfig.delta``, ``DPConfig.accountant``).
        budget : float, optional
            The run's ε budget, when the mirror holds ε as the MSPs report it: rounded up to
            a multiple of ``budget / REPORT_STEPS`` (:mod:`meshfl.privacy.report`). The
            ledger's ε is then rounded the same way before the comparison.

        Raises
        ------
        LedgerBehindError
            When the ledger shows less ε than ``epsilon_mirror`` (beyond rounding).
        LedgerCorruptError
            When the ledger cannot be trusted at all.
        """
        if (
            not isinstance(epsilon_mirror, (int, float))
            or isinstance(epsilon_mirror, bool)
            or not epsilon_mirror >= 0
        ):
            raise ConfigError(
                "The 'epsilon_mirror' parameter of PrivacyLedger.check_against must be a "
                f"number >= 0. Got {epsilon_mirror!r} instead."
            )
        current = self.epsilon(agent, delta=delta, accountant=accountant)
        shown = current if budget is None else reported_epsilon(current, budget)
        if shown < epsilon_mirror * (1 - _REL_TOLERANCE):
            reported = "" if budget is None else f" ({shown:.4g} as an MSP reports it)"
            raise LedgerBehindError(
                f"Privacy ledger {self.path(agent)} of agent {agent!r} shows ε={current:.4g} "
                f"at δ={delta:g}{reported}, less than the "
                f"ε={epsilon_mirror:.4g} that the coordinator's mirror recorded for this MSP: "
                "the ledger lost events (deleted together with "
                "its high-water mark, restored from an older backup, or copied from another "
                "MSP), and training on it would spend that privacy again. To recover, restore "
                "the MSP's state directory from its newest backup; or, if you accept the "
                f"loss, call PrivacyLedger({str(self._directory)!r}).acknowledge_loss("
                f"{agent!r}, delta={delta!r}, accountant={accountant!r}, "
                f"epsilon={float(epsilon_mirror)!r}), which counts the mirror's ε as spent."
            )
        return current

    def agents(self) -> list[str]:
        """The agents with a ledger file or a high-water mark in the directory, sorted."""
        names = {
            p.name[len(_PREFIX) : -len(suffix)]
            for suffix in (_SUFFIX, _MARK)
            for p in self._directory.glob(f"{_PREFIX}*{suffix}")
        }
        return sorted(name for name in names if _AGENT.fullmatch(name))

    def _epsilon_of(self, state: _State, delta: float, accountant: Accountant) -> float:
        spent = epsilon_spent([e for _, e in state.records], delta=delta, accountant=accountant)
        if state.mark is not None:
            spent = max(spent, state.mark.floor(delta, accountant))
        return spent

    def _read(self, agent: str) -> _State:
        """The verified state of ``agent``'s ledger; raises :class:`LedgerCorruptError`."""
        path, mark_path = self.path(agent), self.mark_path(agent)
        # The mark is written after the ledger: reading it first, then the ledger, then it
        # again (until it did not change) gives a ledger at least as long as the mark.
        before = _read_bytes(mark_path)
        for _ in range(20):
            data = _read_ledger(path)
            after = _read_bytes(mark_path)
            if after == before:
                break
            before = after
        mark = None if before is None else self._parse_mark(before, agent)
        if data is None:
            if mark is not None:
                raise self._corrupt(
                    agent,
                    path,
                    f"is missing, while its high-water mark {mark_path} says it held "
                    f"{mark.lines} line(s)",
                )
            return _State()
        state = self._parse(data, agent)
        state.mark, state.exists = mark, True
        if mark is None:
            if state.chained > 1:
                raise self._corrupt(
                    agent,
                    mark_path,
                    f"is missing, while the ledger {path} holds {state.chained} chained lines "
                    "(the mark is written with every record)",
                )
        elif state.lines < mark.lines:
            raise self._corrupt(
                agent,
                path,
                f"holds {state.lines} complete line(s), fewer than the {mark.lines} its "
                f"high-water mark {mark_path} recorded: lines were removed, cut short or an "
                "older copy was restored",
            )
        elif state.heads[mark.lines] != mark.head:
            raise self._corrupt(
                agent,
                path,
                f"differs in its first {mark.lines} line(s) from what its high-water mark "
                f"{mark_path} recorded (the hash at the head of the chain does not match)",
            )
        return state

    def _parse(self, data: bytes, agent: str) -> _State:
        state = _State()
        seen: set[str] = set()
        raw_lines, end, rest = _split_lines(data, state)
        first_chained = 0
        for number, raw in enumerate(raw_lines, start=1):
            key, event, lost, chained = self._parse_line(
                raw, number, agent, state, seen, first_chained
            )
            if chained:
                first_chained = first_chained or number
            state.heads.append(state.head)
            state.records.append((key, event))
            state.lost_keys |= lost
            seen |= lost | {key}
        state.lines = len(raw_lines)
        state.valid_bytes = end if not state.needs_newline else len(data)
        if rest:
            self._parse_tail(rest, agent, state, seen)
        return state

    def _parse_line(
        self,
        raw: bytes,
        number: int,
        agent: str,
        state: _State,
        seen: set[str],
        first_chained: int,
    ) -> tuple[str, PrivacyEvent, set[str], bool]:
        """Line ``number``, checked against the keys ``seen`` and the chain; moves the head.

        Returns its key, event, lost keys, and whether it is chained (has a hash).
        """
        path = self.path(agent)
        try:
            entry = _load(raw)
            key, event, lost = _parse_entry(entry, agent)
        except (ValueError, TypeError, KeyError) as err:
            raise self._corrupt(
                agent, path, f", line {number}, is not a valid record ({err})"
            ) from err
        if key in seen or lost & seen:
            raise self._corrupt(
                agent,
                path,
                f", line {number}, repeats the key {key!r}; a ledger never records a key "
                "twice, so the file was altered",
            )
        if "hash" in entry or "prev" in entry:
            if entry.get("prev") != state.head:
                raise self._corrupt(
                    agent,
                    path,
                    f", line {number}, breaks the hash chain: it does not follow the line "
                    "before it (a line was removed, inserted or altered before it)",
                )
            if entry.get("hash") != _hash(entry):
                raise self._corrupt(
                    agent,
                    path,
                    f", line {number}, does not match its hash: the line was altered",
                )
            state.head = str(entry["hash"])
            state.chained += 1
            return key, event, lost, True
        if state.chained:
            raise self._corrupt(
                agent,
                path,
                f", line {number}, has no hash although the chain started at line "
                f"{first_chained}: a line was added or altered by hand",
            )
        state.head = hashlib.sha256(state.head.encode("ascii") + b"\n" + raw).hexdigest()
        return key, event, lost, False

    def _parse_tail(self, rest: bytes, agent: str, state: _State, seen: set[str]) -> None:
        """The cut-short last line ``rest``: counted as spent (``state.tail``), or refused."""
        path = self.path(agent)
        tail = _read_tail(rest, agent)
        if tail.key is None or tail.event is None:
            raise self._corrupt(
                agent,
                path,
                f"ends with an incomplete last line ({len(rest)} bytes) whose event cannot "
                "be read: a crash cut a record short while it was written, or the file was "
                "damaged. Its update may have left the MSP, so it is not ignored",
                hint=" If you know that update never left the MSP (the MSP crashed before "
                f"sending it), you may instead remove those last {len(rest)} bytes by hand.",
            )
        if tail.key in seen:
            raise self._corrupt(
                agent,
                path,
                f"ends with an incomplete line that repeats the key {tail.key!r}",
            )
        logger.warning(
            "%s: the last line (%d bytes) was cut short by a crash while it was written; "
            "its event is counted as spent and the next record completes it.",
            path,
            len(rest),
        )
        state.tail = tail
        state.records.append((tail.key, tail.event))

    def _parse_mark(self, data: bytes, agent: str) -> HighWaterMark:
        mark_path = self.mark_path(agent)
        try:
            return _parse_mark(data, agent)
        except (ValueError, TypeError, KeyError) as err:
            raise self._corrupt(
                agent, mark_path, f"is not a valid high-water mark ({err})"
            ) from err

    def _corrupt(self, agent: str, path: Path, what: str, *, hint: str = "") -> LedgerCorruptError:
        sep = "" if what.startswith(",") else " "
        return LedgerCorruptError(
            f"Privacy ledger {path}{sep}{what}. meshfl never repairs or resets "
            "a privacy ledger on its own, since forgetting spent privacy would let ε exceed "
            "the budget. To recover, restore the MSP's state directory (its privacy/ folder) "
            "from a backup taken after its last round; or, if you accept the loss, call "
            f"PrivacyLedger({str(self._directory)!r}).acknowledge_loss({agent!r}, "
            "delta=<the run's δ>), which keeps the damaged file aside and counts as spent the "
            "most ε that its high-water mark, its readable lines or epsilon=<the "
            "coordinator's mirror> show: never a fresh budget." + hint
        )


# -- lines -----------------------------------------------------------------------------------


def _line(
    agent: str,
    key: str,
    event: PrivacyEvent,
    *,
    prev: str,
    stamp: str | None = None,
    **extra: Any,
) -> tuple[bytes, str]:
    """One chained ledger line (with its newline) and its hash."""
    entry: dict[str, Any] = {
        "key": key,
        "event": event.to_dict(),
        "agent": agent,
        "time": stamp or datetime.now(timezone.utc).isoformat(),
        **extra,
        "prev": prev,
    }
    entry["hash"] = _hash(entry)
    return (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"), entry["hash"]


def _hash(entry: dict[str, Any]) -> str:
    """sha256 of the entry without its ``hash``, canonically serialised (``prev`` included)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _split_lines(data: bytes, state: _State) -> tuple[list[bytes], int, bytes]:
    """The ledger's complete lines, the offset after the last newline, and what follows it.

    A whole JSON line without its newline counts as a line (``state.needs_newline``).
    """
    end = data.rfind(b"\n") + 1
    raw_lines = data[:end].split(b"\n")[:-1]
    rest = data[end:]
    if rest:
        try:
            json.loads(rest.decode("utf-8"))
            complete = True
        except (ValueError, UnicodeDecodeError):
            complete = False
        if complete:  # a whole line without its newline: count it as a line
            raw_lines.append(rest)
            state.needs_newline = True
            rest = b""
    return raw_lines, end, rest


def _check_known_epsilon(epsilon: float | None) -> None:
    if epsilon is not None and not (
        isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool) and epsilon >= 0
    ):
        raise ConfigError(
            "The 'epsilon' parameter of PrivacyLedger.acknowledge_loss must be a number "
            f">= 0 or None. Got {epsilon!r} instead."
        )


def _load(raw: bytes) -> dict[str, Any]:
    entry: Any = json.loads(raw.decode("utf-8"))
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    return entry


def _parse_entry(entry: dict[str, Any], agent: str) -> tuple[str, PrivacyEvent, set[str]]:
    key, event = entry["key"], entry["event"]
    if not isinstance(key, str) or not key:
        raise ValueError(f"key {key!r} is not a non-empty string")
    if entry["agent"] != agent:
        raise ValueError(f"agent {entry['agent']!r} in the file of agent {agent!r}")
    if not isinstance(entry["time"], str):
        raise ValueError("time is not a string")
    parsed = _parse_event(event)
    lost: set[str] = set()
    if "loss" in entry:
        loss = entry["loss"]
        if not isinstance(loss, dict) or not isinstance(loss.get("keys"), list):
            raise ValueError("loss is not a JSON object with a list of keys")
        if not all(isinstance(k, str) and k for k in loss["keys"]):
            raise ValueError("loss keys are not non-empty strings")
        lost = set(loss["keys"]) - {key}
    chained = "prev" in entry or "hash" in entry
    if chained and not (isinstance(entry.get("prev"), str) and isinstance(entry.get("hash"), str)):
        raise ValueError("prev and hash are not both strings")
    return key, parsed, lost


def _parse_event(event: Any) -> PrivacyEvent:
    if not isinstance(event, dict):
        raise ValueError("event is not a JSON object")
    parsed = PrivacyEvent.from_dict(event)
    if parsed.mechanism not in _MECHANISMS or parsed.unit not in _UNITS:
        raise ValueError(f"unknown mechanism {parsed.mechanism!r} or unit {parsed.unit!r}")
    return parsed


_DECODER = json.JSONDecoder()
_OPEN = re.compile(r"\s*\{\s*")
_COMMA = re.compile(r"\s*,\s*")
_COLON = re.compile(r"\s*:\s*")


def _read_tail(rest: bytes, agent: str) -> _Tail:
    """The fields of a cut-short line that are complete (a line starts with key and event)."""
    tail = _Tail(size=len(rest))
    text = rest.decode("utf-8", errors="ignore")  # a cut may split the last character
    match = _OPEN.match(text)
    if match is None:
        return tail
    pos = match.end()
    while True:
        try:
            name, pos = _DECODER.raw_decode(text, pos)
            colon = _COLON.match(text, pos)
            if not isinstance(name, str) or colon is None:
                break
            value, pos = _DECODER.raw_decode(text, colon.end())
        except ValueError:
            break
        tail.fields[name] = value
        comma = _COMMA.match(text, pos)
        if comma is None:
            break
        pos = comma.end()
    key = tail.fields.get("key")
    if tail.fields.get("agent", agent) != agent or not isinstance(key, str) or not key:
        return tail
    try:
        tail.event = _parse_event(tail.fields["event"])
    except (ValueError, TypeError, KeyError):
        return tail
    tail.key = key
    return tail


def _salvage(
    data: bytes | None, agent: str
) -> tuple[list[tuple[str, PrivacyEvent]], set[str], bool]:
    """What can still be read of a damaged ledger: records, lost keys, unreadable tail."""
    if data is None:
        return [], set(), False
    records: list[tuple[str, PrivacyEvent]] = []
    lost: set[str] = set()
    end = data.rfind(b"\n") + 1
    for raw in data[:end].split(b"\n")[:-1]:
        try:
            key, event, keys = _parse_entry(_load(raw), agent)
        except (ValueError, TypeError, KeyError):
            continue
        records.append((key, event))
        lost |= keys
    unreadable = False
    if end < len(data):
        rest = data[end:]
        try:
            key, event, keys = _parse_entry(_load(rest), agent)
            records.append((key, event))
            lost |= keys
        except (ValueError, TypeError, KeyError):
            tail = _read_tail(rest, agent)
            if tail.key is not None and tail.event is not None:
                records.append((tail.key, tail.event))
            else:
                unreadable = True
    unique: dict[str, PrivacyEvent] = {}
    for key, event in records:
        unique.setdefault(key, event)
    return list(unique.items()), lost, unreadable


# -- the high-water mark ---------------------------------------------------------------------


def _parse_mark(data: bytes, agent: str) -> HighWaterMark:
    entry = _load(data)
    if entry["agent"] != agent:
        raise ValueError(f"agent {entry['agent']!r} in the mark of agent {agent!r}")
    lines, head = entry["lines"], entry["head"]
    if not isinstance(lines, int) or isinstance(lines, bool) or lines < 0:
        raise ValueError(f"lines {lines!r} is not an integer >= 0")
    if not isinstance(head, str) or not _HEX64.fullmatch(head):
        raise ValueError(f"head {head!r} is not a sha256 hex digest")
    epsilons = []
    for item in entry["epsilon"]:
        accountant, delta, epsilon = item["accountant"], item["delta"], item["epsilon"]
        if accountant not in _ACCOUNTANTS:
            raise ValueError(f"unknown accountant {accountant!r}")
        if not (isinstance(delta, float) and 0 < delta < 1):
            raise ValueError(f"delta {delta!r} is not in (0, 1)")
        if not (isinstance(epsilon, (int, float)) and epsilon >= 0):
            raise ValueError(f"epsilon {epsilon!r} is not a number >= 0")
        epsilons.append((accountant, delta, float(epsilon)))
    return HighWaterMark(lines, head, _merge_epsilons(epsilons))


def _salvage_mark(data: bytes | None, agent: str) -> HighWaterMark | None:
    if data is None:
        return None
    try:
        return _parse_mark(data, agent)
    except (ValueError, TypeError, KeyError):
        return None


def _merge_epsilons(
    epsilons: Any,
) -> tuple[tuple[str, float, float], ...]:
    """One entry per (accountant, δ), the largest ε."""
    merged: dict[tuple[str, float], float] = {}
    for accountant, delta, epsilon in epsilons:
        merged[accountant, delta] = max(epsilon, merged.get((accountant, delta), 0.0))
    return tuple((a, d, e) for (a, d), e in sorted(merged.items()))


def _write_mark(path: Path, agent: str, mark: HighWaterMark) -> None:
    data = {
        "agent": agent,
        "lines": mark.lines,
        "head": mark.head,
        "epsilon": [{"accountant": a, "delta": d, "epsilon": e} for a, d, e in mark.epsilons],
        "time": datetime.now(timezone.utc).isoformat(),
    }
    _replace(path, (json.dumps(data) + "\n").encode("utf-8"))


def _replace(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically and durably (temporary file, fsync, rename)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


# -- equivalent Gaussian ---------------------------------------------------------------------


def _equivalent_gaussian(epsilon: float, delta: float, *, unit: str) -> PrivacyEvent:
    """One Gaussian release whose ε at ``delta`` is at least ``epsilon`` (by both accountants).

    The noise multiplier solves the exact privacy profile of the Gaussian mechanism (Balle
    and Wang, ICML 2018, Thm. 8); both accountants are upper bounds on it, so they report at
    least ``epsilon``. It is checked, and lowered if a rounding says otherwise.
    """
    if math.isinf(epsilon) or math.isnan(epsilon):
        return PrivacyEvent("gaussian", math.nan, 1.0, 1, unit=unit)  # type: ignore[arg-type]
    if epsilon <= 0:
        return PrivacyEvent.none()
    from scipy.optimize import brentq
    from scipy.special import log_ndtr, ndtr

    def excess(sigma: float) -> float:
        a = 1 / (2 * sigma)
        profile = ndtr(a - epsilon * sigma) - math.exp(epsilon + log_ndtr(-a - epsilon * sigma))
        return float(profile) - delta

    sigma = float(brentq(excess, 1e-6, 1e6, xtol=1e-14, rtol=1e-12, maxiter=500))
    for _ in range(200):
        event = PrivacyEvent("gaussian", sigma, 1.0, 1, unit=unit)  # type: ignore[arg-type]
        if epsilon_spent([event], delta=delta, accountant="prv") >= epsilon:
            return event  # PRV is the smaller of the two bounds: RDP is at least this
        sigma *= 0.995
    raise MeshflError(  # pragma: no cover - the accountant is an upper bound
        f"Could not find a Gaussian release with ε >= {epsilon:g} at δ={delta:g}."
    )


# -- files and locks ---------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _read_ledger(path: Path) -> bytes | None:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return None
    with handle, _os_lock(handle, exclusive=False):
        return handle.read()


def _check_agent(agent: object) -> str:
    if not isinstance(agent, str) or not _AGENT.fullmatch(agent):
        raise ConfigError(
            "The 'agent' parameter of PrivacyLedger must be an identifier (letters, digits "
            f"and '_', not starting with a digit, at most 100 characters). Got {agent!r} instead."
        )
    return agent


def _check_event(event: object) -> None:
    if not isinstance(event, PrivacyEvent):
        raise ConfigError(
            "The 'event' parameter of PrivacyLedger.record must be a PrivacyEvent. "
            f"Got {type(event).__name__} instead."
        )
    if event.mechanism not in _MECHANISMS or event.unit not in _UNITS:
        raise ConfigError(
            "The 'event' parameter of PrivacyLedger.record must have a mechanism in "
            f"{_MECHANISMS} and a unit in {_UNITS}. Got mechanism={event.mechanism!r}, "
            f"unit={event.unit!r} instead."
        )


def _check_accounting(delta: object, accountant: object, where: str) -> None:
    if not (isinstance(delta, float) and 0 < delta < 1):
        raise ConfigError(
            f"The 'delta' parameter of {where} must be a float in (0, 1). Got {delta!r} instead."
        )
    if accountant not in _ACCOUNTANTS:
        raise ConfigError(
            f"The 'accountant' parameter of {where} must be one of {_ACCOUNTANTS}. "
            f"Got {accountant!r} instead."
        )


def _flock_until(path: Path, deadline: float) -> IO[bytes] | None:
    """``path`` opened and exclusively locked, or ``None`` if the deadline passed first."""
    handle = open(path, "a+b")  # noqa: SIM115 - kept open while the lock is held
    if fcntl is None:  # pragma: no cover
        return handle
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                handle.close()
                return None
            time.sleep(min(0.02, left))
        except BaseException:
            handle.close()
            raise


def _unlock(handle: IO[bytes]) -> None:
    try:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


@contextlib.contextmanager
def _os_lock(handle: IO[bytes], *, exclusive: bool) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fsync_directory(directory: Path) -> None:
    """Make a new file's directory entry durable (POSIX; a no-op where unsupported)."""
    if not hasattr(os, "O_DIRECTORY"):  # pragma: no cover - Windows
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
