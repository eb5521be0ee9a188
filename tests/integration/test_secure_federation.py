"""Secure aggregation end to end: sealed models, same quality as plaintext, bad input dropped."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp

import meshfl
from meshfl.federation import AgentPlan, InProcessGrid, make_client_app
from meshfl.federation.records import encode_update
from meshfl.federation.server_app import run_plan
from meshfl.privacy import DPConfig
from meshfl.privacy.noise import fixed_noise_for_tests
from meshfl.secure.aggregate import PAYLOAD_EXTRA, seal_payload
from meshfl.secure.ckks import ckks_vector_from, ephemeral_ckks_backend
from meshfl.simulation import make_partitions, simulation_keys

pytestmark = pytest.mark.integration

FAST = {
    "anomaly": {"trees_per_round": 5, "depth": 6},
    "threat_intel": {"encoder": "tiny"},
}


@pytest.mark.parametrize("agent", sorted(FAST))
@pytest.mark.parametrize("privacy", [None, DPConfig(epsilon=4.0)])
def test_ckks_reaches_the_quality_of_plaintext(agent, privacy):
    kwargs = dict(
        agent=agent,
        num_msps=4,
        rounds=3,
        seed=0,
        progress=False,
        agent_config=FAST[agent],
        samples_per_msp=120,
        privacy=privacy,
    )
    # Privacy noise comes from OS entropy; pin it (test-only) so both runs draw the same.
    with fixed_noise_for_tests(0):
        sealed = meshfl.simulate(secure_aggregation="ckks", **kwargs)
    with fixed_noise_for_tests(0), pytest.warns(UserWarning, match="[Ss]ecure aggregation is OFF"):
        plain = meshfl.simulate(secure_aggregation="plaintext", **kwargs)
    metric = sealed.model.agent.metric
    assert sealed.evaluate()[metric] == pytest.approx(plain.evaluate()[metric], abs=0.02)
    if privacy is None:  # no DP noise: the models themselves agree to CKKS precision
        np.testing.assert_allclose(sealed.model.vector, plain.model.vector, rtol=1e-4, atol=1e-4)
    assert all(v.backend == "ckks" for v in sealed.versions)


def _plan_and_parts(n=3):
    plan = AgentPlan(agent="anomaly", agent_config=FAST["anomaly"], rounds=2)
    return plan, make_partitions(plan.build_agent(), num_msps=n, seed=0, samples_per_msp=80)


def test_coordinator_stores_ciphertext_it_cannot_decrypt():
    plan, parts = _plan_and_parts()
    sealer_for, aggregator, _ = simulation_keys("ckks")
    app = make_client_app(lambda a, ctx: parts[ctx.node_config["partition-id"]], sealer=sealer_for)
    run = run_plan(InProcessGrid(app, 3), plan, aggregator)
    assert len(run.versions) == 2
    public = aggregator.context
    assert not public.has_secret_key()
    for version in run.versions:
        assert version.backend == "ckks" and version.key_id == aggregator.key_id
        for chunk in version.chunks:
            vector = ckks_vector_from(public, chunk)
            with pytest.raises(ValueError, match="secret"):
                vector.decrypt()


def _client_with_a_rogue(parts, rogue_payload):
    """MSP 0 answers train with ``rogue_payload(message, sealer)``; the others are honest."""
    sealer_for, aggregator, own_sealer = simulation_keys("ckks")
    honest = make_client_app(
        lambda a, ctx: parts[ctx.node_config["partition-id"]], sealer=sealer_for
    )
    app = ClientApp()

    @app.train("anomaly")
    def train(message, context):
        if context.node_config["partition-id"] == 0:
            return Message(rogue_payload(message, own_sealer), reply_to=message)
        return honest(message, context)

    @app.evaluate("anomaly")
    def evaluate(message, context):
        return honest(message, context)

    return app, aggregator


def _sealed_reply(sealed):
    return encode_update(sealed, metrics={"examples": 10.0})


def _run_with_rogue(rogue_payload):
    plan, parts = _plan_and_parts()
    # The coordinator's checks on their own: with masks (on by default), the two honest
    # updates left of three are too few to unmask (an MSP answers for 3 or more), and the
    # round would fail closed (tests/federation/test_masked_rounds.py).
    plan = plan.model_copy(update={"masking": False})
    app, aggregator = _client_with_a_rogue(parts, rogue_payload)
    run = run_plan(InProcessGrid(app, 3), plan, aggregator)
    assert [r["msps"] for r in run.history] == [2, 2]  # the round goes on with the rest
    assert [r["dropped"] for r in run.history] == [1, 1]
    return aggregator


SIZE = FAST["anomaly"]["trees_per_round"] * 2 ** FAST["anomaly"]["depth"] + PAYLOAD_EXTRA


def test_update_under_another_key_is_dropped_by_name(caplog):
    stranger, _ = ephemeral_ckks_backend()
    aggregator = _run_with_rogue(
        lambda m, own: _sealed_reply(
            stranger.seal(seal_payload(np.ones(SIZE - PAYLOAD_EXTRA), 1.0))
        )
    )
    assert stranger.key_id in caplog.text and aggregator.key_id in caplog.text


def _tampered(tamper):
    def rogue(message, own):
        sealed = own.seal(seal_payload(np.ones(SIZE - PAYLOAD_EXTRA), 1.0))
        chunks = (tamper(sealed.chunks[0]), *sealed.chunks[1:])
        return _sealed_reply(type(sealed)(sealed.backend, sealed.key_id, sealed.length, chunks))

    return rogue


@pytest.mark.parametrize(
    "tamper", [lambda c: c[: len(c) // 2], lambda c: b"\x00garbage" * 100], ids=["cut", "junk"]
)
def test_truncated_or_garbage_ciphertext_is_dropped(caplog, tamper):
    _run_with_rogue(_tampered(tamper))
    assert "dropped the reply" in caplog.text and "chunk" in caplog.text


def test_wrong_length_is_dropped_with_both_lengths(caplog):
    _run_with_rogue(lambda m, own: _sealed_reply(own.seal(seal_payload(np.ones(7), 1.0))))
    assert str(7 + PAYLOAD_EXTRA) in caplog.text and str(SIZE) in caplog.text


def test_malformed_update_record_is_dropped(caplog):
    _run_with_rogue(lambda m, own: RecordDict({"update": ConfigRecord({"backend": "ckks"})}))
    assert "malformed" in caplog.text
