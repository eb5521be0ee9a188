"""CKKS aggregation: decrypt(sum of encryptions) = sum, the coordinator holds public material
only, and bad input is rejected by name."""

import functools
import json
import pickle
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tenseal as ts
from hypothesis import example, given, settings
from hypothesis import strategies as st

from meshfl.config.errors import InvalidUpdateError
from meshfl.secure import (
    Aggregator,
    Sealed,
    Sealer,
    ValueRangeError,
    ckks_backend,
    ephemeral_ckks_backend,
    generate_keys,
    plaintext_backend,
    seal_payload,
)
from meshfl.secure.aggregate import PAYLOAD_EXTRA
from meshfl.secure.ckks import CKKSAggregator, CKKSSealer, ckks_vector_from
from meshfl.secure.keys import KeyFileError, new_context

SLOTS = 2048  # N/2 for the default N = 4096


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def backend(keys):
    return ckks_backend(keys.secret, keys.public)


@pytest.fixture(scope="module")
def stranger():
    """Another key set with the same parameters."""
    return ephemeral_ckks_backend()


def _tolerance(expected):
    # Absolute CKKS error is ~150 * sqrt(n_msps) / 2^31 per value (5 sigma: ~4e-7 for one
    # MSP); payloads carry their weights (>= 1 here), so the sum's max-abs is >= 1.
    return 1e-6 * np.max(np.abs(expected)) + 1e-9


@settings(max_examples=40, deadline=None)
@example(length=10_000, weights=[1e3] * 20, magnitude=1e3, seed=0)  # 5 ciphertexts, 20 MSPs
@example(length=3 * SLOTS - PAYLOAD_EXTRA, weights=[1.0] * 20, magnitude=1e-3, seed=1)  # 3 full
@example(length=1, weights=[1.0], magnitude=1e-3, seed=2)  # one MSP, sum of magnitude 1
@given(
    length=st.one_of(st.integers(1, 50), st.integers(SLOTS - 2, SLOTS + 1), st.integers(1, 10_000)),
    weights=st.lists(st.floats(1.0, 1e3), min_size=1, max_size=20),
    magnitude=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 2**32 - 1),
)
def test_decrypted_sum_is_the_weighted_sum(backend, length, weights, magnitude, seed):
    sealer, aggregator = backend
    rng = np.random.default_rng(seed)
    payloads = [seal_payload(rng.uniform(-1, 1, length) * magnitude, w) for w in weights]
    sealed = [sealer.seal(p) for p in payloads]
    for s in sealed:
        aggregator.check(s, expected_length=length + PAYLOAD_EXTRA)
        assert len(s.chunks) == -(-(length + PAYLOAD_EXTRA) // SLOTS)
    total = aggregator.add(sealed)
    aggregator.check(
        total, expected_length=length + PAYLOAD_EXTRA
    )  # the sum is a valid payload too
    got = sealer.open(total)
    expected = functools.reduce(np.add, payloads)
    assert got.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=_tolerance(expected))


def test_ckks_twins_satisfy_the_protocols(backend, keys):
    sealer, aggregator = backend
    assert isinstance(sealer, Sealer) and isinstance(aggregator, Aggregator)
    assert sealer.backend == aggregator.backend == "ckks"
    assert sealer.key_id == aggregator.key_id == keys.key_id


def test_wire_size_is_under_8x_float32(backend):
    sealer, _ = backend
    sealed = sealer.seal(np.random.default_rng(0).standard_normal(10 * SLOTS))
    per_value = sealed.nbytes / sealed.length
    assert per_value <= 8 * 4  # the goal: at most 8x float32
    assert per_value == pytest.approx(30.0, abs=0.2)  # 60-bit packed coefficients


def test_coordinator_holds_public_material_only(backend):
    _, aggregator = backend
    context = aggregator.context
    assert not context.has_secret_key() and not context.is_private()
    assert not context.has_galois_keys() and not context.has_relin_keys()


def test_coordinator_cannot_decrypt_a_sum(backend):
    sealer, aggregator = backend
    total = aggregator.add([sealer.seal(np.arange(3.0)), sealer.seal(np.ones(3))])
    vector = ckks_vector_from(aggregator.context, total.chunks[0])
    with pytest.raises(ValueError, match="secret"):
        vector.decrypt()
    np.testing.assert_allclose(sealer.open(total), [1, 2, 3], atol=1e-6)


