"""What travels and is stored (:class:`Sealed`), the two roles that handle it, the plaintext twin.

An MSP holds a :class:`Sealer`: it seals its payload ``[w·v, w, tag]``
(:func:`meshfl.secure.aggregate.seal_payload`) and opens the sealed global model. The
coordinator holds an :class:`Aggregator`: public material only, so all it can do with sealed
payloads is check their envelope and add them up. Two back ends implement the pair:

* CKKS (:mod:`meshfl.secure.ckks`): TenSEAL ciphertexts; the coordinator's context holds no
  secret key, so it adds what it cannot read (Cheon, Kim, Kim and Song, "Homomorphic
  encryption for arithmetic of approximate numbers", ASIACRYPT 2017).
* plaintext (:func:`plaintext_backend`): the same interface on raw float64 bytes, for tests
  and comparisons. It warns loudly: with it, the coordinator reads every update.

This module imports neither TenSEAL nor anything above the secure layer.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from meshfl.config.errors import InvalidUpdateError
from meshfl.secure.aggregate import validate_payload

__all__ = [
    "Aggregator",
    "PlaintextAggregator",
    "PlaintextSealer",
    "Sealed",
    "Sealer",
    "ValueRangeError",
    "check_envelope",
    "plaintext_backend",
]

PLAINTEXT = "plaintext"

PLAINTEXT_WARNING = (
    "Secure aggregation is OFF (plaintext backend): the coordinator can read every MSP's "
    "update, its weight (dataset size) and every global model in the clear. Use it only "
    "for tests and simulations. To turn it on, write a key set with `meshfl keys init` "
    "(meshfl.secure.generate_keys), give msp.secret.ckks to the MSPs and "
    "coordinator.public.ckks to the coordinator, and use meshfl.secure.ckks_backend "
    "(or secure_aggregation='ckks')."
)


_PLAINTEXT_BINDING_KEY = hashlib.sha256(b"meshfl-binding-v1\x00plaintext").digest()

_IMPLAUSIBLE_PAYLOAD = "the sealed payload is not a plausible payload; not using it"


class ValueRangeError(InvalidUpdateError):
    """Values too large to be sealed under a key set's per-payload bound (CKKS would wrap them
    silently). Its text names the key set's bounds, never the magnitude of the values."""


@dataclass(frozen=True)
class Sealed:
    """An encrypted payload (plaintext backend: the raw one): what travels and is stored.

    Attributes
    ----------
    backend : str
        ``"ckks"`` or ``"plaintext"``.
    key_id : str
        Id of the key set the payload is encrypted under (``""`` for plaintext); see
        :func:`meshfl.secure.keys.key_id_of`.
    length : int
        Number of float values it holds.
    chunks : tuple of bytes
        Serialized ciphertexts, each holding up to N/2 values (plaintext: one chunk of
        float64 little-endian bytes).
    binding : str
        What the payload is bound to (canonical JSON of a
        :class:`~meshfl.secure.binding.Binding`: run, agent, round and, for a sum, its
        contributors); ``""`` when unbound. The back ends carry it and never read it; MSPs
        check it against the payload's tags when they open a sum.
    """

    backend: str
    key_id: str
    length: int
    chunks: tuple[bytes, ...]
    binding: str = ""

    @property
    def nbytes(self) -> int:
        """Total bytes of the chunks: what this payload costs on the wire and on disk."""
        return sum(len(chunk) for chunk in self.chunks)


