"""``PrivacyLedger``: what an MSP has spent, per agent, on disk and surviving restarts.

One append-only JSON-lines file per agent, ``<directory>/ledger-<agent>.jsonl``; each line
records one :class:`~meshfl.privacy.events.PrivacyEvent` under a key (for example
``"<run id>:<round>"``)::

    {"key": "run-1:3", "agent": "threat_intel", "time": "2025-...+00:00", "event": {...}}

The rules that keep ε from ever being under-counted:

* a record is flushed and fsynced (and, when it creates the file, so is the directory) before
  :meth:`PrivacyLedger.record` returns, and callers record *before* the update leaves the
  MSP (write-ahead). A crash in the middle of a write leaves a partial last line; that
  record never returned, so its update was never sent, and the line is ignored (with a
  warning) and replaced by the next record;
* a key is recorded at most once, so a replayed message is never counted twice;
* any other damage (a complete line that does not parse) raises
  :class:`LedgerCorruptError` naming the file and line. A ledger is never reset silently:
  that would let ε exceed the budget.

Records are serialised by a lock per file within a process and, where the platform has
``fcntl``, an advisory file lock across processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from meshfl.config.errors import ConfigError, MeshflError
from meshfl.privacy.accountant import Accountant, epsilon_spent
from meshfl.privacy.events import PrivacyEvent

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the in-process lock still applies
    fcntl = None  # type: ignore[assignment]

__all__ = ["LedgerCorruptError", "PrivacyLedger"]

logger = logging.getLogger(__name__)

_AGENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_PREFIX, _SUFFIX = "ledger-", ".jsonl"
_MECHANISMS = ("none", "dp-sgd", "gaussian")
_UNITS = ("sample", "msp")

# One lock per ledger file, shared by every PrivacyLedger of the process.
_FILE_LOCKS: dict[Path, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


class LedgerCorruptError(MeshflError):
    """A privacy ledger file holds a line that is not a valid record.

    The message names the file and the line. meshfl never repairs or resets a ledger on its
    own: forgetting spent privacy would let ε exceed the budget.
    """


class PrivacyLedger:
    """An MSP's persistent record of the privacy it spent, one file per agent.

    Parameters
    ----------
    directory : str or os.PathLike
        The MSP's ledger directory (created if missing). A new instance on the same
        directory, for example after a restart, sees the same events.

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

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        if not isinstance(directory, (str, os.PathLike)):
            raise ConfigError(
                "The 'directory' parameter of PrivacyLedger must be a path (str or "
                f"os.PathLike). Got {directory!r} instead."
            )
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True)

    @property
    def directory(self) -> Path:
        """The ledger directory."""
        return self._directory

    def __repr__(self) -> str:
        return f"PrivacyLedger({str(self._directory)!r})"

    def path(self, agent: str) -> Path:
        """The file that holds ``agent``'s events."""
        return self._directory / f"{_PREFIX}{_check_agent(agent)}{_SUFFIX}"

    def record(self, agent: str, key: str, event: PrivacyEvent) -> bool:
        """Append ``event`` under ``key``, durably; ``False`` (nothing written) if ``key`` is there.

        Call it before the update that ``event`` describes leaves the MSP.

        Parameters
        ----------
        agent : str
            The agent's name (an identifier, e.g. ``"threat_intel"``).
        key : str
            What makes the event unique, e.g. ``"<run id>:<round>"``.
        event : PrivacyEvent
            The mechanism applied.

        Returns
        -------
        bool
            ``True`` if the event was recorded, ``False`` if ``key`` already was.
        """
        path = self.path(agent)
        if not isinstance(key, str) or not key:
            raise ConfigError(
                f"The 'key' parameter of PrivacyLedger.record must be a non-empty str. "
                f"Got {key!r} instead."
            )
        _check_event(event)
        line = json.dumps(
            {
                "key": key,
                "agent": agent,
                "time": datetime.now(timezone.utc).isoformat(),
                "event": event.to_dict(),
            },
            ensure_ascii=False,
        )
        with _file_lock(path):
            created = not path.exists()
            with open(path, "a+b") as handle, _os_lock(handle, exclusive=True):
                handle.seek(0)
                records, valid_bytes = _parse(handle.read(), path, agent)
                if any(k == key for k, _ in records):
                    return False
                if handle.tell() != valid_bytes:
                    handle.truncate(valid_bytes)  # drop a partial last line (see _parse)
                handle.write((line + "\n").encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            if created:
                _fsync_directory(self._directory)
        return True

    def events(self, agent: str) -> list[PrivacyEvent]:
        """``agent``'s events, oldest first (empty if it never spent any)."""
        return [event for _, event in self._records(agent)]

    def keys(self, agent: str) -> set[str]:
        """The keys under which ``agent``'s events were recorded."""
        return {key for key, _ in self._records(agent)}

    def epsilon(self, agent: str, *, delta: float, accountant: Accountant = "prv") -> float:
        """ε that ``agent`` has spent at ``delta`` (see :func:`~meshfl.privacy.epsilon_spent`)."""
        return epsilon_spent(self.events(agent), delta=delta, accountant=accountant)

    def agents(self) -> list[str]:
        """The agents with a ledger file in the directory, sorted."""
        names = (
            p.name[len(_PREFIX) : -len(_SUFFIX)]
            for p in self._directory.glob(f"{_PREFIX}*{_SUFFIX}")
        )
        return sorted(name for name in names if _AGENT.fullmatch(name))

    def _records(self, agent: str) -> list[tuple[str, PrivacyEvent]]:
        path = self.path(agent)
        with _file_lock(path):
            try:
                handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
            except FileNotFoundError:
                return []
            with handle, _os_lock(handle, exclusive=False):
                records, _ = _parse(handle.read(), path, agent)
        return records


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


def _parse(data: bytes, path: Path, agent: str) -> tuple[list[tuple[str, PrivacyEvent]], int]:
    """The records in ``data`` and the length of its complete lines.

    Bytes after the last newline are a write that a crash cut short: :meth:`record` writes
    each line with its newline and returns only after fsync, so that record never returned
    and its update never left the MSP. They are ignored (and dropped by the next record).
    """
    end = data.rfind(b"\n") + 1
    if end < len(data):
        logger.warning(
            "%s: ignoring an incomplete last line (%d bytes) left by a crash while it was "
            "written; the next record replaces it.",
            path,
            len(data) - end,
        )
    records: list[tuple[str, PrivacyEvent]] = []
    seen: set[str] = set()
    for number, raw in enumerate(data[:end].split(b"\n")[:-1], start=1):
        try:
            key, event = _parse_line(raw, agent)
        except (ValueError, TypeError, KeyError) as err:
            raise LedgerCorruptError(
                f"Privacy ledger {path}, line {number}, is not a valid record ({err}). meshfl "
                "does not repair or reset a ledger, since forgetting spent privacy would let ε "
                "exceed the budget: restore the file from a backup, or fix or remove the line "
                "by hand if you know what it recorded."
            ) from err
        if key in seen:
            raise LedgerCorruptError(
                f"Privacy ledger {path}, line {number}, repeats the key {key!r}; a ledger "
                "never records a key twice, so the file was altered. Restore it from a backup."
            )
        seen.add(key)
        records.append((key, event))
    return records, end


def _parse_line(raw: bytes, agent: str) -> tuple[str, PrivacyEvent]:
    entry: Any = json.loads(raw.decode("utf-8"))
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    key, event = entry["key"], entry["event"]
    if not isinstance(key, str) or not key:
        raise ValueError(f"key {key!r} is not a non-empty string")
    if entry["agent"] != agent:
        raise ValueError(f"agent {entry['agent']!r} in the file of agent {agent!r}")
    if not isinstance(entry["time"], str):
        raise ValueError("time is not a string")
    if not isinstance(event, dict):
        raise ValueError("event is not a JSON object")
    parsed = PrivacyEvent.from_dict(event)
    if parsed.mechanism not in _MECHANISMS or parsed.unit not in _UNITS:
        raise ValueError(f"unknown mechanism {parsed.mechanism!r} or unit {parsed.unit!r}")
    return key, parsed


def _file_lock(path: Path) -> threading.Lock:
    resolved = path.resolve()
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(resolved, threading.Lock())


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
