"""Masked rounds on the wire, and what an MSP keeps of them (:mod:`meshfl.secure.secagg`).

Two exchanges join the train exchange when a round is masked, both through the same
``Grid`` (so the in-process engine, Ray and a deployed SuperLink carry them alike):

``query.mask_keys`` (coordinator → MSPs whose key it lacks, once per run)::

    "masking": ConfigRecord {"run_id": str}
    reply "masking": ConfigRecord {"public_key": bytes}   (X25519, 32 bytes)

``train.<agent>`` gains, per MSP::

    "masking": ConfigRecord {"neighbours": JSON list of node ids, "keys": [bytes],
                             "threshold": int}
    reply "masking": ConfigRecord {"holders": JSON list of node ids, "boxes": [bytes]}

``query.mask_unmask`` (coordinator → each MSP whose update is in the sum)::

    "masking": ConfigRecord {"run_id", "session", "agent", "server_round",
                             "survivors": JSON, "dropped": JSON, "senders": JSON,
                             "boxes": [bytes]}
    reply "masking": ConfigRecord {"share_from": JSON, "shares": [bytes],
                                   "seed_for": JSON, "seeds": [bytes]}

Node ids travel as JSON text: Flower's node ids are unsigned 64-bit, its record integers
signed. An MSP keeps its run's key pair, the public keys it pinned (trust on first use:
a changed key is refused), the latest round it masked per session and agent (it never masks
an earlier one again), and the neighbours of each masked round until it answers that round's
unmask request (once), in memory or, with a state directory (a deployed MSP runs one process per
message), in ``<state-dir>/masking/<run>.json`` (mode 0600, replaced atomically, under a
file lock); without one, in Flower's per-node ``Context.state`` (record ``meshfl.masking``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict

from meshfl.config.errors import InvalidUpdateError, MeshflError
from meshfl.secure.masking import KeyPair
from meshfl.secure.secagg import MaskedShares, MaskingPlan, UnmaskReply, UnmaskRequest

__all__ = [
    "KEYS_ACTION",
    "UNMASK_ACTION",
    "MaskingMemory",
    "decode_plan",
    "decode_shares",
    "decode_unmask_reply",
    "decode_unmask_request",
    "encode_plan",
    "encode_shares",
    "encode_unmask_reply",
    "encode_unmask_request",
]

KEYS_ACTION = "mask_keys"
UNMASK_ACTION = "mask_unmask"
_RECORD = "masking"
_STATE_RECORD = "meshfl.masking"
_MAX_IDS = 1 << 20


def _ids(values: Any) -> str:
    return json.dumps([int(v) for v in values])


def _read_ids(record: Mapping[str, Any], key: str, what: str) -> tuple[int, ...]:
    text = record.get(key)
    if not isinstance(text, str) or len(text) > _MAX_IDS:
        raise InvalidUpdateError(f"{what} is malformed: {key!r} is not a list of node ids")
    try:
        values = json.loads(text)
    except ValueError:
        raise InvalidUpdateError(f"{what} is malformed: {key!r} is not JSON") from None
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1 << 64 for v in values
    ):
        raise InvalidUpdateError(f"{what} is malformed: {key!r} is not a list of node ids")
    return tuple(values)


def _read_bytes(record: Mapping[str, Any], key: str, what: str, count: int) -> tuple[bytes, ...]:
    values = record.get(key)
    if not isinstance(values, list) or len(values) != count:
        raise InvalidUpdateError(f"{what} is malformed: {key!r} must hold {count} byte strings")
    if not all(isinstance(v, bytes) and len(v) <= 4096 for v in values):
        raise InvalidUpdateError(f"{what} is malformed: {key!r} must hold byte strings")
    return tuple(values)


def _record(content: RecordDict, what: str) -> ConfigRecord:
    if _RECORD not in content.config_records:
        raise InvalidUpdateError(f"{what} is malformed: it has no 'masking' record")
    return content.config_records[_RECORD]


def has_masking(content: RecordDict) -> bool:
    """Whether a message's content carries a masking record."""
    return _RECORD in content.config_records


# -- train ---------------------------------------------------------------------------------


