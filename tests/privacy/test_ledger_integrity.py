"""The privacy ledger refuses every way of losing spent ε that the privacy audit found.

Each test is an attack from the audit (issue 11 §3): deleting the ledger, dropping or cutting
its last line, garbling it, rewriting a line, or restoring an old copy. None may ever make a
report show less ε than was released; each is refused with a ``LedgerCorruptError`` that
names the file and says how to recover.
"""

import itertools
import json
import math
import shutil

import pytest

from meshfl.config.errors import MeshflError
from meshfl.privacy import ledger as ledger_module
from meshfl.privacy.accountant import epsilon_spent
from meshfl.privacy.events import PrivacyEvent
from meshfl.privacy.ledger import LedgerCorruptError, PrivacyLedger

AGENT = "anomaly"
DELTA = 1e-5


def event(i: int) -> PrivacyEvent:
    return PrivacyEvent(
        "gaussian", noise_multiplier=5.0 + i / 10, sample_rate=1.0, steps=1, unit="msp"
    )


def eps(events: list[PrivacyEvent]) -> float:
    return epsilon_spent(events, delta=DELTA, accountant="rdp")


def spend(ledger: PrivacyLedger, n: int) -> float:
    """Record ``n`` rounds as train_round does; the ε released."""
    for i in range(n):
        assert ledger.record(AGENT, f"run:{i}:s", event(i))
    return eps([event(i) for i in range(n)])


def assert_refused(call, path, *more: str) -> LedgerCorruptError:
    with pytest.raises(LedgerCorruptError) as info:
        call()
    message = str(info.value)
    assert str(path) in message
    assert "restore" in message.lower()
    assert "acknowledge_loss" in message
    for text in more:
        assert text in message
    return info.value


# -- the audit's attacks ---------------------------------------------------------------------


def test_deleting_the_ledger_does_not_give_a_fresh_budget(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 3)
    path = ledger.path(AGENT)
    path.unlink()
    fresh = PrivacyLedger(tmp_path)
    assert_refused(lambda: fresh.events(AGENT), path, "missing")
    assert_refused(lambda: fresh.epsilon(AGENT, delta=DELTA, accountant="rdp"), path)
    assert_refused(lambda: fresh.record(AGENT, "run:9:s", event(9)), path)
    assert not path.exists()  # a refused record writes nothing
    assert AGENT in fresh.agents()  # the agent is still known, by its mark


def test_dropping_the_last_line_is_refused(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 3)
    path = ledger.path(AGENT)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))
    assert_refused(lambda: ledger.epsilon(AGENT, delta=DELTA, accountant="rdp"), path, "3")
    assert_refused(lambda: ledger.keys(AGENT), path)


def test_a_half_written_last_line_is_not_ignored(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 3)
    path = ledger.path(AGENT)
    data = path.read_bytes()
    last = data[:-1].rfind(b"\n") + 1
    path.write_bytes(data[: last + (len(data) - last) // 2])  # the third record cut in half
    assert_refused(lambda: ledger.events(AGENT), path)


def test_a_garbled_ledger_is_refused_not_read_as_zero(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 2)
    path = ledger.path(AGENT)
    path.write_bytes(b"\x00" * 512)  # a block of zeros, no newline: what a disk may leave
    assert_refused(lambda: ledger.epsilon(AGENT, delta=DELTA, accountant="rdp"), path)


def test_a_garbled_legacy_ledger_without_a_newline_is_refused(tmp_path):
    path = tmp_path / f"ledger-{AGENT}.jsonl"
    path.write_bytes(b'{"key": "run:0", "ag\x00\x00\x00 garbage')
    with pytest.raises(LedgerCorruptError, match="incomplete last line") as info:
        PrivacyLedger(tmp_path).epsilon(AGENT, delta=DELTA, accountant="rdp")
    assert str(path) in str(info.value)


def test_rewriting_a_line_breaks_the_hash_chain(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 3)
    path = ledger.path(AGENT)
    lines = path.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[1])
    entry["event"]["noise_multiplier"] = 500.0  # claim the round was nearly free
    lines[1] = (json.dumps(entry) + "\n").encode()
    path.write_bytes(b"".join(lines))
    assert_refused(lambda: ledger.events(AGENT), path, "line 2", "hash")


def test_removing_a_middle_line_breaks_the_hash_chain(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 4)
    path = ledger.path(AGENT)
    lines = path.read_bytes().splitlines(keepends=True)
    del lines[1]
    path.write_bytes(b"".join(lines))
    assert_refused(lambda: ledger.events(AGENT), path, "line 2")


def test_restoring_an_older_copy_is_refused(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 2)
    old = ledger.path(AGENT).read_bytes()
    spend_more = [ledger.record(AGENT, f"run:{i}:s", event(i)) for i in range(2, 4)]
    assert all(spend_more)
    ledger.path(AGENT).write_bytes(old)
    assert_refused(lambda: ledger.events(AGENT), ledger.path(AGENT), "4")


def test_a_line_cut_short_after_the_mark_is_counted_as_spent(tmp_path):
    """A crash in the middle of a write: the safe reading of the partial line is "spent"."""
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 2)
    path = ledger.path(AGENT)
    complete = path.read_bytes()
    # What record() writes for run:2, cut short after the event (before the chain hashes).
    cut = json.dumps({"key": "run:2:s", "event": event(2).to_dict()})[:-1] + ', "agent": "an'
    path.write_bytes(complete + cut.encode())
    restarted = PrivacyLedger(tmp_path)
    assert restarted.events(AGENT) == [event(0), event(1), event(2)]
    assert "run:2:s" in restarted.keys(AGENT)
    assert restarted.epsilon(AGENT, delta=DELTA, accountant="rdp") == pytest.approx(
        eps([event(0), event(1), event(2)])
    )
    assert not restarted.record(AGENT, "run:2:s", event(2))  # already spent: not twice
    assert restarted.record(AGENT, "run:3:s", event(3))
    assert path.read_bytes().startswith(complete)
    assert all(json.loads(raw) for raw in path.read_bytes().splitlines())
    assert PrivacyLedger(tmp_path).events(AGENT) == [event(i) for i in range(4)]


