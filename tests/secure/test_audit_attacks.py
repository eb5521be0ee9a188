"""Issue 12 §1, §4, §5, §6 against the secure layer: each test is an attack that worked on
2081f48 (each says how it failed there), written before the fix.

§1 errors as a decryption oracle, §4 one malformed ciphertext aborting a round or stalling
the coordinator, §5 sums that wrap silently, §6 payloads MSPs opened without checking them.
"""

from __future__ import annotations

import re
import struct
import time
import warnings
import zlib

import numpy as np
import pytest

from meshfl.config.errors import InvalidUpdateError
from meshfl.secure import Sealed, ValueRangeError, plaintext_backend
from meshfl.secure import aggregate as _aggregate
from meshfl.secure.ckks import _HEAD, _SEAL_HEAD, _SEAL_MAGIC, _varint, ephemeral_ckks_backend

# The payload layout [w·v, w, tag] (2081f48: [w·v, w]); the weight slot comes right before
# the tag.
PAYLOAD_EXTRA = getattr(_aggregate, "PAYLOAD_EXTRA", 1)
WEIGHT_SLOT = -PAYLOAD_EXTRA


@pytest.fixture(scope="module")
def backend():
    return ephemeral_ckks_backend()


@pytest.fixture(scope="module")
def plain():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return plaintext_backend()


def _numbers_of(value: float) -> list[str]:
    """How a magnitude could be written into a message."""
    return [f"{value:.{p}g}" for p in range(2, 8)] + [f"{value:.2e}", f"{value:,.0f}"]


# --- §1: errors carry no value computed from what was sealed or decrypted ------------------


@pytest.mark.parametrize("magnitude", [2.4997e8, 3.14159e9, 7.77e12])
def test_a_range_error_says_nothing_of_the_magnitude_it_refused(backend, magnitude):
    """2081f48: 'cannot seal a value of magnitude 2.5e+08 ...' (the audit's crafted model
    read an MSP's weight off it: 249.97 vs 250)."""
    sealer, _ = backend
    with pytest.raises(ValueRangeError) as err:
        sealer.seal(np.array([1.0, -magnitude, 0.5]))
    text = str(err.value)
    for written in _numbers_of(magnitude):
        assert written not in text
    assert "magnitude" not in text.split("bound")[0]  # no "a value of magnitude X"


def test_range_errors_are_the_same_whatever_was_refused(backend):
    sealer, _ = backend
    texts = set()
    for magnitude in (sealer.max_seal_abs, 2.5e8, 1e9, 1e15, 3e300):
        with pytest.raises(ValueRangeError) as err:
            sealer.seal(np.array([magnitude]))
        texts.add(str(err.value))
    assert len(texts) == 1


# --- §4: malformed ciphertexts are refused by check(), fast; add() never raises after it --


def _with_chunk(sealed: Sealed, chunk: bytes) -> Sealed:
    return Sealed(sealed.backend, sealed.key_id, sealed.length, (chunk,))


def test_a_ciphertext_not_in_ntt_form_is_refused_by_check_not_by_add(backend):
    """2081f48: check() accepted it and add() raised ValueError('NTT form mismatch'),
    aborting the round."""
    sealer, aggregator = backend
    good = sealer.seal(np.ones(5))
    chunk = bytearray(good.chunks[0])
    chunk[_HEAD.size + 32] = 0  # SEAL's is_ntt_form byte, right after the 32-byte parms_id
    bad = _with_chunk(good, bytes(chunk))
    try:
        aggregator.check(bad, expected_length=5)
    except InvalidUpdateError as err:
        assert "NTT" in str(err)
    else:  # accepted: then add must take it
        aggregator.add([good, bad])


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        (33, struct.pack("<Q", 3)),  # 3 polynomials
        (49, struct.pack("<Q", 2)),  # 2 primes
        (57, struct.pack("<d", 2.0**31 + 1)),  # another scale, inside SEAL's members only
        (65, struct.pack("<Q", 7)),  # correction factor
    ],
)
def test_every_member_add_relies_on_is_checked(backend, offset, value):
    sealer, aggregator = backend
    good = sealer.seal(np.ones(5))
    chunk = bytearray(good.chunks[0])
    chunk[_HEAD.size + offset : _HEAD.size + offset + len(value)] = value
    bad = _with_chunk(good, bytes(chunk))
    try:
        aggregator.check(bad, expected_length=5)
    except InvalidUpdateError:
        return
    aggregator.add([good, bad])  # accepted: then add must take it


def _refusal_seconds(aggregator, chunk: bytes, length: int = 5) -> float:
    sealed = Sealed("ckks", aggregator.key_id, length, (chunk,))
    start = time.perf_counter()
    with pytest.raises(InvalidUpdateError):
        aggregator.check(sealed, expected_length=length)
    return time.perf_counter() - start


