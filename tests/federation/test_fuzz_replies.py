"""Issue 12 §4: a property-based fuzz of the coordinator's round, malformed replies among good.

2081f48 aborted 38 of 98 fuzzed CKKS rounds: an ``int(inf)`` escaping records.py, a
ciphertext whose ``is_ntt_form`` byte was 0 passing ``check()`` and failing ``add_``.

Here hypothesis draws rounds of 2 to 4 good CKKS updates mixed, in random order, with 24 to
31 malformed replies, each made by one of the mutations below, into the real
:meth:`AgentStrategy.aggregate_train` (one round in 8 through Flower's wire form, what a
SuperLink carries: the same types arrive, only slower). Across all rounds it requires

* at least 5,000 malformed replies, every one dropped by name (a reason is recorded);
* 0 exceptions escaping the round, 0 rounds over a time limit (no hang);
* 0 good updates lost: the sum's contributors are exactly the good nodes;
* the sum correct: decrypted, it equals the sum of the good payloads.

The mutations cover random bytes, truncations and extensions, bit flips in every field of
the chunk header and of SEAL's ciphertext members, coefficients at or past the modulus,
TenSEAL-format chunks (flipped, truncated, varint bombs), compression bombs (zlib, zstd RLE),
huge sizes, every field with the wrong type or NaN/inf, broken bindings, side data and error
replies. Flipping coefficient bits that stay below the modulus is not a malformed reply the
coordinator could see (only the key tells it from a genuine one); MSPs refuse those when they
open them (tests/secure/test_audit_attacks.py, and the binding tags).
"""

from __future__ import annotations

import struct
import time
import zlib
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshfl.federation import AgentPlan, AgentStrategy
from meshfl.federation.engine import from_wire, to_wire
from meshfl.federation.records import RoundContext, encode_update
from meshfl.secure.aggregate import PAYLOAD_EXTRA
from meshfl.secure.binding import TAG_SLOTS, Binding
from meshfl.secure.ckks import _HEAD, _varint, ckks_vector_from, ephemeral_ckks_backend

RUN = "fuzz-run"
MIN_MALFORMED = 5_000
ROUND_SECONDS = 5.0  # a round of ~35 replies takes ~0.1 s; a hang would take much longer
WIRE_EVERY = 8  # one round in 8 goes through Flower's wire form


@pytest.fixture(scope="module")
def world():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    sealer, aggregator = ephemeral_ckks_backend()  # once per module
    agent = AgentPlan(agent="revenue", rounds=1).build_agent()  # a 156-value update
    length = agent.update_size(agent.init_vector(seed=0)) + PAYLOAD_EXTRA
    rng = np.random.default_rng(0)
    payloads = []
    for _ in range(5):  # 4 good MSPs and a victim whose payload the mutations start from
        weight = float(rng.integers(10, 500))
        payload = np.concatenate(
            [weight * rng.uniform(-1, 1, length - PAYLOAD_EXTRA), [weight], np.zeros(TAG_SLOTS)]
        )
        payloads.append(payload)
    sealed = [sealer.seal(p) for p in payloads]
    raw = bytes(ckks_vector_from(aggregator.context, sealed[4].chunks[0]).serialize())
    members = raw.index(sealed[4].chunks[0][_HEAD.size : _HEAD.size + 32])  # its parms_id
    return {
        "tenseal_form": (raw, members),
        "sealer": sealer,
        "aggregator": aggregator,
        "agent": agent,
        "length": length,
        "payloads": payloads,
        "sealed": sealed,
        "bombs": _bombs(rng),
    }


def _tenseal_form(n_values: int, blob: bytes, scale: float = 2.0**31) -> bytes:
    sizes = _varint(n_values)
    return (
        b"\x0a"
        + _varint(len(sizes))
        + sizes
        + b"\x12"
        + _varint(len(blob))
        + blob
        + b"\x19"
        + struct.pack("<d", scale)
    )


def _seal_object(payload: bytes, mode: int) -> bytes:
    return struct.pack("<HBBBBHQ", 0xA15E, 16, 4, 3, mode, 0, 16 + len(payload)) + payload


def _bombs(rng) -> list[bytes]:
    """Large hostile chunks, built once."""
    sizes = b"\x01" * (4 << 20)
    zstd = (
        b"\x28\xb5\x2f\xfd\x00\x40"
        + ((((128 << 10) << 3) | 2).to_bytes(3, "little") + b"\x00") * 16_000
    )
    return [
        b"\x0a" + _varint(len(sizes)) + sizes,  # 4 MB of varints
        _tenseal_form(165, _seal_object(zlib.compress(b"\x00" * (64 << 20), 9), 1)),
        _tenseal_form(165, _seal_object(zstd, 2)),  # RLE blocks: 2 GB if inflated
        b"MFC\x01" + rng.bytes(4 << 20),  # 4 MB behind meshfl's magic
        rng.bytes(4 << 20),
    ]


