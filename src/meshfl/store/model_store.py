"""``ModelStore``: the coordinator's state directory (metadata in SQLite, sealed sums as blobs).

Layout of ``<state_dir>``::

    coordinator.sqlite      runs, model versions, metrics, the mirror of the MSPs' ledgers
    blobs/<aa>/<sha256>     one sealed round sum per blob (meshfl.store.sealed_codec)

The coordinator never holds a plaintext model (:mod:`meshfl.federation.sealed_model`): a
version is the sealed sum of its round plus the list of sealed sums (*history*) that make
the global model after it, and the store keeps exactly that. Nothing here can decrypt.

How a round is committed (:meth:`ModelStore.commit_round`), so that a crash at any point
leaves the whole round visible or none of it:

1. every sealed sum of the history is written as a blob (temporary file, fsync, rename,
   fsync of the directory); a blob that no committed row names is invisible, and
   :meth:`ModelStore.collect_garbage` removes it;
2. one SQLite transaction (WAL journal, ``synchronous=FULL``, so a returned commit is on
   disk) inserts the version row and the round's ledger-mirror rows together.

A round is recorded at most once per ``(run_id, agent, round)``: committing it again returns
the row already there and writes nothing, so a coordinator restarted mid-round can neither
duplicate a version nor a mirror entry. After a crash it continues from
:meth:`ModelStore.resume_state`.

One process writes (the coordinator); readers (``meshfl status``) may open the same
directory at the same time with ``read_only=True``: WAL lets them read the last committed
state while the writer works.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sqlite3
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import SkipValidation

from meshfl.config.validation import Count, Float, Int, Name, NonNegative, checked
from meshfl.secure.backend import Sealed
from meshfl.store.blobs import BlobStore, blob_digest, make_directory, write_atomic
from meshfl.store.errors import CorruptBlobError, InvalidRecordError, StoreError
from meshfl.store.sealed_codec import (
    decode_sealed,
    decode_sealed_model,
    encode_sealed,
    encode_sealed_model,
)

__all__ = [
    "BLOB_DIR",
    "DB_FILE",
    "MODEL_FORMAT",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "ModelStore",
    "RunInfo",
    "VersionInfo",
    "read_export",
]

log = logging.getLogger("meshfl.store")

DB_FILE = "coordinator.sqlite"
BLOB_DIR = "blobs"
SCHEMA_VERSION = 1
MODEL_FORMAT = "meshfl.sealed-model"
RunStatus = Literal["running", "completed", "stopped", "failed"]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
_UINT64 = 1 << 64
_MSP = Annotated[
    int, Int(0, _UINT64 - 1, rule="an MSP id (an int >= 0 below 2**64)")
]  # Flower node ids are unsigned 64-bit
_EPSILON = Annotated[float, Float(">= 0 (inf allowed)", lambda v: v >= 0)]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        plan TEXT NOT NULL,
        started TEXT NOT NULL,
        status TEXT NOT NULL,
        PRIMARY KEY (run_id, agent)
    )""",
    """CREATE TABLE IF NOT EXISTS versions (
        seq INTEGER PRIMARY KEY,
        agent TEXT NOT NULL,
        run_id TEXT NOT NULL,
        round INTEGER NOT NULL CHECK (round >= 1),
        digest TEXT,
        history TEXT NOT NULL,
        key_id TEXT NOT NULL,
        n_msps INTEGER NOT NULL,
        metrics TEXT NOT NULL,
        created TEXT NOT NULL,
        UNIQUE (run_id, agent, round),
        FOREIGN KEY (run_id, agent) REFERENCES runs (run_id, agent)
    )""",
    "CREATE INDEX IF NOT EXISTS versions_by_agent ON versions (agent, seq)",
    """CREATE TABLE IF NOT EXISTS ledger_mirror (
        agent TEXT NOT NULL,
        run_id TEXT NOT NULL,
        msp INTEGER NOT NULL,
        round INTEGER NOT NULL,
        epsilon_spent REAL NOT NULL,
        PRIMARY KEY (run_id, agent, round, msp),
        FOREIGN KEY (run_id, agent, round) REFERENCES versions (run_id, agent, round)
    )""",
)

