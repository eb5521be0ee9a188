"""What the masking tests share: every survivor's answer to a round's unmask request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from meshfl.secure.masking import KeyPair
from meshfl.secure.secagg import RoundMasking, UnmaskReply, answer_unmask


def _unmask_replies(
    masking: RoundMasking,
    keys: Mapping[int, KeyPair],
    scope: bytes,
    *,
    survivors: Sequence[int],
    sampled: Sequence[int],
    answering: Sequence[int] | None = None,
) -> dict[int, UnmaskReply]:
    """The coordinator's unmask requests for ``survivors`` of ``sampled``, answered by each
    MSP of ``answering`` (default: every survivor) as its ClientApp would: with its own key
    pair and the keys of its neighbours."""
    requests = masking.requests(survivors, sampled)
    return {
        node: answer_unmask(
            requests[node],
            node=node,
            keys=keys[node],
            neighbours={p: keys[p].public for p in masking.graph[node]},
            scope=scope,
        )
        for node in (survivors if answering is None else answering)
    }


@pytest.fixture
def unmask_replies():
    """:func:`_unmask_replies`: ``unmask_replies(masking, keys, scope, survivors=,
    sampled=, answering=None)`` -> ``{node: UnmaskReply}``."""
    return _unmask_replies
