"""Attacks of a malicious coordinator on sealed models, and replays (issue 12 §2 and §3).

A coordinator holds the public context, so it can encrypt, add, negate and re-label
ciphertexts. On 2081f48 it could send MSP A's sealed update to MSP B as "the global model"
and B evaluated and trained on it (metrics equal to A's model exactly); a reply sent twice
was counted twice and round 1's reply was accepted in round 2. Every test here drives the
real ClientApp and strategy over the in-process grid with CKKS.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from meshfl.federation import AgentPlan, AgentStrategy, InProcessGrid, make_client_app
from meshfl.federation.records import RoundContext, decode_update, encode_instructions
from meshfl.federation.sealed_model import Verification, open_global
from meshfl.secure.binding import TAG_SLOTS, Binding, UnverifiedAggregateError, tags
from meshfl.secure.ckks import CKKSSealer, ephemeral_ckks_backend
from meshfl.simulation import make_partitions

FAST_ANOMALY = {"trees_per_round": 4, "depth": 5}


@pytest.fixture(scope="module")
def keys():
    return ephemeral_ckks_backend()


@pytest.fixture(scope="module")
def mesh(keys):
    """Three MSPs, and the round-1 replies of each (an honest round)."""
    sealer, aggregator = keys
    plan = AgentPlan(agent="anomaly", agent_config=FAST_ANOMALY, rounds=3, min_msps=3)
    agent = plan.build_agent()
    parts = make_partitions(agent, num_msps=3, seed=0, samples_per_msp=120)
    app = make_client_app(
        lambda _a, ctx: parts[ctx.node_config["partition-id"]],
        sealer=lambda _ctx: sealer,
        min_contributors=2,
    )
    grid = InProcessGrid(app, 3)
    context = RoundContext(run_id="run-1", session="s", total_rounds=3)
    # Tags on their own: masks (issue 13, tests/federation/test_masked_rounds.py) would make
    # each update unreadable anyway, and a fresh strategy below re-adds these replies.
    strategy = AgentStrategy(agent, aggregator, min_msps=3, context=context, masking=False)
    replies = list(grid.send_and_receive(strategy.configure_train(1, grid)))
    return grid, strategy, replies, sealer


def _evaluate(grid, strategy, history, node, server_round=1):
    """Ask ``node`` to evaluate ``history`` as round ``server_round``'s model; its reply."""
    content = encode_instructions(
        strategy.agent, history, server_round=server_round, seed=0, context=strategy.context
    )
    message = grid.create_message(content, "evaluate.anomaly", node, "g")
    return next(iter(grid.send_and_receive([message])))


def _updates(replies):
    return {int(r.metadata.src_node_id): decode_update(r).sealed for r in replies}


def test_an_honest_sum_is_used(mesh):
    grid, strategy, replies, _ = mesh
    fresh = AgentStrategy(
        strategy.agent, strategy.aggregator, min_msps=3, context=strategy.context, masking=False
    )
    assert fresh.aggregate_train(1, replies).changed
    reply = _evaluate(grid, fresh, fresh.history, grid.node_id(1))
    assert not reply.has_error() and reply.content.metric_records["metrics"]["examples"] > 0


def test_one_msps_update_passed_off_as_the_aggregate_is_refused(mesh):
    grid, strategy, replies, _ = mesh
    updates = _updates(replies)
    a, b, c = (grid.node_id(i) for i in range(3))
    forged = [
        # A's update claimed to be the sum of all three
        replace(updates[a], binding=Binding("run-1", "anomaly", 1, 1, (a, b, c)).to_json()),
        # A's update claimed to be A's and B's
        replace(updates[a], binding=Binding("run-1", "anomaly", 1, 1, (a, b)).to_json()),
        # A's update alone, honestly labelled: one contributor is below the MSP's floor
        replace(updates[a], binding=Binding("run-1", "anomaly", 1, 1, (a,)).to_json()),
        # A's update added twice, with an invented second contributor
        replace(
            strategy.aggregator.add([updates[a], updates[a]]),
            binding=Binding("run-1", "anomaly", 1, 1, (a, 12345)).to_json(),
        ),
        # no binding at all
        updates[a],
    ]
    for history in forged:
        reply = _evaluate(grid, strategy, [history], b)
        assert reply.has_error(), history.binding
        assert "0." not in reply.error.reason  # nothing decrypted comes back, not even a number


