"""Planning and recording are one step: two runs on one state directory never overspend.

The audit (issue 11 §3) ran two runs on one MSP state directory: both planned a round from the
same ledger, both trained and both recorded, and the MSP ended at ε = 0.1059 on a budget of 0.1.
``train_round`` now holds the ledger's lock from planning to recording; the run that waits
re-reads the ledger and re-plans, so it can only decline, never overspend.

Also here: a round trained again after a coordinator restart (same run, same round, new
session) is charged again, while a replayed message (same session) is declined.
"""

import multiprocessing
import threading
import time
from typing import Any

import numpy as np
import pytest

from meshfl.agents.update import Update
from meshfl.federation.msp_privacy import train_round
from meshfl.federation.records import Decline, RoundContext, RoundInstructions
from meshfl.privacy.accountant import epsilon_spent
from meshfl.privacy.config import DPConfig
from meshfl.privacy.events import PrivacyEvent
from meshfl.privacy.ledger import PrivacyLedger

AGENT = "anomaly"
SIGMA = 5.0
# With sigma = 5 (one Gaussian release per round, δ = 1e-5, RDP) three rounds spend
# ε = 1.446 and a fourth would take it to 1.694: a budget of 1.5 affords exactly three.
BUDGET = 1.5
AFFORDABLE = 3
DP = DPConfig(epsilon=BUDGET, unit="msp", noise_multiplier=SIGMA, accountant="rdp")
# Under unit="msp" the coordinator plans sigma for every MSP (RoundContext.noise_multiplier;
# releases before it came with DPConfig.noise_multiplier alone).
PLANNED = (
    {"noise_multiplier": SIGMA} if "noise_multiplier" in RoundContext.__dataclass_fields__ else {}
)


class SlowAgent:
    """Just enough of an agent for ``train_round``; training takes ``pause`` seconds."""

    name = AGENT
    supports_msp_dp = True

    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause

    def local_update(self, vector: np.ndarray, local: Any, **_: Any) -> Update:
        time.sleep(self.pause)
        return Update(vector=vector + 0.1, weight=1.0, metrics={"examples": float(len(local))})

    def privacy_shape(self, local: Any) -> tuple[str, float, int]:
        return "gaussian", 1.0, 1


def instructions(round_: int, *, run: str = "run-1", session: str = "s1", rounds: int = 6):
    return RoundInstructions(
        agent=AGENT,
        agent_config={},
        sealed=(),
        server_round=round_,
        seed=0,
        context=RoundContext(
            run_id=run, session=session, total_rounds=rounds, privacy=DP, **PLANNED
        ),
    )


def one_round(ledger: PrivacyLedger, round_: int, *, pause: float = 0.0, **context: Any):
    return train_round(
        SlowAgent(pause),  # type: ignore[arg-type]
        instructions(round_, **context),
        np.zeros(4),
        list(range(1000)),
        seed=round_,
        ledger=ledger,
        msp=0,
    )


def spent(ledger: PrivacyLedger) -> float:
    return ledger.epsilon(AGENT, delta=DP.delta, accountant=DP.accountant)


def run_rounds(directory: str, run: str, rounds: int, pause: float, start: Any) -> None:
    """One run's rounds on an MSP state directory (a process of its own, or a thread)."""
    ledger = PrivacyLedger(directory)
    epsilon_spent([PrivacyEvent("gaussian", SIGMA, 1.0, 1)], delta=DP.delta, accountant="rdp")
    start.wait()  # both runs start together, accountant warmed up
    for round_ in range(1, rounds + 1):
        one_round(ledger, round_, pause=pause, run=run, session=run)


def test_two_processes_on_one_state_directory_stay_within_the_budget(tmp_path):
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(2)
    runs = [
        spawn.Process(target=run_rounds, args=(str(tmp_path), f"run-{i}", 5, 0.4, start))
        for i in range(2)
    ]
    for process in runs:
        process.start()
    for process in runs:
        process.join(timeout=240)
    assert [process.exitcode for process in runs] == [0, 0]
    ledger = PrivacyLedger(tmp_path)
    assert spent(ledger) <= BUDGET
    assert len(ledger.events(AGENT)) == AFFORDABLE


def test_two_threads_on_one_ledger_stay_within_the_budget(tmp_path):
    start = threading.Barrier(2)
    runs = [
        threading.Thread(target=run_rounds, args=(str(tmp_path), f"run-{i}", 5, 0.2, start))
        for i in range(2)
    ]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()
    ledger = PrivacyLedger(tmp_path)
    assert spent(ledger) <= BUDGET
    assert len(ledger.events(AGENT)) == AFFORDABLE