# Statements that take a database from schema version v to v + 1, keyed by v. Never edit
# an entry once released: add the next one and bump SCHEMA_VERSION.
_MIGRATIONS: dict[int, tuple[str, ...]] = {}

_VERSION_SELECT = """
    SELECT v.agent, v.run_id, v.round, v.digest, v.key_id, v.n_msps, v.metrics, v.created,
           (SELECT MAX(m.epsilon_spent) FROM ledger_mirror AS m
             WHERE m.run_id = v.run_id AND m.agent = v.agent AND m.round = v.round),
           v.history
      FROM versions AS v
"""


@dataclass(frozen=True)
class VersionInfo:
    """One completed round of one agent: a version of its sealed global model.

    Attributes
    ----------
    agent, run_id : str
        Which agent, in which run.
    round : int
        The round (1-based) this version completed.
    digest : str or None
        Blob digest of the round's sealed sum; ``None`` for a round that kept the model
        (too few updates), recorded so that a restart does not repeat it.
    key_id : str
        Key set the sums are sealed under (``""`` for the plaintext backend).
    n_msps : int
        Number of MSPs the coordinator reported for the round.
    metrics : dict of str to float
        Evaluation (and training) metrics of the round.
    epsilon_max : float or None
        Largest ε any MSP reported having spent on the agent as of this round (``None`` if
        none reported).
    created : str
        When the round was committed (ISO 8601, UTC).
    history : tuple of str
        Blob digests of the sealed sums that make the global model after this round, in the
        order the agent's ``combine`` applies them.
    """

    agent: str
    run_id: str
    round: int
    digest: str | None
    key_id: str
    n_msps: int
    metrics: dict[str, float] = field(hash=False)
    epsilon_max: float | None
    created: str
    history: tuple[str, ...]


@dataclass(frozen=True)
class RunInfo:
    """One agent's part of a run: its plan (as JSON), when it started, and its status."""

    run_id: str
    agent: str
    plan: dict[str, Any] = field(hash=False)
    started: str
    status: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _msp_to_sql(msp: int) -> int:
    # Flower's node ids (the MSP ids of a deployment) are unsigned 64-bit; SQLite's INTEGER
    # is signed: store the upper half as negative numbers, two's complement.
    return msp - _UINT64 if msp >= _UINT64 >> 1 else msp


def _msp_from_sql(value: int) -> int:
    return value + _UINT64 if value < 0 else value


