import json
import logging
import math
import os
import tempfile
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshfl.config.errors import ConfigError, MeshflError
from meshfl.privacy.accountant import epsilon_spent
from meshfl.privacy.events import PrivacyEvent
from meshfl.privacy.ledger import LedgerCorruptError, PrivacyLedger

AGENT = "threat_intel"


def event(i: int) -> PrivacyEvent:
    """A distinct event per i, so that events identify the record they came from."""
    return PrivacyEvent(
        "dp-sgd",
        noise_multiplier=2.0 + i / 10,
        sample_rate=0.01,
        steps=50,
        extra={"round": float(i)},
    )


def test_events_survive_a_restart(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    for i in range(3):
        assert ledger.record(AGENT, f"run:{i}", event(i))
    ledger.record("anomaly", "run:0", PrivacyEvent("gaussian", 5.0, 1.0, 1, unit="msp"))

    restarted = PrivacyLedger(tmp_path)
    assert restarted.events(AGENT) == [event(0), event(1), event(2)]
    assert restarted.keys(AGENT) == {"run:0", "run:1", "run:2"}
    assert restarted.events("anomaly") == [PrivacyEvent("gaussian", 5.0, 1.0, 1, unit="msp")]
    assert restarted.agents() == ["anomaly", AGENT]
    assert restarted.epsilon(AGENT, delta=1e-5) == ledger.epsilon(AGENT, delta=1e-5)


def test_file_format_is_one_json_object_per_line(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    ledger.record(AGENT, "run:1", event(1))
    lines = (tmp_path / f"ledger-{AGENT}.jsonl").read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert set(entry) == {"key", "agent", "time", "event", "prev", "hash"}
    assert list(entry)[:2] == ["key", "event"]  # a line cut short keeps what it spent
    assert entry["key"] == "run:1" and entry["agent"] == AGENT
    assert entry["time"].endswith("+00:00")
    assert PrivacyEvent.from_dict(entry["event"]) == event(1)


def test_a_key_is_recorded_once(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    assert ledger.record(AGENT, "run:1", event(1))
    path = ledger.path(AGENT)
    size = path.stat().st_size
    assert not ledger.record(AGENT, "run:1", event(2))  # a replayed message
    assert not PrivacyLedger(tmp_path).record(AGENT, "run:1", event(1))
    assert path.stat().st_size == size
    assert ledger.events(AGENT) == [event(1)]


def test_unknown_agent_has_spent_nothing(tmp_path):
    ledger = PrivacyLedger(tmp_path / "new" / "dir")
    assert ledger.events(AGENT) == []
    assert ledger.keys(AGENT) == set()
    assert ledger.epsilon(AGENT, delta=1e-5) == 0.0
    assert ledger.agents() == []


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_epsilon_grows_with_every_event(tmp_path, accountant):
    ledger = PrivacyLedger(tmp_path)
    previous = 0.0
    for i in range(5):
        ledger.record(AGENT, f"run:{i}", event(i))
        now = ledger.epsilon(AGENT, delta=1e-5, accountant=accountant)
        assert now > previous
        assert now == epsilon_spent(ledger.events(AGENT), delta=1e-5, accountant=accountant)
        previous = now


def test_a_truncated_last_line_is_counted_as_spent_then_completed(tmp_path, caplog):
    ledger = PrivacyLedger(tmp_path)
    ledger.record(AGENT, "run:0", event(0))
    ledger.record(AGENT, "run:1", event(1))
    path = ledger.path(AGENT)
    complete = path.read_bytes()
    # A crash in the middle of the third write, after its event.
    line = json.dumps({"key": "run:2", "event": event(2).to_dict(), "agent": AGENT})
    path.write_bytes(complete + line.encode()[: line.index('"agent"') + 5])

    with caplog.at_level(logging.WARNING, logger="meshfl.privacy.ledger"):
        restarted = PrivacyLedger(tmp_path)
        assert restarted.events(AGENT) == [event(0), event(1), event(2)]
    assert "cut short" in caplog.text and str(path) in caplog.text

    assert not restarted.record(AGENT, "run:2", event(2))
    assert restarted.record(AGENT, "run:3", event(3))
    assert path.read_bytes().startswith(complete)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(raw) for raw in lines[:-1])
    assert json.loads(lines[2])["recovered"]
    assert restarted.events(AGENT) == [event(0), event(1), event(2), event(3)]


def test_a_truncated_line_whose_event_cannot_be_read_is_refused(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    ledger.record(AGENT, "run:0", event(0))
    path = ledger.path(AGENT)
    damaged = path.read_bytes() + b'{"key": "run:1", "event": {"mechanism": "dp-s'
    path.write_bytes(damaged)
    with pytest.raises(LedgerCorruptError, match="incomplete last line"):
        PrivacyLedger(tmp_path).events(AGENT)
    with pytest.raises(LedgerCorruptError):
        ledger.record(AGENT, "run:2", event(2))
    assert path.read_bytes() == damaged


def test_a_complete_line_without_its_newline_is_counted(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    ledger.record(AGENT, "run:0", event(0))
    ledger.record(AGENT, "run:1", event(1))
    path = ledger.path(AGENT)
    path.write_bytes(path.read_bytes()[:-1])  # its update may have left: it was spent
    assert ledger.events(AGENT) == [event(0), event(1)]
    assert not ledger.record(AGENT, "run:1", event(1))
    assert ledger.record(AGENT, "run:2", event(2))
    assert ledger.events(AGENT) == [event(0), event(1), event(2)]


@pytest.mark.parametrize(
    "bad",
    [
        b"garbage",
        b"{}",
        b"[1, 2]",
        b'{"key": "run:9", "agent": "anomaly", "time": "t", "event": {}}',
        b'{"key": "", "agent": "threat_intel", "time": "t", "event": {}}',
        b'{"key": "run:9", "agent": "threat_intel", "time": "t", "event": {"steps": "x"}}',
        b'{"key": "run:9", "agent": "threat_intel", "time": "t", '
        b'"event": {"mechanism": "laplace"}}',
        b"\xff\xfe",
        b"",
    ],
)
def test_a_corrupt_line_raises_naming_file_and_line(tmp_path, bad):
    ledger = PrivacyLedger(tmp_path)
    for i in range(3):
        ledger.record(AGENT, f"run:{i}", event(i))
    path = ledger.path(AGENT)
    lines = path.read_bytes().split(b"\n")
    lines[1] = bad
    path.write_bytes(b"\n".join(lines))
    damaged = path.read_bytes()

    with pytest.raises(LedgerCorruptError, match=f"{path}, line 2") as info:
        ledger.events(AGENT)
    assert isinstance(info.value, MeshflError)
    with pytest.raises(LedgerCorruptError):
        ledger.epsilon(AGENT, delta=1e-5)
    with pytest.raises(LedgerCorruptError):
        PrivacyLedger(tmp_path).record(AGENT, "run:3", event(3))
    assert path.read_bytes() == damaged  # never reset nor appended to


def test_a_repeated_key_in_the_file_is_corruption(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    ledger.record(AGENT, "run:0", event(0))
    path = ledger.path(AGENT)
    path.write_bytes(path.read_bytes() * 2)
    with pytest.raises(LedgerCorruptError, match="line 2, repeats the key 'run:0'"):
        ledger.events(AGENT)


@pytest.mark.parametrize("agent", ["", "../escape", "a/b", "1abc", "a b", "x" * 101, None, 3])
def test_agent_names_must_be_identifiers(tmp_path, agent):
    ledger = PrivacyLedger(tmp_path)
    with pytest.raises(ConfigError, match="'agent' parameter of PrivacyLedger"):
        ledger.record(agent, "run:1", event(1))
    with pytest.raises(ConfigError):
        ledger.events(agent)
    assert list(tmp_path.iterdir()) == []


def test_record_rejects_bad_keys_and_events(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    with pytest.raises(ConfigError, match="'key' parameter"):
        ledger.record(AGENT, "", event(1))
    with pytest.raises(ConfigError, match="'event' parameter"):
        ledger.record(AGENT, "run:1", {"mechanism": "dp-sgd"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'event' parameter"):
        ledger.record(AGENT, "run:1", PrivacyEvent("laplace"))  # type: ignore[arg-type]
    assert ledger.events(AGENT) == []


def test_an_event_without_valid_noise_round_trips_as_infinite_epsilon(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    ledger.record(AGENT, "run:1", PrivacyEvent("dp-sgd", math.nan, 0.1, 10))
    [stored] = PrivacyLedger(tmp_path).events(AGENT)
    assert math.isnan(stored.noise_multiplier)
    assert ledger.epsilon(AGENT, delta=1e-5) == math.inf


def test_records_are_fsynced_and_a_new_file_also_fsyncs_its_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc") else None)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    ledger = PrivacyLedger(tmp_path)
    ledger.record(AGENT, "run:1", event(1))
    # the file, the directory that now holds it, then the high-water mark's temporary file
    # and the directory again for its rename
    assert len(synced) == 4
    ledger.record(AGENT, "run:2", event(2))
    assert len(synced) == 7
    ledger.record(AGENT, "run:2", event(2))  # nothing written, nothing synced
    assert len(synced) == 7
    if os.path.exists("/proc"):
        assert synced == [False, True, False, True, False, False, True]


def test_concurrent_records_are_serialised(tmp_path):
    ledgers = [PrivacyLedger(tmp_path) for _ in range(2)]  # two instances, one file
    results: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        for i in range(20):
            ok = ledgers[worker % 2].record(AGENT, f"run:{i}", event(i))
            with lock:
                results.append((i, ok))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(i for i, ok in results if ok) == list(range(20))  # each key exactly once
    assert sorted(ledgers[0].events(AGENT), key=lambda e: e.extra["round"]) == [
        event(i) for i in range(20)
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 7), max_size=25))
def test_events_are_the_unique_keys_in_first_seen_order(keys):
    with tempfile.TemporaryDirectory() as directory:
        ledger = PrivacyLedger(directory)
        returned = [ledger.record(AGENT, f"k{k}", event(k)) for k in keys]
        unique = list(dict.fromkeys(keys))
        assert returned == [keys.index(k) == i for i, k in enumerate(keys)]
        assert PrivacyLedger(directory).events(AGENT) == [event(k) for k in unique]
        assert ledger.keys(AGENT) == {f"k{k}" for k in unique}