def test_a_line_cut_short_before_its_event_is_refused_with_how_to_recover(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 2)
    path = ledger.path(AGENT)
    path.write_bytes(path.read_bytes() + b'{"key": "run:2:s", "ev')
    err = assert_refused(lambda: ledger.events(AGENT), path, "incomplete last line")
    assert "never left" in str(err)  # the one case where removing the bytes by hand is right
    assert_refused(lambda: ledger.record(AGENT, "run:3:s", event(3)), path)


def test_a_complete_last_line_without_its_newline_is_counted(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 2)
    path = ledger.path(AGENT)
    path.write_bytes(path.read_bytes()[:-1])
    assert ledger.events(AGENT) == [event(0), event(1)]
    assert ledger.record(AGENT, "run:2:s", event(2))
    assert PrivacyLedger(tmp_path).events(AGENT) == [event(0), event(1), event(2)]


def test_deleting_the_mark_of_a_chained_ledger_is_refused(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 3)
    ledger.mark_path(AGENT).unlink()
    assert_refused(lambda: ledger.events(AGENT), ledger.mark_path(AGENT), "missing")


def test_a_garbled_mark_is_refused(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 1)
    ledger.mark_path(AGENT).write_text("{not json")
    assert_refused(lambda: ledger.events(AGENT), ledger.mark_path(AGENT))


# -- the chain and the mark --------------------------------------------------------------------


def test_each_line_carries_the_hash_of_the_previous_one(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 3)
    entries = [json.loads(raw) for raw in ledger.path(AGENT).read_bytes().splitlines()]
    assert entries[0]["prev"] == "0" * 64
    for before, after in itertools.pairwise(entries):
        assert after["prev"] == before["hash"]
    assert len({entry["hash"] for entry in entries}) == 3
    mark = ledger.high_water_mark(AGENT)
    assert mark is not None
    assert mark.lines == 3 and mark.head == entries[-1]["hash"]


