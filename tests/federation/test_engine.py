import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp

from meshfl.federation import AgentPlan, AgentStrategy, InProcessGrid, NodeData, make_client_app
from meshfl.federation.engine import from_wire, to_wire
from meshfl.federation.server_app import run_plan
from meshfl.secure import plaintext_backend
from meshfl.simulation import make_partitions

FAST_ANOMALY = {"trees_per_round": 4, "depth": 5}


def test_wire_roundtrip_preserves_content_and_copies():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    vector = np.random.default_rng(0).normal(size=50)
    content = RecordDict(
        {"global": ArrayRecord({"vector": Array(vector)}), "config": ConfigRecord({"x": 1})}
    )
    message = Message(content, dst_node_id=7, message_type="train.anomaly", group_id="1")
    message.metadata.__dict__["_message_id"] = message.object_id
    wire = to_wire(message)
    assert all(isinstance(b, bytes) for b in wire.values())
    back = from_wire(message.object_id, wire)
    assert back.metadata.message_type == "train.anomaly"
    assert back.content.array_records["global"] is not content.array_records["global"]
    np.testing.assert_array_equal(back.content.array_records["global"]["vector"].numpy(), vector)


SEALER, AGGREGATOR = plaintext_backend()


def _app(parts):
    return make_client_app(
        lambda a, ctx: parts[ctx.node_config["partition-id"]], sealer=lambda ctx: SEALER
    )


def _partitions(n=3, agent_name="anomaly"):
    plan = AgentPlan(agent=agent_name, agent_config=FAST_ANOMALY, rounds=2)
    return plan, make_partitions(plan.build_agent(), num_msps=n, seed=0, samples_per_msp=80)


def test_client_app_registers_per_agent_message_types():
    plan, parts = _partitions()
    grid = InProcessGrid(_app(parts), 3)
    run = run_plan(grid, plan, AGGREGATOR)
    assert [r["msps"] for r in run.history] == [3, 3]
    assert grid.bytes_sent > 0 and grid.bytes_received > 0


def test_failing_and_silent_msps_are_dropped_and_the_round_goes_on(caplog):
    plan, parts = _partitions(4)
    bad = {**{i: p for i, p in enumerate(parts)}, 2: NodeData(pd.DataFrame({"x": [1]}))}
    grid = InProcessGrid(_app(bad), 4)
    grid.unavailable.add(grid.node_id(3))  # vanished MSP: never replies
    run = run_plan(grid, plan, AGGREGATOR)
    assert [r["msps"] for r in run.history] == [2, 2]
    assert [r["dropped"] for r in run.history] == [1, 1]
    assert "dropped the reply of MSP node" in caplog.text and "has no columns" in caplog.text


def test_malformed_payload_is_dropped_with_reason(caplog):
    plan, parts = _partitions(3)
    honest = _app(parts)
    liar = ClientApp()

    @liar.train("anomaly")
    def train(message, context):
        if context.node_config["partition-id"] == 0:
            bogus = RecordDict({"update": ArrayRecord({"payload": Array(np.ones(3))})})
            return Message(bogus, reply_to=message)
        return honest(message, context)

    @liar.evaluate("anomaly")
    def evaluate(message, context):
        return honest(message, context)

    run = run_plan(InProcessGrid(liar, 3), plan, AGGREGATOR)
    assert run.history[0]["msps"] == 2 and run.history[0]["dropped"] == 1
    assert "malformed" in caplog.text or "expects" in caplog.text


def test_round_with_too_few_updates_keeps_the_global_model(caplog):
    plan, parts = _partitions(2)
    plan = plan.model_copy(update={"min_msps": 2, "rounds": 1})
    grid = InProcessGrid(_app(parts), 2)
    grid.unavailable.add(grid.node_id(0))
    run = run_plan(grid, plan, AGGREGATOR)
    assert run.history[0]["skipped"] and run.sealed_history == [] and run.versions == []
    assert "fewer than min_msps=2" in caplog.text


def test_strategy_samples_a_fraction_that_no_seed_predicts():
    # Attack (failed on 2081f48): the draw was seeded from the public plan seed, so anyone
    # with the config knew who trained in which round. Now it comes from OS entropy.
    plan, parts = _partitions(5)
    grid = InProcessGrid(_app(parts), 5)
    strategy = AgentStrategy(plan.build_agent(), AGGREGATOR, fraction_train=0.4, seed=1)
    draws = {
        tuple(m.metadata.dst_node_id for m in strategy.configure_train(1, grid)) for _ in range(40)
    }
    assert all(len(d) == 2 for d in draws)
    assert len(draws) > 1  # 10 possible pairs: 40 equal draws would have p = 1e-40


def test_plan_rejects_unknown_agent_with_valid_names():
    with pytest.raises(ValueError, match="Valid agents: threat_intel"):
        AgentPlan(agent="nope")