@runtime_checkable
class Sealer(Protocol):
    """MSP side: seals payloads and opens sealed ones (holds the secret key with CKKS)."""

    backend: str
    key_id: str

    def seal(self, values: np.ndarray) -> Sealed:
        """Encrypt a flat float vector."""
        ...

    @property
    def binding_key(self) -> bytes:
        """32 bytes every MSP of the key set derives alike and the coordinator cannot: the
        key of the binding tags (:mod:`meshfl.secure.binding`)."""
        ...

    def open(self, sealed: Sealed) -> np.ndarray:
        """Decrypt to float64; raises :class:`InvalidUpdateError` on another key id, another
        backend, bytes that are not a ciphertext of this key set, or (fixed text) values that
        are not finite or out of the key set's range."""
        ...

    def open_payload(self, sealed: Sealed, *, expected_length: int | None = None) -> np.ndarray:
        """:meth:`open` a payload (or sum of payloads) ``[w·v, w, tag]``; raises
        :class:`InvalidUpdateError`, with a fixed sentence that says nothing of what was
        decrypted, unless it holds ``expected_length`` plausible values and a positive
        weight (:func:`meshfl.secure.aggregate.validate_payload`)."""
        ...


@runtime_checkable
class Aggregator(Protocol):
    """Coordinator side: public material only; checks and adds sealed payloads."""

    backend: str
    key_id: str

    def check(self, sealed: Sealed, *, expected_length: int) -> None:
        """Raise :class:`InvalidUpdateError`, naming what is wrong, unless ``sealed`` can join
        this aggregator's sum as a vector of ``expected_length`` values."""
        ...

    def add(self, sealed: Sequence[Sealed]) -> Sealed:
        """Element-wise sum, under the same backend and key id."""
        ...


def check_envelope(
    sealed: Sealed,
    *,
    backend: str,
    key_id: str,
    expected_length: int | None,
    values_per_chunk: int,
) -> None:
    """Checks every back end shares: backend, key id, length and number of chunks.

    Raises :class:`InvalidUpdateError` with a sentence that names both sides of a mismatch.
    """
    if not isinstance(sealed, Sealed):
        raise InvalidUpdateError(f"expected a Sealed payload; got {type(sealed).__name__}")
    if sealed.backend != backend:
        raise InvalidUpdateError(
            f"the payload is sealed with the {sealed.backend!r} backend, but this side uses "
            f"{backend!r}: MSPs and coordinator must all run with secure aggregation on "
            "(CKKS, one shared key set) or all with it off (plaintext)"
        )
    if sealed.key_id != key_id:
        raise InvalidUpdateError(
            f"the payload is encrypted under key set {sealed.key_id!r}, not under this "
            f"side's key set {key_id!r}: the MSP holds the secret context of another key "
            "set (give every MSP the msp.secret.ckks written with the coordinator's "
            "coordinator.public.ckks)"
        )
    if isinstance(sealed.length, bool) or not isinstance(sealed.length, int):
        raise InvalidUpdateError(f"the payload's length must be an int; got {sealed.length!r}")
    if expected_length is not None and sealed.length != expected_length:
        raise InvalidUpdateError(
            f"the payload holds {sealed.length} values; this round expects {expected_length}"
        )
    if sealed.length < 1:
        raise InvalidUpdateError(f"the payload must hold at least one value; got {sealed.length}")
    needed = math.ceil(sealed.length / values_per_chunk)
    if len(sealed.chunks) != needed:
        raise InvalidUpdateError(
            f"the payload has {len(sealed.chunks)} chunk(s), but {sealed.length} values at "
            f"{values_per_chunk} per chunk need {needed}"
        )
    for i, chunk in enumerate(sealed.chunks):
        if not isinstance(chunk, bytes):
            raise InvalidUpdateError(
                f"chunk {i + 1} of {len(sealed.chunks)} must be bytes; got {type(chunk).__name__}"
            )


