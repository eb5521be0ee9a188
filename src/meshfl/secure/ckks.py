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
decrypts garbage. So the range is split by construction: both sides share
``max_contributors`` (:data:`DEFAULT_MAX_CONTRIBUTORS` unless set), every MSP seals
payloads below ``max_abs / max_contributors`` (:attr:`CKKSSealer.max_seal_abs`; above it
:meth:`CKKSSealer.seal` raises :class:`~meshfl.secure.backend.ValueRangeError`), and the
coordinator's :meth:`CKKSAggregator.add` refuses to add more than ``max_contributors``
payloads. A sum can then never leave the range unseen. Error texts name the key set's
bounds, never the magnitude of what was being sealed (it may come from decrypted data).

What MSPs refuse
----------------
The coordinator cannot tell a ciphertext under another key set (relabelled with this key
set's id) or one with tampered coefficients from a genuine one. MSPs can: such ciphertexts
decrypt to values far outside the range. :meth:`CKKSSealer.open` refuses anything that
decrypts to non-finite values or beyond ``max_abs``, and :meth:`CKKSSealer.open_payload`
also a non-positive weight slot, with a fixed sentence that says nothing of what it
decrypted.

Malformed chunks
----------------
The coordinator's :meth:`~CKKSAggregator.check` validates everything
:meth:`~CKKSAggregator.add` relies on, before TenSEAL sees a byte: the chunk's size (before
any parsing), its header, and every member SEAL stores before the coefficients (parms_id,
NTT form, number of polynomials, degree, number of primes, scale, correction factor) must
equal those of a fresh ciphertext of this context; SEAL then checks every coefficient is
below its prime. Compressed TenSEAL chunks are inflated here, never beyond the size a
ciphertext of this context has (no compression bombs), and handed to SEAL uncompressed.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeAlias

import numpy as np
import tenseal as ts

from meshfl.config.errors import ConfigError, InvalidUpdateError
from meshfl.secure.aggregate import PAYLOAD_EXTRA, validate_payload
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
    "DEFAULT_MAX_CONTRIBUTORS",
    "MIN_WEIGHT",
    "CKKSAggregator",
    "CKKSSealer",
    "ckks_backend",
    "ckks_vector_from",
    "ephemeral_ckks_backend",
]

CKKS = "ckks"

DEFAULT_MAX_CONTRIBUTORS = 128
"""How many payloads a sum may add up, unless a sealer and an aggregator are told otherwise.

Each payload is then bounded by ``max_abs / 128`` (~2.1e6 with the default key set): room
for 10^5 examples times values of magnitude 20. MSPs and the coordinator must use the same
number: the MSPs' bound keeps each payload small enough, the coordinator's keeps the count.
"""

MIN_WEIGHT = 1e-5
"""Smallest weight slot :meth:`CKKSSealer.open_payload` takes for positive: ~100 times
CKKS's rounding error with the default key set (weights are example counts, or 1)."""