def _plan_json(plan: object) -> str:
    if not isinstance(plan, Mapping):
        raise InvalidRecordError(
            "The 'plan' parameter of ModelStore.start_run must be a mapping (e.g. "
            f"plan.model_dump(mode='json')). Got {type(plan).__name__} instead."
        )
    try:
        return json.dumps(dict(plan), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InvalidRecordError(
            "The 'plan' parameter of ModelStore.start_run must be JSON-serialisable (use "
            f"plan.model_dump(mode='json') for a pydantic model): {err}."
        ) from err


class ModelStore:
    """The coordinator's durable state: runs, sealed model versions, metrics, ledger mirror.

    Parameters
    ----------
    state_dir : str or os.PathLike
        The state directory (created if missing, unless ``read_only``).
    read_only : bool
        Open for reading only (a status command beside a running coordinator); needs an
        existing state directory and never writes to it.

    Examples
    --------
    >>> import tempfile
    >>> from meshfl.secure.backend import Sealed
    >>> store = ModelStore(tempfile.mkdtemp())
    >>> store.start_run("run-1", "threat_intel", {"rounds": 2})
    >>> total = Sealed("ckks", "k1", 3, (b"ciphertext",))
    >>> version = store.commit_round(
    ...     run_id="run-1", agent="threat_intel", round=1, sealed_sum=total,
    ...     history=[total], metrics={"f1": 0.8}, epsilon_by_msp={0: 0.4, 1: 0.5}, n_msps=2)
    >>> store.resume_state("run-1", "threat_intel") == (1, [total])
    True
    >>> version.epsilon_max
    0.5
    >>> store.close()
    """

    def __init__(self, state_dir: str | Path, *, read_only: bool = False) -> None:
        self._state_dir = Path(state_dir)
        self._read_only = read_only
        self._lock = threading.RLock()
        self._stored: dict[int, tuple[Sealed, str]] = {}
        """Sums whose blob this store wrote, by identity: a growing model's earlier sums are
        not encoded and hashed again at every round."""
        database = self._state_dir / DB_FILE
        if read_only:
            if not database.is_file():
                raise StoreError(
                    f"no coordinator state in {self._state_dir}: {database} does not exist. "
                    "Check the path, or start a coordinator with this state directory first."
                )
            uri = database.resolve().as_uri() + "?mode=ro"
            self._conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, timeout=30.0, check_same_thread=False
            )
        else:
            make_directory(self._state_dir)
            self._conn = sqlite3.connect(
                database, isolation_level=None, timeout=30.0, check_same_thread=False
            )
        try:
            self._open()
        except BaseException:
            self._conn.close()
            raise
        self.blobs = BlobStore(self._state_dir / BLOB_DIR, create=not read_only)
        """The content-addressed blob files of the sealed sums."""

    # -- opening -------------------------------------------------------------------------
    def _open(self) -> None:
        conn = self._conn
        conn.execute("PRAGMA foreign_keys = ON")
        if self._read_only:
            version = self._schema_version()
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}; this meshfl reads version "
                    f"{SCHEMA_VERSION}. Open it once without read_only (a coordinator) to "
                    "migrate it, or use the meshfl release that wrote it."
                )
            return
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            log.warning(
                "%s: SQLite refused WAL mode (journal_mode=%s), e.g. on a network file "
                "system; commits stay atomic, but readers may wait for the writer",
                self.path,
                mode,
            )
        conn.execute("PRAGMA synchronous = FULL")
        with self._transaction():
            version = self._schema_version()
            if version is None:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                return
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this meshfl's "
                    f"{SCHEMA_VERSION}: it was written by a later release. Upgrade meshfl."
                )
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def _schema_version(self) -> int | None:
        exists = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if exists is None:
            return None
        (version,) = self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return None if version is None else int(version)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything in it is committed together, or nothing is."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _require_writable(self, what: str) -> None:
        if self._read_only:
            raise StoreError(f"{what} needs a writable store; this one was opened read_only")

    # -- properties ----------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        """The state directory."""
        return self._state_dir

    @property
    def path(self) -> Path:
        """The SQLite database file."""
        return self._state_dir / DB_FILE

    def __repr__(self) -> str:
        mode = ", read_only=True" if self._read_only else ""
        return f"ModelStore({str(self._state_dir)!r}{mode})"

    def close(self) -> None:
        """Close the database connection (committed rounds are already on disk)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ModelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------------------
    @checked(error=InvalidRecordError)
    def start_run(self, run_id: Name, agent: Name, plan: SkipValidation[Mapping[str, Any]]) -> None:
        """Record that ``agent`` takes part in run ``run_id`` under ``plan``; idempotent.

        Starting a run that exists with the same plan does nothing (a restarted coordinator
        calls it again). Another plan under the same ids raises
        :class:`~meshfl.store.errors.InvalidRecordError`: resuming a run under a changed
        plan would mix two experiments in one history.
        """
        self._require_writable("start_run")
        encoded = _plan_json(plan)
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT plan FROM runs WHERE run_id = ? AND agent = ?", (run_id, agent)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO runs (run_id, agent, plan, started, status) "
                    "VALUES (?, ?, ?, ?, 'running')",
                    (run_id, agent, encoded, _now()),
                )
            elif row[0] != encoded:
                raise InvalidRecordError(
                    f"run {run_id!r} of agent {agent!r} was started with another plan "
                    f"({row[0]}); got {encoded}. Resume it with the plan it started with, or "
                    "start a new run id."
                )

    @checked(error=InvalidRecordError)
    def finish_run(self, run_id: str, agent: str, *, status: RunStatus = "completed") -> None:
        """Set the status of ``agent``'s part of run ``run_id`` (one of :data:`RUN_STATUSES`)."""
        self._require_writable("finish_run")
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE runs SET status = ? WHERE run_id = ? AND agent = ?",
                (status, run_id, agent),
            )
            if cursor.rowcount == 0:
                raise InvalidRecordError(self._unknown_run(run_id, agent))

    def runs(self, agent: str | None = None) -> list[RunInfo]:
        """Every run (of ``agent``, if given), oldest first."""
        query = "SELECT run_id, agent, plan, started, status FROM runs"
        args: tuple[str, ...] = ()
        if agent is not None:
            query, args = query + " WHERE agent = ?", (agent,)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY started, run_id, agent", args).fetchall()
        return [RunInfo(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]

    @staticmethod
    def _unknown_run(run_id: str, agent: str) -> str:
        return (
            f"run {run_id!r} of agent {agent!r} is not in the store; call "
            "ModelStore.start_run(run_id, agent, plan) before committing its rounds"
        )

    # -- rounds --------------------------------------------------------------------------
    @checked(error=InvalidRecordError)
    def commit_round(
        self,
        *,
        run_id: Name,
        agent: Name,
        round: Count,
        sealed_sum: SkipValidation[Sealed | None],
        history: SkipValidation[Sequence[Sealed]],
        metrics: dict[str, float],
        epsilon_by_msp: dict[_MSP, _EPSILON],
        n_msps: NonNegative,
    ) -> VersionInfo:
        """Record a completed round durably and atomically; idempotent per round.

        Parameters
        ----------
        run_id, agent : str
            The run (started with :meth:`start_run`) and the agent.
        round : int
            The round that completed (1-based); later than the last one committed.
        sealed_sum : Sealed or None
            The round's sealed sum, which must be the last item of ``history``; ``None`` for
            a round that kept the global model (then ``history`` must be the previous
            round's).
        history : sequence of Sealed
            The sealed sums that make the global model after this round
            (:func:`meshfl.federation.sealed_model.next_history`).
        metrics : mapping of str to float
            The round's metrics.
        epsilon_by_msp : mapping of int to float
            ε each MSP reports having spent on the agent so far (the strategy's whole
            ``epsilon_by_msp``, not just this round's changes).
        n_msps : int
            Number of MSPs in the round.

        Returns
        -------
        VersionInfo
            The version recorded, or the one already recorded for this round (then nothing
            is written, whatever the arguments).
        """
        self._require_writable("commit_round")
        clean_metrics, epsilons = metrics, epsilon_by_msp
        history = list(history)
        encoded, digests, digest = self._encode_round(history, sealed_sum)

        with self._lock:
            existing = self._version(run_id, agent, round)
            if existing is not None:
                return self._already(existing, digest)
            if self.run(run_id, agent) is None:
                raise InvalidRecordError(self._unknown_run(run_id, agent))
            previous = self._latest(run_id, agent)
            self._check_history(previous, round, digest, digests)
            source = sealed_sum if sealed_sum is not None else (history[-1] if history else None)
            key_id = "" if source is None else source.key_id
            # 1. the blobs, each durable before the row that names it can exist.
            for data in encoded:
                self.blobs.put(data)
            # 2. the version and its ledger mirror, in one transaction.
            created = _now()
            row = (agent, run_id, round, digest, json.dumps(digests), key_id, n_msps)
            raced = self._insert_round(row, clean_metrics, epsilons, created)
            if raced is not None:
                return raced
            self._remember_stored(history, digests)
        return VersionInfo(
            agent=agent,
            run_id=run_id,
            round=round,
            digest=digest,
            key_id=key_id,
            n_msps=n_msps,
            metrics=clean_metrics,
            epsilon_max=max(epsilons.values()) if epsilons else None,
            created=created,
            history=tuple(digests),
        )

    def _encode_round(
        self, history: list[Sealed], sealed_sum: Sealed | None
    ) -> tuple[list[bytes], list[str], str | None]:
        """The blobs of the sums not stored yet, the digest of every sum in ``history``,
        and that of the round's sum (or ``None``)."""
        encoded, digests = [], []
        for sealed in history:
            known = self._stored.get(id(sealed))
            if known is not None and known[0] is sealed:
                digests.append(known[1])
                continue
            data = encode_sealed(sealed)
            encoded.append(data)
            digests.append(blob_digest(data))
        if sealed_sum is None:
            return encoded, digests, None
        if history and sealed_sum is history[-1]:
            return encoded, digests, digests[-1]
        return encoded, digests, blob_digest(encode_sealed(sealed_sum))

    def _remember_stored(self, history: list[Sealed], digests: list[str]) -> None:
        if len(self._stored) > 4 * len(history) + 1024:  # runs that ended: forget them
            self._stored.clear()
        for sealed, digest in zip(history, digests, strict=True):
            self._stored[id(sealed)] = (sealed, digest)

    @checked(error=InvalidRecordError)
    def update_metrics(
        self, *, run_id: str, agent: str, round: int, metrics: dict[str, float]
    ) -> VersionInfo:
        """Merge ``metrics`` into those of a committed round; returns the updated version.

        For results that arrive after the commit (the evaluation of the new model, once it
        was committed and sent out). Keys already there are overwritten, so calling it again
        with the same metrics changes nothing.
        """
        self._require_writable("update_metrics")
        clean = metrics
        with self._transaction() as conn:
            existing = self._version(run_id, agent, round)
            if existing is None:
                raise InvalidRecordError(
                    f"round {round!r} of run {run_id!r} of agent {agent!r} is not committed; "
                    "commit it with ModelStore.commit_round before adding metrics"
                )
            merged = {**existing.metrics, **clean}
            conn.execute(
                "UPDATE versions SET metrics = ? WHERE run_id = ? AND agent = ? AND round = ?",
                (json.dumps(merged, sort_keys=True), run_id, agent, round),
            )
        return dataclasses.replace(existing, metrics=merged)

    def run(self, run_id: str, agent: str) -> RunInfo | None:
        """The run ``run_id`` of ``agent``, or ``None`` if it was never started."""
        with self._lock:
            row = self._conn.execute(
                "SELECT run_id, agent, plan, started, status FROM runs "
                "WHERE run_id = ? AND agent = ?",
                (run_id, agent),
            ).fetchone()
        return None if row is None else RunInfo(row[0], row[1], json.loads(row[2]), row[3], row[4])

    @staticmethod
    def _already(existing: VersionInfo, digest: str | None) -> VersionInfo:
        if existing.digest != digest:
            # The round was run again after it was committed (CKKS encryption is randomised,
            # so a re-run seals other bytes). The first commit stands.
            log.warning(
                "%s run %s round %d is already recorded (sum %s); keeping it and ignoring "
                "this commit's sum %s",
                existing.agent,
                existing.run_id,
                existing.round,
                existing.digest,
                digest,
            )
        return existing

    @staticmethod
    def _check_history(
        previous: VersionInfo | None, round_: int, digest: str | None, digests: list[str]
    ) -> None:
        if previous is not None and round_ < previous.round:
            raise InvalidRecordError(
                f"round {round_} of run {previous.run_id!r} of agent {previous.agent!r} comes "
                f"before the last committed round {previous.round}: commit rounds in order"
            )
        if digest is not None and (not digests or digests[-1] != digest):
            raise InvalidRecordError(
                "the 'history' of a round must end with its 'sealed_sum' (see "
                "meshfl.federation.sealed_model.next_history)"
            )
        if digest is None:
            before = list(previous.history) if previous is not None else []
            if digests != before:
                raise InvalidRecordError(
                    "a round without a sealed sum keeps the global model: its 'history' must "
                    "be the previous round's"
                )

    # Separate methods so that tests can interrupt a commit between its two writes.
    def _insert_round(
        self,
        row: tuple[str, str, int, str | None, str, str, int],
        metrics: dict[str, float],
        epsilons: dict[int, float],
        created: str,
    ) -> VersionInfo | None:
        """Insert a round's version row and its ledger mirror in one transaction.

        ``row`` is (agent, run_id, round, digest, history JSON, key_id, n_msps). Returns
        ``None``, or the version another writer committed for the round meanwhile (then
        nothing is written).
        """
        agent, run_id, round, digest = row[0], row[1], row[2], row[3]
        with self._transaction() as conn:
            # Under the write lock: another writer may have committed the round meanwhile.
            if (raced := self._version(run_id, agent, round)) is not None:
                return self._already(raced, digest)
            metrics_json = json.dumps(metrics, sort_keys=True)
            self._insert_version(conn, (*row, metrics_json, created))
            self._insert_mirror(
                conn,
                [(agent, run_id, _msp_to_sql(msp), round, eps) for msp, eps in epsilons.items()],
            )
        return None

    def _insert_version(self, conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
        conn.execute(
            "INSERT INTO versions (agent, run_id, round, digest, history, key_id, n_msps, "
            "metrics, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )

    def _insert_mirror(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        conn.executemany(
            "INSERT INTO ledger_mirror (agent, run_id, msp, round, epsilon_spent) "
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )

    # -- reading -------------------------------------------------------------------------
    @staticmethod
    def _row_to_version(row: Sequence[Any]) -> VersionInfo:
        return VersionInfo(
            agent=row[0],
            run_id=row[1],
            round=int(row[2]),
            digest=row[3],
            key_id=row[4],
            n_msps=int(row[5]),
            metrics={str(k): float(v) for k, v in json.loads(row[6]).items()},
            created=row[7],
            epsilon_max=None if row[8] is None else float(row[8]),
            history=tuple(json.loads(row[9])),
        )

    def _select(self, where: str = "", args: tuple[Any, ...] = ()) -> list[VersionInfo]:
        with self._lock:
            rows = self._conn.execute(f"{_VERSION_SELECT} {where}", args).fetchall()
        return [self._row_to_version(row) for row in rows]

    def _version(self, run_id: str, agent: str, round_: int) -> VersionInfo | None:
        found = self._select(
            "WHERE v.run_id = ? AND v.agent = ? AND v.round = ?", (run_id, agent, round_)
        )
        return found[0] if found else None

    def _latest(self, run_id: str, agent: str) -> VersionInfo | None:
        found = self._select(
            "WHERE v.run_id = ? AND v.agent = ? ORDER BY v.round DESC LIMIT 1", (run_id, agent)
        )
        return found[0] if found else None

    def last_completed_round(self, run_id: str, agent: str) -> int:
        """The last round of ``agent`` in ``run_id`` that was committed (0 if none)."""
        latest = self._latest(run_id, agent)
        return 0 if latest is None else latest.round

    def resume_state(self, run_id: str, agent: str) -> tuple[int, list[Sealed]]:
        """The last committed round and the sealed history to continue from (``0, []``)."""
        latest = self._latest(run_id, agent)
        if latest is None:
            return 0, []
        return latest.round, self.load_history(latest)

    def versions(self, agent: str | None = None, *, run_id: str | None = None) -> list[VersionInfo]:
        """Every committed round (of ``agent`` / ``run_id``, if given), in commit order."""
        clauses, args = [], []
        for column, value in (("agent", agent), ("run_id", run_id)):
            if value is not None:
                clauses.append(f"v.{column} = ?")
                args.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._select(f"{where} ORDER BY v.seq", tuple(args))

    def load_sealed(self, digest: str) -> Sealed:
        """The sealed sum stored under ``digest`` (its hash checked)."""
        data = self.blobs.get(digest)
        try:
            return decode_sealed(data)
        except CorruptBlobError as err:
            raise CorruptBlobError(f"blob {digest} at {self.blobs.path(digest)}: {err}") from err

    def load_history(self, version: VersionInfo) -> list[Sealed]:
        """The sealed sums that make the global model of ``version``."""
        return [self.load_sealed(digest) for digest in version.history]

    def epsilon_mirror(self, agent: str) -> dict[int, float]:
        """The latest ε each MSP reported for ``agent``, over all its runs."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT m.msp, m.epsilon_spent FROM ledger_mirror AS m JOIN versions AS v "
                "ON v.run_id = m.run_id AND v.agent = m.agent AND v.round = m.round "
                "WHERE m.agent = ? ORDER BY v.seq, m.msp",
                (agent,),
            ).fetchall()
        return {_msp_from_sql(int(msp)): float(eps) for msp, eps in rows}

    def export(self, version: VersionInfo, path: str | Path) -> Path:
        """Write ``version``'s sealed model to one file (atomically); returns its path.

        The file holds a JSON header (agent, run, round, key id, metrics, ε) and the sealed
        sums of the version's history (:func:`meshfl.store.sealed_codec.encode_sealed_model`);
        read it with :func:`read_export`. With CKKS, only holders of the secret key can open
        it; it is never decrypted here. With the plaintext backend it is not encrypted, and
        a warning says so.
        """
        blobs = [self.blobs.get(digest) for digest in version.history]
        backends = sorted({decode_sealed(blob).backend for blob in blobs})
        if "plaintext" in backends:
            warnings.warn(
                f"exporting {version.agent} round {version.round} unencrypted: it was trained "
                "with secure aggregation off (plaintext backend), so the file holds the "
                "round sums in the clear",
                UserWarning,
                stacklevel=2,
            )
        meta = {
            "format": MODEL_FORMAT,
            "agent": version.agent,
            "run_id": version.run_id,
            "round": version.round,
            "digest": version.digest,
            "backend": backends[0] if len(backends) == 1 else backends,
            "key_id": version.key_id,
            "n_msps": version.n_msps,
            "metrics": version.metrics,
            "epsilon_max": version.epsilon_max,
            "created": version.created,
        }
        target = Path(path)
        write_atomic(target, encode_sealed_model(meta, blobs))
        return target

    def status(self) -> dict[str, Any]:
        """A JSON-serialisable summary: runs with their last rounds, and per agent the latest."""
        with self._lock:
            last = {
                (run_id, agent): (int(rounds), int(count))
                for run_id, agent, rounds, count in self._conn.execute(
                    "SELECT run_id, agent, MAX(round), COUNT(*) FROM versions "
                    "GROUP BY run_id, agent"
                )
            }
            runs = self.runs()
            versions = self.versions()
        latest: dict[str, VersionInfo] = {v.agent: v for v in versions}
        agents: dict[str, dict[str, Any]] = {}
        for agent in sorted({r.agent for r in runs}):
            version = latest.get(agent)
            mirror = self.epsilon_mirror(agent)
            agents[agent] = {
                "runs": sum(r.agent == agent for r in runs),
                "versions": sum(v.agent == agent for v in versions),
                "last_run": None if version is None else version.run_id,
                "last_round": 0 if version is None else version.round,
                "key_id": None if version is None else version.key_id,
                "updated": None if version is None else version.created,
                "epsilon_max": max(mirror.values()) if mirror else None,
            }
        return {
            "state_dir": str(self._state_dir),
            "schema_version": SCHEMA_VERSION,
            "runs": [
                {
                    "run_id": r.run_id,
                    "agent": r.agent,
                    "status": r.status,
                    "started": r.started,
                    "planned_rounds": r.plan.get("rounds"),
                    "last_round": last.get((r.run_id, r.agent), (0, 0))[0],
                    "versions": last.get((r.run_id, r.agent), (0, 0))[1],
                }
                for r in runs
            ],
            "agents": agents,
        }

    # -- maintenance ---------------------------------------------------------------------
    def collect_garbage(self) -> int:
        """Delete blobs that no committed round names, and crash leftovers; returns how many.

        Such blobs are what a crash between a round's blob writes and its commit leaves.
        Call it only from the writer, between rounds (a commit in progress in another
        process would lose its blobs).
        """
        self._require_writable("collect_garbage")
        with self._lock:
            referenced: set[str] = set()
            for (history,) in self._conn.execute("SELECT history FROM versions"):
                referenced.update(json.loads(history))
            removed = self.blobs.remove_temporary()
            for digest in list(self.blobs):
                if digest not in referenced and self.blobs.delete(digest):
                    removed += 1
        return removed


def read_export(path: str | Path) -> tuple[dict[str, Any], list[Sealed]]:
    """The header and the sealed history of a file :meth:`ModelStore.export` wrote.

    Open the history MSP-side with :func:`meshfl.federation.sealed_model.open_global`.
    """
    try:
        return decode_sealed_model(Path(path).read_bytes())
    except CorruptBlobError as err:
        raise CorruptBlobError(f"{path}: {err}") from err