def test_a_true_sum_from_another_run_or_a_later_round_is_refused(mesh):
    grid, strategy, replies, _ = mesh
    honest = AgentStrategy(
        strategy.agent, strategy.aggregator, min_msps=3, context=strategy.context
    )
    assert honest.aggregate_train(1, replies).changed
    (total,) = honest.history
    contributors = tuple(grid.node_id(i) for i in range(3))
    relabelled = [
        replace(total, binding=Binding("run-2", "anomaly", 1, 1, contributors).to_json()),
        replace(total, binding=Binding("run-1", "anomaly", 2, 1, contributors).to_json()),
    ]
    other = replace(strategy.context, run_id="run-2")
    foreign = AgentStrategy(strategy.agent, strategy.aggregator, min_msps=3, context=other)
    for history in relabelled:
        assert _evaluate(grid, strategy, [history], grid.node_id(1)).has_error()
    # the true sum of run-1, sent in run-2: refused as well
    assert _evaluate(grid, foreign, [total], grid.node_id(1)).has_error()


def test_the_coordinator_cannot_forge_tags_by_adding_its_own_ciphertext(mesh, keys):
    """With the public key it can add anything it encrypts, but not tags it cannot compute."""
    grid, strategy, replies, _ = mesh
    updates = _updates(replies)
    a, b, c = (grid.node_id(i) for i in range(3))
    # Its best guess for B's and C's tags: zero (it cannot know them); add a plausible weight.
    guess = np.zeros(updates[a].length)
    guess[-1 - TAG_SLOTS] = 250.0
    padded = strategy.aggregator.add([updates[a], _public_encrypt(keys, guess)])
    forged = replace(padded, binding=Binding("run-1", "anomaly", 1, 1, (a, b, c)).to_json())
    assert _evaluate(grid, strategy, [forged], b).has_error()


def _public_encrypt(keys, values):
    """What a coordinator can make: a ciphertext under the public key (TenSEAL, no secret)."""
    import tenseal as ts

    from meshfl.secure.ckks import CKKSAggregator

    _, aggregator = keys
    assert isinstance(aggregator, CKKSAggregator)
    assert not aggregator.context.has_secret_key()
    slots = aggregator.values_per_chunk
    chunks = tuple(
        ts.ckks_vector(aggregator.context, list(values[i : i + slots])).serialize()
        for i in range(0, len(values), slots)
    )
    return replace(_any_update_envelope(keys, len(values)), chunks=chunks)


def _any_update_envelope(keys, length):
    sealer, _ = keys
    return sealer.seal(np.zeros(length))


def test_open_global_verification_checks_each_sum(keys):
    sealer, aggregator = keys
    scope = Binding("r", "anomaly", 1, 2)
    payloads = []
    for node in (7, 8):
        values = np.concatenate([np.ones(4), [10.0], tags(sealer.binding_key, scope.scope, node)])
        payloads.append(sealer.seal(values))
    total = replace(aggregator.add(payloads), binding=replace(scope, contributors=(7, 8)).to_json())

    class Agent:
        name = "anomaly"
        combine_uses_previous = False

        class config:  # noqa: N801
            @staticmethod
            def model_dump_json():
                return "{}"

        @staticmethod
        def init_vector(seed):
            return np.zeros(4)

        @staticmethod
        def combine(vector, summed, weight, server_round):
            return summed / weight

    verify = Verification("r", before_round=2, min_contributors=2)
    np.testing.assert_allclose(
        open_global(Agent, [total], sealer, seed=0, verify=verify), 0.1, rtol=0, atol=1e-6
    )
    with pytest.raises(UnverifiedAggregateError):
        strict = Verification("r", before_round=2, min_contributors=3)
        open_global(Agent, [total], sealer, seed=1, verify=strict)
    with pytest.raises(UnverifiedAggregateError):
        open_global(Agent, [payloads[0]], sealer, seed=2, verify=verify)
    assert isinstance(sealer, CKKSSealer) and len(sealer.binding_key) == 32


def test_a_reply_sent_twice_counts_once_and_a_stale_reply_is_dropped(mesh, caplog):
    _, strategy, replies, _ = mesh
    twice = AgentStrategy(strategy.agent, strategy.aggregator, min_msps=3, context=strategy.context)
    result = twice.aggregate_train(1, [*replies, replies[0]])
    assert result.changed
    assert result.accepted == 3
    assert [reason for _, reason in result.dropped] == [
        "a second reply from the same MSP in this round (duplicate)"
    ]
    # round 1's replies offered again in round 2: all stale, the model stays
    result = twice.aggregate_train(2, replies)
    assert not result.changed
    assert result.accepted == 0
    assert all("stale or replayed" in reason for _, reason in result.dropped)
    assert len(twice.versions) == 1


def test_a_wrong_contributor_floor_is_refused_with_a_sentence():
    from meshfl.config.errors import ConfigError

    with pytest.raises(ConfigError, match="'min_contributors' parameter of make_client_app"):
        make_client_app(lambda *_: None, min_contributors=0)