# --- mutations: each returns a reply's content (a RecordDict) or an Error ----------------


def _sealed_record(sealed, **changes):
    record = {
        "backend": sealed.backend,
        "key_id": sealed.key_id,
        "length": sealed.length,
        "chunks": list(sealed.chunks),
        "binding": sealed.binding,
    }
    record.update(changes)
    return record


def _content(update=None, metrics=None, privacy=None, drop=(), extra=None):
    records = {
        "update": ConfigRecord(update),
        "metrics": MetricRecord({"train_loss": 0.5} if metrics is None else metrics),
        "privacy": ConfigRecord({"epsilon_spent": 0.0, "msp": 7} if privacy is None else privacy),
    }
    for name in drop:
        records.pop(name)
    records.update(extra or {})
    return RecordDict(records)


def _chunk(victim, rng, mutate):
    return _content(_sealed_record(victim, chunks=[mutate(victim.chunks[0], rng)]))


def _flip_bit(data: bytes, lo: int, hi: int, rng) -> bytes:
    out = bytearray(data)
    at = int(rng.integers(lo, min(hi, len(out))))
    out[at] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def _header_flip(chunk, rng):
    return _flip_bit(chunk, 0, _HEAD.size, rng)


def _members_flip(chunk, rng):  # SEAL's members before the coefficients (parms_id...)
    prefix = _HEAD.unpack_from(chunk)[-1]
    return _flip_bit(chunk, _HEAD.size, _HEAD.size + prefix, rng)


def _field_overwrite(chunk, rng):  # one member overwritten: NTT flag, sizes, scale, ...
    at, size = [(32, 1), (33, 8), (41, 8), (49, 8), (57, 8), (65, 8), (73, 24)][
        int(rng.integers(0, 7))
    ]
    out = bytearray(chunk)
    start = _HEAD.size + at
    out[start : start + size] = rng.bytes(size) if rng.random() < 0.7 else bytes(size)
    return bytes(out) if bytes(out) != chunk else chunk[:-1]


