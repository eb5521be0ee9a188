"""ModelStore: atomic, idempotent round commits; resumption after a restart or a crash."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from meshfl.secure.backend import PlaintextSealer, Sealed
from meshfl.store import (
    CorruptBlobError,
    InvalidRecordError,
    MissingBlobError,
    ModelStore,
    StoreError,
    read_export,
)
from meshfl.store.model_store import DB_FILE, SCHEMA_VERSION

RUN, AGENT = "run-1", "threat_intel"


def sealed(i: int, key_id: str = "k1") -> Sealed:
    """A stand-in CKKS payload: the store never looks inside the chunks."""
    return Sealed("ckks", key_id, 5, (f"ciphertext {i}".encode(), bytes([i]) * 7))


def commit(store: ModelStore, round_: int, history: list[Sealed], **overrides):
    args = {
        "run_id": RUN,
        "agent": AGENT,
        "round": round_,
        "sealed_sum": history[-1],
        "history": history,
        "metrics": {"f1": 0.5 + round_ / 100},
        "epsilon_by_msp": {0: 0.1 * round_, 1: 0.2 * round_},
        "n_msps": 2,
    }
    return store.commit_round(**{**args, **overrides})


def count(store: ModelStore, table: str) -> int:
    with sqlite3.connect(store.path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@pytest.fixture
def store(tmp_path):
    with ModelStore(tmp_path / "state") as opened:
        opened.start_run(RUN, AGENT, {"rounds": 3})
        yield opened


def test_layout_wal_and_schema_version(tmp_path):
    with ModelStore(tmp_path) as store:
        assert (tmp_path / DB_FILE).is_file()
        assert store.blobs.directory == tmp_path / "blobs"
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [
                (SCHEMA_VERSION,)
            ]
    ModelStore(tmp_path).close()  # reopening does not add a second version row
    with sqlite3.connect(tmp_path / DB_FILE) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1


def test_a_newer_schema_is_refused(tmp_path):
    ModelStore(tmp_path).close()
    with sqlite3.connect(tmp_path / DB_FILE) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="later release"):
        ModelStore(tmp_path)


def test_commit_round_records_version_blobs_and_mirror(store):
    s1 = sealed(1)
    version = commit(store, 1, [s1])
    assert (version.agent, version.run_id, version.round) == (AGENT, RUN, 1)
    assert version.key_id == "k1" and version.n_msps == 2
    assert version.metrics == {"f1": 0.51}
    assert version.epsilon_max == pytest.approx(0.2)
    assert version.history == (version.digest,)
    assert store.load_sealed(version.digest) == s1
    assert store.versions() == [version]
    assert store.epsilon_mirror(AGENT) == pytest.approx({0: 0.1, 1: 0.2})


def test_committing_the_same_round_twice_writes_nothing(store):
    first = commit(store, 1, [sealed(1)])
    blobs_before = set(store.blobs)
    again = commit(store, 1, [sealed(99)], epsilon_by_msp={0: 5.0, 7: 1.0}, n_msps=9)
    assert again == first
    assert count(store, "versions") == 1
    assert count(store, "ledger_mirror") == 2
    assert set(store.blobs) == blobs_before  # the second sum was not even written
    assert store.epsilon_mirror(AGENT) == pytest.approx({0: 0.1, 1: 0.2})


def test_update_metrics_merges_into_a_committed_round(store):
    commit(store, 1, [sealed(1)], metrics={"loss": 0.7})
    updated = store.update_metrics(run_id=RUN, agent=AGENT, round=1, metrics={"f1": 0.9})
    assert updated.metrics == {"loss": 0.7, "f1": 0.9}
    assert store.versions() == [updated]
    with pytest.raises(InvalidRecordError, match="not committed"):
        store.update_metrics(run_id=RUN, agent=AGENT, round=2, metrics={"f1": 0.9})


def test_history_and_mirror_follow_the_rounds(store):
    s1, s2 = sealed(1), sealed(2)
    commit(store, 1, [s1])
    v2 = commit(store, 2, [s1, s2], epsilon_by_msp={0: 0.3, 1: 0.25, 2: 0.05})
    assert store.load_history(v2) == [s1, s2]
    assert store.last_completed_round(RUN, AGENT) == 2
    assert store.epsilon_mirror(AGENT) == pytest.approx({0: 0.3, 1: 0.25, 2: 0.05})
    assert [v.epsilon_max for v in store.versions(AGENT)] == pytest.approx([0.2, 0.3])


def test_the_mirror_keeps_flowers_unsigned_64_bit_node_ids(store):
    # A deployment's MSP ids are Flower node ids, uint64; SQLite's INTEGER is signed.
    ids = {0: 0.1, 2**63 - 1: 0.2, 2**63: 0.3, 6907231777736681120: 0.4, 2**64 - 1: 0.5}
    commit(store, 1, [sealed(1)], epsilon_by_msp=ids)
    assert store.epsilon_mirror(AGENT) == pytest.approx(ids)
    with pytest.raises(InvalidRecordError, match="below 2\\*\\*64"):
        commit(store, 2, [sealed(2)], epsilon_by_msp={2**64: 0.1})


def test_resume_state_after_reopening(tmp_path):
    s1, s2 = sealed(1), sealed(2)
    with ModelStore(tmp_path) as store:
        assert store.resume_state(RUN, AGENT) == (0, [])
        store.start_run(RUN, AGENT, {"rounds": 3})
        commit(store, 1, [s1])
        commit(store, 2, [s2])  # an averaging agent keeps only the latest sum
    with ModelStore(tmp_path) as reopened:
        reopened.start_run(RUN, AGENT, {"rounds": 3})  # a restarted coordinator: no-op
        assert reopened.resume_state(RUN, AGENT) == (2, [s2])
        assert reopened.last_completed_round(RUN, AGENT) == 2
        assert reopened.last_completed_round("other-run", AGENT) == 0
        assert commit(reopened, 3, [s2, sealed(3)]).round == 3


def test_a_round_that_kept_the_model_is_recorded_without_a_sum(store):
    s1 = sealed(1)
    commit(store, 1, [s1])
    kept = commit(store, 2, [s1], sealed_sum=None, epsilon_by_msp={0: 0.9, 1: 0.2})
    assert kept.digest is None and kept.history == store.versions()[0].history
    assert store.resume_state(RUN, AGENT) == (2, [s1])
    assert store.epsilon_mirror(AGENT)[0] == pytest.approx(0.9)
    with pytest.raises(InvalidRecordError, match="previous round's"):
        commit(store, 3, [s1, sealed(3)], sealed_sum=None)


def test_commit_refuses_inconsistent_rounds(store):
    commit(store, 2, [sealed(2)])
    with pytest.raises(InvalidRecordError, match="commit rounds in order"):
        commit(store, 1, [sealed(1)])
    with pytest.raises(InvalidRecordError, match="end with its 'sealed_sum'"):
        commit(store, 3, [sealed(3)], sealed_sum=sealed(4))
    with pytest.raises(InvalidRecordError, match="start_run"):
        commit(store, 1, [sealed(1)], run_id="never-started")
    with pytest.raises(InvalidRecordError, match="epsilon_by_msp"):
        commit(store, 3, [sealed(3)], epsilon_by_msp={0: float("nan")})
    with pytest.raises(InvalidRecordError, match="'round' parameter"):
        commit(store, 0, [sealed(3)])
    assert store.last_completed_round(RUN, AGENT) == 2


def test_start_run_with_another_plan_is_refused(store):
    store.start_run(RUN, AGENT, {"rounds": 3})
    with pytest.raises(InvalidRecordError, match="another plan"):
        store.start_run(RUN, AGENT, {"rounds": 4})
    with pytest.raises(InvalidRecordError, match="JSON"):
        store.start_run("run-2", AGENT, {"rounds": object()})
    store.finish_run(RUN, AGENT, status="stopped")
    assert [(r.run_id, r.status, r.plan) for r in store.runs()] == [(RUN, "stopped", {"rounds": 3})]


def test_export_writes_the_sealed_model_and_nothing_plaintext(store, tmp_path):
    s1, s2 = sealed(1), sealed(2)
    commit(store, 1, [s1])
    version = commit(store, 2, [s1, s2])
    path = store.export(version, tmp_path / "model.meshfl")
    meta, history = read_export(path)
    assert history == [s1, s2]
    assert meta["agent"] == AGENT and meta["round"] == 2 and meta["key_id"] == "k1"
    assert meta["backend"] == "ckks" and meta["digest"] == version.digest
    assert meta["epsilon_max"] == pytest.approx(version.epsilon_max)

    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptBlobError, match=str(path)):
        read_export(path)


def test_export_warns_when_the_model_is_not_encrypted(store, tmp_path):
    clear = PlaintextSealer().seal(np.array([1.0, 2.0]))
    version = commit(store, 1, [clear])
    with pytest.warns(UserWarning, match="unencrypted"):
        store.export(version, tmp_path / "clear.meshfl")


def test_a_lost_blob_is_reported_on_resume(store):
    version = commit(store, 1, [sealed(1)])
    store.blobs.path(version.digest).unlink()
    with pytest.raises(MissingBlobError, match=version.digest):
        store.resume_state(RUN, AGENT)


def test_status_and_a_concurrent_read_only_reader(store):
    commit(store, 1, [sealed(1)])
    store.start_run(RUN, "anomaly", {"rounds": 5})
    with ModelStore(store.state_dir, read_only=True) as reader:
        commit(store, 2, [sealed(2)])  # the writer goes on while the reader is open
        status = reader.status()
        with pytest.raises(StoreError, match="read_only"):
            reader.start_run("x", AGENT, {})
    json.dumps(status)  # serialisable for the CLI
    runs = {(r["run_id"], r["agent"]): r for r in status["runs"]}
    assert runs[RUN, AGENT]["last_round"] == 2
    assert runs[RUN, AGENT]["planned_rounds"] == 3
    assert runs[RUN, "anomaly"]["last_round"] == 0
    assert status["agents"][AGENT]["versions"] == 2
    assert status["agents"][AGENT]["epsilon_max"] == pytest.approx(0.4)
    assert status["agents"]["anomaly"]["last_run"] is None


def test_read_only_needs_an_existing_state_directory(tmp_path):
    with pytest.raises(StoreError, match="no coordinator state"):
        ModelStore(tmp_path / "nowhere", read_only=True)
    assert not (tmp_path / "nowhere").exists()


# -- crash atomicity -------------------------------------------------------------------------
CRASHING_COORDINATOR = textwrap.dedent(
    """
    import os, signal, sys
    from meshfl.secure.backend import Sealed
    from meshfl.store import BlobStore, ModelStore

    state, point = sys.argv[1], sys.argv[2]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    def after(original):
        def wrapped(*args, **kwargs):
            result = original(*args, **kwargs)
            die()
            return result
        return wrapped

    s1 = Sealed("ckks", "k1", 5, (b"round one",))
    s2 = Sealed("ckks", "k1", 5, (b"round two",))
    store = ModelStore(state)
    store.start_run("run-1", "forest", {"rounds": 2})
    common = dict(run_id="run-1", agent="forest", metrics={}, n_msps=2)
    store.commit_round(round=1, sealed_sum=s1, history=[s1], epsilon_by_msp={0: 0.5}, **common)

    if point == "between-blobs":       # the first of two blobs is on disk
        BlobStore.put = after(BlobStore.put)
    elif point == "before-transaction":  # every blob on disk, no row yet
        ModelStore._transaction = die
    elif point == "inside-transaction":  # version row inserted, mirror not, no COMMIT
        ModelStore._insert_version = after(ModelStore._insert_version)
    elif point == "before-commit":       # both inserts done, no COMMIT
        ModelStore._insert_mirror = after(ModelStore._insert_mirror)
    store.commit_round(round=2, sealed_sum=s2, history=[s1, s2], epsilon_by_msp={0: 0.9}, **common)
    sys.exit(3)  # not reached
    """
)


@pytest.mark.parametrize(
    "point", ["between-blobs", "before-transaction", "inside-transaction", "before-commit"]
)
def test_a_crash_inside_a_commit_leaves_the_previous_round(tmp_path, point):
    state = tmp_path / "state"
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_COORDINATOR, str(state), point],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    s1, s2 = Sealed("ckks", "k1", 5, (b"round one",)), Sealed("ckks", "k1", 5, (b"round two",))
    with ModelStore(state) as store:
        assert store.resume_state("run-1", "forest") == (1, [s1])
        assert [v.round for v in store.versions()] == [1]
        assert store.epsilon_mirror("forest") == {0: 0.5}
        assert count(store, "ledger_mirror") == 1
        store.collect_garbage()  # drops the dead commit's blob, keeps round 1's
        assert store.load_history(store.versions()[0]) == [s1]

        v2 = store.commit_round(
            run_id="run-1",
            agent="forest",
            round=2,
            sealed_sum=s2,
            history=[s1, s2],
            metrics={},
            epsilon_by_msp={0: 0.9},
            n_msps=2,
        )
        assert store.resume_state("run-1", "forest") == (2, [s1, s2])
        assert v2.epsilon_max == pytest.approx(0.9)
        assert store.epsilon_mirror("forest") == {0: 0.9}


def test_collect_garbage_keeps_every_referenced_blob(store):
    s1, s2 = sealed(1), sealed(2)
    commit(store, 1, [s1])
    commit(store, 2, [s1, s2])
    orphan = store.blobs.put(b"left by a crash")
    assert store.collect_garbage() == 1
    assert not store.blobs.has(orphan)
    assert store.resume_state(RUN, AGENT) == (2, [s1, s2])
