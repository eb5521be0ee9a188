"""How meshfl's objects travel inside Flower messages (``RecordDict`` layouts).

Server → MSP (``train.<agent>`` and ``evaluate.<agent>``)::

    "sealed.0", "sealed.1", ...: ConfigRecord {"backend", "key_id", "length", "chunks"}
        the sealed round sums the global model is made of (see sealed_model.py)
    "config": ConfigRecord {"agent_config": JSON, "server_round": int, "seed": int,
                            "run_id": str, "total_rounds": int, "privacy": JSON or "",
                            "noise_shares": int, "noise_multiplier": float,
                            "sealed_count": int}

MSP → server, after training::

    "update":  ConfigRecord {"backend", "key_id", "length", "chunks"}: the sealed [w·v, w, tag]
    "metrics": MetricRecord (small numbers, e.g. train_loss; never "examples")
    "privacy": ConfigRecord {"epsilon_spent": float, "msp": int, "snr": float (optional)}

The training weight (the MSP's number of examples) travels only inside the sealed payload:
the plaintext side data leaves out "examples" and the privacy event, whose sampling rate
(batch / rows) would give the size away too; the MSP's ledger keeps the event. Under
sample-level DP "snr" is the update's signal-to-noise estimate, a post-processing of the
private update, coarsened to a power of 2 (:mod:`meshfl.privacy.snr`): a size hint of one
power of 2.

MSP → server, declining a round (its privacy budget would be exceeded)::

    "declined": ConfigRecord {"reason": str, "epsilon_spent": float, "msp": int}

MSP → server, after evaluation::

    "metrics": MetricRecord (includes "examples")
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from meshfl.agents.base import Agent
from meshfl.config.errors import InvalidUpdateError
from meshfl.federation.errors import describe_reply_error
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
    history_base: int = 0
    """Sums of the global model before ``sealed`` that the message leaves out: the MSP
    opened them before (:func:`meshfl.federation.sealed_model.open_global`)."""
    history_digest: str = ""
    """The hash chain of those ``history_base`` sums (empty without them)."""

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
    snr: float | None = None
    """The update's coarse signal-to-noise estimate (sample-level DP only), if sent."""


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
    """Inverse of :func:`encode_sealed`; raises :class:`InvalidUpdateError` if malformed.

    Every field must have the type :func:`encode_sealed` writes (nothing is converted, so
    ``inf`` or ``"12"`` for a length is refused, not cast); strings are bounded in size.
    What the chunks hold is the aggregator's to check.
    """
    what = "a sealed vector"
    if not isinstance(record, ConfigRecord):
        raise InvalidUpdateError(
            f"{what} is malformed: not a config record but {type(record).__name__}"
        )
    chunks = _get(record, "chunks", list, what)
    if not all(isinstance(c, bytes) for c in chunks):
        raise InvalidUpdateError(f"{what} is malformed: its 'chunks' must be a list of bytes")
    return Sealed(
        backend=_text(record, "backend", what, limit=64),
        key_id=_text(record, "key_id", what, limit=256),
        length=_integer(record, "length", what),
        chunks=tuple(chunks),
        binding=_text(record, "binding", what, limit=MAX_BINDING, default=""),
    )


MAX_BINDING = 1 << 20
"""Longest binding (JSON) a sealed vector may carry: a sum of ~50,000 contributors."""

MAX_METRICS = 256
"""Most metrics a reply may carry."""

MAX_REASON = 300
"""A decline's reason is cut to this many characters before it is logged or stored."""

_MISSING: Any = object()


