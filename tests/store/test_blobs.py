"""Blob files and the byte formats of sealed payloads."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshfl.config.errors import MeshflError
from meshfl.secure.backend import Sealed
from meshfl.store import (
    BlobStore,
    CorruptBlobError,
    InvalidRecordError,
    MissingBlobError,
    decode_sealed,
    decode_sealed_model,
    encode_sealed,
    encode_sealed_model,
)

sealed_payloads = st.builds(
    Sealed,
    backend=st.sampled_from(["ckks", "plaintext", "späť"]),
    key_id=st.text(max_size=20),
    length=st.integers(min_value=0, max_value=2**40),
    chunks=st.lists(st.binary(max_size=64), max_size=6).map(tuple),
)


# -- BlobStore -----------------------------------------------------------------------------
def test_put_names_blob_by_sha256_under_a_two_digit_directory(tmp_path):
    blobs = BlobStore(tmp_path / "blobs")
    digest = blobs.put(b"sealed bytes")
    assert digest == hashlib.sha256(b"sealed bytes").hexdigest()
    path = tmp_path / "blobs" / digest[:2] / digest
    assert path.read_bytes() == b"sealed bytes"
    assert blobs.path(digest) == path
    assert blobs.has(digest)
    assert blobs.get(digest) == b"sealed bytes"


def test_put_is_idempotent_and_leaves_no_temporary_files(tmp_path):
    blobs = BlobStore(tmp_path)
    first = blobs.put(b"x" * 1000)
    mtime = blobs.path(first).stat().st_mtime_ns
    assert blobs.put(b"x" * 1000) == first
    assert blobs.path(first).stat().st_mtime_ns == mtime  # not rewritten
    assert list(blobs) == [first]
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [first]


def test_distinct_contents_get_distinct_blobs(tmp_path):
    blobs = BlobStore(tmp_path)
    digests = [blobs.put(bytes([i])) for i in range(50)]
    assert len(set(digests)) == 50
    assert set(blobs) == set(digests)
    assert [blobs.get(d) for d in digests] == [bytes([i]) for i in range(50)]


def test_corrupt_blob_is_detected_and_named(tmp_path):
    blobs = BlobStore(tmp_path)
    digest = blobs.put(b"the original ciphertext")
    path = blobs.path(digest)
    path.write_bytes(b"the original ciphertexT")
    with pytest.raises(CorruptBlobError) as info:
        blobs.get(digest)
    assert isinstance(info.value, MeshflError)
    assert digest in str(info.value)
    assert str(path) in str(info.value)


def test_a_truncated_blob_is_rewritten_by_put(tmp_path):
    blobs = BlobStore(tmp_path)
    digest = blobs.put(b"0123456789")
    blobs.path(digest).write_bytes(b"01234")
    assert blobs.put(b"0123456789") == digest
    assert blobs.get(digest) == b"0123456789"


def test_missing_blob_is_named(tmp_path):
    blobs = BlobStore(tmp_path)
    digest = hashlib.sha256(b"never stored").hexdigest()
    assert not blobs.has(digest)
    with pytest.raises(MissingBlobError) as info:
        blobs.get(digest)
    assert digest in str(info.value)
    assert str(blobs.path(digest)) in str(info.value)


@pytest.mark.parametrize("digest", ["../../etc/passwd", "ab", "A" * 64, 42])
def test_malformed_digests_are_refused(tmp_path, digest):
    with pytest.raises(InvalidRecordError, match="64 lowercase hex"):
        BlobStore(tmp_path).get(digest)


def test_delete_and_remove_temporary(tmp_path):
    blobs = BlobStore(tmp_path)
    digest = blobs.put(b"a")
    (blobs.path(digest).parent / ".tmp-crashed").write_bytes(b"partial")
    assert blobs.remove_temporary() == 1
    assert blobs.delete(digest)
    assert not blobs.delete(digest)
    assert list(blobs) == []


# -- sealed codec --------------------------------------------------------------------------
@given(sealed_payloads)
def test_sealed_codec_round_trip(sealed):
    data = encode_sealed(sealed)
    assert decode_sealed(data) == sealed
    assert encode_sealed(decode_sealed(data)) == data  # deterministic: one content address


@given(sealed_payloads, st.data())
def test_truncated_or_padded_sealed_bytes_are_refused(sealed, data):
    encoded = encode_sealed(sealed)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(CorruptBlobError):
        decode_sealed(encoded[:cut])
    with pytest.raises(CorruptBlobError):
        decode_sealed(encoded + data.draw(st.binary(min_size=1, max_size=8)))


@pytest.mark.parametrize(
    "data",
    [b"", b"pickle\x80\x04", b"MFLSEAL\x01\x00\x00\x00\x02{}", b"MFLSEAL\x01\x00\x00\x00\x03{x}"],
)
def test_bytes_that_are_not_a_sealed_payload_are_refused(data):
    with pytest.raises(CorruptBlobError):
        decode_sealed(data)


def test_encode_refuses_what_is_not_a_sealed_payload():
    with pytest.raises(InvalidRecordError, match="Sealed"):
        encode_sealed(b"raw")  # type: ignore[arg-type]
    with pytest.raises(InvalidRecordError, match="chunk 2 of 2 must be bytes"):
        encode_sealed(Sealed("ckks", "k", 2, (b"a", "b")))  # type: ignore[arg-type]
    with pytest.raises(InvalidRecordError, match="length"):
        encode_sealed(Sealed("ckks", "k", -1, ()))


@given(st.lists(sealed_payloads, max_size=4))
def test_sealed_model_round_trip(history):
    blobs = [encode_sealed(s) for s in history]
    meta, decoded = decode_sealed_model(encode_sealed_model({"agent": "a", "round": 3}, blobs))
    assert decoded == history
    assert meta["agent"] == "a" and meta["round"] == 3
    assert [b["digest"] for b in meta["blobs"]] == [hashlib.sha256(b).hexdigest() for b in blobs]


def test_sealed_model_with_a_damaged_payload_is_refused():
    blob = encode_sealed(Sealed("ckks", "k", 1, (b"abcdef",)))
    data = bytearray(encode_sealed_model({}, [blob]))
    data[-1] ^= 0xFF
    with pytest.raises(CorruptBlobError, match="payload 1 of 1 does not hash"):
        decode_sealed_model(bytes(data))