def as_flat_floats(values: np.ndarray) -> np.ndarray:
    """``values`` as a non-empty, finite, flat float64 array; raises :class:`InvalidUpdateError`."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise InvalidUpdateError(f"can only seal a flat vector; got shape {array.shape}")
    if array.size == 0:
        raise InvalidUpdateError("cannot seal an empty vector")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InvalidUpdateError(f"can only seal real numbers; got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        raise InvalidUpdateError("cannot seal NaN or inf")
    return array


class PlaintextSealer:
    """The plaintext twin of :class:`~meshfl.secure.ckks.CKKSSealer`: no encryption at all."""

    backend = PLAINTEXT
    key_id = ""

    @property
    def binding_key(self) -> bytes:
        """A fixed, public constant: with plaintext, binding tags protect nothing (anyone can
        compute them), like everything else here. Read-only."""
        return _PLAINTEXT_BINDING_KEY

    def seal(self, values: np.ndarray) -> Sealed:
        array = as_flat_floats(values)
        return Sealed(PLAINTEXT, "", int(array.size), (array.astype("<f8").tobytes(),))

    def open(self, sealed: Sealed) -> np.ndarray:
        return _decode_plaintext(sealed, expected_length=None)

    def open_payload(self, sealed: Sealed, *, expected_length: int | None = None) -> np.ndarray:
        values = self.open(sealed)
        try:
            return validate_payload(values, expected_size=expected_length)
        except InvalidUpdateError:
            raise InvalidUpdateError(_IMPLAUSIBLE_PAYLOAD) from None


class PlaintextAggregator:
    """The plaintext twin of :class:`~meshfl.secure.ckks.CKKSAggregator`: sums raw floats."""

    backend = PLAINTEXT
    key_id = ""

    def check(self, sealed: Sealed, *, expected_length: int) -> None:
        """The envelope, then the payload itself: finite values, a weight slot > 0."""
        validate_payload(
            _decode_plaintext(sealed, expected_length=expected_length),
            expected_size=expected_length,
        )

    def add(self, sealed: Sequence[Sealed]) -> Sealed:
        if not sealed:
            raise InvalidUpdateError("add needs at least one sealed payload")
        length = sealed[0].length
        for item in sealed:
            _check_plaintext(item, expected_length=length)
        # Views added in place, no copy of any payload; a NaN or inf in any payload shows in
        # the total, which is checked once.
        total = np.zeros(length)
        for item in sealed:
            np.add(total, np.frombuffer(item.chunks[0], dtype="<f8"), out=total)
        if not np.all(np.isfinite(total)):
            raise InvalidUpdateError("a payload holds NaN or inf (corrupt)")
        return Sealed(PLAINTEXT, "", int(total.size), (total.astype("<f8").tobytes(),))


def _check_plaintext(sealed: Sealed, *, expected_length: int | None) -> None:
    """The envelope of a plaintext payload, and its one chunk's size."""
    length = sealed.length if isinstance(sealed, Sealed) else 0
    check_envelope(
        sealed,
        backend=PLAINTEXT,
        key_id="",
        expected_length=expected_length,
        values_per_chunk=max(length, 1) if isinstance(length, int) else 1,
    )
    (chunk,) = sealed.chunks
    if len(chunk) != 8 * sealed.length:
        raise InvalidUpdateError(
            f"chunk 1 of 1 is not {sealed.length} float64 values (truncated or corrupt): it "
            f"has {len(chunk)} bytes, {sealed.length} values need {8 * sealed.length}"
        )


def _decode_plaintext(sealed: Sealed, *, expected_length: int | None) -> np.ndarray:
    _check_plaintext(sealed, expected_length=expected_length)
    values = np.frombuffer(sealed.chunks[0], dtype="<f8").astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise InvalidUpdateError("chunk 1 of 1 holds NaN or inf (corrupt)")
    return values


def plaintext_backend() -> tuple[PlaintextSealer, PlaintextAggregator]:
    """A sealer and an aggregator that do not encrypt: secure aggregation OFF.

    Warns (``UserWarning``, shown once per call site by Python's default filter) that the
    coordinator can read every MSP's update.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     sealer, aggregator = plaintext_backend()
    >>> parts = [sealer.seal(np.array([1.0, 2.0])), sealer.seal(np.array([3.0, 4.0]))]
    >>> sealer.open(aggregator.add(parts))
    array([4., 6.])
    """
    warnings.warn(PLAINTEXT_WARNING, UserWarning, stacklevel=2)
    return PlaintextSealer(), PlaintextAggregator()