def _get(
    record: Mapping[str, Any], key: str, kind: type, what: str, default: Any = _MISSING
) -> Any:
    """``record[key]`` if it is a ``kind`` (a bool is no int); else :class:`InvalidUpdateError`."""
    if key not in record:
        if default is not _MISSING:
            return default
        raise InvalidUpdateError(f"{what} is malformed: it has no {key!r}")
    value = record[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise InvalidUpdateError(
            f"{what} is malformed: its {key!r} must be {kind.__name__}; got {type(value).__name__}"
        )
    return value


def _text(
    record: Mapping[str, Any], key: str, what: str, *, limit: int, default: Any = _MISSING
) -> str:
    value: str = _get(record, key, str, what, default)
    if len(value) > limit:
        raise InvalidUpdateError(
            f"{what} is malformed: its {key!r} is longer than {limit} characters"
        )
    return value


def _integer(record: Mapping[str, Any], key: str, what: str, default: Any = _MISSING) -> int:
    return int(_get(record, key, int, what, default))


def _number(
    record: Mapping[str, Any],
    key: str,
    what: str,
    default: Any = _MISSING,
    *,
    at_least: float = -math.inf,
) -> float:
    """A finite int or float (no bool, no NaN, no inf), at least ``at_least``."""
    if key not in record and default is not _MISSING:
        return float(default)
    value = _get(record, key, object, what)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidUpdateError(
            f"{what} is malformed: its {key!r} must be a number; got {type(value).__name__}"
        )
    number = float(value)  # an int past float's range is inf, refused below
    if not (math.isfinite(number) and number >= at_least):
        bound = "" if at_least == -math.inf else f" and at least {at_least:g}"
        raise InvalidUpdateError(f"{what} is malformed: its {key!r} must be finite{bound}")
    return number


def _metrics(content: Any, what: str) -> dict[str, float]:
    """The ``"metrics"`` record of a reply: at most :data:`MAX_METRICS` finite numbers."""
    records = content.metric_records
    if "metrics" not in records:
        raise InvalidUpdateError(f"{what} is malformed: it has no 'metrics' record")
    record = records["metrics"]
    if len(record) > MAX_METRICS:
        raise InvalidUpdateError(f"{what} is malformed: it carries more than {MAX_METRICS} metrics")
    if any(len(str(k)) > 64 for k in record):
        raise InvalidUpdateError(
            f"{what} is malformed: it names a metric with more than 64 characters"
        )
    return {str(k): _number(record, k, f"{what}'s metric") for k in record}


def _config(records: Mapping[str, Any], key: str, what: str) -> ConfigRecord:
    """The config record ``key`` of a message's ``content.config_records`` (read that once:
    Flower builds the mapping anew on every access)."""
    if key not in records:
        raise InvalidUpdateError(f"{what} is malformed: it has no {key!r} record")
    record = records[key]
    if not isinstance(record, ConfigRecord):  # pragma: no cover - Flower's RecordDict types it
        raise InvalidUpdateError(f"{what} is malformed: its {key!r} is not a config record")
    return record


def encode_instructions(
    agent: Agent[Any],
    sealed: Sequence[Sealed],
    *,
    server_round: int,
    seed: int,
    context: RoundContext | None = None,
    history_base: int = 0,
    history_digest: str = "",
) -> RecordDict:
    """The content of a ``train.<agent>`` or ``evaluate.<agent>`` message.

    ``sealed`` are the global model's sums after the first ``history_base`` ones, which the
    message leaves out (their hash chain is ``history_digest``).
    """
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
            "noise_shares": int(context.noise_shares),
            "noise_multiplier": float(context.noise_multiplier or 0.0),
            "sealed_count": len(sealed),
            "history_base": int(history_base),
            "history_digest": history_digest,
        }
    )
    return RecordDict(records)


def decode_instructions(message: Message) -> RoundInstructions:
    """Read what :func:`encode_instructions` wrote (at the MSP).

    Raises :class:`InvalidUpdateError` for anything :func:`encode_instructions` would not
    have written: a missing field, a field of another type, NaN or inf.
    """
    what = "the round's message"
    try:
        content = message.content
        records = content.config_records
        config = _config(records, "config", what)
        _, _, agent = str(message.metadata.message_type).partition(".")
        if not agent:
            raise InvalidUpdateError(f"{what} is malformed: it names no agent")
        privacy = _text(config, "privacy", what, limit=1 << 16, default="")
        count = _integer(config, "sealed_count", what, default=0)
        if not 0 <= count <= len(records):
            raise InvalidUpdateError(
                f"{what} is malformed: it announces {count} sealed sums it does not hold"
            )
        base = _integer(config, "history_base", what, default=0)
        if base < 0:
            raise InvalidUpdateError(f"{what} is malformed: its history_base is negative")
        agent_config = json.loads(_text(config, "agent_config", what, limit=1 << 20))
        if not isinstance(agent_config, dict):
            raise InvalidUpdateError(f"{what} is malformed: its agent_config must be a JSON object")
        return RoundInstructions(
            agent=agent,
            agent_config=agent_config,
            sealed=tuple(
                decode_sealed(_config(records, f"sealed.{i}", what)) for i in range(count)
            ),
            server_round=_integer(config, "server_round", what),
            seed=_integer(config, "seed", what),
            context=RoundContext(
                run_id=_text(config, "run_id", what, limit=256, default=""),
                session=_text(config, "session", what, limit=256, default=""),
                total_rounds=_integer(config, "total_rounds", what, default=1),
                privacy=DPConfig.model_validate_json(privacy) if privacy else None,
                noise_shares=_integer(config, "noise_shares", what, default=1),
                noise_multiplier=_number(config, "noise_multiplier", what, default=0.0) or None,
            ),
            history_base=base,
            history_digest=_text(config, "history_digest", what, limit=128, default=""),
        )
    except InvalidUpdateError:
        raise
    except Exception as err:  # JSON, pydantic, recursion: named by type, never echoed
        raise InvalidUpdateError(f"{what} is malformed ({type(err).__name__})") from None


