"""A round costs the same at round 30 as at round 3 (issue 14): messages carry what is new."""

from __future__ import annotations

import logging

import pytest

from meshfl.federation import AgentPlan, InProcessGrid, make_client_app, sealed_model
from meshfl.federation.records import decode_instructions
from meshfl.federation.server_app import run_plan
from meshfl.federation.strategy import HISTORY_CHUNK
from meshfl.secure import plaintext_backend
from meshfl.simulation import make_partitions

FAST_ANOMALY = {"trees_per_round": 4, "depth": 5}


class CountingSealer:
    """The plaintext sealer, counting the sums MSPs open."""

    def __init__(self, sealer):
        self.sealer = sealer
        self.opened = 0

    def __getattr__(self, name):
        return getattr(self.sealer, name)

    def open_payload(self, sealed):
        self.opened += 1
        return self.sealer.open_payload(sealed)


class CountingGrid(InProcessGrid):
    """Records how many sums of the global model each message it carries holds."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.carried: list[tuple[str, int]] = []

    def push_messages(self, messages):
        messages = list(messages)
        for message in messages:
            sums = len(decode_instructions(message).sealed)
            self.carried.append((message.metadata.message_type.split(".")[0], sums))
        return super().push_messages(messages)


def _run(rounds, *, forget_at=None):
    sealed_model._opened.clear()
    sealer, aggregator = plaintext_backend()
    counting = CountingSealer(sealer)
    plan = AgentPlan(agent="anomaly", agent_config=FAST_ANOMALY, rounds=rounds)
    parts = make_partitions(plan.build_agent(), num_msps=3, seed=0, samples_per_msp=60)
    app = make_client_app(
        lambda _a, ctx: parts[ctx.node_config["partition-id"]], sealer=lambda _ctx: counting
    )
    grid = CountingGrid(app, 3)
    per_round = []

    def on_round(record):
        per_round.append((grid.bytes_sent, counting.opened))
        if record["round"] == forget_at:
            sealed_model._opened.clear()  # every MSP restarts and forgets what it opened

    run = run_plan(grid, plan, aggregator, on_round=on_round)
    sent = [b - a for (a, _), (b, _) in zip([(0, 0), *per_round[:-1]], per_round, strict=True)]
    opened = [b - a for (_, a), (_, b) in zip([(0, 0), *per_round[:-1]], per_round, strict=True)]
    run.carried = grid.carried
    return run, sent, opened


def test_round_30_sends_and_opens_no_more_than_round_3():
    run, sent, opened = _run(30)
    assert [r["msps"] for r in run.history] == [3] * 30
    assert len(run.sealed_history) == 30  # the forest grew every round
    assert sent[29] <= 1.2 * sent[2], sent
    assert max(opened[2:]) == min(opened[2:]), opened  # the same work each round


def test_an_msp_that_forgot_the_history_asks_for_it_and_gets_it_once(caplog):
    caplog.set_level(logging.WARNING)
    run, sent, _ = _run(8, forget_at=4)
    msps = [r["msps"] for r in run.history]
    # Round 5's MSPs lack the first 4 sums and say so (E_HISTORY): that round trains
    # nothing, its evaluation sends the whole history once, and then only what is new again.
    assert msps[:4] == [3, 3, 3, 3] and msps[4] == 0 and msps[5:] == [3, 3, 3]
    assert "E_HISTORY" in caplog.text
    assert sent[4] > 2 * sent[5]
    assert sent[7] == pytest.approx(sent[5], rel=0.2)


def test_a_deployed_msp_keeps_the_model_it_opened_on_disk(tmp_path):
    # A deployed MSP runs each message in a new process: its memory of the model is gone,
    # the copy in its state directory is not.
    run, _, _ = _run(4)
    agent, history = run.agent, run.sealed_history
    sealer, _ = plaintext_backend()
    full = sealed_model.open_global(agent, history[:3], sealer, seed=0, memo_dir=tmp_path)
    sealed_model._opened.clear()
    digest = sealed_model.history_digest(history[:3])
    tail = sealed_model.open_global(
        agent, history[3:], sealer, seed=0, base=3, base_digest=digest, memo_dir=tmp_path
    )
    everything = sealed_model.open_global(agent, history, sealer, seed=0)
    assert full.size < tail.size == everything.size
    assert (tail == everything).all()
    sealed_model._opened.clear()
    with pytest.raises(sealed_model.MissingHistoryError):
        sealed_model.open_global(agent, history[3:], sealer, seed=0, base=3, base_digest="0" * 64)


def test_an_msp_that_lacks_a_long_history_gets_it_in_chunks():
    forget = 2 * HISTORY_CHUNK + 4
    run, _, _ = _run(forget + 3, forget_at=forget)
    msps = [r["msps"] for r in run.history]
    # The round after the MSPs forgot trains nothing (they lack what the message leaves
    # out); its evaluation first sends them the history, HISTORY_CHUNK sums per message.
    assert msps[:forget] == [3] * forget and msps[forget] == 0 and msps[forget + 1 :] == [3, 3]
    assert max(sums for _, sums in run.carried) == HISTORY_CHUNK
    queries = [sums for kind, sums in run.carried if kind == "query"]
    assert queries == [HISTORY_CHUNK] * 6  # two chunks for each of the three MSPs
