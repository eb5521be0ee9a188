"""The coordinator's state: sealed model versions, metrics and the ledger mirror, on disk.

* :mod:`~meshfl.store.blobs`: content-addressed blob files, written atomically.
* :mod:`~meshfl.store.sealed_codec`: the byte formats of a :class:`~meshfl.secure.Sealed`
  payload and of an exported sealed model (no pickle).
* :mod:`~meshfl.store.model_store`: :class:`ModelStore`, SQLite metadata over the blobs, with
  atomic, idempotent round commits and resumption after a crash.

Nothing here can decrypt: the store holds sealed round sums, never a plaintext model.
"""

from meshfl.store.blobs import BlobStore, blob_digest
from meshfl.store.errors import CorruptBlobError, InvalidRecordError, MissingBlobError, StoreError
from meshfl.store.model_store import ModelStore, RunInfo, VersionInfo, read_export
from meshfl.store.sealed_codec import (
    decode_sealed,
    decode_sealed_model,
    encode_sealed,
    encode_sealed_model,
)

__all__ = [
    "BlobStore",
    "CorruptBlobError",
    "InvalidRecordError",
    "MissingBlobError",
    "ModelStore",
    "RunInfo",
    "StoreError",
    "VersionInfo",
    "blob_digest",
    "decode_sealed",
    "decode_sealed_model",
    "encode_sealed",
    "encode_sealed_model",
    "read_export",
]