def test_a_4mb_chunk_of_varints_is_refused_in_milliseconds(backend):
    """2081f48: TenSEAL-format chunks were parsed by a Python varint loop, 1-3 s per 4 MB."""
    _, aggregator = backend
    sizes = b"\x01" * (4 << 20)
    chunk = b"\x0a" + _varint(len(sizes)) + sizes
    assert _refusal_seconds(aggregator, chunk) < 0.05


def test_a_4mb_chunk_of_random_bytes_is_refused_in_milliseconds(backend):
    _, aggregator = backend
    rng = np.random.default_rng(0)
    for first in (b"\x0a", b"MFC\x01"):
        chunk = first + rng.bytes(4 << 20)
        assert _refusal_seconds(aggregator, chunk) < 0.05


def _tenseal_chunk(blob: bytes, n_values: int = 5, scale: float = 2.0**31) -> bytes:
    sizes = _varint(n_values)
    return b"".join(
        (b"\x0a", _varint(len(sizes)), sizes, b"\x12", _varint(len(blob)), blob, b"\x19")
    ) + struct.pack("<d", scale)


def _seal_object(payload: bytes, mode: int) -> bytes:
    return _SEAL_HEAD.pack(_SEAL_MAGIC, 16, 4, 3, mode, 0, 16 + len(payload)) + payload


def test_a_zlib_bomb_is_refused_without_inflating_it(backend):
    """~64 KB of zlib that inflates to 64 MB (2081f48 handed it to SEAL, which inflates
    everything before it looks)."""
    _, aggregator = backend
    bomb = zlib.compress(b"\x00" * (64 << 20), 9)
    chunk = _tenseal_chunk(_seal_object(bomb, 1))
    assert _refusal_seconds(aggregator, chunk) < 0.05


def test_a_zstd_rle_bomb_is_refused_without_inflating_it(backend):
    """RLE blocks of 128 KB from 4 bytes each: ~16,000 of them would inflate to 2 GB."""
    _, aggregator = backend
    frame = b"\x28\xb5\x2f\xfd" + bytes([0x00, 0x40])  # magic, descriptor, window
    block = (((128 << 10) << 3) | (1 << 1)).to_bytes(3, "little") + b"\x00"  # RLE, not last
    chunk = _tenseal_chunk(_seal_object(frame + block * 16_000, 2))
    assert _refusal_seconds(aggregator, chunk) < 0.05


# --- §5: a sum can never wrap silently ------------------------------------------------------


def test_three_payloads_near_1e8_are_refused_or_sum_correctly(backend):
    """2081f48: three payloads of 0.95e8, each within the per-payload bound (1.34e8),
    decrypted to about -2.5e8 instead of 2.85e8 (the audit's FedAvg returned 1.127 for 0.9)."""
    sealer, aggregator = backend
    payload = np.full(4, 0.95e8)
    try:
        total = aggregator.add([sealer.seal(payload) for _ in range(3)])
    except InvalidUpdateError:
        return  # refused by construction, before anything wrapped
    np.testing.assert_allclose(sealer.open(total), 3 * payload, rtol=1e-6)


def test_no_allowed_sum_can_wrap(backend):
    """By construction: max_contributors payloads, each just inside the bound, still decrypt."""
    sealer, aggregator = backend
    payload = np.full(4, -0.999 * sealer.max_seal_abs)
    one = sealer.seal(payload)
    total = sealer.open(aggregator.add([one] * aggregator.max_contributors))
    np.testing.assert_allclose(total, aggregator.max_contributors * payload, rtol=1e-7)
    with pytest.raises(InvalidUpdateError, match=r"cannot add \d+ payloads.*max_contributors="):
        aggregator.add([one] * (aggregator.max_contributors + 1))


def test_the_refusal_to_add_names_the_numbers_not_the_values(backend):
    sealer, aggregator = backend
    one = sealer.seal(np.array([12345.678]))
    with pytest.raises(InvalidUpdateError) as err:
        aggregator.add([one] * (aggregator.max_contributors + 1))
    text = str(err.value)
    assert str(aggregator.max_contributors + 1) in text and "12345" not in text


# --- §6: what the coordinator cannot check, MSPs refuse on opening ------------------------


def _payload(weight: float, n: int = 5) -> np.ndarray:
    payload = np.zeros(n + PAYLOAD_EXTRA)
    payload[:n] = weight * np.linspace(-1, 1, n)
    payload[WEIGHT_SLOT] = weight
    return payload


