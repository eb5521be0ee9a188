"""CKKS secure aggregation with TenSEAL: MSPs seal, the coordinator adds what it cannot read.

The scheme is CKKS (Cheon, Kim, Kim and Song, "Homomorphic encryption for arithmetic of
approximate numbers", ASIACRYPT 2017) as implemented by Microsoft SEAL through TenSEAL
(Benaissa et al., "TenSEAL: A library for encrypted tensor operations using homomorphic
encryption", 2021). Aggregation only ever *adds* ciphertexts (MSPs pre-weight their vectors,
see :mod:`meshfl.secure.aggregate`), so the coordinator's context needs no secret key, no
Galois keys and no relinearization keys.

How a vector travels
--------------------
:meth:`CKKSSealer.seal` cuts the vector into chunks of N/2 values and encrypts each as one
ciphertext. MSPs encrypt with the *symmetric* (secret-key) form of CKKS, which has ~7x
less noise and is ~1.5x faster than public-key encryption; all MSPs hold the secret key
anyway. The key set still has a public key: it gives the key set its id
(:func:`~meshfl.secure.keys.key_id_of`), which the coordinator can compute too.

Each ciphertext is two polynomials of N coefficients modulo the data prime q (60 bits).
SEAL stores a coefficient in 64 bits and its zstd pass cannot shrink uniformly random
residues, so TenSEAL's own serialization costs 32 bytes per value (8.0x float32). meshfl
packs each coefficient into its 60 bits, a lossless rewrite of SEAL's bytes: **30 bytes
per value, 7.5x float32**, plus ~120 bytes per ciphertext. What stops it going lower is the
ciphertext itself: 4 coefficients per value, each a uniformly random number below q, so
``4 * log2(q) / 8`` bytes per value is the floor for any encoding; lowering it means a
smaller q (less range and precision, see :class:`~meshfl.secure.keys.CKKSParams`) or
seeded ciphertexts (half the upload, which TenSEAL does not expose). A chunk is either that
packed form (it starts with ``MFC\\x01``) or TenSEAL's own ``CKKSVector`` serialization;
both are accepted, and :func:`ckks_vector_from` turns either into a TenSEAL vector.

Magnitudes
----------
A sum decrypts correctly while its magnitude stays below ``max_abs``
(:attr:`~meshfl.secure.keys.CKKSParams.max_abs`, ~2.7e8 with the default scale 2^31);
beyond it, it wraps around modulo q *silently*: the coordinator cannot see it and the MSP
decrypts garbage. :meth:`CKKSSealer.seal` refuses a payload at or above ``max_seal_abs``
(half of ``max_abs``; SEAL's encoder keeps a sign bit) with a
:class:`~meshfl.secure.backend.ValueRangeError`, but only the caller can keep the *sum*
in range: e.g. each payload below ``max_abs / n_msps``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import struct
import zlib
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import tenseal as ts

from meshfl.config.errors import InvalidUpdateError
from meshfl.secure.backend import (
    Sealed,
    ValueRangeError,
    as_flat_floats,
    check_envelope,
)
from meshfl.secure.keys import (
    CKKSParams,
    KeyFileError,
    coordinator_context_from_bytes,
    key_id_of,
    load_coordinator_context,
    load_msp_context,
    max_abs,
    max_seal_abs,
    msp_context_from_bytes,
    new_context,
    public_context,
    require_public_key,
    require_scale,
    secret_bytes,
)

__all__ = [
    "CKKS",
    "CKKSAggregator",
    "CKKSSealer",
    "ckks_backend",
    "ckks_vector_from",
    "ephemeral_ckks_backend",
]

CKKS = "ckks"

ContextSource: TypeAlias = str | os.PathLike[str] | ts.Context


class _CodecSide:
    """What both ends of CKKS aggregation expose about their key set."""

    _codec: _Codec

    @property
    def context(self) -> ts.Context:
        """The TenSEAL context (the sealer's can decrypt; the aggregator's cannot)."""
        return self._codec.context

    @property
    def max_abs(self) -> float:
        """Largest magnitude of a sum that still decrypts correctly."""
        return self._codec.max_abs

    @property
    def values_per_chunk(self) -> int:
        """N/2: values per ciphertext."""
        return self._codec.slots


class CKKSSealer(_CodecSide):
    """MSP side of CKKS aggregation: seals payloads and opens sealed sums (secret key).

    Parameters
    ----------
    context : tenseal.Context
        The MSPs' secret context (:func:`~meshfl.secure.keys.load_msp_context`).

    Attributes
    ----------
    backend : str
        ``"ckks"``.
    key_id : str
        The key set's id.
    max_abs : float
        Largest magnitude a *sum* of payloads may reach and still decrypt (beyond it, CKKS
        wraps around silently; see :attr:`~meshfl.secure.keys.CKKSParams.max_abs`).
    max_seal_abs : float
        Largest magnitude one payload may hold (half of ``max_abs``).
    """

    backend = CKKS

    def __init__(self, context: ts.Context) -> None:
        if not context.has_secret_key():
            raise KeyFileError(
                "a CKKSSealer needs the MSPs' secret context (msp.secret.ckks); this context "
                "holds no secret key"
            )
        require_public_key(context, "the MSP's context")
        require_scale(context, "the MSP's context")
        self.key_id = key_id_of(context)
        self._codec = _Codec(context)
        self._encrypting = _symmetric_twin(context)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> CKKSSealer:
        """Load ``msp.secret.ckks``; refuses a public context or a file of another kind."""
        return cls(load_msp_context(path))

    @classmethod
    def from_bytes(cls, data: bytes) -> CKKSSealer:
        """Inverse of :meth:`to_bytes` (e.g. to rebuild the sealer in another process)."""
        return cls(msp_context_from_bytes(data))

    def to_bytes(self) -> bytes:
        """The secret context as bytes. It holds the secret key: treat it as the key file."""
        return secret_bytes(self.context)

    @property
    def max_seal_abs(self) -> float:
        """Largest magnitude one payload may hold (SEAL's encoder keeps a sign bit)."""
        return self._codec.max_seal_abs

    @functools.cached_property
    def binding_key(self) -> bytes:
        """32 bytes derived from the secret key: every MSP of the key set computes the same,
        the coordinator (public context only) cannot (see :mod:`meshfl.secure.binding`)."""
        return hashlib.sha256(b"meshfl-binding-v1\x00" + secret_bytes(self.context)).digest()

    def seal(self, values: np.ndarray) -> Sealed:
        """Encrypt a flat float vector, N/2 values per ciphertext.

        Raises
        ------
        ValueRangeError
            A value's magnitude is at or above :attr:`max_seal_abs`: SEAL cannot encode it.
        InvalidUpdateError
            Not a flat, non-empty vector of finite numbers.
        """
        array = as_flat_floats(values)
        largest = float(np.max(np.abs(array)))
        if largest >= self.max_seal_abs:
            raise ValueRangeError(_range_message(largest, self._codec))
        slots = self._codec.slots
        chunks = []
        for start in range(0, array.size, slots):
            part = array[start : start + slots].tolist()
            try:
                vector = ts.ckks_vector(self._encrypting, part)
            except ValueError as err:
                if "too large" in str(err):
                    raise ValueRangeError(_range_message(largest, self._codec)) from None
                raise
            chunks.append(self._codec.dump(vector))
        return Sealed(CKKS, self.key_id, int(array.size), tuple(chunks))

    def open(self, sealed: Sealed) -> np.ndarray:
        """Decrypt a sealed payload (or sum) to float64.

        Raises
        ------
        InvalidUpdateError
            Another backend, another key set, or a chunk that is not a ciphertext of it.
        """
        vectors = self._codec.load_all(sealed, key_id=self.key_id, expected_length=None)
        parts = [np.asarray(vector.decrypt(), dtype=np.float64) for vector in vectors]
        return np.concatenate(parts)[: sealed.length]


class CKKSAggregator(_CodecSide):
    """Coordinator side of CKKS aggregation: checks and adds ciphertexts, public context only.

    Parameters
    ----------
    context : tenseal.Context
        The public context (:func:`~meshfl.secure.keys.load_coordinator_context`). A context
        holding a secret key is refused; Galois and relinearization keys are dropped.
    """

    backend = CKKS

    def __init__(self, context: ts.Context) -> None:
        if context.has_secret_key():
            raise KeyFileError(
                "a CKKSAggregator must never hold the CKKS secret key (with it, the "
                "coordinator could decrypt every MSP's update); build it from the public "
                "context coordinator.public.ckks, or from keys.public_context(context)"
            )
        require_public_key(context, "the coordinator's context")
        require_scale(context, "the coordinator's context")
        if context.has_galois_keys() or context.has_relin_keys():
            context = public_context(context)
        self.key_id = key_id_of(context)
        self._codec = _Codec(context)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> CKKSAggregator:
        """Load ``coordinator.public.ckks``; refuses a context that holds a secret key."""
        return cls(load_coordinator_context(path))

    @classmethod
    def from_bytes(cls, data: bytes) -> CKKSAggregator:
        """Inverse of :meth:`to_bytes`; refuses a context that holds a secret key."""
        return cls(coordinator_context_from_bytes(data))

    def to_bytes(self) -> bytes:
        """The public context as bytes (parameters and public key only)."""
        return bytes(self.context.serialize(save_galois_keys=False, save_relin_keys=False))

    def check(self, sealed: Sealed, *, expected_length: int) -> None:
        """Raise :class:`InvalidUpdateError`, naming the problem, unless ``sealed`` is
        ``expected_length`` values encrypted under this key set.

        Checks the backend, the key id, the length, the number of chunks, and that every
        chunk deserializes as one ciphertext under this context with the right number of
        values and the key set's scale. It cannot check the key a ciphertext was *really*
        made with, nor what it holds: that takes the secret key.
        """
        self._codec.load_all(sealed, key_id=self.key_id, expected_length=expected_length)

    def add(self, sealed: Sequence[Sealed]) -> Sealed:
        """Element-wise sum of sealed payloads of one length, with the public context only."""
        if not sealed:
            raise InvalidUpdateError("add needs at least one sealed payload")
        length = sealed[0].length
        for i, item in enumerate(sealed):
            try:
                check_envelope(
                    item,
                    backend=CKKS,
                    key_id=self.key_id,
                    expected_length=length,
                    values_per_chunk=self._codec.slots,
                )
            except InvalidUpdateError as err:
                raise InvalidUpdateError(f"payload {i + 1} of {len(sealed)}: {err}") from None
        chunks = []
        n_chunks = len(sealed[0].chunks)
        for j in range(n_chunks):
            n_values = min(self._codec.slots, length - j * self._codec.slots)
            total = None
            for i, item in enumerate(sealed):
                try:
                    vector = self._codec.load(item.chunks[j], j, n_chunks, n_values)
                except InvalidUpdateError as err:
                    raise InvalidUpdateError(f"payload {i + 1} of {len(sealed)}: {err}") from None
                if total is None:
                    total = vector
                else:
                    total.add_(vector)
            assert total is not None
            chunks.append(self._codec.dump(total))
        return Sealed(CKKS, self.key_id, length, tuple(chunks))


def ckks_backend(secret: ContextSource, public: ContextSource) -> tuple[CKKSSealer, CKKSAggregator]:
    """An MSP's sealer and the coordinator's aggregator from one key set (files or contexts).

    Both must belong to the same key set. In a deployment, each side builds only its own:
    ``CKKSSealer.from_file("msp.secret.ckks")`` on MSPs,
    ``CKKSAggregator.from_file("coordinator.public.ckks")`` on the coordinator.
    """
    sealer = CKKSSealer(secret if isinstance(secret, ts.Context) else load_msp_context(secret))
    aggregator = CKKSAggregator(
        public if isinstance(public, ts.Context) else load_coordinator_context(public)
    )
    if sealer.key_id != aggregator.key_id:
        raise KeyFileError(
            f"the secret context (key set {sealer.key_id}) and the public context (key set "
            f"{aggregator.key_id}) belong to different key sets; use the two files one "
            "`meshfl keys init` wrote together"
        )
    return sealer, aggregator


def ephemeral_ckks_backend(
    params: CKKSParams | None = None,
) -> tuple[CKKSSealer, CKKSAggregator]:
    """A fresh key set in memory, for simulations and tests; nothing is written to disk.

    The aggregator holds a public copy of the context (no secret key), as in a deployment.

    Examples
    --------
    >>> import numpy as np
    >>> sealer, aggregator = ephemeral_ckks_backend()
    >>> parts = [sealer.seal(np.array([1.0, 2.0, 3.0])) for _ in range(3)]
    >>> aggregator.check(parts[0], expected_length=3)
    >>> np.round(sealer.open(aggregator.add(parts)), 6)
    array([3., 6., 9.])
    >>> aggregator.context.has_secret_key()
    False
    """
    context = new_context(params)
    return CKKSSealer(context), CKKSAggregator(public_context(context))


def ckks_vector_from(context: ts.Context, chunk: bytes) -> ts.CKKSVector:
    """A chunk of a :class:`Sealed` CKKS payload as a TenSEAL ``CKKSVector`` under ``context``.

    Accepts meshfl's packed chunks and TenSEAL's own serialization; raises what TenSEAL
    raises for bytes that are not a ciphertext under ``context``.
    """
    raw, _ = _unpack_chunk(chunk, expected_coefficients=None)
    return ts.ckks_vector_from(context, raw)


# --- the two sides' shared view of a context --------------------------------------------


class _Codec:
    """Loads, validates and dumps chunks under one context."""

    def __init__(self, context: ts.Context) -> None:
        data = context.seal_context().data.first_context_data()
        self.context = context
        self.degree = int(data.parms().poly_modulus_degree())
        self.slots = self.degree // 2
        self.data_primes = int(data.chain_index()) + 1
        self.data_bits = int(data.total_coeff_modulus_bit_count())
        self.scale = float(context.global_scale)
        self.max_abs = max_abs(self.data_bits, math.log2(self.scale))
        self.max_seal_abs = max_seal_abs(self.data_bits, math.log2(self.scale))
        # A fresh ciphertext, or a sum of them: 2 polynomials x N coefficients per prime.
        self.coefficients = 2 * self.degree * self.data_primes

    def dump(self, vector: ts.CKKSVector) -> bytes:
        return _pack_chunk(bytes(vector.serialize()))

    def load(self, chunk: bytes, index: int, count: int, n_values: int) -> ts.CKKSVector:
        where = f"chunk {index + 1} of {count}"
        try:
            raw, scale = _unpack_chunk(chunk, expected_coefficients=self.coefficients)
            vector = ts.ckks_vector_from(self.context, raw)
            ciphertexts = vector.ciphertext()
        except _CorruptChunkError as err:
            raise InvalidUpdateError(
                f"{where} is not a CKKS ciphertext under this context (truncated or corrupt): {err}"
            ) from None
        except Exception as err:
            raise InvalidUpdateError(
                f"{where} is not a CKKS ciphertext under this context (truncated or corrupt): "
                f"{type(err).__name__}: {err}"
            ) from None
        if len(ciphertexts) != 1 or ciphertexts[0].size() != 2:
            sizes = [ct.size() for ct in ciphertexts]
            raise InvalidUpdateError(
                f"{where} must be one fresh or summed ciphertext (2 polynomials); it holds "
                f"{len(ciphertexts)} of sizes {sizes}"
            )
        if vector.size() != n_values:
            raise InvalidUpdateError(f"{where} holds {vector.size()} values; expected {n_values}")
        if ciphertexts[0].scale != self.scale or scale != self.scale:
            wrong = scale if scale != self.scale else ciphertexts[0].scale
            raise InvalidUpdateError(
                f"{where} is encoded at scale {_power(wrong)}, but this key set's scale is "
                f"{_power(self.scale)}"
            )
        return vector

    def load_all(
        self, sealed: Sealed, *, key_id: str, expected_length: int | None
    ) -> list[ts.CKKSVector]:
        check_envelope(
            sealed,
            backend=CKKS,
            key_id=key_id,
            expected_length=expected_length,
            values_per_chunk=self.slots,
        )
        count = len(sealed.chunks)
        return [
            self.load(chunk, j, count, min(self.slots, sealed.length - j * self.slots))
            for j, chunk in enumerate(sealed.chunks)
        ]


def _power(scale: float) -> str:
    return f"2^{math.log2(scale):g}" if math.isfinite(scale) and scale > 0 else repr(scale)


def _range_message(largest: float, codec: _Codec) -> str:
    scale_bits = math.log2(codec.scale)
    return (
        f"cannot seal a value of magnitude {largest:.4g}: this key set (scale 2^{scale_bits:g}, "
        f"{codec.data_bits}-bit data modulus) encodes magnitudes below {codec.max_seal_abs:.4g} "
        f"and decrypts sums below {codec.max_abs:.4g} (beyond that the sum of all MSPs' "
        "payloads wraps around silently). Scale the vector down (e.g. smaller weights), or "
        "write a key set with fewer scale_bits (CKKSParams): each bit fewer doubles the "
        "range and the rounding error."
    )


def _symmetric_twin(context: ts.Context) -> ts.Context:
    """The same secret key in a context that encrypts with it (symmetric CKKS).

    TenSEAL fixes the encryption type per context, and its contexts are protobuf messages
    whose field 4 is that type: appending the field to the serialized message overrides it
    (the last value of a field wins). Falls back to ``context`` itself (public-key
    encryption: more noise, slower) if this TenSEAL does not take it.
    """
    try:
        twin = ts.context_from(secret_bytes(context) + b"\x20\x01", n_threads=1)
        probe = [1.0, -2.5, 1e3]
        sealed = ts.ckks_vector(twin, probe, context.global_scale).serialize()
        opened = ts.ckks_vector_from(context, sealed).decrypt()
        if twin.has_secret_key() and np.allclose(opened, probe, atol=1e-3):
            return twin
    except Exception:  # pragma: no cover - depends on the TenSEAL build
        pass
    return context  # pragma: no cover


# --- the packed wire form of a ciphertext ----------------------------------------------
#
# SEAL serializes a ciphertext as a 16-byte header and its members (parms_id, sizes, scale,
# then the coefficients as 64-bit words), zstd-"compressed" (stored raw: random residues
# do not compress). A packed chunk keeps every byte of the members but stores each
# coefficient in `width` bits (60 for a 60-bit prime):
#
#   "MFC\x01" | n_values u32 | scale f64 | SEAL version major, minor u8 u8 | width u8
#   | len(prefix) u16 | prefix (the members before the coefficients) | packed coefficients
#
# Unpacking rebuilds SEAL's bytes (uncompressed) and TenSEAL's CKKSVector message exactly,
# so SEAL validates everything it would validate anyway. Packing is a pure byte rewrite:
# when the layout is not the expected one it returns TenSEAL's bytes untouched.

_MAGIC = b"MFC\x01"
_HEAD = struct.Struct("<4sIdBBBH")
_SEAL_HEAD = struct.Struct("<HBBBBHQ")
_SEAL_MAGIC = 0xA15E
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _CorruptChunkError(ValueError):
    pass


def _pack_chunk(raw: bytes) -> bytes:
    try:
        n_values, blob, scale = _parse_vector(raw)
        members, major, minor = _seal_members(blob)
        size, degree, primes = struct.unpack_from("<QQQ", members, 33)
        coefficients = size * degree * primes
        start = len(members) - 8 * coefficients
        if start < 8 or struct.unpack_from("<Q", members, start - 8)[0] != coefficients:
            return raw  # not SEAL 4's layout: keep TenSEAL's bytes
    except (ValueError, struct.error):
        return raw
    words = np.frombuffer(members, dtype="<u8", offset=start)
    width = 4 * max(1, math.ceil(int(words.max()).bit_length() / 4))
    if width >= 64 or coefficients % 2 or start > 0xFFFF:
        return raw
    head = _HEAD.pack(_MAGIC, n_values, scale, major, minor, width, start)
    return b"".join((head, members[:start], _pack_bits(words, width)))


def _unpack_chunk(chunk: bytes, *, expected_coefficients: int | None) -> tuple[bytes, float]:
    """TenSEAL's bytes for ``chunk`` and the scale they declare.

    Raises :class:`_CorruptChunkError` saying what is wrong.
    """
    if not chunk.startswith(_MAGIC):
        if chunk[:1] != b"\x0a":
            raise _CorruptChunkError(
                "it starts with neither meshfl's ciphertext header nor a TenSEAL vector "
                f"(first bytes {chunk[:8].hex()})"
            )
        try:  # TenSEAL's own serialization: TenSEAL and SEAL validate the ciphertext
            _, _, raw_scale = _parse_vector(chunk)
        except (ValueError, struct.error) as err:
            raise _CorruptChunkError(
                f"it is not a TenSEAL vector of one ciphertext ({err})"
            ) from None
        return chunk, raw_scale
    if len(chunk) < _HEAD.size:
        raise _CorruptChunkError(
            f"it has {len(chunk)} bytes, fewer than its {_HEAD.size}-byte header"
        )
    _, n_values, scale, major, minor, width, prefix = _HEAD.unpack_from(chunk)
    if not (width % 4 == 0 and 4 <= width < 64):
        raise _CorruptChunkError(f"its coefficient width {width} is not a multiple of 4 below 64")
    body = memoryview(chunk)[_HEAD.size :]
    packed = body[prefix:]
    per_pair = width // 4
    if len(body) < prefix or len(packed) % per_pair:
        raise _CorruptChunkError(
            f"its {len(body)} bytes after the header are not a {prefix}-byte prefix and "
            f"whole pairs of {width}-bit coefficients"
        )
    count = 2 * (len(packed) // per_pair)
    if expected_coefficients is not None and count != expected_coefficients:
        raise _CorruptChunkError(
            f"it carries {count} coefficients ({len(packed)} bytes), but a ciphertext under "
            f"this context has {expected_coefficients} "
            f"({expected_coefficients * width // 8} bytes)"
        )
    members = b"".join((body[:prefix], _unpack_bits(packed, width).tobytes()))
    blob = _SEAL_HEAD.pack(_SEAL_MAGIC, 16, major, minor, 0, 0, 16 + len(members)) + members
    return _vector_message(n_values, blob, scale), scale


def _pack_bits(words: np.ndarray, width: int) -> bytes:
    """Pairs (a, b) of ``width``-bit words as the little-endian integer a + b * 2**width."""
    pairs = words.reshape(-1, 2)
    shift = np.uint64(width)
    out = np.empty((pairs.shape[0], 2), dtype="<u8")
    out[:, 0] = pairs[:, 0] | (pairs[:, 1] << shift)
    out[:, 1] = pairs[:, 1] >> np.uint64(64 - width)
    return out.view(np.uint8).reshape(-1, 16)[:, : width // 4].tobytes()


def _unpack_bits(packed: memoryview, width: int) -> np.ndarray:
    per_pair = width // 4
    raw = np.frombuffer(packed, dtype=np.uint8).reshape(-1, per_pair)
    buf = np.zeros((raw.shape[0], 16), dtype=np.uint8)
    buf[:, :per_pair] = raw
    low, high = buf.view("<u8")[:, 0], buf.view("<u8")[:, 1]
    mask = np.uint64((1 << width) - 1)
    words = np.empty((raw.shape[0], 2), dtype="<u8")
    words[:, 0] = low & mask
    words[:, 1] = ((low >> np.uint64(width)) | (high << np.uint64(64 - width))) & mask
    return words.reshape(-1)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _vector_message(n_values: int, blob: bytes, scale: float) -> bytes:
    """TenSEAL's ``CKKSVectorProto``: sizes (1, packed), ciphertexts (2), scale (3)."""
    sizes = _varint(n_values)
    fields = (
        (b"\x0a", _varint(len(sizes)), sizes),  # field 1, length-delimited
        (b"\x12", _varint(len(blob)), blob),  # field 2, length-delimited
        (b"\x19", struct.pack("<d", scale)),  # field 3, 64-bit
    )
    return b"".join(part for field in fields for part in field)


def _parse_vector(raw: bytes) -> tuple[int, bytes, float]:
    """(values, the one SEAL ciphertext, scale) of a TenSEAL ``CKKSVectorProto``."""
    pos, sizes, blobs, scale = 0, [], [], None
    while pos < len(raw):
        key, pos = _read_varint(raw, pos)
        if key == 0x0A:  # sizes, packed
            n, pos = _read_varint(raw, pos)
            end = pos + n
            while pos < end:
                size, pos = _read_varint(raw, pos)
                sizes.append(size)
        elif key == 0x12:
            n, pos = _read_varint(raw, pos)
            blobs.append(raw[pos : pos + n])
            pos += n
        elif key == 0x19:
            (scale,) = struct.unpack_from("<d", raw, pos)
            pos += 8
        else:
            raise ValueError(f"unexpected field {key}")
    if len(sizes) != 1 or len(blobs) != 1 or scale is None or pos != len(raw):
        raise ValueError("not one ciphertext")
    return sizes[0], blobs[0], scale


def _seal_members(blob: bytes) -> tuple[bytes, int, int]:
    magic, header, major, minor, mode, _, size = _SEAL_HEAD.unpack_from(blob)
    if magic != _SEAL_MAGIC or header != 16 or size != len(blob):
        raise ValueError("not a SEAL object")
    payload = blob[16:]
    if mode == 0:
        return payload, major, minor
    if mode == 1:
        return zlib.decompress(payload), major, minor
    if mode == 2:
        return _zstd_stored(payload), major, minor
    raise ValueError(f"unknown compression {mode}")


def _zstd_stored(frame: bytes) -> bytes:
    """The content of a zstd frame made of stored (raw or RLE) blocks only (RFC 8878 §3.1)."""
    if not frame.startswith(_ZSTD_MAGIC):
        raise ValueError("not a zstd frame")
    descriptor = frame[4]
    single_segment = (descriptor >> 5) & 1
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3]
    pos += (single_segment, 2, 4, 8)[descriptor >> 6]
    parts = []
    while True:
        if pos + 3 > len(frame):
            raise ValueError("truncated zstd frame")
        header = int.from_bytes(frame[pos : pos + 3], "little")
        pos += 3
        kind, size = (header >> 1) & 3, header >> 3
        if kind == 0:
            parts.append(frame[pos : pos + size])
            pos += size
        elif kind == 1:
            parts.append(frame[pos : pos + 1] * size)
            pos += 1
        else:
            raise ValueError("compressed zstd block")
        if pos > len(frame):
            raise ValueError("truncated zstd frame")
        if header & 1:
            return b"".join(parts)
