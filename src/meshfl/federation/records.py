"""How meshfl's objects travel inside Flower messages (``RecordDict`` layouts).

Server → MSP (``train.<agent>`` and ``evaluate.<agent>``)::

    "sealed.0", "sealed.1", ...: ConfigRecord {"backend", "key_id", "length", "chunks"}
        the sealed round sums the global model is made of (see sealed_model.py)
    "config": ConfigRecord {"agent_config": JSON, "server_round": int, "seed": int,
                            "run_id": str, "total_rounds": int, "privacy": JSON or "",
                            "sample_fraction": float, "noise_shares": int,
                            "sealed_count": int}

MSP → server, after training::

    "update":  ConfigRecord {"backend", "key_id", "length", "chunks"}: the sealed [w·v, w]
    "metrics": MetricRecord (small numbers, e.g. train_loss; never "examples")
    "privacy": ConfigRecord {"epsilon_spent": float, "msp": int}

The training weight (the MSP's number of examples) travels only inside the sealed payload:
the plaintext side data leaves out "examples" and the privacy event, whose sampling rate
(batch / rows) would give the size away too; the MSP's ledger keeps the event.

MSP → server, declining a round (its privacy budget would be exceeded)::

    "declined": ConfigRecord {"reason": str, "epsilon_spent": float, "msp": int}

MSP → server, after evaluation::

    "metrics": MetricRecord (includes "examples")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from meshfl.agents.base import Agent
from meshfl.config.errors import InvalidUpdateError
from meshfl.privacy.config import DPConfig
from meshfl.secure.backend import Sealed

__all__ = [
    "Decline",
    "RoundContext",
    "RoundInstructions",
    "TrainReply",
    "decode_evaluation",
    "decode_instructions",
    "decode_sealed",
    "decode_update",
    "encode_decline",
    "encode_evaluation",
    "encode_instructions",
    "encode_sealed",
    "encode_update",
]


@dataclass(frozen=True)
class RoundContext:
    """What every MSP must know about the run to apply privacy consistently."""

    run_id: str = ""
    session: str = ""
    """Id of the coordinator process driving the run: a round re-sent after a coordinator
    restart is a new attempt (MSPs train, and spend privacy, again)."""
    total_rounds: int = 1
    privacy: DPConfig | None = None
    sample_fraction: float = 1.0
    """The rate at which MSPs are sampled (Poisson, from OS entropy, under ``unit="msp"``)."""
    noise_shares: int = 1
    noise_multiplier: float | None = None
    """Under ``unit="msp"``: the one noise multiplier every MSP of the run adds a share of,
    planned by the coordinator from public inputs (each MSP checks it fits its ledger)."""


@dataclass(frozen=True)
class RoundInstructions:
    """What the server asks of an MSP for one agent in one round."""

    agent: str
    agent_config: dict[str, Any]
    sealed: tuple[Sealed, ...]
    server_round: int
    seed: int
    context: RoundContext = field(default_factory=RoundContext)

    @property
    def rounds_left(self) -> int:
        """Rounds of the plan from this one on (this one included)."""
        return max(1, self.context.total_rounds - self.server_round + 1)


@dataclass(frozen=True)
class Decline:
    """An MSP's refusal to train this round, with its reason (no update content)."""

    reason: str
    epsilon_spent: float
    msp: int


@dataclass(frozen=True)
class TrainReply:
    """A train reply: sealed payload, metrics and the MSP's ε so far."""

    sealed: Sealed
    metrics: dict[str, float]
    epsilon_spent: float
    msp: int


def encode_sealed(sealed: Sealed) -> ConfigRecord:
    """A sealed vector as a config record (its ciphertexts are bytes values)."""
    return ConfigRecord(
        {
            "backend": sealed.backend,
            "key_id": sealed.key_id,
            "length": int(sealed.length),
            "chunks": list(sealed.chunks),
            "binding": sealed.binding,
        }
    )