@pytest.mark.parametrize("weight", [0.0, -3.0, -1e-9])
def test_the_plaintext_aggregator_refuses_a_weight_that_is_not_positive(plain, weight):
    """2081f48: validate_payload was never called; the plaintext check took any weight."""
    sealer, aggregator = plain
    sealed = sealer.seal(_payload(weight))
    with pytest.raises(InvalidUpdateError, match="weight"):
        aggregator.check(sealed, expected_length=sealed.length)


def test_the_plaintext_aggregator_still_takes_good_payloads(plain):
    sealer, aggregator = plain
    sealed = sealer.seal(_payload(3.0))
    aggregator.check(sealed, expected_length=sealed.length)


def test_a_foreign_key_set_relabelled_is_refused_by_the_msp(backend):
    """2081f48: accepted by the coordinator (it cannot tell) and opened to garbage."""
    sealer, aggregator = backend
    stranger, _ = ephemeral_ckks_backend()
    theirs = stranger.seal(_payload(3.0))
    forged = Sealed("ckks", aggregator.key_id, theirs.length, theirs.chunks)
    aggregator.check(forged, expected_length=forged.length)  # the coordinator cannot tell
    for opening in (sealer.open, getattr(sealer, "open_payload", sealer.open)):
        with pytest.raises(InvalidUpdateError) as err:
            opening(forged)
        assert not re.search(r"\d", str(err.value))  # nothing of what it decrypted


def test_flipped_high_coefficient_bits_are_refused_by_the_msp(backend):
    """A coefficient of the second polynomial with a high bit cleared (still below q, so
    nobody without the key can tell): the MSP decrypts values far out of range."""
    sealer, aggregator = backend
    good = sealer.seal(_payload(3.0))
    chunk = bytearray(good.chunks[0])
    head, prefix, width = _HEAD.size, _HEAD.unpack_from(chunk)[-1], _HEAD.unpack_from(chunk)[-2]
    assert width == 60
    body = head + prefix
    pairs = (len(chunk) - body) // 15
    # coefficient pair k of the second polynomial: its 120 bits at byte 15 * k
    for k in range(pairs // 2 + 3, pairs // 2 + 40):
        at = body + 15 * k
        low = int.from_bytes(chunk[at : at + 15], "little")
        word = low & ((1 << 60) - 1)
        if word >> 57 & 1:
            low ^= 1 << 57  # clear bit 57 of an even coefficient: it stays below q
            chunk[at : at + 15] = low.to_bytes(15, "little")
            break
    else:  # pragma: no cover - 37 coefficients without bit 57: p = 2^-37
        pytest.skip("no coefficient with bit 57 set")
    tampered = _with_chunk(good, bytes(chunk))
    aggregator.check(tampered, expected_length=good.length)  # indistinguishable to it
    with pytest.raises(InvalidUpdateError) as err:
        sealer.open(tampered)
    assert not re.search(r"\d", str(err.value))


@pytest.mark.parametrize("weight", [0.0, -2.0])
def test_open_payload_refuses_a_weight_slot_that_is_not_positive(backend, plain, weight):
    for sealer, _ in (backend, plain):
        sealed = sealer.seal(_payload(weight))
        assert np.isfinite(sealer.open(sealed)).all()  # a plain vector opens
        with pytest.raises(InvalidUpdateError, match="not a plausible payload") as err:
            sealer.open_payload(sealed)
        assert not re.search(r"\d", str(err.value))
        np.testing.assert_allclose(
            sealer.open_payload(sealer.seal(_payload(2.0))), _payload(2.0), atol=1e-6
        )


def test_open_payload_refuses_the_wrong_length_with_a_fixed_sentence(backend):
    sealer, _ = backend
    sealed = sealer.seal(_payload(2.0))
    with pytest.raises(InvalidUpdateError, match="not a plausible payload"):
        sealer.open_payload(sealed, expected_length=sealed.length + 1)
    sealer.open_payload(sealed, expected_length=sealed.length)


# --- the binding key -----------------------------------------------------------------------


def test_the_binding_key_is_32_read_only_bytes_only_key_holders_share(backend, plain):
    from meshfl.secure.ckks import CKKSSealer

    sealer, aggregator = backend
    key = sealer.binding_key
    assert isinstance(key, bytes) and len(key) == 32
    assert CKKSSealer.from_bytes(sealer.to_bytes()).binding_key == key  # every MSP alike
    assert ephemeral_ckks_backend()[0].binding_key != key  # another key set, another key
    public = aggregator.to_bytes()
    assert key not in public and not hasattr(aggregator, "binding_key")
    plain_sealer, _ = plain
    assert len(plain_sealer.binding_key) == 32 and plain_sealer.binding_key != key
    for holder in (sealer, plain_sealer):
        with pytest.raises(AttributeError):
            holder.binding_key = b"\x00" * 32