_IMPLAUSIBLE = (
    "the sealed payload is not a plausible payload under this key set (another key set, "
    "or tampered ciphertexts); not using it"
)

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
    def max_contributors(self) -> int:
        """Most payloads one sum may add up (MSPs and coordinator must agree on it)."""
        return self._codec.max_contributors

    @property
    def max_seal_abs(self) -> float:
        """Largest magnitude one payload may hold: ``max_abs / max_contributors``.

        A sum of ``max_contributors`` payloads below it stays below :attr:`max_abs`.
        """
        return self._codec.max_seal_abs

    @property
    def values_per_chunk(self) -> int:
        """N/2: values per ciphertext."""
        return self._codec.slots

    @property
    def moduli(self) -> tuple[int, ...]:
        """The data primes ``q_l`` of the ciphertext modulus (what masks are reduced by)."""
        return self._codec.moduli

    def mask_size(self, length: int) -> int:
        """Residues per prime that mask a payload of ``length`` values: N per ciphertext
        (the coefficients of its ``c0``)."""
        return -(-int(length) // self._codec.slots) * self._codec.degree

    def shift(self, sealed: Sealed, mask: np.ndarray, *, subtract: bool = False) -> Sealed:
        """``sealed`` with ``mask`` added to (or subtracted from) every ciphertext's ``c0``,
        modulo each data prime (:mod:`meshfl.secure.masking`).

        ``mask`` has shape ``(len(moduli), mask_size(sealed.length))``: ciphertext ``j``
        takes columns ``j·N`` to ``(j+1)·N``. Nothing is decrypted or parsed by SEAL; the
        envelope (backend, key id, length, binding) is kept.
        """
        return self._codec.shift(sealed, mask, subtract=subtract)


class CKKSSealer(_CodecSide):
    """MSP side of CKKS aggregation: seals payloads and opens sealed sums (secret key).

    Parameters
    ----------
    context : tenseal.Context
        The MSPs' secret context (:func:`~meshfl.secure.keys.load_msp_context`).
    max_contributors : int
        Most payloads a sum may add up; each payload is sealed below
        ``max_abs / max_contributors``. The coordinator's aggregator must use the same.

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
        Largest magnitude one payload may hold (``max_abs / max_contributors``).
    """

    backend = CKKS

    def __init__(
        self, context: ts.Context, *, max_contributors: int = DEFAULT_MAX_CONTRIBUTORS
    ) -> None:
        if not context.has_secret_key():
            raise KeyFileError(
                "a CKKSSealer needs the MSPs' secret context (msp.secret.ckks); this context "
                "holds no secret key"
            )
        require_public_key(context, "the MSP's context")
        require_scale(context, "the MSP's context")
        self.key_id = key_id_of(context)
        self._codec = _Codec(context, max_contributors)
        self._encrypting = _symmetric_twin(context)
        self._binding_key: bytes | None = None

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, max_contributors: int = DEFAULT_MAX_CONTRIBUTORS
    ) -> CKKSSealer:
        """Load ``msp.secret.ckks``; refuses a public context or a file of another kind."""
        return cls(load_msp_context(path), max_contributors=max_contributors)

    @classmethod
    def from_bytes(
        cls, data: bytes, *, max_contributors: int = DEFAULT_MAX_CONTRIBUTORS
    ) -> CKKSSealer:
        """Inverse of :meth:`to_bytes` (e.g. to rebuild the sealer in another process)."""
        return cls(msp_context_from_bytes(data), max_contributors=max_contributors)

    def to_bytes(self) -> bytes:
        """The secret context as bytes. It holds the secret key: treat it as the key file."""
        return secret_bytes(self.context)

    @property
    def binding_key(self) -> bytes:
        """32 bytes derived from the secret key: every MSP of the key set computes the same,
        the coordinator (public context only) cannot (see :mod:`meshfl.secure.binding`).

        ``SHA-256(b"meshfl-binding-v1\\x00" + the serialized secret context)``: domain-
        separated, and over material the coordinator's public context does not hold.
        Read-only.
        """
        if self._binding_key is None:
            material = secret_bytes(self.context)
            self._binding_key = hashlib.sha256(b"meshfl-binding-v1\x00" + material).digest()
        return self._binding_key

    def seal(
        self,
        values: np.ndarray,
        *,
        mask: np.ndarray | Callable[[], np.ndarray] | None = None,
    ) -> Sealed:
        """Encrypt a flat float vector, N/2 values per ciphertext.

        ``mask`` (shape ``(len(moduli), mask_size(len(values)))``, residues below each
        prime) is added to the ciphertexts' ``c0`` as they are packed: what :meth:`shift`
        would do afterwards, without unpacking them again (:mod:`meshfl.secure.secagg`).
        It may be a function returning the mask, called once every ciphertext is
        encrypted: a mask computed meanwhile in another thread costs no time of its own
        (:func:`meshfl.secure.secagg.seal_masked`).

        Raises
        ------
        ValueRangeError
            A value's magnitude is at or above :attr:`max_seal_abs`. Its text names the key
            set's bounds only, never the magnitude of what was being sealed.
        InvalidUpdateError
            Not a flat, non-empty vector of finite numbers.
        """
        array = as_flat_floats(values)
        if not float(np.max(np.abs(array))) < self.max_seal_abs:
            raise ValueRangeError(_range_message(self._codec))
        slots, degree = self._codec.slots, self._codec.degree
        vectors = []
        for start in range(0, array.size, slots):
            try:
                vectors.append(
                    ts.ckks_vector(self._encrypting, array[start : start + slots].tolist())
                )
            except ValueError as err:
                if "too large" in str(err):
                    raise ValueRangeError(_range_message(self._codec)) from None
                raise
        if callable(mask):
            mask = mask()
        if mask is not None and (
            mask.dtype != np.uint64 or mask.shape != (len(self.moduli), self.mask_size(array.size))
        ):
            raise ValueError("the mask does not fit this payload's ciphertexts")
        chunks = tuple(
            self._codec.dump(
                vector, None if mask is None else mask[:, j * degree : (j + 1) * degree]
            )
            for j, vector in enumerate(vectors)
        )
        return Sealed(CKKS, self.key_id, int(array.size), chunks)

    def open(self, sealed: Sealed) -> np.ndarray:
        """Decrypt a sealed payload (or sum) to float64.

        Raises
        ------
        InvalidUpdateError
            Another backend, another key set, or a chunk that is not a ciphertext of it;
            or (fixed text, nothing of what was decrypted) values that are not finite or lie
            beyond :attr:`max_abs`: what a ciphertext under another key set, or one with
            tampered coefficients, decrypts to.
        """
        vectors = self._codec.load_all(sealed, key_id=self.key_id, expected_length=None)
        parts = [np.asarray(vector.decrypt(), dtype=np.float64) for vector in vectors]
        values = np.concatenate(parts)[: sealed.length]
        if not (values.size == sealed.length and _within(values, self.max_abs)):
            raise InvalidUpdateError(_IMPLAUSIBLE)
        return values

    def open_payload(self, sealed: Sealed, *, expected_length: int | None = None) -> np.ndarray:
        """:meth:`open` a payload or sum of payloads ``[w·v, w, tag]`` and check it.

        Raises :class:`InvalidUpdateError` with one fixed sentence unless it decrypts to
        ``expected_length`` finite values within :attr:`max_abs` with a positive weight slot
        (:func:`meshfl.secure.aggregate.validate_payload`), above :data:`MIN_WEIGHT` (CKKS
        decrypts a weight of 0 to its rounding error).
        """
        values = self.open(sealed)
        try:
            payload = validate_payload(values, expected_size=expected_length)
        except InvalidUpdateError:
            raise InvalidUpdateError(_IMPLAUSIBLE) from None
        if not payload[-PAYLOAD_EXTRA] > MIN_WEIGHT:  # zero, up to CKKS's rounding error
            raise InvalidUpdateError(_IMPLAUSIBLE)
        return payload


