"""Sealed global models: what the coordinator stores and sends is ciphertext.

The coordinator cannot divide an encrypted sum by an encrypted weight, so it never turns
the round's sum into a model: it keeps the *sealed round sums* and sends them out. Each
MSP opens them with the shared secret key and rebuilds the global vector with the agent's
own ``combine``, starting from the public initial vector. Agents whose ``combine`` ignores
the previous model (federated averaging) need only the latest sum; agents that build on
it (the anomaly forest appends each round's trees) need every sum so far.

Publishing a plaintext global model is an explicit act by a key holder:
:func:`reveal_global_model` (see docs/threat-model.md for what it gives away).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meshfl.agents.base import Agent
from meshfl.config.errors import MeshflError
from meshfl.secure.aggregate import open_payload
from meshfl.secure.backend import Sealed, Sealer
from meshfl.secure.binding import Binding, UnverifiedAggregateError, check_tags

__all__ = [
    "MissingHistoryError",
    "Verification",
    "history_digest",
    "next_history",
    "open_global",
    "reveal_global_model",
]

log = logging.getLogger("meshfl.secure")


def next_history(agent: Agent[Any], history: Sequence[Sealed], new_sum: Sealed) -> list[Sealed]:
    """The sealed sums that define the global model after ``new_sum`` joins ``history``."""
    return [*history, new_sum] if agent.combine_uses_previous else [new_sum]


_OPENED_MAX = 32
_opened: OrderedDict[tuple[str, str], tuple[np.ndarray, int]] = OrderedDict()
_opened_lock = threading.Lock()


def _digest(previous: str, sealed: Sealed) -> str:
    h = hashlib.sha256(previous.encode())
    h.update(f"{sealed.backend}:{sealed.key_id}:{sealed.length}:{sealed.binding}".encode())
    for chunk in sealed.chunks:
        h.update(hashlib.sha256(chunk).digest())
    return h.hexdigest()


def history_digest(history: Sequence[Sealed], previous: str = "") -> str:
    """The hash chain over ``history`` (continuing ``previous``): what names a prefix of a
    global model's sums, so that a message can carry the sums after it and not the prefix."""
    for sealed in history:
        previous = _digest(previous, sealed)
    return previous


class MissingHistoryError(MeshflError):
    """The message omits sums of the global model that this MSP has not opened before.

    The coordinator sends only what it believes an MSP lacks; an MSP that restarted, or
    lost its state, answers with this, and gets the whole history in the next round.
    """


@dataclass(frozen=True)
class Verification:
    """What an MSP requires of every sealed sum before it uses the model they make.

    Each sum must be bound to this run and agent, to a round before ``before_round``
    (rounds increasing along the history), and prove with its tags that it adds the
    updates of at least ``min_contributors`` distinct MSPs, each exactly once
    (:func:`meshfl.secure.binding.check_tags`). Its weight must be positive and every value
    finite. ``min_contributors`` is the MSP's own floor, never the coordinator's word.
    """

    run_id: str
    before_round: int
    min_contributors: int


def _verified(
    agent: Agent[Any], sealed: Sealed, sealer: Sealer, verify: Verification, after_round: int
) -> tuple[np.ndarray, float, int]:
    """``(Σ w·v, Σ w, round)`` of one sum, or an :class:`InvalidUpdateError` with a fixed
    text: :class:`UnverifiedAggregateError` for the binding and tags, and the sealer's own
    refusal of implausible values (non-finite, weight not positive)."""
    binding = Binding.from_json(sealed.binding) if sealed.binding else None
    if (
        binding is None
        or binding.run_id != verify.run_id
        or binding.agent != agent.name
        or not after_round < binding.server_round < verify.before_round
    ):
        raise UnverifiedAggregateError(
            "the sealed model is not bound to this run, agent and an earlier round; not using it"
        )
    summed, weight, found = open_payload(sealer.open_payload(sealed))
    check_tags(
        found,
        key=sealer.binding_key,
        binding=binding,
        min_contributors=verify.min_contributors,
    )
    return summed, weight, binding.server_round