def _coefficient_past_q(chunk, rng):  # a 60-bit coefficient of all ones: >= q
    prefix = _HEAD.unpack_from(chunk)[-1]
    body = _HEAD.size + prefix
    pair = int(rng.integers(0, (len(chunk) - body) // 15))
    at = body + 15 * pair
    word = int.from_bytes(chunk[at : at + 15], "little")
    word |= (1 << 60) - 1 if rng.random() < 0.5 else ((1 << 60) - 1) << 60
    return chunk[:at] + word.to_bytes(15, "little") + chunk[at + 15 :]


def _truncate(chunk, rng):
    return chunk[: int(rng.integers(0, len(chunk)))]


def _extend(chunk, rng):
    return chunk + rng.bytes(int(rng.integers(1, 5000)))


def _random_bytes(chunk, rng):
    first = [b"\x0a", b"MFC\x01", b"", b"\x12"][int(rng.integers(0, 4))]
    return first + rng.bytes(int(rng.integers(0, 70_000)))


def _tenseal_mutant(world):
    raw, members = world["tenseal_form"]
    seal_header = raw.index(b"\x5e\xa1")

    def mutate(chunk, rng):
        kind = int(rng.integers(0, 4))
        if kind == 0:  # the protobuf fields and SEAL's header
            return _flip_bit(raw, 0, seal_header + 16, rng)
        if kind == 1:
            return raw[: int(rng.integers(1, len(raw)))]
        if kind == 2:
            return raw + rng.bytes(int(rng.integers(1, 64)))
        # SEAL's members before the coefficients (the zstd framing between the two holds
        # fields, e.g. a checksum flag, that change nothing of what is decoded)
        return _flip_bit(raw, members, members + 97, rng)

    return mutate


WRONG = [
    0,
    -1,
    2**62,
    1.5,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "x" * 5000,
    b"\x00",
    True,
    [],
    [1, 2],
    [1.0],
    ["a"],
    [True],
]


def _wrong_type(victim, rng):
    field = ["backend", "key_id", "length", "chunks", "binding"][int(rng.integers(0, 5))]
    value = WRONG[int(rng.integers(0, len(WRONG)))]
    if field == "length" and isinstance(value, int) and not isinstance(value, bool):
        value = [0, -1, 2**62, 10**9][int(rng.integers(0, 4))]
    if field in ("backend", "key_id", "binding") and value == "":
        value = 3
    return _content(_sealed_record(victim, **{field: value}))


def _huge(victim, rng, world):
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return _content(_sealed_record(victim, chunks=[world["bombs"][int(rng.integers(0, 5))]]))
    if kind == 1:
        return _content(_sealed_record(victim, chunks=[b"\x00" * 8] * 2000))
    if kind == 2:
        return _content(_sealed_record(victim, length=2**62, chunks=list(victim.chunks) * 3))
    return _content(_sealed_record(victim, chunks=[]))


def _envelope(victim, rng):
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return _content(_sealed_record(victim, backend="plaintext"))
    if kind == 1:
        key = bytearray(victim.key_id.encode())
        key[int(rng.integers(0, len(key)))] ^= 1 << int(rng.integers(0, 7))
        return _content(_sealed_record(victim, key_id=key.decode(errors="replace")))
    if kind == 2:
        return _content(_sealed_record(victim, length=victim.length + int(rng.integers(1, 9))))
    return _content(_sealed_record(victim, length=victim.length - int(rng.integers(1, 9))))


def _binding(victim, rng, server_round):
    good = Binding(RUN, "revenue", server_round).to_json()
    kind = int(rng.integers(0, 5))
    if kind == 0:
        text = _flip_bit(good.encode(), 0, len(good), rng).decode(errors="replace")
        if text == good:  # pragma: no cover
            text = ""
    elif kind == 1:
        text = Binding(RUN, "revenue", server_round + int(rng.integers(1, 5))).to_json()
    elif kind == 2:
        text = Binding("another-run", "revenue", server_round).to_json()
    elif kind == 3:
        text = "[" * 50_000
    else:
        text = ""
    return _content(_sealed_record(victim, binding=text))


def _side_data(victim, rng):
    update = _sealed_record(victim)
    kind = int(rng.integers(0, 7))
    bad = [float("nan"), float("inf"), float("-inf")][int(rng.integers(0, 3))]
    if kind == 0:
        return _content(update, metrics={"train_loss": bad})
    if kind == 1:
        return _content(update, metrics={"train_loss": [1.0, 2.0]})
    if kind == 2:
        return _content(update, metrics={f"m{i}": 1.0 for i in range(300)})
    if kind == 3:
        return _content(update, privacy={"epsilon_spent": bad, "msp": 7})
    if kind == 4:
        return _content(update, privacy={"epsilon_spent": 0.0, "msp": bad})
    if kind == 5:
        return _content(update, privacy={"epsilon_spent": "0", "msp": 7})
    return _content(update, privacy={"epsilon_spent": -1.0, "msp": 7})


def _records(victim, rng):
    kind = int(rng.integers(0, 5))
    if kind < 3:
        return _content(_sealed_record(victim), drop=[("update", "metrics", "privacy")[kind]])
    if kind == 3:
        declined = {"reason": "r", "epsilon_spent": float("nan"), "msp": 1.5}
        return RecordDict({"declined": ConfigRecord(declined)})
    return RecordDict({"update": MetricRecord({"length": 1.0})})


def _error(victim, rng):
    return Error(code=int(rng.integers(0, 2000)), reason=f"w={rng.random()} /home/x 43 of 300")


MUTATIONS = {
    "random_bytes": lambda w, v, rng, r: _chunk(v, rng, _random_bytes),
    "truncate": lambda w, v, rng, r: _chunk(v, rng, _truncate),
    "extend": lambda w, v, rng, r: _chunk(v, rng, _extend),
    "header_bit": lambda w, v, rng, r: _chunk(v, rng, _header_flip),
    "members_bit": lambda w, v, rng, r: _chunk(v, rng, _members_flip),
    "member_field": lambda w, v, rng, r: _chunk(v, rng, _field_overwrite),
    "coefficient_past_q": lambda w, v, rng, r: _chunk(v, rng, _coefficient_past_q),
    "tenseal_form": lambda w, v, rng, r: _chunk(v, rng, _tenseal_mutant(w)),
    "wrong_type": lambda w, v, rng, r: _wrong_type(v, rng),
    "huge": lambda w, v, rng, r: _huge(v, rng, w),
    "envelope": lambda w, v, rng, r: _envelope(v, rng),
    "binding": lambda w, v, rng, r: _binding(v, rng, r),
    "side_data": lambda w, v, rng, r: _side_data(v, rng),
    "records": lambda w, v, rng, r: _records(v, rng),
    "error": lambda w, v, rng, r: _error(v, rng),
}


_REQUEST: dict[int, Message] = {}


def _reply(content, node: int, *, wire: bool) -> Message | None:
    """``content`` as a reply from ``node``; through Flower's wire form if ``wire`` (what a
    SuperLink carries; None: Flower cannot send it at all, e.g. an int past 64 bits)."""
    if node not in _REQUEST:
        request = Message(RecordDict(), dst_node_id=node, message_type="train.revenue")
        request.metadata.__dict__["_message_id"] = request.object_id
        _REQUEST[node] = request
    message = Message(content, reply_to=_REQUEST[node])
    message.metadata.__dict__["_src_node_id"] = node
    if not wire:
        return message
    message.metadata.__dict__["_message_id"] = message.object_id
    try:
        objects = to_wire(message)
    except Exception:
        return None
    return from_wire(message.object_id, objects)


def test_malformed_replies_never_stop_a_round_nor_touch_the_good_sum(world):
    sealer, aggregator, agent = world["sealer"], world["aggregator"], world["agent"]
    strategy = AgentStrategy(agent, aggregator, min_msps=1, context=RoundContext(run_id=RUN))
    stats: Counter[str] = Counter()
    state = {"round": 0}
    started = time.perf_counter()

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        good=st.sets(st.integers(0, 3), min_size=2, max_size=4),
        mutations=st.lists(
            st.tuples(st.sampled_from(sorted(MUTATIONS)), st.integers(0, 2**32 - 1)),
            min_size=24,
            max_size=31,
        ),
        order=st.integers(0, 2**32 - 1),
    )
    def one_round(good, mutations, order):
        state["round"] += 1
        server_round = state["round"]
        wire = server_round % WIRE_EVERY == 0  # Flower's serialization costs ~10 ms a reply
        binding = Binding(RUN, agent.name, server_round).to_json()
        victim = replace(world["sealed"][4], binding=binding)
        replies, kinds = [], {}
        for i in sorted(good):
            sealed = replace(world["sealed"][i], binding=binding)
            content = encode_update(sealed, metrics={"train_loss": 0.1}, msp=i)
            replies.append(_reply(content, node=1000 + i, wire=wire))
        for k, (name, seed) in enumerate(mutations):
            rng = np.random.default_rng(seed)
            reply = _reply(
                MUTATIONS[name](world, victim, rng, server_round), node=5000 + k, wire=wire
            )
            if reply is None:
                stats["unsendable"] += 1
                continue
            replies.append(reply)
            kinds[5000 + k] = name
            stats[name] += 1
            stats["malformed"] += 1
            stats["through_wire"] += wire
        replies = [replies[i] for i in np.random.default_rng(order).permutation(len(replies))]

        start = time.perf_counter()
        try:
            result = strategy.aggregate_train(server_round, replies)
        except Exception as err:  # counted, then reported below
            stats["escaped"] += 1
            stats[f"escaped:{type(err).__name__}"] += 1
            return
        finally:
            elapsed = time.perf_counter() - start
            stats["slowest_ms"] = max(stats["slowest_ms"], int(1000 * elapsed))
            stats["hangs"] += elapsed > ROUND_SECONDS
        dropped = {node for node, reason in result.dropped if reason}
        stats["dropped"] += len(dropped)
        for node, name in kinds.items():
            if node not in dropped:
                stats[f"not_dropped:{name}"] += 1
        assert result.sealed_sum is not None
        total = strategy.versions[-1]
        contributors = set(Binding.from_json(total.binding).contributors)
        good_nodes = {1000 + i for i in good}
        stats["good_lost"] += len(good_nodes - contributors)
        stats["malformed_accepted"] += len(contributors - good_nodes)
        expected = sum(world["payloads"][i] for i in good)
        opened = sealer.open(total)
        stats["sums_wrong"] += not np.allclose(opened, expected, rtol=0, atol=1e-5)

    one_round()
    seconds = time.perf_counter() - started
    print(f"\nfuzz: {dict(stats)} in {state['round']} rounds, {seconds:.1f} s")
    assert stats["malformed"] >= MIN_MALFORMED
    assert stats["dropped"] == stats["malformed"]  # every one dropped by name
    assert not [key for key in stats if key.startswith("not_dropped")]
    assert stats["escaped"] == 0 and stats["hangs"] == 0
    assert stats["good_lost"] == 0 and stats["malformed_accepted"] == 0
    assert stats["sums_wrong"] == 0
    assert all(stats[name] > 100 for name in MUTATIONS)