def test_aggregator_refuses_a_secret_context(backend):
    sealer, _ = backend
    with pytest.raises(KeyFileError, match="must never hold"):
        CKKSAggregator(sealer.context)
    with pytest.raises(KeyFileError, match="must never hold"):
        CKKSAggregator.from_bytes(sealer.to_bytes())


def test_aggregator_from_file_refuses_the_secret_file(keys):
    with pytest.raises(KeyFileError, match="must never hold") as err:
        CKKSAggregator.from_file(keys.secret)
    assert str(keys.secret) in str(err.value)


def test_sealer_from_file_refuses_the_public_file(keys):
    with pytest.raises(KeyFileError, match="no secret key") as err:
        CKKSSealer.from_file(keys.public)
    assert str(keys.public) in str(err.value)


def test_backends_of_two_key_sets_do_not_mix(keys, stranger):
    with pytest.raises(KeyFileError, match="different key sets"):
        ckks_backend(keys.secret, stranger[1].context)


def test_aggregator_drops_galois_and_relin_keys():
    context = new_context()
    context.generate_galois_keys()
    public = ts.context_from(context.serialize(save_secret_key=False))
    assert public.has_galois_keys() and public.has_relin_keys()
    aggregator = CKKSAggregator(public)
    assert not aggregator.context.has_galois_keys() and not aggregator.context.has_relin_keys()


