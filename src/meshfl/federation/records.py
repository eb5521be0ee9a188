"""How meshfl's objects travel inside Flower messages (``RecordDict`` layouts).

Server → MSP (``train.<agent>`` and ``evaluate.<agent>``)::

    "global": ArrayRecord {"vector": the global model}
    "config": ConfigRecord {"agent_config": JSON, "server_round": int, "seed": int}

MSP → server, after training::

    "update":  ArrayRecord {"payload": [w·v, w]}
    "metrics": MetricRecord (small numbers, e.g. train_loss, examples)
    "privacy": ConfigRecord (the PrivacyEvent)

MSP → server, after evaluation::

    "metrics": MetricRecord (includes "examples")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from meshfl.agents.base import Agent
from meshfl.agents.update import Update
from meshfl.config.errors import InvalidUpdateError
from meshfl.privacy.events import PrivacyEvent
from meshfl.secure.aggregate import seal_payload, validate_payload

__all__ = [
    "RoundInstructions",
    "decode_evaluation",
    "decode_instructions",
    "decode_update",
    "encode_evaluation",
    "encode_instructions",
    "encode_update",
]


@dataclass(frozen=True)
class RoundInstructions:
    """What the server asks of an MSP for one agent in one round."""

    agent: str
    agent_config: dict[str, Any]
    vector: np.ndarray
    server_round: int
    seed: int


def encode_instructions(
    agent: Agent[Any], vector: np.ndarray, *, server_round: int, seed: int
) -> RecordDict:
    """The content of a ``train.<agent>`` or ``evaluate.<agent>`` message."""
    return RecordDict(
        {
            "global": ArrayRecord({"vector": Array(np.asarray(vector, dtype=np.float64))}),
            "config": ConfigRecord(
                {
                    "agent_config": json.dumps(agent.config.model_dump(mode="json")),
                    "server_round": int(server_round),
                    "seed": int(seed),
                }
            ),
        }
    )


def decode_instructions(message: Message) -> RoundInstructions:
    """Read what :func:`encode_instructions` wrote (at the MSP)."""
    content = message.content
    config = content.config_records["config"]
    agent = message.metadata.message_type.split(".", 1)[1]
    return RoundInstructions(
        agent=agent,
        agent_config=json.loads(str(config["agent_config"])),
        vector=content.array_records["global"]["vector"].numpy(),
        server_round=int(config["server_round"]),  # type: ignore[arg-type]
        seed=int(config["seed"]),  # type: ignore[arg-type]
    )


def encode_update(update: Update) -> RecordDict:
    """The content of an MSP's reply to ``train.<agent>``: the sealed payload and its side data."""
    payload = seal_payload(update.vector, update.weight)
    return RecordDict(
        {
            "update": ArrayRecord({"payload": Array(payload)}),
            "metrics": MetricRecord(dict(update.metrics)),
            "privacy": ConfigRecord(update.privacy_event.to_dict()),
        }
    )


def decode_update(
    message: Message, *, expected_size: int | None
) -> tuple[np.ndarray, dict[str, float], PrivacyEvent]:
    """Payload, metrics and privacy event of a train reply; raises :class:`InvalidUpdateError`."""
    if message.has_error():
        raise InvalidUpdateError(f"the MSP replied with an error: {message.error.reason}")
    content = message.content
    try:
        payload = content.array_records["update"]["payload"].numpy()
        metrics = {k: float(v) for k, v in content.metric_records["metrics"].items()}  # type: ignore[arg-type]
        event = PrivacyEvent.from_dict(dict(content.config_records["privacy"]))
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidUpdateError(f"the reply is malformed ({type(err).__name__}: {err})") from err
    return validate_payload(payload, expected_size=expected_size), metrics, event


def encode_evaluation(metrics: dict[str, float]) -> RecordDict:
    """The content of an MSP's reply to ``evaluate.<agent>``."""
    return RecordDict({"metrics": MetricRecord({k: float(v) for k, v in metrics.items()})})


def decode_evaluation(message: Message) -> dict[str, float]:
    """Metrics of an evaluate reply; raises :class:`InvalidUpdateError`."""
    if message.has_error():
        raise InvalidUpdateError(f"the MSP replied with an error: {message.error.reason}")
    try:
        metrics = {
            k: float(v)  # type: ignore[arg-type]
            for k, v in message.content.metric_records["metrics"].items()
        }
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidUpdateError(f"the reply is malformed ({type(err).__name__}: {err})") from err
    if not metrics.get("examples", 0) > 0:
        raise InvalidUpdateError("evaluation metrics must include 'examples' > 0")
    return metrics
