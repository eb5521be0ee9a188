"""Issue 12 §4: whatever a reply holds, decoding it raises InvalidUpdateError or nothing.

2081f48: ``int(inf)`` in decode_sealed raised OverflowError, which escaped the strategy and
aborted the round (and the run); NaN and inf were taken as ε; a string length was cast.
"""

from __future__ import annotations

import math

import pytest
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict

from meshfl.config.errors import InvalidUpdateError
from meshfl.federation.records import (
    Decline,
    TrainReply,
    decode_evaluation,
    decode_instructions,
    decode_sealed,
    decode_update,
)

GOOD_SEALED = {
    "backend": "ckks",
    "key_id": "k",
    "length": 3,
    "chunks": [b"abc"],
    "binding": "",
}


@pytest.fixture(autouse=True)
def _identity():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


def _reply(update=None, metrics=None, privacy=None, **records) -> Message:
    content = {
        "update": ConfigRecord(GOOD_SEALED if update is None else update),
        "metrics": MetricRecord({"train_loss": 0.5} if metrics is None else metrics),
        "privacy": ConfigRecord({"epsilon_spent": 1.0, "msp": 3} if privacy is None else privacy),
        **records,
    }
    message = Message(RecordDict(content), dst_node_id=1, message_type="train.anomaly")
    return message


def test_a_good_reply_decodes():
    decoded = decode_update(_reply())
    assert isinstance(decoded, TrainReply)
    assert decoded.sealed.length == 3 and decoded.msp == 3 and decoded.epsilon_spent == 1.0


@pytest.mark.parametrize(
    "field",
    [
        {"length": math.inf},
        {"length": -math.inf},
        {"length": math.nan},
        {"length": 3.0},
        {"length": "3"},
        {"length": True},
        {"length": [3]},
        {"backend": 1},
        {"backend": b"ckks"},
        {"backend": "x" * 100_000},
        {"key_id": 1.5},
        {"key_id": ["k"]},
        {"chunks": b"abc"},
        {"chunks": ["abc"]},
        {"chunks": [1, 2]},
        {"chunks": "abc"},
        {"binding": 7},
        {"binding": "x" * (2 << 20)},
    ],
)
def test_a_sealed_field_of_the_wrong_type_or_value_is_refused_by_name(field):
    """2081f48: length=inf raised OverflowError (escaped); length=3.0 or '3' was cast."""
    record = ConfigRecord({**GOOD_SEALED, **field})
    with pytest.raises(InvalidUpdateError):
        decode_sealed(record)
    with pytest.raises(InvalidUpdateError):
        decode_update(_reply(update={**GOOD_SEALED, **field}))


@pytest.mark.parametrize("missing", ["backend", "key_id", "length", "chunks"])
def test_a_missing_sealed_field_is_refused_by_name(missing):
    record = {k: v for k, v in GOOD_SEALED.items() if k != missing}
    with pytest.raises(InvalidUpdateError, match=repr(missing)):
        decode_update(_reply(update=record))


@pytest.mark.parametrize(
    "privacy",
    [
        {"epsilon_spent": math.nan, "msp": 1},
        {"epsilon_spent": math.inf, "msp": 1},
        {"epsilon_spent": -1.0, "msp": 1},
        {"epsilon_spent": "1", "msp": 1},
        {"epsilon_spent": 1.0, "msp": math.inf},
        {"epsilon_spent": 1.0, "msp": 1.5},
        {"epsilon_spent": 1.0, "msp": "1"},
    ],
)
def test_side_data_that_is_not_a_finite_number_is_refused(privacy):
    with pytest.raises(InvalidUpdateError):
        decode_update(_reply(privacy=privacy))


@pytest.mark.parametrize(
    "metrics",
    [{"loss": math.nan}, {"loss": math.inf}, {"loss": [1.0, 2.0]}, {"x" * 100: 1.0}],
)
def test_metrics_that_are_not_finite_numbers_are_refused(metrics):
    with pytest.raises(InvalidUpdateError):
        decode_update(_reply(metrics=metrics))
    evaluation = Message(
        RecordDict({"metrics": MetricRecord({**metrics, "examples": 3.0})}),
        dst_node_id=1,
        message_type="evaluate.anomaly",
    )
    with pytest.raises(InvalidUpdateError):
        decode_evaluation(evaluation)


def test_a_reply_without_its_records_is_refused_by_name():
    for missing in ("update", "metrics", "privacy"):
        content = {
            "update": ConfigRecord(GOOD_SEALED),
            "metrics": MetricRecord({"loss": 1.0}),
            "privacy": ConfigRecord({"epsilon_spent": 0.0, "msp": 1}),
        }
        del content[missing]
        message = Message(RecordDict(content), dst_node_id=1, message_type="train.anomaly")
        with pytest.raises(InvalidUpdateError, match=missing):
            decode_update(message)


def test_a_decline_is_checked_like_the_rest():
    def decline(**fields):
        record = {"reason": "budget", "epsilon_spent": 1.0, "msp": 2, **fields}
        return Message(
            RecordDict({"declined": ConfigRecord(record)}),
            dst_node_id=1,
            message_type="train.anomaly",
        )

    assert decode_update(decline()) == Decline("budget", 1.0, 2)
    assert len(decode_update(decline(reason="r" * 100_000)).reason) <= 300
    for bad in ({"epsilon_spent": math.inf}, {"msp": math.inf}, {"reason": 5}):
        with pytest.raises(InvalidUpdateError):
            decode_update(decline(**bad))


def test_an_unusable_snr_is_ignored_not_refused():
    for snr in (math.nan, -1.0, math.inf, "x"):
        decoded = decode_update(_reply(privacy={"epsilon_spent": 0.0, "msp": 1, "snr": snr}))
        assert isinstance(decoded, TrainReply) and decoded.snr is None


def test_error_replies_become_fixed_sentences():
    from meshfl.federation.errors import E_RANGE

    def error(code, reason):
        request = Message(RecordDict(), dst_node_id=1, message_type="train.anomaly")
        request.metadata.__dict__["_message_id"] = request.object_id
        return Message(Error(code=code, reason=reason), reply_to=request)

    with pytest.raises(InvalidUpdateError) as err:
        decode_update(error(E_RANGE.code, "E_RANGE: magnitude 249.97"))
    assert str(err.value) == f"the MSP replied with an error: {E_RANGE.reason}"
    with pytest.raises(InvalidUpdateError) as err:
        decode_evaluation(error(99, "/home/msp/data.csv"))
    assert "99" in str(err.value) and "/home" not in str(err.value)


def _instructions(**config) -> Message:
    base = {
        "agent_config": "{}",
        "server_round": 1,
        "seed": 0,
        "sealed_count": 0,
        "privacy": "",
    }
    return Message(
        RecordDict({"config": ConfigRecord({**base, **config})}),
        dst_node_id=1,
        message_type="train.anomaly",
    )


def test_instructions_decode_and_refuse_what_their_encoder_never_writes():
    assert decode_instructions(_instructions()).agent == "anomaly"
    for bad in (
        {"server_round": math.inf},
        {"server_round": "1"},
        {"seed": 1.5},
        {"sealed_count": 10**9},
        {"sealed_count": -1},
        {"agent_config": "[" * 100_000},
        {"agent_config": "[]"},
        {"privacy": "{not json"},
        {"noise_multiplier": math.nan},
        {"noise_multiplier": math.inf},
    ):
        with pytest.raises(InvalidUpdateError):
            decode_instructions(_instructions(**bad))
