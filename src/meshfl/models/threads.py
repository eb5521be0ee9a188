"""One torch thread for a prediction of a few rows.

torch runs every operator on a pool of intra-op threads, one per core. On a handful of
rows the pool costs more than it saves, and on a busy machine its threads wait for cores:
measured under CPU load, one single-row prediction's p99 was 3.7 s (collaboration),
0.86 s (threat_intel) and 0.77 s (nlp_query) with the pool, and 94, 58 and 40 ms with one
thread (``benchmarks/inference.py`` measures it side by side).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["SMALL_BATCH", "threads_for"]

SMALL_BATCH = 16
"""Batches of at most this many rows run on one thread (0: never)."""

_local = threading.local()  # per thread: depth of small blocks, the count found at the first


@contextlib.contextmanager
def threads_for(rows: int) -> Iterator[None]:
    """Run the block on one torch thread when ``rows`` is at most :data:`SMALL_BATCH`.

    The count is set and restored by the thread that runs the block (with OpenMP, as in
    torch's CPU builds, the setting belongs to that thread: concurrent predictions do not
    see each other's); nested blocks restore it once, at the outermost.
    """
    import torch

    if rows > SMALL_BATCH:
        yield
        return
    depth = getattr(_local, "depth", 0)
    if depth == 0:
        _local.before = torch.get_num_threads()
        if _local.before != 1:
            torch.set_num_threads(1)
    _local.depth = depth + 1
    try:
        yield
    finally:
        _local.depth = depth
        if depth == 0 and _local.before != 1:
            torch.set_num_threads(_local.before)
