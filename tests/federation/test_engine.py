import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp

from meshfl.config.errors import InvalidUpdateError
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
    coordinator = "\n".join(r.getMessage() for r in caplog.records if r.name != "meshfl.msp")
    msp = "\n".join(r.getMessage() for r in caplog.records if r.name == "meshfl.msp")
    assert "dropped the reply of MSP node" in coordinator and "E_DATA" in coordinator
    assert "has no columns" not in coordinator  # the MSP's error text stays with the MSP
    assert "has no columns" in msp


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
    assert "has no 'update' record" in caplog.text


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


# --- issue 12 §1: nothing an MSP sends back carries a value it computed ---------------------

SECRETS = ("249.97", "/home/msp", "43 of 300", "300 rows", "data.csv")


def _grid_with(handler):
    app = ClientApp()
    app.train("anomaly")(handler)
    grid = InProcessGrid(app, 1)
    content = RecordDict({"config": ConfigRecord({"x": 1})})
    message = grid.create_message(content, "train.anomaly", grid.node_id(0), "g")
    return grid, message


def test_what_a_client_app_raises_leaves_as_a_code_never_as_its_text(caplog):
    """2081f48: the engine replied f"{type(err).__name__}: {err}" (Flower's run_clientapp
    replies str(ex) too), so the coordinator read 'w=249.97' off an MSP's error."""

    def handler(message, context):
        raise ValueError("w=249.97, /home/msp/data.csv: 43 of 300 rows are bad")

    grid, message = _grid_with(handler)
    (reply,) = grid.send_and_receive([message])
    assert reply.has_error()
    reason = reply.error.reason
    assert not any(secret in reason for secret in SECRETS)
    assert reason.startswith("E_INTERNAL: ")
    assert "249.97" in caplog.text  # ...in the node's own log only


def test_a_guarded_handler_replies_a_code_for_each_kind_of_failure():
    from meshfl.config.errors import DataSchemaError, InvalidUpdateError
    from meshfl.federation.errors import E_DATA, E_DECRYPT, E_INTERNAL, E_RANGE, guard
    from meshfl.secure import ValueRangeError

    for exc, expected in [
        (ValueRangeError("magnitude 249.97"), E_RANGE),
        (InvalidUpdateError("decrypted 249.97"), E_DECRYPT),
        (DataSchemaError("43 of 300 rows in /home/msp/data.csv"), E_DATA),
        (ZeroDivisionError("300 rows"), E_INTERNAL),
    ]:

        def handler(message, context, exc=exc):
            raise exc

        grid, message = _grid_with(guard(handler))
        (reply,) = grid.send_and_receive([message])
        assert (reply.error.code, reply.error.reason) == (expected.code, expected.reason)
        assert not any(secret in reply.error.reason for secret in SECRETS)


def test_an_msps_data_error_reaches_the_coordinator_as_a_code():
    """2081f48: 'DataSchemaError: ... has no columns ...' (row counts, column names) went
    back to the coordinator and into its round outcome."""
    plan, parts = _partitions(3)
    bad = {**dict(enumerate(parts)), 2: NodeData(pd.DataFrame({"secret_column_x": [1]}))}
    grid = InProcessGrid(_app(bad), 3)
    strategy = AgentStrategy(plan.build_agent(), AGGREGATOR, min_msps=1)
    replies = list(grid.send_and_receive(strategy.configure_train(1, grid)))
    errors = [r.error for r in replies if r.has_error()]
    assert len(errors) == 1 and errors[0].reason.startswith("E_DATA: ")
    assert "secret_column_x" not in errors[0].reason and "columns" not in errors[0].reason
    ((_, reason),) = strategy.aggregate_train(1, replies).dropped
    assert "E_DATA" in reason and "secret_column_x" not in reason


def test_an_error_reply_with_free_text_is_not_kept_by_the_coordinator():
    """An MSP on an older meshfl (or Flower's own run_clientapp) replying str(ex)."""
    from flwr.app import Error

    from meshfl.federation.records import decode_evaluation, decode_update

    def handler(message, context):
        return Message(Error(code=2, reason="ValueError: magnitude 249.97"), reply_to=message)

    grid, message = _grid_with(handler)
    (reply,) = grid.send_and_receive([message])
    for decode in (decode_update, decode_evaluation):
        with pytest.raises(InvalidUpdateError) as err:
            decode(reply)
        assert "249.97" not in str(err.value) and "code 2" in str(err.value)


def test_a_crafted_global_model_reads_nothing_out_of_an_msps_errors():
    """The audit's oracle: a "global model" the coordinator encrypted itself, with the public
    key, scaled so that training on it overflows the MSP's range. 2081f48 replied
    'ValueRangeError: cannot seal a value of magnitude 6.9e+08 ...' for V = 1e7, 1.38e+09
    for 2e7: w * V, so the MSP's weight is 69. Now every reply is one fixed sentence."""
    import tenseal as ts

    from meshfl.federation.records import RoundContext, encode_instructions
    from meshfl.secure import Sealed
    from meshfl.secure import aggregate as payloads
    from meshfl.secure.ckks import ephemeral_ckks_backend

    sealer, aggregator = ephemeral_ckks_backend()
    plan = AgentPlan(agent="resource_allocation", rounds=1)
    agent = plan.build_agent()
    parts = make_partitions(agent, num_msps=1, seed=0, samples_per_msp=60)
    app = make_client_app(lambda a, ctx: parts[0], sealer=lambda ctx: sealer)
    grid = InProcessGrid(app, 1)
    n = agent.update_size(agent.init_vector(seed=0))
    extra = getattr(payloads, "PAYLOAD_EXTRA", 1)
    reasons = set()
    for magnitude in (1e7, 2e7, 4e7):
        crafted = np.zeros(n + extra)
        crafted[:n] = magnitude
        crafted[n] = 1.0  # the weight slot: the model is "magnitude everywhere"
        vector = ts.ckks_vector(aggregator.context, crafted.tolist())  # public key only
        sealed = Sealed("ckks", aggregator.key_id, crafted.size, (vector.serialize(),))
        content = encode_instructions(
            agent, [sealed], server_round=2, seed=0, context=RoundContext(run_id="r")
        )
        message = grid.create_message(content, "train.resource_allocation", grid.node_id(0), "g")
        (reply,) = grid.send_and_receive([message])
        assert reply.has_error()
        reasons.add(reply.error.reason)
    (reason,) = reasons  # the same sentence whatever the crafted magnitude
    assert reason.startswith("E_") and not any(ch.isdigit() for ch in reason)