SIZE_METRICS = frozenset({"examples", "episodes", "series"})
"""Training metrics an MSP never sends in the clear: they reveal its data size."""


def encode_update(
    sealed: Sealed,
    *,
    metrics: dict[str, float],
    epsilon_spent: float = 0.0,
    msp: int = -1,
    snr: float | None = None,
) -> RecordDict:
    """The content of an MSP's reply to ``train.<agent>``: the sealed payload and side data.

    Metrics in :data:`SIZE_METRICS` are left out: the weight is inside the ciphertext.
    ``snr`` (optional) must already be coarse (:func:`meshfl.privacy.snr.coarse`).
    """
    public = {k: float(v) for k, v in metrics.items() if k not in SIZE_METRICS}
    privacy: dict[str, Any] = {"epsilon_spent": float(epsilon_spent), "msp": int(msp)}
    if snr is not None:
        privacy["snr"] = float(snr)
    return RecordDict(
        {
            "update": encode_sealed(sealed),
            "metrics": MetricRecord(dict(public)),
            "privacy": ConfigRecord(privacy),
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
    ciphertexts before it joins the sum. Every field must have the type its encoder writes,
    numbers must be finite (ε also >= 0), a decline's reason is cut to :data:`MAX_REASON`
    characters; nothing else raises. An error reply becomes a fixed sentence
    (:func:`~meshfl.federation.errors.describe_reply_error`): the MSP's text is not kept.
    """
    if message.has_error():
        raise InvalidUpdateError(describe_reply_error(message.error))
    what = "the reply"
    try:
        content = message.content
        records = content.config_records
        if "declined" in records:
            record = _config(records, "declined", what)
            reason = _get(record, "reason", str, "the decline")
            return Decline(
                reason=reason[:MAX_REASON],
                epsilon_spent=_number(record, "epsilon_spent", "the decline", at_least=0.0),
                msp=_integer(record, "msp", "the decline"),
            )
        sealed = decode_sealed(_config(records, "update", what))
        metrics = _metrics(content, what)
        privacy = _config(records, "privacy", what)
        epsilon = _number(privacy, "epsilon_spent", what, default=0.0, at_least=0.0)
        msp = _integer(privacy, "msp", what, default=-1)
        snr: float | None = None
        if "snr" in privacy:  # a report only: an unusable one is ignored, not refused
            value = privacy["snr"]
            if isinstance(value, int | float) and not isinstance(value, bool):
                snr = float(value) if math.isfinite(value) and value >= 0 else None
    except InvalidUpdateError:
        raise
    except Exception as err:  # named by type, never echoed
        raise InvalidUpdateError(f"{what} is malformed ({type(err).__name__})") from None
    return TrainReply(sealed, metrics, epsilon, msp, snr)


def encode_evaluation(metrics: dict[str, float]) -> RecordDict:
    """The content of an MSP's reply to ``evaluate.<agent>``."""
    return RecordDict({"metrics": MetricRecord({k: float(v) for k, v in metrics.items()})})


def decode_evaluation(message: Message) -> dict[str, float]:
    """Metrics of an evaluate reply: finite numbers, ``examples`` > 0; raises
    :class:`InvalidUpdateError` (an error reply becomes a fixed sentence)."""
    if message.has_error():
        raise InvalidUpdateError(describe_reply_error(message.error))
    try:
        metrics = _metrics(message.content, "the evaluation")
    except InvalidUpdateError:
        raise
    except Exception as err:  # named by type, never echoed
        raise InvalidUpdateError(f"the evaluation is malformed ({type(err).__name__})") from None
    if not metrics.get("examples", 0) > 0:
        raise InvalidUpdateError("evaluation metrics must include 'examples' > 0")
    return metrics