def test_the_mark_is_written_atomically_and_holds_epsilon(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    for i in range(3):
        ledger.record(AGENT, f"run:{i}:s", event(i), delta=DELTA, accountant="rdp")
    mark = ledger.high_water_mark(AGENT)
    assert mark is not None
    assert mark.epsilon("rdp", DELTA) == pytest.approx(eps([event(i) for i in range(3)]))
    assert mark.epsilon("prv", DELTA) is None
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []
    stored = json.loads(ledger.mark_path(AGENT).read_text())
    assert stored["lines"] == 3 and stored["agent"] == AGENT


def test_a_report_never_shows_less_than_the_mark(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    for i in range(2):
        ledger.record(AGENT, f"run:{i}:s", event(i), delta=DELTA, accountant="rdp")
    released = eps([event(0), event(1)])
    # Whatever computes less than the mark (another accountant version, a rounding), the
    # report shows at least what the MSP wrote down when it released the update.
    path = ledger.mark_path(AGENT)
    stored = json.loads(path.read_text())
    stored["epsilon"] = [{"accountant": "rdp", "delta": DELTA, "epsilon": released + 0.5}]
    path.write_text(json.dumps(stored))
    assert ledger.epsilon(AGENT, delta=DELTA, accountant="rdp") == released + 0.5
    assert ledger.epsilon(AGENT, delta=DELTA / 10, accountant="rdp") >= released + 0.5
    assert ledger.epsilon(AGENT, delta=DELTA, accountant="prv") < released + 0.5  # not its δ


def test_a_crash_between_the_line_and_the_mark_is_accepted(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 2)
    mark = ledger.mark_path(AGENT).read_bytes()
    ledger.record(AGENT, "run:2:s", event(2))
    ledger.mark_path(AGENT).write_bytes(mark)  # the line was fsynced; the mark was not
    assert ledger.events(AGENT) == [event(0), event(1), event(2)]
    assert ledger.record(AGENT, "run:3:s", event(3))
    assert ledger.high_water_mark(AGENT).lines == 4


def test_a_crash_before_the_first_mark_is_accepted(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 1)
    ledger.mark_path(AGENT).unlink()  # the first line was fsynced, its mark never written
    assert ledger.events(AGENT) == [event(0)]
    assert ledger.record(AGENT, "run:1:s", event(1))
    assert ledger.high_water_mark(AGENT).lines == 2


# -- ledgers of the previous version -------------------------------------------------------------


def legacy_ledger(tmp_path, n: int) -> bytes:
    lines = [
        json.dumps({"key": f"old:{i}", "agent": AGENT, "time": "t", "event": event(i).to_dict()})
        for i in range(n)
    ]
    data = "".join(line + "\n" for line in lines).encode()
    (tmp_path / f"ledger-{AGENT}.jsonl").write_bytes(data)
    return data


def test_a_ledger_of_the_previous_version_loads_and_chains_after_its_lines(tmp_path):
    legacy = legacy_ledger(tmp_path, 2)
    ledger = PrivacyLedger(tmp_path)
    assert ledger.events(AGENT) == [event(0), event(1)]
    assert ledger.high_water_mark(AGENT) is None
    assert ledger.record(AGENT, "run:2:s", event(2))
    assert ledger.path(AGENT).read_bytes().startswith(legacy)
    assert ledger.events(AGENT) == [event(0), event(1), event(2)]
    assert ledger.high_water_mark(AGENT).lines == 3
    assert ledger.keys(AGENT) == {"old:0", "old:1", "run:2:s"}


def test_legacy_lines_are_covered_by_the_chain_once_it_starts(tmp_path):
    legacy_ledger(tmp_path, 2)
    ledger = PrivacyLedger(tmp_path)
    ledger.record(AGENT, "run:2:s", event(2))
    path = ledger.path(AGENT)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[0] = lines[0].replace(b'"noise_multiplier": 5.0', b'"noise_multiplier": 50.0')
    path.write_bytes(b"".join(lines))
    assert_refused(lambda: ledger.events(AGENT), path, "line 3")


def test_a_legacy_line_after_the_chain_started_is_refused(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 1)
    path = ledger.path(AGENT)
    extra = json.dumps({"key": "x", "agent": AGENT, "time": "t", "event": event(5).to_dict()})
    path.write_bytes(path.read_bytes() + extra.encode() + b"\n")
    assert_refused(lambda: ledger.events(AGENT), path, "line 2")


# -- the coordinator's mirror --------------------------------------------------------------------


def test_check_against_the_coordinator_mirror(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    released = spend(ledger, 3)
    assert ledger.check_against(AGENT, released, delta=DELTA, accountant="rdp") == pytest.approx(
        released
    )
    assert ledger.check_against(AGENT, 0.0, delta=DELTA, accountant="rdp") == pytest.approx(
        released
    )


def test_check_against_a_mirror_of_rounded_up_reports(tmp_path):
    """MSPs report ε rounded up to budget / 20: the ledger is compared on the same grid."""
    from meshfl.privacy.report import reported_epsilon  # newer than the audited 2081f48

    ledger = PrivacyLedger(tmp_path)
    released = spend(ledger, 2)
    budget = 2.0
    mirror = reported_epsilon(released, budget)
    assert mirror > released
    with pytest.raises(ledger_module.LedgerBehindError):
        ledger.check_against(AGENT, mirror, delta=DELTA, accountant="rdp")
    shown = ledger.check_against(AGENT, mirror, delta=DELTA, accountant="rdp", budget=budget)
    assert shown == pytest.approx(released)
    for path in tmp_path.iterdir():
        path.unlink()
    with pytest.raises(ledger_module.LedgerBehindError):
        ledger.check_against(AGENT, mirror, delta=DELTA, accountant="rdp", budget=budget)


def test_a_ledger_behind_the_mirror_is_refused(tmp_path):
    """Ledger and mark both deleted (or an old copy of the whole state directory restored):
    only the coordinator still knows what was released."""
    ledger = PrivacyLedger(tmp_path)
    released = spend(ledger, 3)
    for path in tmp_path.iterdir():
        path.unlink()
    with pytest.raises(ledger_module.LedgerBehindError) as info:
        ledger.check_against(AGENT, released, delta=DELTA, accountant="rdp")
    err = info.value
    assert isinstance(err, LedgerCorruptError) and isinstance(err, MeshflError)
    message = str(err)
    assert str(ledger.path(AGENT)) in message and f"{released:.4g}" in message
    assert "restore" in message.lower() and "acknowledge_loss" in message


def test_a_directory_removed_under_a_running_msp_is_caught_by_the_mirror(tmp_path):
    ledger = PrivacyLedger(tmp_path / "privacy")
    released = spend(ledger, 2)
    shutil.rmtree(tmp_path / "privacy")
    with pytest.raises(ledger_module.LedgerBehindError):
        ledger.check_against(AGENT, released, delta=DELTA, accountant="rdp")
    assert ledger.record(AGENT, "run:9:s", event(9))  # writing works again (after the check)


def test_check_against_refuses_a_corrupt_ledger(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 2)
    ledger.path(AGENT).unlink()
    with pytest.raises(LedgerCorruptError):
        ledger.check_against(AGENT, 0.0, delta=DELTA, accountant="rdp")


# -- acknowledging a loss: never a fresh budget --------------------------------------------------


def test_acknowledging_a_deleted_ledger_counts_the_mark_as_spent(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    for i in range(3):
        ledger.record(AGENT, f"run:{i}:s", event(i), delta=DELTA, accountant="rdp")
    released = eps([event(i) for i in range(3)])
    ledger.path(AGENT).unlink()
    spent = ledger.acknowledge_loss(AGENT, delta=DELTA, accountant="rdp")
    assert spent >= released
    assert ledger.epsilon(AGENT, delta=DELTA, accountant="rdp") >= released
    assert ledger.epsilon(AGENT, delta=DELTA, accountant="prv") >= released
    assert ledger.high_water_mark(AGENT).lines == 1
    # then it spends on from there
    assert ledger.record(AGENT, "run:3:s", event(3))
    assert ledger.epsilon(AGENT, delta=DELTA, accountant="rdp") > spent


def test_acknowledging_a_damaged_ledger_keeps_it_aside_and_its_keys(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    for i in range(3):
        ledger.record(AGENT, f"run:{i}:s", event(i), delta=DELTA, accountant="rdp")
    path = ledger.path(AGENT)
    damaged = path.read_bytes()[:-40]
    path.write_bytes(damaged)
    ledger.acknowledge_loss(AGENT, delta=DELTA, accountant="rdp")
    [aside] = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert aside.read_bytes() == damaged
    assert {"run:0:s", "run:1:s"} <= ledger.keys(AGENT)
    assert not ledger.record(AGENT, "run:1:s", event(1))  # a replay is still declined


def test_acknowledging_the_coordinators_epsilon(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    released = spend(ledger, 3)
    for path in tmp_path.iterdir():
        path.unlink()
    ledger.acknowledge_loss(AGENT, delta=DELTA, accountant="rdp", epsilon=released)
    assert ledger.check_against(AGENT, released, delta=DELTA, accountant="rdp") >= released


def test_acknowledge_loss_refuses_when_nothing_says_what_was_spent(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    spend(ledger, 2)  # recorded without δ: the mark holds no ε
    ledger.path(AGENT).unlink()
    with pytest.raises(MeshflError, match="epsilon="):
        ledger.acknowledge_loss(AGENT, delta=DELTA, accountant="rdp")
    ledger.acknowledge_loss(AGENT, delta=DELTA, accountant="rdp", epsilon=1.0)
    assert ledger.epsilon(AGENT, delta=DELTA, accountant="rdp") >= 1.0


def test_acknowledge_loss_refuses_an_intact_ledger(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    released = spend(ledger, 2)
    with pytest.raises(MeshflError, match="nothing to acknowledge"):
        ledger.acknowledge_loss(AGENT, delta=DELTA, accountant="rdp")
    with pytest.raises(MeshflError, match="nothing to acknowledge"):
        ledger.acknowledge_loss(AGENT, delta=DELTA, accountant="rdp", epsilon=released / 2)


def test_an_infinite_mark_stays_infinite(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    ledger.record(AGENT, "run:0:s", PrivacyEvent("gaussian", math.nan, 1.0, 1), delta=DELTA)
    ledger.path(AGENT).unlink()
    assert ledger.acknowledge_loss(AGENT, delta=DELTA) == math.inf
    assert ledger.epsilon(AGENT, delta=DELTA) == math.inf