def test_an_aggregator_built_from_files_never_opens_the_secret_file(keys, backend, tmp_path):
    """In a fresh process, record every file the aggregator's process opens."""
    sealer, _ = backend
    payloads = [seal_payload(np.full(3000, float(i)), 2.0) for i in range(3)]
    (tmp_path / "in.pkl").write_bytes(pickle.dumps([sealer.seal(p) for p in payloads]))
    script = textwrap.dedent(
        f"""
        import json, os, pickle, sys
        opened = []
        def audit(event, args):
            if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
                opened.append(os.path.realpath(os.fsdecode(args[0])))
        sys.addaudithook(audit)
        from meshfl.secure.ckks import CKKSAggregator
        aggregator = CKKSAggregator.from_file({str(keys.public)!r})
        sealed = pickle.loads(open({str(tmp_path / "in.pkl")!r}, "rb").read())
        for s in sealed:
            aggregator.check(s, expected_length={3000 + PAYLOAD_EXTRA})
        total = aggregator.add(sealed)
        open({str(tmp_path / "out.pkl")!r}, "wb").write(pickle.dumps(total))
        print(json.dumps({{"opened": opened,
                          "secret": aggregator.context.has_secret_key()}}))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert str(keys.public.resolve()) in report["opened"]  # the hook does see key files
    assert str(keys.secret.resolve()) not in report["opened"]
    assert report["secret"] is False
    total = pickle.loads((tmp_path / "out.pkl").read_bytes())
    np.testing.assert_allclose(sealer.open(total), sum(payloads), atol=1e-5)


# --- bad input ------------------------------------------------------------------------------


def _replace(sealed, **changes):
    fields = {f: getattr(sealed, f) for f in ("backend", "key_id", "length", "chunks")}
    return Sealed(**{**fields, **changes})


@pytest.fixture(scope="module")
def good(backend):
    sealer, _ = backend
    return sealer.seal(np.linspace(-1, 1, 2 * SLOTS + 100))  # 3 chunks


def test_update_under_another_key_set_names_both_ids(backend, stranger, good):
    _, aggregator = backend
    foreign = stranger[0].seal(np.linspace(-1, 1, good.length))
    with pytest.raises(InvalidUpdateError) as err:
        aggregator.check(foreign, expected_length=good.length)
    assert stranger[0].key_id in str(err.value) and aggregator.key_id in str(err.value)
    with pytest.raises(InvalidUpdateError, match="key set"):
        backend[0].open(foreign)


def test_another_key_set_under_a_forged_id_is_caught_by_the_msp(backend, stranger, good):
    """CKKS cannot tell keys apart: the id catches mistakes, not a lying MSP, so the
    coordinator accepts it; the MSP that opens it refuses it (issue 12 §6; on 2081f48 it
    decrypted to garbage and was used)."""
    sealer, aggregator = backend
    forged = _replace(stranger[0].seal(np.ones(good.length)), key_id=aggregator.key_id)
    aggregator.check(forged, expected_length=good.length)
    with pytest.raises(InvalidUpdateError, match="not a plausible payload") as err:
        sealer.open(forged)
    assert not any(ch.isdigit() for ch in str(err.value))


def _chunk2(tamper):
    return lambda s: (s.chunks[0], tamper(s.chunks[1]), s.chunks[2])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda s: {"chunks": _chunk2(lambda c: c[: len(c) // 2])(s)},
            "chunk 2 of 3 is not a CKKS ciphertext under this context \\(truncated or corrupt\\)",
        ),
        (lambda s: {"chunks": _chunk2(lambda c: c[:-1])(s)}, "chunk 2 of 3 .*truncated"),
        (lambda s: {"chunks": _chunk2(lambda c: c[:10])(s)}, "chunk 2 of 3 .*header"),
        (
            lambda s: {"chunks": _chunk2(lambda c: b"\x00garbage" * 100)(s)},
            "chunk 2 of 3 .*neither meshfl's ciphertext header nor a TenSEAL vector",
        ),
        (
            lambda s: {"chunks": _chunk2(lambda c: b"\x0a" + bytes(range(256)) * 40)(s)},
            "chunk 2 of 3 is not a CKKS ciphertext",
        ),
        (  # the SEAL header inside a packed chunk (its parms_id) overwritten
            lambda s: {"chunks": _chunk2(lambda c: c[:30] + b"\xff" * 32 + c[62:])(s)},
            "chunk 2 of 3 is not a CKKS ciphertext",
        ),
        (lambda s: {"length": s.length - 1}, f"holds {2 * SLOTS + 99} values; this round "),
        (lambda s: {"chunks": s.chunks[:2]}, "2 chunk\\(s\\), but 4196 values"),
        (lambda s: {"chunks": (s.chunks[0], s.chunks[2], s.chunks[1])}, "chunk 2 of 3 holds 100"),
        (lambda s: {"backend": "plaintext"}, "'plaintext' backend, but this side uses 'ckks'"),
    ],
)
def test_check_rejects_bad_input_by_name(backend, good, change, match):
    _, aggregator = backend
    with pytest.raises(InvalidUpdateError, match=match):
        aggregator.check(_replace(good, **change(good)), expected_length=good.length)


def test_a_plaintext_payload_is_rejected_by_the_ckks_side(backend):
    sealer, aggregator = backend
    with pytest.warns(UserWarning):
        plain, _ = plaintext_backend()
    sealed = plain.seal(np.ones(5))
    with pytest.raises(InvalidUpdateError, match="'plaintext' backend"):
        aggregator.check(sealed, expected_length=5)
    with pytest.raises(InvalidUpdateError, match="'plaintext' backend"):
        sealer.open(sealed)


def test_wrong_length_names_both_lengths(backend):
    sealer, aggregator = backend
    with pytest.raises(InvalidUpdateError, match="holds 8 values; this round expects 641"):
        aggregator.check(sealer.seal(np.ones(8)), expected_length=641)


def test_add_rejects_mixed_lengths_and_corrupt_chunks(backend, good):
    sealer, aggregator = backend
    with pytest.raises(InvalidUpdateError, match=r"payload 2 of 2: .*holds 5 values"):
        aggregator.add([good, sealer.seal(np.ones(5))])
    bad = _replace(good, chunks=(good.chunks[0], good.chunks[1][:-3], good.chunks[2]))
    with pytest.raises(InvalidUpdateError, match="payload 2 of 2: chunk 2 of 3"):
        aggregator.add([good, bad])
    with pytest.raises(InvalidUpdateError, match="at least one"):
        aggregator.add([])


def test_a_ciphertext_at_another_scale_is_rejected(backend):
    sealer, aggregator = backend
    chunk = ts.ckks_vector(sealer.context, [1.0, 2.0], 2.0**20).serialize()
    sealed = Sealed("ckks", aggregator.key_id, 2, (chunk,))
    with pytest.raises(InvalidUpdateError, match=r"scale 2\^20.*2\^31"):
        aggregator.check(sealed, expected_length=2)


def test_a_packed_chunk_declaring_another_scale_is_rejected(backend):
    sealer, aggregator = backend
    chunk = sealer.seal(np.ones(3)).chunks[0]
    forged = chunk[:8] + struct.pack("<d", 2.0**20) + chunk[16:]  # the header's scale
    sealed = Sealed("ckks", aggregator.key_id, 3, (forged,))
    with pytest.raises(InvalidUpdateError, match=r"scale 2\^20"):
        aggregator.check(sealed, expected_length=3)


def test_tenseal_serialized_chunks_are_accepted_too(backend):
    sealer, aggregator = backend
    chunk = ts.ckks_vector(sealer.context, [1.0, -2.0, 3.5]).serialize()
    sealed = Sealed("ckks", aggregator.key_id, 3, (chunk,))
    aggregator.check(sealed, expected_length=3)
    total = aggregator.add([sealed, sealer.seal(np.ones(3))])
    # ts.ckks_vector encrypts with the public key: ~7x the noise of meshfl's symmetric
    # sealing, up to ~1.6e-6 here (1e-6 failed about 1 run in 300).
    np.testing.assert_allclose(sealer.open(total), [2.0, -1.0, 4.5], atol=1e-5)


def test_packing_is_lossless(backend):
    sealer, aggregator = backend
    sealed = sealer.seal(np.arange(5.0))
    raw = bytes(ckks_vector_from(aggregator.context, sealed.chunks[0]).serialize())
    assert len(raw) > len(sealed.chunks[0])
    again = aggregator.add([Sealed("ckks", sealed.key_id, 5, (raw,))])
    assert again.chunks == sealed.chunks  # unpack(pack(x)) == x, and back


# --- magnitudes -----------------------------------------------------------------------------


def test_seal_refuses_values_beyond_the_bound_and_says_the_fix(backend):
    sealer, _ = backend
    assert sealer.max_seal_abs == pytest.approx(sealer.max_abs / sealer.max_contributors)
    with pytest.raises(ValueRangeError, match=r"per-payload bound .*fewer scale_bits") as err:
        sealer.seal(np.array([0.0, -sealer.max_seal_abs]))
    assert isinstance(err.value, InvalidUpdateError)
    sealer.seal(np.array([0.0, -0.999 * sealer.max_seal_abs]))  # just inside: fine


@pytest.mark.parametrize("contributors", [1, 2, 3])
def test_sums_up_to_max_contributors_decrypt_and_more_are_refused(contributors):
    """At the edge: payloads just inside the per-payload bound, as many as allowed, decrypt;
    one more is refused by name. A constant vector is the worst case: all of it lands in one
    coefficient of the plaintext polynomial."""
    sealer, aggregator = ephemeral_ckks_backend(max_contributors=contributors)
    values = np.full(3, -0.999 * sealer.max_seal_abs)
    one = sealer.seal(values)
    total = sealer.open(aggregator.add([one] * contributors))
    np.testing.assert_allclose(total, contributors * values, rtol=1e-9)
    with pytest.raises(InvalidUpdateError, match=rf"max_contributors={contributors}\b"):
        aggregator.add([one] * (contributors + 1))


@pytest.mark.parametrize(
    ("values", "match"),
    [(np.array([np.nan]), "NaN or inf"), (np.zeros((2, 2)), "flat"), (np.array([]), "empty")],
)
def test_seal_rejects_what_is_not_a_finite_flat_vector(backend, values, match):
    with pytest.raises(InvalidUpdateError, match=match):
        backend[0].seal(values)


def test_sealer_round_trips_through_bytes(backend):
    sealer, aggregator = backend
    again = CKKSSealer.from_bytes(sealer.to_bytes())
    assert again.key_id == sealer.key_id
    np.testing.assert_allclose(again.open(sealer.seal(np.ones(4))), 1.0, atol=1e-6)
    assert CKKSAggregator.from_bytes(aggregator.to_bytes()).key_id == aggregator.key_id
    with pytest.raises(KeyFileError, match="no secret key"):
        CKKSSealer.from_bytes(aggregator.to_bytes())