def encode_plan(content: RecordDict, plan: MaskingPlan) -> RecordDict:
    """``content`` with the round's masking plan for one MSP."""
    record = ConfigRecord(
        {
            "neighbours": _ids(plan.neighbours),
            "keys": list(plan.public_keys),
            "threshold": int(plan.threshold),
        }
    )
    return RecordDict({**dict(content.items()), _RECORD: record})


def decode_plan(content: RecordDict) -> MaskingPlan | None:
    """The masking plan of a train message (None: the round is not masked)."""
    if not has_masking(content):
        return None
    what = "the masking plan"
    record = _record(content, what)
    neighbours = _read_ids(record, "neighbours", what)
    keys = _read_bytes(record, "keys", what, len(neighbours))
    threshold = record.get("threshold")
    if not isinstance(threshold, int) or isinstance(threshold, bool):
        raise InvalidUpdateError(f"{what} is malformed: 'threshold' must be an int")
    return MaskingPlan(neighbours, keys, threshold)


def encode_shares(content: RecordDict, shares: MaskedShares, public_key: bytes) -> RecordDict:
    """A train reply's content with the sender's encrypted shares and its public key (the
    coordinator drops the update if the key is not the one it gave the neighbours)."""
    record = ConfigRecord(
        {"holders": _ids(shares.holders), "boxes": list(shares.boxes), "public_key": public_key}
    )
    return RecordDict({**dict(content.items()), _RECORD: record})


def decode_shares(message: Message) -> tuple[MaskedShares, bytes]:
    """(the encrypted shares, the sender's public key) of a masked train reply."""
    what = "the update's mask shares"
    record = _record(message.content, what)
    holders = _read_ids(record, "holders", what)
    public = record.get("public_key")
    if not isinstance(public, bytes) or len(public) != 32:
        raise InvalidUpdateError(f"{what} are malformed: 'public_key' is not 32 bytes")
    return MaskedShares(holders, _read_bytes(record, "boxes", what, len(holders))), public


# -- keys ----------------------------------------------------------------------------------


def encode_key_request(run_id: str) -> RecordDict:
    return RecordDict({_RECORD: ConfigRecord({"run_id": run_id})})


def decode_key_request(message: Message) -> str:
    value = _record(message.content, "the key request").get("run_id")
    if not isinstance(value, str) or len(value) > 256:
        raise InvalidUpdateError("the key request is malformed: 'run_id' must be text")
    return value


def encode_key_reply(public: bytes) -> RecordDict:
    return RecordDict({_RECORD: ConfigRecord({"public_key": public})})


def decode_key_reply(message: Message) -> bytes:
    if message.has_error():
        raise InvalidUpdateError("the MSP failed to give its masking key")
    value = _record(message.content, "the key reply").get("public_key")
    if not isinstance(value, bytes) or len(value) != 32:
        raise InvalidUpdateError("the key reply is malformed: 'public_key' is not 32 bytes")
    return value


# -- unmask --------------------------------------------------------------------------------


def encode_unmask_request(
    request: UnmaskRequest, *, run_id: str, session: str, agent: str, server_round: int
) -> RecordDict:
    senders = sorted(request.boxes)
    record = ConfigRecord(
        {
            "run_id": run_id,
            "session": session,
            "agent": agent,
            "server_round": int(server_round),
            "survivors": _ids(request.survivors),
            "dropped": _ids(request.dropped),
            "senders": _ids(senders),
            "boxes": [request.boxes[s] for s in senders],
        }
    )
    return RecordDict({_RECORD: record})


def decode_unmask_request(message: Message) -> tuple[tuple[str, str, str, int], UnmaskRequest]:
    """((run, session, agent, round), the request)."""
    what = "the unmask request"
    record = _record(message.content, what)
    scope = []
    for key in ("run_id", "session", "agent"):
        value = record.get(key)
        if not isinstance(value, str) or len(value) > 256:
            raise InvalidUpdateError(f"{what} is malformed: {key!r} must be text")
        scope.append(value)
    server_round = record.get("server_round")
    if not isinstance(server_round, int) or isinstance(server_round, bool):
        raise InvalidUpdateError(f"{what} is malformed: 'server_round' must be an int")
    senders = _read_ids(record, "senders", what)
    boxes = _read_bytes(record, "boxes", what, len(senders))
    request = UnmaskRequest(
        _read_ids(record, "survivors", what),
        _read_ids(record, "dropped", what),
        dict(zip(senders, boxes, strict=True)),
    )
    return (scope[0], scope[1], scope[2], server_round), request


