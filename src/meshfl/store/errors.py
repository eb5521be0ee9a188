"""Errors of the coordinator's state directory.

Every one derives from :class:`StoreError` (a :class:`~meshfl.config.errors.MeshflError`).
Damage found on disk (:class:`MissingBlobError`, :class:`CorruptBlobError`) is never
repaired silently: the coordinator cannot recompute a sealed round sum, since it never held
the model in plaintext, so the message names the file to restore from a backup.
"""

from __future__ import annotations

from meshfl.config.errors import MeshflError

__all__ = ["CorruptBlobError", "InvalidRecordError", "MissingBlobError", "StoreError"]


class StoreError(MeshflError):
    """A problem with the coordinator's state directory."""


class MissingBlobError(StoreError):
    """A blob that the metadata refers to is not on disk."""


class CorruptBlobError(StoreError):
    """A blob's bytes do not hash to its name, or do not parse as what it should hold."""


class InvalidRecordError(StoreError, ValueError):
    """The caller asked the store to record something it refuses (the message says why)."""
