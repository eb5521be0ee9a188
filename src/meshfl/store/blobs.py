"""Content-addressed blob files, written atomically: the bytes of the stored model versions.

A blob is named by the SHA-256 of its bytes and lives at ``<directory>/<aa>/<digest>``
(``aa``: the digest's first two hex digits, so no directory grows past a few thousand
files). Writing the same bytes twice stores them once. A blob is written to a temporary
file in its final directory, flushed and fsynced, renamed over its name (atomic on POSIX)
and the directory is fsynced, so after a crash a name holds either nothing or the whole
blob. Reads check the hash, so damage on disk is reported, never returned.

Temporary files left by a crash (``.tmp-*``) are harmless; :meth:`BlobStore.remove_temporary`
deletes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from meshfl.store.errors import CorruptBlobError, InvalidRecordError, MissingBlobError

__all__ = ["BlobStore", "blob_digest", "fsync_directory", "make_directory", "write_atomic"]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_TMP_PREFIX = ".tmp-"


def blob_digest(data: bytes) -> str:
    """The name :meth:`BlobStore.put` gives ``data``: its SHA-256, in lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename or a new entry in ``directory`` durable (no-op where unsupported)."""
    if os.name != "posix":  # pragma: no cover - Windows cannot open a directory
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new, never a mix.

    Temporary file in the same directory, flush, fsync, ``os.replace``, fsync the directory.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def make_directory(directory: str | os.PathLike[str]) -> None:
    """Create ``directory`` (and parents) durably: each new entry's parent is fsynced."""
    directory = Path(directory)
    if directory.is_dir():
        return
    make_directory(directory.parent)
    try:
        directory.mkdir()
    except FileExistsError:
        return
    fsync_directory(directory.parent)


class BlobStore:
    """Content-addressed, write-once blob files under ``directory``.

    Parameters
    ----------
    directory : str or os.PathLike
        Where the blobs live (created, durably, if missing and ``create``).
    create : bool
        ``False`` for a reader that must not create anything.

    Examples
    --------
    >>> import tempfile
    >>> blobs = BlobStore(tempfile.mkdtemp())
    >>> digest = blobs.put(b"sealed bytes")
    >>> blobs.put(b"sealed bytes") == digest  # the same bytes are stored once
    True
    >>> blobs.get(digest)
    b'sealed bytes'
    """

    def __init__(self, directory: str | os.PathLike[str], *, create: bool = True) -> None:
        self._directory = Path(directory)
        if create:
            make_directory(self._directory)

    @property
    def directory(self) -> Path:
        """The blob directory."""
        return self._directory

    def __repr__(self) -> str:
        return f"BlobStore({str(self._directory)!r})"

    def path(self, digest: str) -> Path:
        """Where the blob named ``digest`` lives (whether or not it exists)."""
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise InvalidRecordError(
                f"a blob digest must be 64 lowercase hex digits (a SHA-256); got {digest!r}"
            )
        return self._directory / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store ``data`` durably and return its digest; a no-op if it is already stored."""
        if not isinstance(data, bytes):
            raise InvalidRecordError(f"a blob must be bytes; got {type(data).__name__}")
        digest = blob_digest(data)
        path = self.path(digest)
        # A blob is renamed into place whole, so one of the right size is the right one
        # (barring damage after the fact, which get() detects).
        if path.is_file() and path.stat().st_size == len(data):
            return digest
        make_directory(path.parent)
        write_atomic(path, data)
        return digest

    def get(self, digest: str) -> bytes:
        """The bytes named ``digest``, checked against it.

        Raises :class:`MissingBlobError` or :class:`CorruptBlobError` naming the digest and
        the file.
        """
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise MissingBlobError(
                f"blob {digest} is missing: {path} does not exist. The state directory lost "
                "a file (deleted, or restored from an incomplete backup); the coordinator "
                "cannot rebuild a sealed sum, so restore the file from a backup."
            ) from None
        actual = blob_digest(data)
        if actual != digest:
            raise CorruptBlobError(
                f"blob {digest} is corrupt: {path} ({len(data)} bytes) hashes to {actual}. "
                "The file was damaged on disk or edited; restore it from a backup."
            )
        return data

    def has(self, digest: str) -> bool:
        """Whether a blob named ``digest`` is stored (its content is checked by :meth:`get`)."""
        return self.path(digest).is_file()

    def __iter__(self) -> Iterator[str]:
        """The digests of the stored blobs, in no particular order."""
        if not self._directory.is_dir():
            return
        for sub in self._directory.iterdir():
            if sub.is_dir() and len(sub.name) == 2:
                for entry in sub.iterdir():
                    if _DIGEST.fullmatch(entry.name) and entry.name[:2] == sub.name:
                        yield entry.name

    def delete(self, digest: str) -> bool:
        """Remove a blob; ``True`` if it existed. Only for blobs nothing refers to."""
        path = self.path(digest)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_directory(path.parent)
        return True

    def remove_temporary(self) -> int:
        """Delete temporary files that a crash left behind; returns how many.

        Call it only while no :meth:`put` is in progress (for example on start-up).
        """
        removed = 0
        if self._directory.is_dir():
            for tmp in self._directory.glob(f"*/{_TMP_PREFIX}*"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                    removed += 1
        return removed
