"""carry_on: a result over a growing model's first parts, carried on from the longest kept."""

from __future__ import annotations

from meshfl.models.prefix_cache import carry_on


def test_it_goes_on_from_the_longest_kept_prefix_and_keeps_a_few():
    calls = []

    def extend(start, result):
        calls.append(start)
        return (result or 0) + sum(range(start, wanted))

    kept: dict[bytes, int] = {}
    for wanted in range(1, 8):
        key = bytes([wanted])
        assert carry_on(kept, ((wanted, key), (wanted - 1, bytes([wanted - 1]))), extend) == sum(
            range(wanted)
        )
    assert calls == [0, 1, 2, 3, 4, 5, 6]  # each from last one's result, never from scratch
    calls.clear()
    wanted = 7
    assert carry_on(kept, ((7, bytes([7])), (6, bytes([6]))), extend) == sum(range(7))
    assert calls == []  # the same model again: kept as it is
    assert len(kept) == 4
    wanted = 3
    assert carry_on(kept, ((3, b"other"), (2, b"unknown")), extend) == sum(range(3))
    assert calls == [0]  # nothing kept for it: from nothing
