"""Results over the first parts of a growing model, kept so that each round computes only
its new parts.

Some models only ever grow: the anomaly forest gains a block of trees a round, the boosted
forest a finished tree. A result that adds up over the parts in order (path-length sums,
margins) is then the result of last round's model carried on over the new parts. An MSP
keeps such results by the digest of the parts they cover and goes on from them.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from typing import TypeVar

__all__ = ["carry_on"]

T = TypeVar("T")


def carry_on(
    kept: MutableMapping[bytes, T],
    prefixes: Sequence[tuple[int, bytes]],
    extend: Callable[[int, T | None], T],
    *,
    keep: int = 4,
) -> T:
    """The result over the first ``prefixes[0][0]`` parts, from the longest kept prefix.

    Parameters
    ----------
    kept : mutable mapping
        Results by the digest of the parts they cover (the caller's, e.g. per data set).
    prefixes : sequence of (int, bytes)
        ``(parts, digest)`` of the prefixes to look for, the wanted one first (then, e.g.,
        last round's, one part shorter).
    extend : callable
        ``extend(start, result)``: the result over the wanted parts from ``result``, the
        result over the first ``start`` parts (``0, None``: from nothing).
    keep : int
        Results kept; the oldest are dropped (a round evaluates one or two models).

    Returns
    -------
    The result over the wanted parts, kept under its digest.
    """
    wanted, digest = prefixes[0]
    for parts, known in prefixes:
        if parts > 0 and known in kept:
            if parts == wanted:
                return kept[known]
            result = extend(parts, kept[known])
            break
    else:
        result = extend(0, None)
    kept[digest] = result
    while len(kept) > keep:
        del kept[next(iter(kept))]
    return result