def test_the_run_that_waits_re_reads_the_ledger_and_declines(tmp_path):
    """Run B asks while run A trains its last affordable round: B waits, re-plans, declines."""
    ledger = PrivacyLedger(tmp_path)
    for round_ in (1, 2):
        assert not isinstance(one_round(ledger, round_, run="run-a", session="a"), Decline)
    results: dict[str, Any] = {}
    a = threading.Thread(
        target=lambda: results.update(a=one_round(ledger, 3, pause=1.0, run="run-a", session="a"))
    )
    a.start()
    time.sleep(0.3)  # A holds the lock and trains
    b = one_round(PrivacyLedger(tmp_path), 1, run="run-b", session="b")
    a.join()
    assert not isinstance(results["a"], Decline)
    assert isinstance(b, Decline)
    assert "budget" in b.reason
    assert b.epsilon_spent == pytest.approx(spent(ledger))
    assert len(ledger.events(AGENT)) == AFFORDABLE and spent(ledger) <= BUDGET


def test_a_run_that_waits_too_long_declines_with_a_clear_sentence(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ledger.hold(AGENT):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        impatient = PrivacyLedger(tmp_path, lock_timeout=0.3)
        began = time.monotonic()
        outcome = one_round(impatient, 1)
        assert time.monotonic() - began < 5
    finally:
        release.set()
        holder.join()
    assert isinstance(outcome, Decline)
    assert "another run" in outcome.reason and "0.3" in outcome.reason
    assert ledger.events(AGENT) == []  # nothing trained, nothing spent
    assert not isinstance(one_round(ledger, 1), Decline)  # the next try goes through


def test_the_lock_is_reentrant_within_a_thread(tmp_path):
    ledger = PrivacyLedger(tmp_path, lock_timeout=0.5)
    with ledger.hold(AGENT), ledger.hold(AGENT):
        assert ledger.record(AGENT, "k", PrivacyEvent("gaussian", SIGMA, 1.0, 1))
        assert not isinstance(one_round(ledger, 1), Decline)
    assert len(ledger.events(AGENT)) == 2


def test_the_lock_excludes_another_process(tmp_path):
    spawn = multiprocessing.get_context("spawn")
    ledger = PrivacyLedger(tmp_path)
    with ledger.hold(AGENT):
        child = spawn.Process(target=record_with_short_timeout, args=(str(tmp_path),))
        child.start()
        child.join(timeout=120)
    assert child.exitcode == 3  # LedgerBusyError
    assert ledger.events(AGENT) == []


def record_with_short_timeout(directory: str) -> None:
    from meshfl.privacy.ledger import LedgerBusyError

    try:
        PrivacyLedger(directory, lock_timeout=0.2).record(
            AGENT, "k", PrivacyEvent("gaussian", SIGMA, 1.0, 1)
        )
    except LedgerBusyError:
        raise SystemExit(3) from None


# -- a resumed round is charged again; a replay is declined --------------------------------------


def test_a_resumed_round_is_charged_again_and_a_replay_is_declined(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    first = one_round(ledger, 2, session="before-the-restart")
    assert not isinstance(first, Decline)
    # The coordinator was killed after sending round 2 and restarted: a new session sends
    # round 2 again. The MSP trains it again, and both releases happened: it pays twice.
    again = one_round(ledger, 2, session="after-the-restart")
    assert not isinstance(again, Decline)
    one = PrivacyEvent("gaussian", SIGMA, 1.0, 1, unit="msp")
    assert ledger.events(AGENT) == [one, one]
    assert ledger.keys(AGENT) == {"run-1:2:before-the-restart", "run-1:2:after-the-restart"}
    both = epsilon_spent([one, one], delta=DP.delta, accountant="rdp")
    assert spent(ledger) == pytest.approx(both)
    assert again[1] == pytest.approx(both) and first[1] < both
    # The same message delivered twice (same session) is declined, and costs nothing.
    replay = one_round(ledger, 2, session="after-the-restart")
    assert isinstance(replay, Decline)
    assert "replay" in replay.reason and "after-the-restart" in replay.reason
    assert replay.epsilon_spent == pytest.approx(both)
    assert len(ledger.events(AGENT)) == 2


def test_a_corrupt_ledger_fails_the_round_rather_than_reporting_zero(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    assert not isinstance(one_round(ledger, 1), Decline)
    ledger.path(AGENT).write_bytes(b"\x00" * 300)
    from meshfl.privacy.ledger import LedgerCorruptError

    with pytest.raises(LedgerCorruptError):
        one_round(ledger, 2)