def open_global(
    agent: Agent[Any],
    history: Sequence[Sealed],
    sealer: Sealer,
    *,
    seed: int,
    verify: Verification | None = None,
    base: int = 0,
    base_digest: str = "",
    memo_dir: Path | None = None,
) -> np.ndarray:
    """The global vector, rebuilt MSP-side from the sealed round sums (needs the secret key).

    With ``verify`` (an MSP opening what the coordinator sent: always), every sum is first
    proven to be a true aggregate (:class:`Verification`); anything else raises
    :class:`~meshfl.secure.binding.UnverifiedAggregateError`, whose text is fixed, and the
    model is not used. ``verify=None`` is for a key holder opening sums it produced itself.

    Agents that build on the previous model replay every round's sum; an MSP process keeps
    the vectors it opened last (keyed by agent, config, seed, verification, the opener's
    key set and a hash chain over the sums), so round ``r`` opens only the newest sum
    rather than all ``r``. With ``memo_dir`` (a deployed MSP, one process per message) the
    last one is kept on disk too.

    ``history`` may be the tail of the model's sums: ``base`` earlier ones, whose hash
    chain is ``base_digest`` (:func:`history_digest`), are left out of the message, and
    this MSP must have opened them before; else :class:`MissingHistoryError`.
    """
    # A prefix verified once stays verified for the same run and floor; only ``before_round``
    # moves, and a memo hit must still lie before it (checked below).
    trust = "" if verify is None else f"{verify.run_id}:{verify.min_contributors}"
    # The opener's key set too: another key set's key must fail to open, not hit the memo.
    opener = sealer.key_id
    scope = (
        f"{agent.name}:{agent.config.model_dump_json()}:{seed}:{verify is not None}:{trust}"
        f":{opener}"
    )
    digests = [base_digest]  # digests[i]: the chain over the first base + i sums
    for sealed in history:
        digests.append(_digest(digests[-1], sealed))
    start, vector, last_round = _remembered(scope, digests, verify, memo_dir)
    if vector is None:
        if base:
            raise MissingHistoryError(
                f"the message leaves out the first {base} sums of the {agent.name} model, "
                "and this MSP has not opened them; it needs the whole history"
            )
        vector, last_round = agent.init_vector(seed=seed), 0
    for i in range(start, len(history)):
        if verify is not None:
            summed, total_weight, last_round = _verified(
                agent, history[i], sealer, verify, last_round
            )
        else:
            summed, total_weight, _ = open_payload(sealer.open(history[i]))
        vector = np.asarray(
            agent.combine(vector, summed, total_weight, server_round=base + i + 1), dtype=np.float64
        )
    if start < len(history):
        _remember(scope, digests[-1], vector, last_round, memo_dir)
    return vector


def _remembered(
    scope: str, digests: list[str], verify: Verification | None, memo_dir: Path | None
) -> tuple[int, np.ndarray | None, int]:
    """``(i, vector, round)`` of the longest prefix (``digests[i]``) opened before, if any.

    ``i = 0`` is the part left out of the message (nothing, without a base). A prefix opened
    under verification must end before the sums still to be verified.
    """

    def usable(hit: tuple[np.ndarray, int]) -> bool:
        return verify is None or hit[1] < verify.before_round

    with _opened_lock:
        for i in range(len(digests) - 1, -1, -1):
            hit = _opened.get((scope, digests[i])) if digests[i] else None
            if hit is not None and usable(hit):
                _opened.move_to_end((scope, digests[i]))
                return i, hit[0].copy(), hit[1]
    stored = _read_memo(scope, memo_dir)
    if stored is not None and stored[0] in digests and usable(stored[1:]):
        return digests.index(stored[0]), stored[1], stored[2]
    return 0, None, 0


def _memo_file(scope: str, memo_dir: Path) -> Path:
    return memo_dir / f"{hashlib.sha256(scope.encode()).hexdigest()[:32]}.npz"


def _read_memo(scope: str, memo_dir: Path | None) -> tuple[str, np.ndarray, int] | None:
    """The opened model a deployed MSP kept on disk for ``scope``: (digest, vector, round)."""
    if memo_dir is None or not _memo_file(scope, memo_dir).is_file():
        return None
    try:
        with np.load(_memo_file(scope, memo_dir), allow_pickle=False) as memo:
            return str(memo["digest"]), np.asarray(memo["vector"]), int(memo["round"])
    except (OSError, ValueError, KeyError) as err:  # damaged: open the history again
        log.warning("ignoring the damaged model memo in %s: %s", memo_dir, err)
        return None


def _remember(
    scope: str, digest: str, vector: np.ndarray, last_round: int, memo_dir: Path | None
) -> None:
    with _opened_lock:
        _opened[(scope, digest)] = (vector.copy(), last_round)
        while len(_opened) > _OPENED_MAX:
            _opened.popitem(last=False)
    if memo_dir is not None:
        memo_dir.mkdir(parents=True, exist_ok=True)
        target = _memo_file(scope, memo_dir)
        partial = target.with_suffix(".partial.npz")
        np.savez(partial, digest=np.array(digest), vector=vector, round=np.array(last_round))
        os.replace(partial, target)


def reveal_global_model(
    agent: Agent[Any],
    history: Sequence[Sealed],
    sealer: Sealer,
    *,
    seed: int,
    acknowledge_risk: bool = False,
) -> np.ndarray:
    """Decrypt the global model for publication outside the mesh; an explicit, logged act.

    Anyone holding the published model can query it; an MSP that also sees the model of the
    round before can difference the two and learn the sum of that round's updates. Publish
    only models whose training was differentially private, or accept that risk.
    """
    if not acknowledge_risk:
        raise MeshflError(
            "Publishing a plaintext global model hands every round's aggregate to whoever "
            "reads it (two consecutive versions differ by the round's summed updates). "
            "Call again with acknowledge_risk=True if that is intended; see "
            "docs/threat-model.md."
        )
    log.warning(
        "publishing the plaintext global model of %s (%d sealed sums): it leaves the "
        "protection of encryption",
        agent.name,
        len(history),
    )
    return open_global(agent, history, sealer, seed=seed)