class CKKSAggregator(_CodecSide):
    """Coordinator side of CKKS aggregation: checks and adds ciphertexts, public context only.

    Parameters
    ----------
    context : tenseal.Context
        The public context (:func:`~meshfl.secure.keys.load_coordinator_context`). A context
        holding a secret key is refused; Galois and relinearization keys are dropped.
    max_contributors : int
        Most payloads :meth:`add` adds up (the MSPs' sealers must use the same number).
    """

    backend = CKKS

    def __init__(
        self, context: ts.Context, *, max_contributors: int = DEFAULT_MAX_CONTRIBUTORS
    ) -> None:
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
        self._codec = _Codec(context, max_contributors)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, max_contributors: int = DEFAULT_MAX_CONTRIBUTORS
    ) -> CKKSAggregator:
        """Load ``coordinator.public.ckks``; refuses a context that holds a secret key."""
        return cls(load_coordinator_context(path), max_contributors=max_contributors)

    @classmethod
    def from_bytes(
        cls, data: bytes, *, max_contributors: int = DEFAULT_MAX_CONTRIBUTORS
    ) -> CKKSAggregator:
        """Inverse of :meth:`to_bytes`; refuses a context that holds a secret key."""
        return cls(coordinator_context_from_bytes(data), max_contributors=max_contributors)

    def to_bytes(self) -> bytes:
        """The public context as bytes (parameters and public key only)."""
        return bytes(self.context.serialize(save_galois_keys=False, save_relin_keys=False))

    def check(self, sealed: Sealed, *, expected_length: int) -> None:
        """Raise :class:`InvalidUpdateError`, naming the problem, unless ``sealed`` is
        ``expected_length`` values encrypted under this key set.

        Checks the backend, the key id, the length, the number of chunks, and for every
        chunk: its size, before anything is parsed; its header; that everything SEAL stores
        before the coefficients (parms_id, NTT form, 2 polynomials, degree, primes, scale,
        correction factor) is what a fresh ciphertext of this context has; then SEAL checks
        each coefficient is below its prime. :meth:`add` relies on nothing else, so it never
        fails on a payload this accepted. It cannot check the key a ciphertext was *really*
        made with, nor what it holds: that takes the secret key (MSPs refuse such payloads
        when they open them, see :meth:`CKKSSealer.open`).
        """
        self._codec.load_all(sealed, key_id=self.key_id, expected_length=expected_length)

    def add(self, sealed: Sequence[Sealed]) -> Sealed:
        """Element-wise sum of sealed payloads of one length, with the public context only.

        Refuses more than :attr:`max_contributors` payloads: their sum could leave the range.
        """
        if not sealed:
            raise InvalidUpdateError("add needs at least one sealed payload")
        if len(sealed) > self.max_contributors:
            raise InvalidUpdateError(
                f"cannot add {len(sealed)} payloads: this key set's range holds sums of at "
                f"most max_contributors={self.max_contributors} payloads, each below "
                f"{self.max_seal_abs:.4g} (a sum beyond max_abs={self.max_abs:.4g} would "
                "wrap around silently); raise max_contributors on every MSP and on the "
                "coordinator (each payload's bound shrinks with it), or add fewer"
            )
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
                    if total is None:
                        total = vector
                    else:
                        total.add_(vector)
                except InvalidUpdateError as err:
                    raise InvalidUpdateError(f"payload {i + 1} of {len(sealed)}: {err}") from None
                except Exception as err:  # pragma: no cover - check() rules this out
                    raise InvalidUpdateError(
                        f"payload {i + 1} of {len(sealed)}: chunk {j + 1} of {n_chunks} could "
                        f"not be added ({type(err).__name__})"
                    ) from None
            assert total is not None
            chunks.append(self._codec.dump(total))
        return Sealed(CKKS, self.key_id, length, tuple(chunks))