def decode_sealed(record: ConfigRecord) -> Sealed:
    """Inverse of :func:`encode_sealed`; raises :class:`InvalidUpdateError` if malformed."""
    try:
        chunks = record["chunks"]
        if not isinstance(chunks, list) or not all(isinstance(c, bytes) for c in chunks):
            raise TypeError("'chunks' must be a list of bytes")
        return Sealed(
            backend=str(record["backend"]),
            key_id=str(record["key_id"]),
            length=int(record["length"]),  # type: ignore[arg-type]
            chunks=tuple(c for c in chunks if isinstance(c, bytes)),
            binding=str(record.get("binding", "")),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidUpdateError(
            f"a sealed vector is malformed ({type(err).__name__}: {err})"
        ) from err


def encode_instructions(
    agent: Agent[Any],
    sealed: Sequence[Sealed],
    *,
    server_round: int,
    seed: int,
    context: RoundContext | None = None,
) -> RecordDict:
    """The content of a ``train.<agent>`` or ``evaluate.<agent>`` message."""
    context = context or RoundContext()
    privacy = context.privacy.model_dump_json() if context.privacy is not None else ""
    records: dict[str, Any] = {f"sealed.{i}": encode_sealed(s) for i, s in enumerate(sealed)}
    records["config"] = ConfigRecord(
        {
            "agent_config": json.dumps(agent.config.model_dump(mode="json")),
            "server_round": int(server_round),
            "seed": int(seed),
            "run_id": context.run_id,
            "session": context.session,
            "total_rounds": int(context.total_rounds),
            "privacy": privacy,
            "sample_fraction": float(context.sample_fraction),
            "noise_shares": int(context.noise_shares),
            "noise_multiplier": float(context.noise_multiplier or 0.0),
            "sealed_count": len(sealed),
        }
    )
    return RecordDict(records)


def decode_instructions(message: Message) -> RoundInstructions:
    """Read what :func:`encode_instructions` wrote (at the MSP)."""
    content = message.content
    config = content.config_records["config"]
    agent = message.metadata.message_type.split(".", 1)[1]
    privacy = str(config.get("privacy", ""))
    count = int(config.get("sealed_count", 0))  # type: ignore[arg-type]
    return RoundInstructions(
        agent=agent,
        agent_config=json.loads(str(config["agent_config"])),
        sealed=tuple(decode_sealed(content.config_records[f"sealed.{i}"]) for i in range(count)),
        server_round=int(config["server_round"]),  # type: ignore[arg-type]
        seed=int(config["seed"]),  # type: ignore[arg-type]
        context=RoundContext(
            run_id=str(config.get("run_id", "")),
            session=str(config.get("session", "")),
            total_rounds=int(config.get("total_rounds", 1)),  # type: ignore[arg-type]
            privacy=DPConfig.model_validate_json(privacy) if privacy else None,
            sample_fraction=float(config.get("sample_fraction", 1.0)),  # type: ignore[arg-type]
            noise_shares=int(config.get("noise_shares", 1)),  # type: ignore[arg-type]
            noise_multiplier=float(config.get("noise_multiplier", 0.0)) or None,  # type: ignore[arg-type]
        ),
    )


SIZE_METRICS = frozenset({"examples", "episodes", "series"})
"""Training metrics an MSP never sends in the clear: they reveal its data size."""


def encode_update(
    sealed: Sealed,
    *,
    metrics: dict[str, float],
    epsilon_spent: float = 0.0,
    msp: int = -1,
) -> RecordDict:
    """The content of an MSP's reply to ``train.<agent>``: the sealed payload and side data.

    Metrics in :data:`SIZE_METRICS` are left out: the weight is inside the ciphertext.
    """
    public = {k: float(v) for k, v in metrics.items() if k not in SIZE_METRICS}
    return RecordDict(
        {
            "update": encode_sealed(sealed),
            "metrics": MetricRecord(dict(public)),
            "privacy": ConfigRecord({"epsilon_spent": float(epsilon_spent), "msp": int(msp)}),
        }
    )


def encode_decline(decline: Decline) -> RecordDict:
    """The content of an MSP's reply declining a round."""
    return RecordDict(
        {
            "declined": ConfigRecord(
                {
                    "reason": decline.reason,
                    "epsilon_spent": float(decline.epsilon_spent),
                    "msp": int(decline.msp),
                }
            )
        }
    )


def decode_update(message: Message) -> TrainReply | Decline:
    """A train reply, or the MSP's decline; raises :class:`InvalidUpdateError` if malformed.

    The sealed payload is only decoded here; the aggregator checks its key, length and
    ciphertexts before it joins the sum.
    """
    if message.has_error():
        raise InvalidUpdateError(f"the MSP replied with an error: {message.error.reason}")
    content = message.content
    try:
        if "declined" in content.config_records:
            record = content.config_records["declined"]
            return Decline(
                reason=str(record["reason"]),
                epsilon_spent=float(record["epsilon_spent"]),  # type: ignore[arg-type]
                msp=int(record["msp"]),  # type: ignore[arg-type]
            )
        sealed = decode_sealed(content.config_records["update"])
        metrics = {
            k: float(v)  # type: ignore[arg-type]
            for k, v in content.metric_records["metrics"].items()
        }
        privacy = content.config_records["privacy"]
        epsilon = float(privacy.get("epsilon_spent", 0.0))  # type: ignore[arg-type]
        msp = int(privacy.get("msp", -1))  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidUpdateError(f"the reply is malformed ({type(err).__name__}: {err})") from err
    return TrainReply(sealed, metrics, epsilon, msp)


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
