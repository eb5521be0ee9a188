"""Masked rounds through the real ClientApp and strategy (issue 13).

The coordinator never holds an update it can have opened, dropouts between sending and
unmasking are survived up to the threshold and fail closed by name beyond it, MSPs answer an
unmask request once, and a changed key is refused.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import meshfl
from meshfl.config.errors import InvalidUpdateError
from meshfl.federation import AgentPlan, AgentStrategy, InProcessGrid, make_client_app
from meshfl.federation.masked_round import UNMASK_ACTION
from meshfl.federation.records import RoundContext, decode_update
from meshfl.federation.sealed_model import Verification, open_global
from meshfl.secure.ckks import ephemeral_ckks_backend
from meshfl.simulation import make_partitions

FAST_ANOMALY = {"trees_per_round": 4, "depth": 5}


@pytest.fixture(scope="module")
def keys():
    return ephemeral_ckks_backend()


class DroppingGrid(InProcessGrid):
    """Nodes in ``drop_unmask`` send their update, then never answer the unmask request."""

    drop_unmask: frozenset[int] = frozenset()

    def _deliver(self, root_id, message):
        unmask = message.metadata.message_type == f"query.{UNMASK_ACTION}"
        if unmask and message.metadata.dst_node_id in self.drop_unmask:
            return
        super()._deliver(root_id, message)


def _mesh(keys, n, *, min_msps=3):
    sealer, aggregator = keys
    plan = AgentPlan(agent="anomaly", agent_config=FAST_ANOMALY, rounds=2, min_msps=min_msps)
    agent = plan.build_agent()
    parts = make_partitions(agent, num_msps=n, seed=0, samples_per_msp=60)
    app = make_client_app(
        lambda _a, ctx: parts[ctx.node_config["partition-id"]],
        sealer=lambda _ctx: sealer,
        min_contributors=2,
    )
    grid = DroppingGrid(app, n)
    context = RoundContext(run_id="run-m", session="s1", total_rounds=2)
    strategy = AgentStrategy(agent, aggregator, min_msps=min_msps, context=context)
    return grid, strategy


def _opened(strategy, sealer):
    verify = Verification("run-m", before_round=99, min_contributors=2)
    return open_global(strategy.agent, strategy.history, sealer, seed=0, verify=verify)


@pytest.mark.parametrize(
    ("share", "fails"), [(0.0, False), (0.1, False), (0.3, False), (0.4, True)]
)
def test_dropouts_between_sending_and_unmasking(keys, share, fails):
    sealer, _ = keys
    n = 10
    grid, strategy = _mesh(keys, n)
    start = time.perf_counter()
    messages = list(strategy.configure_train(1, grid))
    replies = list(grid.send_and_receive(messages))
    survivors = sorted(int(r.metadata.src_node_id) for r in replies)
    grid.drop_unmask = frozenset(survivors[: round(share * n)])
    result = strategy.aggregate_train(1, replies)
    assert time.perf_counter() - start < 20  # nothing waits on a node that is gone
    assert result.masked
    if fails:
        assert not result.changed and strategy.history == []
        assert result.mask_failure == "unmask_shares"
        assert "threshold" in result.skipped_reason and "failed closed" in result.skipped_reason
        return
    assert result.changed and result.unmask_no_reply == round(share * n)
    # The unmasked sum opens and verifies (tags of the listed contributors) at an MSP.
    vector = _opened(strategy, sealer)
    assert np.all(np.isfinite(vector))


def test_the_unmasked_sum_equals_the_sum_of_the_updates(keys):
    """The same round with and without masks adds up to the same payload (to CKKS
    precision): the masks cancel exactly."""
    sealer, _ = keys
    grid, strategy = _mesh(keys, 5)
    replies = list(grid.send_and_receive(strategy.configure_train(1, grid)))
    masked_sum = strategy.aggregate_train(1, replies).sealed_sum
    # Every reply on its own is noise to a key holder (the colluding-MSP attack) ...
    for reply in replies:
        with pytest.raises(InvalidUpdateError):
            sealer.open(decode_update(reply).sealed)
    grid2, plain_strategy = _mesh(keys, 5)
    plain_strategy.masking = False
    plain_replies = list(grid2.send_and_receive(plain_strategy.configure_train(1, grid2)))
    plain_sum = plain_strategy.aggregate_train(1, plain_replies).sealed_sum
    # ... while the sums agree (same MSPs, same data and seeds, no privacy noise)
    np.testing.assert_allclose(sealer.open(masked_sum), sealer.open(plain_sum), atol=1e-4)


def test_an_msp_answers_the_unmask_request_of_a_round_once(keys):
    grid, strategy = _mesh(keys, 4)
    replies = list(grid.send_and_receive(strategy.configure_train(1, grid)))
    draw = strategy._draw
    assert strategy.aggregate_train(1, replies).changed
    # The coordinator asks again (to collect shares and seeds a second time): refused.
    strategy._draw = draw
    survivors = [int(r.metadata.src_node_id) for r in replies]
    with pytest.raises(Exception) as err:
        strategy._unmask(1, draw, survivors, strategy.history[-1])
    assert getattr(err.value, "kind", None) == "unmask_shares"


def test_an_old_round_is_never_masked_again_even_after_the_msp_forgot_it(keys, monkeypatch):
    """The replay attack: a coordinator that re-runs round 1 of a session once the MSPs no
    longer remember it would get a second masking of the same scope (same pairwise masks),
    declare the victim dropped in one run and alive in the other, and so learn both its
    self-mask and its pairwise masks. MSPs refuse any round not after the latest they masked
    for that session and agent, however much they have forgotten since."""
    from meshfl.federation.client_app import MSPNode

    monkeypatch.setattr(MSPNode, "MASKED_ROUNDS_KEPT", 1)
    grid, strategy = _mesh(keys, 4)
    for server_round in (1, 2, 3):
        replies = list(grid.send_and_receive(strategy.configure_train(server_round, grid)))
        assert strategy.aggregate_train(server_round, replies).changed
    _, replayer = _mesh(keys, 4)  # a fresh strategy of the same run and session
    import meshfl.federation.client_app as client_app

    trained = []
    train_round = client_app.train_round
    monkeypatch.setattr(
        client_app, "train_round", lambda *a, **k: trained.append(1) or train_round(*a, **k)
    )
    replies = list(grid.send_and_receive(replayer.configure_train(1, grid)))
    assert replies and all(r.has_error() for r in replies)
    assert not replayer.aggregate_train(1, replies).changed
    assert not trained  # refused before training: no privacy spent on a round never sent


def test_a_changed_neighbour_key_is_refused(keys):
    grid, strategy = _mesh(keys, 4)
    assert strategy.aggregate_train(
        1, list(grid.send_and_receive(strategy.configure_train(1, grid)))
    ).changed
    victim = sorted(strategy.mask_keys)[0]
    from meshfl.secure.masking import KeyPair

    strategy.mask_keys[victim] = KeyPair().public  # the coordinator substitutes a key
    replies = list(grid.send_and_receive(strategy.configure_train(2, grid)))
    errors = [r for r in replies if r.has_error()]
    assert len(errors) == 3  # every neighbour refuses the round; the victim's update masks
    # under its own key, which the coordinator's record no longer matches: dropped too
    result = strategy.aggregate_train(2, replies)
    assert not result.changed


def test_simulate_masks_by_default_and_learns():
    result = meshfl.simulate(
        agent="anomaly", num_msps=4, rounds=2, seed=0, progress=False, agent_config=FAST_ANOMALY
    )
    assert list(result.history["masked"]) == [True, True]
    assert result.history["unmask_failed"].isna().all()
    assert result.history["auc"].iloc[-1] > 0.6


def test_the_dropout_parameter_is_checked_and_turning_masking_off_warns(keys):
    from meshfl.config.errors import ConfigError
    from meshfl.federation import run_plan

    with pytest.raises(ValueError, match="masking_dropout"):
        AgentPlan(agent="anomaly", masking_dropout=0.5)
    grid, strategy = _mesh(keys, 3)
    with pytest.raises(ConfigError, match="'masking_dropout' parameter"):
        AgentStrategy(strategy.agent, keys[1], masking_dropout=-0.1)
    plan = AgentPlan(agent="anomaly", agent_config=FAST_ANOMALY, rounds=1, masking=False)
    with pytest.warns(UserWarning, match="masking is off"):
        run = run_plan(grid, plan, keys[1])
    assert [r["masked"] for r in run.history] == [False]


def test_the_masking_state_lives_in_the_node_context(keys):
    """A node whose unmask request is served by another ClientApp instance than its train
    message (as a Ray worker pool may do) still answers: the state is in Context.state."""
    sealer, aggregator = keys
    plan = AgentPlan(agent="anomaly", agent_config=FAST_ANOMALY, rounds=1, min_msps=3)
    agent = plan.build_agent()
    parts = make_partitions(agent, num_msps=4, seed=0, samples_per_msp=60)

    def app():
        return make_client_app(
            lambda _a, ctx: parts[ctx.node_config["partition-id"]],
            sealer=lambda _ctx: sealer,
            min_contributors=2,
        )

    first, second = app(), app()

    def served(message, context):
        unmask = message.metadata.message_type == f"query.{UNMASK_ACTION}"
        return (second if unmask else first)(message, context)

    grid = InProcessGrid(served, 4)
    context = RoundContext(run_id="run-c", session="s1", total_rounds=1)
    strategy = AgentStrategy(agent, aggregator, min_msps=3, context=context)
    replies = list(grid.send_and_receive(strategy.configure_train(1, grid)))
    result = strategy.aggregate_train(1, replies)
    assert result.masked and result.changed and result.unmask_no_reply == 0


class LateKeysGrid(InProcessGrid):
    """The first ``late`` key requests each node gets are answered after the coordinator
    stopped waiting (as MSPs that drain a killed coordinator's messages first do): the
    node keeps its key pair, the coordinator never sees the reply. ``silent`` nodes never
    answer a key request."""

    late = 0
    silent: frozenset[int] = frozenset()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked: dict[int, int] = {}

    def _deliver(self, root_id, message):
        node = message.metadata.dst_node_id
        if message.metadata.message_type != "query.mask_keys":
            return super()._deliver(root_id, message)
        if node in self.silent:
            return None
        self.asked[node] = self.asked.get(node, 0) + 1
        super()._deliver(root_id, message)
        if self.asked[node] <= self.late:
            self._replies.pop(root_id, None)
            self._reply_roots.pop(root_id, None)
        return None


def _late_mesh(keys, n, *, session="s1", app=None, grid=None):
    sealer, aggregator = keys
    plan = AgentPlan(agent="anomaly", agent_config=FAST_ANOMALY, rounds=3, min_msps=3)
    agent = plan.build_agent()
    if grid is None:
        parts = make_partitions(agent, num_msps=n, seed=0, samples_per_msp=60)
        app = make_client_app(
            lambda _a, ctx: parts[ctx.node_config["partition-id"]],
            sealer=lambda _ctx: sealer,
            min_contributors=2,
        )
        grid = LateKeysGrid(app, n)
    context = RoundContext(run_id="run-r", session=session, total_rounds=3)
    return grid, AgentStrategy(agent, aggregator, min_msps=3, context=context, connect_timeout=5)


def test_a_restarted_coordinator_masks_its_first_round_under_the_keys_msps_pinned(keys):
    """A coordinator that restarts (new session, no keys in memory) on MSPs that pinned the
    old session's keys: its first masked round asks for the keys again, gets the same ones
    (an MSP keeps its key pair per run), and the round's masks cancel."""
    sealer, _ = keys
    grid, first = _late_mesh(keys, 4)
    assert first.aggregate_train(1, list(grid.send_and_receive(first.configure_train(1, grid))))
    assert first.history
    _, second = _late_mesh(keys, 4, session="s2", grid=grid)
    second.history = list(first.history)  # what a resumed store hands it
    result = second.aggregate_train(2, list(grid.send_and_receive(second.configure_train(2, grid))))
    assert result.masked and result.changed and result.accepted == 4, result.skipped_reason
    assert second.mask_keys == first.mask_keys  # the keys the MSPs pinned in session s1
    verify = Verification("run-r", before_round=99, min_contributors=2)
    vector = open_global(second.agent, second.history, sealer, seed=0, verify=verify)
    assert np.all(np.isfinite(vector))


def test_key_replies_that_came_too_late_are_asked_again(keys):
    """The deployed bug: a resumed coordinator's key request reached MSPs only after its
    timeout, their replies were lost, and the round ended with no update. The MSPs that
    gave no reply are asked once more, and the round trains, masked."""
    grid, strategy = _late_mesh(keys, 4)
    grid.late = 1
    result = strategy.aggregate_train(
        1, list(grid.send_and_receive(strategy.configure_train(1, grid)))
    )
    assert grid.asked == dict.fromkeys(grid.get_node_ids(), 2)
    assert result.masked and result.changed and result.accepted == 4, result.skipped_reason


def test_a_round_without_enough_keys_fails_closed_by_name(keys):
    """Too few keys, even after asking again: nothing is sent, and the round's record and
    the operator's line say why (it used to say only "skipped")."""
    from meshfl.service.coordinator import format_round

    grid, strategy = _late_mesh(keys, 4)
    grid.silent = frozenset(list(grid.get_node_ids())[:2])
    start = time.perf_counter()
    run = strategy.start(grid, num_rounds=1)
    assert time.perf_counter() - start < 20  # asked once more, then gave up
    assert all(grid.asked[n] == 1 for n in grid.asked)  # answered: not asked again
    (record,) = run.history
    assert record["skipped"] and not record["masked"] and record["msps"] == 0
    assert record["unmask_failed"] == "unmask_keys"
    assert "only 2 of 4 sampled MSP(s) gave their masking key" in record["skipped_reason"]
    assert "failed closed" in record["skipped_reason"]
    assert "masking: only 2 of 4" in format_round(record)
    assert strategy.history == []


def _strict_mesh(keys, n, *, require=None, node_config=None):
    """MSPs that require masking (``require`` given to the app, or the node config's
    ``require-masking``), and a count of the rows each MSP's data provider handed out."""
    sealer, _ = keys
    agent = AgentPlan(agent="anomaly", agent_config=FAST_ANOMALY, min_msps=3).build_agent()
    parts = make_partitions(agent, num_msps=n, seed=0, samples_per_msp=60)
    reads = []

    def data(_agent, ctx):
        reads.append(ctx.node_config["partition-id"])
        return parts[ctx.node_config["partition-id"]]

    app = make_client_app(
        data, sealer=lambda _ctx: sealer, min_contributors=2, require_masking=require
    )
    grid = InProcessGrid(app, n)
    for node in grid.get_node_ids():
        grid._contexts[node].node_config.update(node_config or {})
    return grid, reads


@pytest.mark.parametrize(
    ("require", "node_config"), [(True, None), (None, {"require-masking": True})]
)
def test_an_msp_that_requires_masking_declines_unmasked_rounds(keys, require, node_config):
    from meshfl.federation import run_plan
    from meshfl.federation.client_app import DECLINED_UNMASKED
    from meshfl.service.coordinator import format_round

    grid, reads = _strict_mesh(keys, 4, require=require, node_config=node_config)
    context = RoundContext(run_id="run-s", session="s1", total_rounds=1)
    agent = AgentPlan(agent="anomaly", agent_config=FAST_ANOMALY, min_msps=3).build_agent()
    strategy = AgentStrategy(agent, keys[1], min_msps=3, context=context, masking=False)
    replies = list(grid.send_and_receive(strategy.configure_train(1, grid)))
    # Every MSP declined with the fixed sentence before reading a row.
    assert [decode_update(r).reason for r in replies] == [DECLINED_UNMASKED] * 4
    assert reads == []
    assert not strategy.aggregate_train(1, replies).changed
    # A run of such a plan stops after its first round, saying why.
    plan = AgentPlan(
        agent="anomaly", agent_config=FAST_ANOMALY, rounds=2, min_msps=3, masking=False
    )
    with pytest.warns(UserWarning, match="masking is off"):
        run = run_plan(grid, plan, keys[1])
    (record,) = run.history
    assert record["declined"] == 4 and record["msps"] == 0 and record["skipped"]
    assert record["declined_by_kind"] == {"masking": 4}
    assert "only in masked rounds" in record["skipped_reason"]
    line = format_round(record)
    assert "declined=4 (they require masking)" in line and "budget" not in line
    mixed = {**record, "declined": 3, "declined_by_kind": {"budget": 2, "masking": 1}}
    assert "declined=3 (privacy budget spent: 2, they require masking: 1)" in format_round(mixed)
    assert "only in masked rounds" in run.stopped_reason
    assert "privacy budget" not in run.stopped_reason
    assert run.sealed_history == []
    # The same MSPs take part in a masked round.
    masked = AgentPlan(agent="anomaly", agent_config=FAST_ANOMALY, rounds=1, min_msps=3)
    again = run_plan(grid, masked, keys[1])
    assert again.history[0]["masked"] and again.history[0]["msps"] == 4
    assert again.sealed_history


def test_require_masking_in_the_node_config_must_be_a_boolean(keys):
    grid, reads = _strict_mesh(keys, 3, node_config={"require-masking": "yes"})
    context = RoundContext(run_id="run-s", session="s1", total_rounds=1)
    agent = AgentPlan(agent="anomaly", agent_config=FAST_ANOMALY, min_msps=3).build_agent()
    strategy = AgentStrategy(agent, keys[1], min_msps=3, context=context, masking=False)
    replies = list(grid.send_and_receive(strategy.configure_train(1, grid)))
    assert all(r.has_error() for r in replies) and reads == []
    result = strategy.aggregate_train(1, replies)
    assert result.drop_kinds == {"E_CONFIG": 3}