def ckks_backend(
    secret: ContextSource,
    public: ContextSource,
    *,
    max_contributors: int = DEFAULT_MAX_CONTRIBUTORS,
) -> tuple[CKKSSealer, CKKSAggregator]:
    """An MSP's sealer and the coordinator's aggregator from one key set (files or contexts).

    Both must belong to the same key set. In a deployment, each side builds only its own:
    ``CKKSSealer.from_file("msp.secret.ckks")`` on MSPs,
    ``CKKSAggregator.from_file("coordinator.public.ckks")`` on the coordinator, with the
    same ``max_contributors``.
    """
    sealer = CKKSSealer(
        secret if isinstance(secret, ts.Context) else load_msp_context(secret),
        max_contributors=max_contributors,
    )
    aggregator = CKKSAggregator(
        public if isinstance(public, ts.Context) else load_coordinator_context(public),
        max_contributors=max_contributors,
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
    *,
    max_contributors: int = DEFAULT_MAX_CONTRIBUTORS,
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
    return (
        CKKSSealer(context, max_contributors=max_contributors),
        CKKSAggregator(public_context(context), max_contributors=max_contributors),
    )


def ckks_vector_from(context: ts.Context, chunk: bytes) -> ts.CKKSVector:
    """A chunk of a :class:`Sealed` CKKS payload as a TenSEAL ``CKKSVector`` under ``context``.

    Accepts meshfl's packed chunks and TenSEAL's own serialization, with the checks of
    :meth:`CKKSAggregator.check` (but any number of values); raises
    :class:`InvalidUpdateError` for bytes that are not a ciphertext under ``context``.
    """
    return _Codec(context, 1).load(chunk, 0, 1, None)


# --- the two sides' shared view of a context --------------------------------------------

_MEMBERS = (  # what SEAL 4 stores of a ciphertext before its coefficients, by offset
    ("parms_id", 0, 32),
    ("NTT-form flag", 32, 33),
    ("number of polynomials", 33, 41),
    ("polynomial degree", 41, 49),
    ("number of primes", 49, 57),
    ("scale", 57, 65),
    ("correction factor", 65, 73),
    ("coefficient array header", 73, None),
)


def _within(values: np.ndarray, bound: float) -> bool:
    """All finite and at most ``bound`` in magnitude (NaN fails every comparison)."""
    return bool(np.all(np.abs(values) <= bound))


class _Codec:
    """Loads, validates and dumps chunks under one context."""

    def __init__(self, context: ts.Context, max_contributors: int) -> None:
        if (
            isinstance(max_contributors, bool)
            or not isinstance(max_contributors, int | np.integer)
            or max_contributors < 1
        ):
            raise ConfigError(
                "max_contributors must be a positive int (the most payloads one sum may add "
                f"up); got {max_contributors!r}"
            )
        data = context.seal_context().data.first_context_data()
        self.context = context
        self.degree = int(data.parms().poly_modulus_degree())
        self.slots = self.degree // 2
        self.data_primes = int(data.chain_index()) + 1
        self.data_bits = int(data.total_coeff_modulus_bit_count())
        self.scale = float(context.global_scale)
        self.max_abs = max_abs(self.data_bits, math.log2(self.scale))
        self.max_contributors = int(max_contributors)
        self.max_seal_abs = min(
            max_seal_abs(self.data_bits, math.log2(self.scale)),
            self.max_abs / self.max_contributors,
        )
        # A fresh ciphertext, or a sum of them: 2 polynomials x N coefficients per prime.
        self.coefficients = 2 * self.degree * self.data_primes
        self._learn_layout()

    def _learn_layout(self) -> None:
        """What every ciphertext of this context stores before its coefficients, and sizes.

        Read off a fresh encryption of 0 (the public key suffices): everything SEAL stores
        before the coefficients is the same for every ciphertext :meth:`add` can take.
        """
        probe = bytes(ts.ckks_vector(self.context, [0.0]).serialize())
        try:
            _, blob, _ = _parse_vector(probe)
            members, major, minor = _seal_members(blob, limit=None)
            start = len(members) - 8 * self.coefficients
            layout_ok = (
                start >= 81
                and struct.unpack_from("<Q", members, start - 8)[0] == self.coefficients
                and members[32] == 1
                and struct.unpack_from("<QQQd", members, 33)
                == (2, self.degree, self.data_primes, self.scale)
            )
        except (ValueError, struct.error):
            layout_ok = False
        if not layout_ok:  # pragma: no cover - depends on the TenSEAL build
            raise KeyFileError(
                "this TenSEAL build stores CKKS ciphertexts in a layout meshfl does not know "
                f"(TenSEAL {ts.__version__}); meshfl needs TenSEAL >= 0.3.14 (SEAL 4)"
            )
        self.prefix = members[:start]
        self.version = (major, minor)
        self.members_size = len(members)
        # Largest chunk worth parsing: packed at 60 bits, or TenSEAL's own form with room
        # for its compression's framing. Anything larger is refused before it is read.
        self.max_packed = _HEAD.size + start + self.coefficients * 60 // 8
        self.max_raw = 64 + self.members_size + self.members_size // 64 + 1024
        self.moduli = self._data_primes()

    def _data_primes(self) -> tuple[int, ...]:
        """``q_0, ..., q_{L-1}``, read off the modulus chain (each level drops the last prime).

        TenSEAL does not expose SEAL's ``Modulus`` objects, but each level's product of
        primes; the ratio of two levels is the prime dropped. Checked against SEAL itself: a
        ciphertext whose ``c0`` holds ``q_l - 1`` loads, one holding ``q_l`` does not.
        """
        totals: list[int] = []
        data = self.context.seal_context().data.first_context_data()
        while data is not None and len(totals) < self.data_primes:
            totals.append(_as_int(data.total_coeff_modulus()))
            data = data.next_context_data()
        primes = [totals[i] // totals[i + 1] for i in range(len(totals) - 1)] + totals[-1:]
        moduli = tuple(reversed(primes))
        probe = self.dump(ts.ckks_vector(self.context, [0.0]))
        for level, q in enumerate(moduli):
            for value, loads in ((q - 1, True), (q, False)):
                words = _chunk_words(probe)
                words[level * self.degree] = value
                try:
                    self.load(_rewrap(probe, words), 0, 1, None)
                    ok = loads
                except InvalidUpdateError:
                    ok = not loads
                if not ok or q >= 1 << 62:  # pragma: no cover - depends on the TenSEAL build
                    raise KeyFileError(
                        "could not read this context's data primes off its modulus chain; "
                        "masking needs them (TenSEAL >= 0.3.14, SEAL 4)"
                    )
        return moduli

    def shift(self, sealed: Sealed, mask: np.ndarray, *, subtract: bool) -> Sealed:
        from meshfl.secure.masking import add_mod, sub_mod

        levels, n = len(self.moduli), self.degree
        if mask.shape != (levels, len(sealed.chunks) * n) or mask.dtype != np.uint64:
            raise ValueError(
                f"a mask for {len(sealed.chunks)} ciphertext(s) has shape "
                f"({levels}, {len(sealed.chunks) * n}) and dtype uint64; got {mask.shape}, "
                f"{mask.dtype}"
            )
        chunks = []
        for j, chunk in enumerate(sealed.chunks):
            if not chunk.startswith(_MAGIC):
                chunk = _pack_chunk(bytes(chunk))
            if not chunk.startswith(_MAGIC):
                raise InvalidUpdateError(f"chunk {j + 1} is not in meshfl's packed form")
            words = _chunk_words(chunk)
            c0 = words[: levels * n].reshape(levels, n)
            part = np.ascontiguousarray(mask[:, j * n : (j + 1) * n])
            (sub_mod if subtract else add_mod)(c0, part, self.moduli)
            chunks.append(_rewrap(chunk, words))
        return replace(sealed, chunks=tuple(chunks))

    def dump(self, vector: ts.CKKSVector, c0_mask: np.ndarray | None = None) -> bytes:
        if c0_mask is None:
            return _pack_chunk(bytes(vector.serialize()))
        packed = _pack_chunk(bytes(vector.serialize()), c0_mask, self.moduli)
        if not packed.startswith(_MAGIC):  # pragma: no cover - depends on the TenSEAL build
            raise InvalidUpdateError("cannot mask a ciphertext that is not in the packed form")
        return packed

    def load(self, chunk: bytes, index: int, count: int, n_values: int | None) -> ts.CKKSVector:
        where = f"chunk {index + 1} of {count}"
        corrupt = f"{where} is not a CKKS ciphertext under this context (truncated or corrupt)"
        try:
            values, scale, members, version = self._members(chunk)
        except _CorruptChunkError as err:
            raise InvalidUpdateError(f"{corrupt}: {err}") from None
        if scale != self.scale:
            raise InvalidUpdateError(
                f"{where} is encoded at scale {_power(scale)}, but this key set's scale is "
                f"{_power(self.scale)}"
            )
        if n_values is not None and values != n_values:
            raise InvalidUpdateError(f"{where} holds {values} values; expected {n_values}")
        if not 1 <= values <= self.slots:
            raise InvalidUpdateError(
                f"{where} declares {values} values; a ciphertext holds 1 to {self.slots}"
            )
        problem = self._layout_problem(members)
        if problem is not None:
            raise InvalidUpdateError(
                f"{where} is not a CKKS ciphertext under this context: {problem}"
            )
        seal_blob = _SEAL_HEAD.pack(_SEAL_MAGIC, 16, *version, 0, 0, 16 + len(members)) + members
        try:  # SEAL checks every coefficient against its prime
            vector = ts.ckks_vector_from(self.context, _vector_message(values, seal_blob, scale))
            ciphertexts = vector.ciphertext()
        except Exception as err:
            raise InvalidUpdateError(f"{corrupt}: {type(err).__name__}: {err}") from None
        if len(ciphertexts) != 1 or ciphertexts[0].size() != 2:  # pragma: no cover
            raise InvalidUpdateError(f"{where} must be one ciphertext of 2 polynomials")
        if vector.size() != values or ciphertexts[0].scale != self.scale:  # pragma: no cover
            raise InvalidUpdateError(f"{where} does not hold what its header declares")
        return vector

    def _members(self, chunk: bytes) -> tuple[int, float, bytes, tuple[int, int]]:
        """(values, scale, SEAL's uncompressed ciphertext members, SEAL version) of a chunk.

        Sizes are checked before anything is parsed or inflated, so a chunk of any size is
        refused in time independent of its content; raises :class:`_CorruptChunkError`.
        """
        if chunk.startswith(_MAGIC):
            if len(chunk) < _HEAD.size:
                raise _CorruptChunkError(
                    f"it has {len(chunk)} bytes, fewer than its {_HEAD.size}-byte header"
                )
            if len(chunk) > self.max_packed:
                raise _CorruptChunkError(
                    f"it has {len(chunk)} bytes, more than a packed ciphertext under this "
                    f"context ({self.max_packed})"
                )
            _, values, scale, major, minor, width, prefix = _HEAD.unpack_from(chunk)
            if (major, minor) != self.version:
                raise _CorruptChunkError(
                    f"it declares SEAL {major}.{minor}, not this context's SEAL "
                    f"{self.version[0]}.{self.version[1]}"
                )
            if prefix != len(self.prefix):
                raise _CorruptChunkError(
                    f"its {prefix}-byte prefix is not the {len(self.prefix)} bytes SEAL "
                    "stores before a ciphertext's coefficients"
                )
            if not (width % 4 == 0 and 4 <= width <= 60):
                raise _CorruptChunkError(
                    f"its coefficient width {width} is not a multiple of 4 in [4, 60]"
                )
            body = memoryview(chunk)[_HEAD.size + prefix :]
            expected = self.coefficients * width // 8
            if len(body) != expected:
                raise _CorruptChunkError(
                    f"it carries {len(body)} bytes of {width}-bit coefficients, but a "
                    f"ciphertext under this context has {self.coefficients} ({expected} bytes)"
                )
            words = _unpack_bits(body, width)
            members = bytes(chunk[_HEAD.size : _HEAD.size + prefix]) + words.tobytes()
            return values, scale, members, (major, minor)
        if chunk[:1] != b"\x0a":
            raise _CorruptChunkError(
                "it starts with neither meshfl's ciphertext header nor a TenSEAL vector "
                f"(first bytes {chunk[:8].hex()})"
            )
        if len(chunk) > self.max_raw:
            raise _CorruptChunkError(
                f"it has {len(chunk)} bytes, more than a TenSEAL vector of one ciphertext "
                f"under this context ({self.max_raw})"
            )
        try:  # TenSEAL's own serialization
            values, blob, scale = _parse_vector(chunk)
            members, major, minor = _seal_members(blob, limit=self.members_size)
        except (ValueError, struct.error) as err:
            raise _CorruptChunkError(
                f"it is not a TenSEAL vector of one ciphertext ({err})"
            ) from None
        if (major, minor) != self.version:
            raise _CorruptChunkError(
                f"it declares SEAL {major}.{minor}, not this context's SEAL "
                f"{self.version[0]}.{self.version[1]}"
            )
        return values, scale, members, (major, minor)

    def _layout_problem(self, members: bytes) -> str | None:
        if len(members) != self.members_size:
            return (
                f"its ciphertext is {len(members)} bytes; one under this context has "
                f"{self.members_size}"
            )
        if members.startswith(self.prefix):
            return None
        for name, lo, hi in _MEMBERS:
            end = len(self.prefix) if hi is None else hi
            if members[lo:end] != self.prefix[lo:end]:
                return f"its {name} is not that of a ciphertext under this context"
        return "its metadata is not that of a ciphertext under this context"  # pragma: no cover

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


def _range_message(codec: _Codec) -> str:
    """Why a payload cannot be sealed: the key set's bounds only, nothing of the payload."""
    scale_bits = math.log2(codec.scale)
    return (
        "cannot seal the payload: a value is at or beyond this key set's per-payload bound "
        f"{codec.max_seal_abs:.4g} (max_abs {codec.max_abs:.4g} of scale 2^{scale_bits:g} and "
        f"a {codec.data_bits}-bit data modulus, over max_contributors={codec.max_contributors}:"
        " a sum of that many payloads stays in range; beyond it CKKS wraps around silently). "
        "Scale the vector down (e.g. smaller weights), lower max_contributors on every MSP "
        "and on the coordinator, or write a key set with fewer scale_bits (CKKSParams): each "
        "bit fewer doubles the range and the rounding error."
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


def _pack_chunk(raw: bytes, c0_mask: np.ndarray | None = None, moduli: Sequence[int] = ()) -> bytes:
    """TenSEAL's bytes of one ciphertext in the packed form, with ``c0_mask`` (shape
    ``(len(moduli), N)``) added to its ``c0`` modulo each prime when given."""
    try:
        n_values, blob, scale = _parse_vector(raw)
        members, major, minor = _seal_members(blob, limit=None)
        size, degree, primes = struct.unpack_from("<QQQ", members, 33)
        coefficients = size * degree * primes
        start = len(members) - 8 * coefficients
        if start < 8 or struct.unpack_from("<Q", members, start - 8)[0] != coefficients:
            return raw  # not SEAL 4's layout: keep TenSEAL's bytes
    except (ValueError, struct.error):
        return raw
    words = np.frombuffer(members, dtype="<u8", offset=start)
    if c0_mask is not None:
        from meshfl.secure.masking import add_mod

        words = words.copy()
        add_mod(words[: c0_mask.size].reshape(c0_mask.shape), c0_mask, moduli)
    width = 4 * max(1, math.ceil(int(words.max()).bit_length() / 4))
    if width > 60 or coefficients % 2 or start > 0xFFFF:
        return raw
    head = _HEAD.pack(_MAGIC, n_values, scale, major, minor, width, start)
    return b"".join((head, members[:start], _pack_bits(words, width)))


def _chunk_words(chunk: bytes) -> np.ndarray:
    """The coefficients of a packed chunk as a writable uint64 array (c0 first, per prime)."""
    _, _, _, _, _, width, prefix = _HEAD.unpack_from(chunk)
    return _unpack_bits(memoryview(chunk)[_HEAD.size + prefix :], width).copy()


def _rewrap(chunk: bytes, words: np.ndarray) -> bytes:
    """A packed chunk with new coefficients (same header and prefix; width as they need)."""
    magic, n_values, scale, major, minor, _, prefix = _HEAD.unpack_from(chunk)
    width = 4 * max(1, math.ceil(int(words.max()).bit_length() / 4))
    head = _HEAD.pack(magic, n_values, scale, major, minor, width, prefix)
    members = chunk[_HEAD.size : _HEAD.size + prefix]
    return b"".join((head, members, _pack_bits(words, width)))


def _as_int(total: Any) -> int:
    """SEAL's multi-word product of primes (an int, or little-endian 64-bit words)."""
    if isinstance(total, int):
        return total
    return sum((int(w) << (64 * i) for i, w in enumerate(total)), 0)


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
    """A protobuf varint at ``pos``: at most 10 bytes are read, whatever ``data`` holds."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
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
    """(values, the one SEAL ciphertext, scale) of a TenSEAL ``CKKSVectorProto``.

    Strict, and in constant time: exactly one size (field 1), one ciphertext (field 2) and
    the scale (field 3), in the order TenSEAL writes them, and nothing else. Reads at most
    three varints, so no input makes it loop (a chunk of 4 MB of varints is refused at once).
    """
    if raw[:1] != b"\x0a":
        raise ValueError("field 1 (the vector's size) must come first")
    n, pos = _read_varint(raw, 1)
    end = pos + n
    size, pos = _read_varint(raw, pos)
    if pos != end:
        raise ValueError("field 1 must hold exactly one size")
    if raw[pos : pos + 1] != b"\x12":
        raise ValueError("field 2 (one ciphertext) must follow")
    n, pos = _read_varint(raw, pos + 1)
    if pos + n > len(raw):
        raise ValueError("field 2 is truncated")
    blob = raw[pos : pos + n]
    pos += n
    if raw[pos : pos + 1] != b"\x19" or pos + 9 != len(raw):
        raise ValueError("field 3 (the scale) must end the vector, and nothing follow it")
    (scale,) = struct.unpack_from("<d", raw, pos + 1)
    return size, blob, scale


def _seal_members(blob: bytes, *, limit: int | None) -> tuple[bytes, int, int]:
    """The members of a serialized SEAL object, inflated to at most ``limit`` bytes."""
    if len(blob) < _SEAL_HEAD.size:
        raise ValueError("not a SEAL object")
    magic, header, major, minor, mode, reserved, size = _SEAL_HEAD.unpack_from(blob)
    if magic != _SEAL_MAGIC or header != 16 or reserved != 0 or size != len(blob):
        raise ValueError("not a SEAL object")
    payload = blob[16:]
    if mode == 0:
        members = payload
    elif mode == 1:
        members = _inflate(payload, limit)
    elif mode == 2:
        members = _zstd_stored(payload, limit)
    else:
        raise ValueError(f"unknown compression {mode}")
    if limit is not None and len(members) > limit:
        raise ValueError(f"it holds more than the {limit} bytes of a ciphertext")
    return members, major, minor


def _inflate(payload: bytes, limit: int | None) -> bytes:
    """zlib-inflate ``payload``, never beyond ``limit`` bytes (a compression bomb stops there)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(payload, 0 if limit is None else limit + 1)
    except zlib.error as err:
        raise ValueError(f"corrupt zlib stream ({err})") from None
    if limit is not None and (len(out) > limit or inflater.unconsumed_tail):
        raise ValueError(f"it inflates beyond the {limit} bytes of a ciphertext")
    return out


def _zstd_stored(frame: bytes, limit: int | None) -> bytes:
    """The content of a zstd frame made of stored (raw or RLE) blocks only (RFC 8878 §3.1).

    Never builds more than ``limit`` bytes: an RLE block's size is checked before it is
    expanded, so a frame of RLE blocks (a compression bomb) is refused at once.
    """
    if len(frame) < 6 or not frame.startswith(_ZSTD_MAGIC):
        raise ValueError("not a zstd frame")
    descriptor = frame[4]
    single_segment = (descriptor >> 5) & 1
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3]
    pos += (single_segment, 2, 4, 8)[descriptor >> 6]
    parts, total = [], 0
    while True:
        if pos + 3 > len(frame):
            raise ValueError("truncated zstd frame")
        header = int.from_bytes(frame[pos : pos + 3], "little")
        pos += 3
        kind, size = (header >> 1) & 3, header >> 3
        total += size
        if limit is not None and total > limit:
            raise ValueError(f"it inflates beyond the {limit} bytes of a ciphertext")
        if kind == 0:
            if pos + size > len(frame):
                raise ValueError("truncated zstd frame")
            parts.append(frame[pos : pos + size])
            pos += size
        elif kind == 1:
            if pos + 1 > len(frame):
                raise ValueError("truncated zstd frame")
            parts.append(frame[pos : pos + 1] * size)
            pos += 1
        else:
            raise ValueError("compressed zstd block (meshfl accepts stored blocks only)")
        if header & 1:
            return b"".join(parts)
