"""Byte formats of sealed payloads at rest: one :class:`Sealed` per blob, one model per file.

A sealed payload (all integers big-endian)::

    b"MFLSEAL\\x01" | u32 header length | header JSON (UTF-8) | chunk 1 | chunk 2 | ...

with the header ``{"backend", "chunks": [byte length of each chunk], "key_id", "length"}``
(plus ``"binding"`` when the payload is bound, see :mod:`meshfl.secure.binding`) written
canonically (sorted keys, no spaces), so equal payloads encode to equal bytes and
hence to one content address. A sealed model (what :meth:`ModelStore.export
<meshfl.store.model_store.ModelStore.export>` writes)::

    b"MFLMODL\\x01" | u32 header length | header JSON | sealed payload 1 | sealed payload 2 | ...

where the header carries the model's metadata and ``"blobs": [{"digest", "size"}, ...]``,
one entry per payload, in the order the agent's ``combine`` applies them.

Neither format uses pickle: decoding reads lengths and bytes, never code, and checks that
the lengths add up exactly, so a truncated or padded file is refused rather than misread.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from meshfl.secure.backend import Sealed
from meshfl.store.errors import CorruptBlobError, InvalidRecordError

__all__ = [
    "MODEL_MAGIC",
    "SEALED_MAGIC",
    "decode_sealed",
    "decode_sealed_model",
    "encode_sealed",
    "encode_sealed_model",
]

SEALED_MAGIC = b"MFLSEAL\x01"
"""First bytes of an encoded :class:`Sealed` (format version 1)."""
MODEL_MAGIC = b"MFLMODL\x01"
"""First bytes of an exported sealed model (format version 1)."""

_U32 = struct.Struct(">I")


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _frame(magic: bytes, header: Any, body: Sequence[bytes]) -> bytes:
    encoded = _canonical_json(header)
    return b"".join([magic, _U32.pack(len(encoded)), encoded, *body])


def _unframe(data: bytes, magic: bytes, what: str) -> tuple[Any, int]:
    """The parsed header and the offset of the body; raises :class:`CorruptBlobError`."""
    if not data.startswith(magic):
        raise CorruptBlobError(f"not {what}: it does not start with {magic!r}")
    start = len(magic) + _U32.size
    if len(data) < start:
        raise CorruptBlobError(f"not {what}: {len(data)} bytes are too few for a header")
    (size,) = _U32.unpack_from(data, len(magic))
    if start + size > len(data):
        raise CorruptBlobError(
            f"truncated {what}: its header claims {size} bytes, {len(data) - start} follow"
        )
    try:
        header = json.loads(data[start : start + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptBlobError(f"not {what}: its header is not JSON ({err})") from err
    return header, start + size


def _lengths(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value
    ):
        raise CorruptBlobError(f"not {what}: its sizes must be a list of ints >= 0; got {value!r}")
    return value


def _split(data: bytes, offset: int, sizes: list[int], what: str) -> list[bytes]:
    if offset + sum(sizes) != len(data):
        raise CorruptBlobError(
            f"{what} is truncated or padded: its header lists {sum(sizes)} bytes of content, "
            f"{len(data) - offset} follow"
        )
    parts = []
    for size in sizes:
        parts.append(data[offset : offset + size])
        offset += size
    return parts


def encode_sealed(sealed: Sealed) -> bytes:
    """One :class:`Sealed` as bytes (deterministic: equal payloads give equal bytes).

    Raises :class:`~meshfl.store.errors.InvalidRecordError` if ``sealed`` is not a
    well-typed :class:`Sealed`.

    Examples
    --------
    >>> sealed = Sealed("ckks", "k1", 3, (b"abc", b"de"))
    >>> decode_sealed(encode_sealed(sealed)) == sealed
    True
    """
    if not isinstance(sealed, Sealed):
        raise InvalidRecordError(f"expected a Sealed payload; got {type(sealed).__name__}")
    if not isinstance(sealed.backend, str) or not isinstance(sealed.key_id, str):
        raise InvalidRecordError(
            "a Sealed payload's backend and key_id must be str; got "
            f"{sealed.backend!r} and {sealed.key_id!r}"
        )
    length = sealed.length
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise InvalidRecordError(f"a Sealed payload's length must be an int >= 0; got {length!r}")
    chunks = tuple(sealed.chunks)
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, bytes):
            raise InvalidRecordError(
                f"chunk {i + 1} of {len(chunks)} must be bytes; got {type(chunk).__name__}"
            )
    header = {
        "backend": sealed.backend,
        "chunks": [len(chunk) for chunk in chunks],
        "key_id": sealed.key_id,
        "length": length,
    }
    if sealed.binding:  # absent when unbound, so unbound payloads keep their addresses
        if not isinstance(sealed.binding, str):
            raise InvalidRecordError(
                f"a Sealed payload's binding must be str; got {sealed.binding!r}"
            )
        header["binding"] = sealed.binding
    return _frame(SEALED_MAGIC, header, chunks)


def decode_sealed(data: bytes | bytearray | memoryview) -> Sealed:
    """The :class:`Sealed` that :func:`encode_sealed` wrote; :class:`CorruptBlobError` if not."""
    what = "a sealed payload"
    data = bytes(data)
    header, offset = _unframe(data, SEALED_MAGIC, what)
    keys = {"backend", "chunks", "key_id", "length"}
    if not isinstance(header, dict) or not keys <= set(header) <= keys | {"binding"}:
        raise CorruptBlobError(f"not {what}: unexpected header {header!r}")
    binding = header.get("binding", "")
    if not isinstance(binding, str):
        raise CorruptBlobError(f"not {what}: binding must be a string in {header!r}")
    backend, key_id, length = header["backend"], header["key_id"], header["length"]
    if not isinstance(backend, str) or not isinstance(key_id, str):
        raise CorruptBlobError(f"not {what}: backend and key_id must be strings in {header!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise CorruptBlobError(f"not {what}: length must be an int >= 0 in {header!r}")
    chunks = _split(data, offset, _lengths(header["chunks"], what), what)
    return Sealed(backend, key_id, length, tuple(chunks), binding)


def encode_sealed_model(meta: Mapping[str, Any], blobs: Sequence[bytes]) -> bytes:
    """A sealed model file: ``meta`` (JSON-serialisable) and encoded payloads, in order.

    ``blobs`` are outputs of :func:`encode_sealed`; their digests and sizes are added to the
    header as ``"blobs"`` so that :func:`decode_sealed_model` can check each one.
    """
    if "blobs" in meta:
        raise InvalidRecordError("the metadata of a sealed model must not have a 'blobs' key")
    listing = [{"digest": hashlib.sha256(b).hexdigest(), "size": len(b)} for b in blobs]
    try:
        return _frame(MODEL_MAGIC, {**meta, "blobs": listing}, blobs)
    except (TypeError, ValueError) as err:
        raise InvalidRecordError(f"the model's metadata is not JSON-serialisable: {err}") from err


def decode_sealed_model(
    data: bytes | bytearray | memoryview,
) -> tuple[dict[str, Any], list[Sealed]]:
    """The metadata and the sealed payloads of a sealed model file, each payload verified."""
    what = "a sealed model"
    data = bytes(data)
    header, offset = _unframe(data, MODEL_MAGIC, what)
    listing = header.get("blobs") if isinstance(header, dict) else None
    if not isinstance(listing, list) or not all(
        isinstance(e, dict) and isinstance(e.get("digest"), str) for e in listing
    ):
        raise CorruptBlobError(f"not {what}: its header lacks a valid 'blobs' list")
    sizes = _lengths([e.get("size") for e in listing], what)
    history = []
    for i, (entry, blob) in enumerate(zip(listing, _split(data, offset, sizes, what), strict=True)):
        if hashlib.sha256(blob).hexdigest() != entry["digest"]:
            raise CorruptBlobError(
                f"{what}: payload {i + 1} of {len(listing)} does not hash to {entry['digest']}"
            )
        history.append(decode_sealed(blob))
    return header, history