def encode_unmask_reply(reply: UnmaskReply) -> RecordDict:
    share_from, seed_for = sorted(reply.shares), sorted(reply.seeds)
    record = ConfigRecord(
        {
            "share_from": _ids(share_from),
            "shares": [reply.shares[i] for i in share_from],
            "seed_for": _ids(seed_for),
            "seeds": [reply.seeds[i] for i in seed_for],
        }
    )
    return RecordDict({_RECORD: record})


def decode_unmask_reply(message: Message) -> UnmaskReply:
    what = "the unmask reply"
    if message.has_error():
        raise InvalidUpdateError("the MSP did not answer the unmask request")
    record = _record(message.content, what)
    share_from = _read_ids(record, "share_from", what)
    seed_for = _read_ids(record, "seed_for", what)
    return UnmaskReply(
        dict(zip(share_from, _read_bytes(record, "shares", what, len(share_from)), strict=True)),
        dict(zip(seed_for, _read_bytes(record, "seeds", what, len(seed_for)), strict=True)),
    )


# -- what an MSP keeps ---------------------------------------------------------------------


class MaskingMemory:
    """An MSP's masking state per run: key pair, pinned keys, masked rounds.

    With ``directory`` (a deployed MSP, one process per message) it lives in a file per run;
    else in memory. Methods take the lock themselves.
    """

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], dict[str, Any]] = {}
        self._pairs: dict[str, KeyPair] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a ClientApp shipped to a Ray worker) as an empty memory: what matters
        lives in the state directory or the node's ``Context.state``, never in a copy."""
        return {}

    def __setstate__(self, _state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    @contextlib.contextmanager
    def run(
        self,
        directory: Path | None,
        node: int,
        run_id: str,
        node_state: RecordDict | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The run's state, to read and change; written back when the block ends.

        Without a directory it lives in ``node_state`` (Flower's ``Context.state``, which
        the engines keep per node between messages: a Ray worker that serves a node's
        unmask request may not be the one that served its train message), else in memory.
        """
        where = str(directory) if directory is not None else f"node:{node}"
        name = hashlib.sha256(f"{node}\x00{run_id}".encode()).hexdigest()[:32]
        with self._lock:
            if directory is None and node_state is not None:
                records = node_state.config_records
                record = records.get(_STATE_RECORD)
                text = record.get(name) if record is not None else None
                state = json.loads(text) if isinstance(text, str) else {}
                yield state
                kept = dict(record.items()) if record is not None else {}
                kept[name] = json.dumps(state)
                records[_STATE_RECORD] = ConfigRecord(kept)
                return
            if directory is None:
                state = self._runs.setdefault((where, run_id), {})
                yield state
                return
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{name}.json"
            with _file_lock(directory / f"{name}.lock"):
                state = json.loads(path.read_text()) if path.exists() else {}
                yield state
                _write_private(path, json.dumps(state))

    def keys(self, state: dict[str, Any]) -> KeyPair:
        """The run's key pair, made from OS entropy the first time (kept in this process,
        with the secrets it agreed with peers)."""
        if "private" not in state:
            pair = KeyPair()
            state["private"] = pair.private_bytes.hex()
        if state["private"] not in self._pairs:
            self._pairs[state["private"]] = KeyPair(bytes.fromhex(state["private"]))
        return self._pairs[state["private"]]

    @staticmethod
    def pin(state: dict[str, Any], plan: MaskingPlan) -> None:
        """Trust each neighbour's key on first use; refuse one that changed."""
        pins = state.setdefault("pins", {})
        for node, key in zip(plan.neighbours, plan.public_keys, strict=True):
            known = pins.setdefault(str(node), key.hex())
            if known != key.hex():
                raise MeshflError(
                    "the coordinator sent a masking key for a neighbour that differs from the "
                    "one pinned earlier in this run; refusing the round"
                )


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
