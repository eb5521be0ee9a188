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
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshfl.agents.base import Agent
from meshfl.config.errors import MeshflError
from meshfl.secure.aggregate import open_payload
from meshfl.secure.backend import Sealed, Sealer
from meshfl.secure.binding import Binding, UnverifiedAggregateError, check_tags

__all__ = ["Verification", "next_history", "open_global", "reveal_global_model"]

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
) -> np.ndarray:
    """The global vector, rebuilt MSP-side from the sealed round sums (needs the secret key).

    With ``verify`` (an MSP opening what the coordinator sent: always), every sum is first
    proven to be a true aggregate (:class:`Verification`); anything else raises
    :class:`~meshfl.secure.binding.UnverifiedAggregateError`, whose text is fixed, and the
    model is not used. ``verify=None`` is for a key holder opening sums it produced itself.

    Agents that build on the previous model replay every round's sum; an MSP process keeps
    the vectors it opened last (keyed by agent, config, seed, verification and a hash chain
    over the sums), so round ``r`` opens only the newest sum rather than all ``r``.
    """
    # A prefix verified once stays verified for the same run and floor; only ``before_round``
    # moves, and a memo hit must still lie before it (checked below).
    trust = "" if verify is None else f"{verify.run_id}:{verify.min_contributors}"
    scope = f"{agent.name}:{agent.config.model_dump_json()}:{seed}:{verify is not None}:{trust}"
    digests: list[str] = []
    chain = scope
    for sealed in history:
        chain = _digest(chain, sealed)
        digests.append(chain)
    start, vector = 0, None
    with _opened_lock:
        for i in range(len(digests), 0, -1):
            hit = _opened.get((scope, digests[i - 1]))
            if hit is not None and (verify is None or hit[1] < verify.before_round):
                _opened.move_to_end((scope, digests[i - 1]))
                start, vector, last_round = i, hit[0].copy(), hit[1]
                break
    if vector is None:
        vector, last_round = agent.init_vector(seed=seed), 0
    for i in range(start, len(history)):
        if verify is not None:
            summed, total_weight, last_round = _verified(
                agent, history[i], sealer, verify, last_round
            )
        else:
            summed, total_weight, _ = open_payload(sealer.open(history[i]))
        vector = np.asarray(
            agent.combine(vector, summed, total_weight, server_round=i + 1), dtype=np.float64
        )
    if history and start < len(history):
        with _opened_lock:
            _opened[(scope, digests[-1])] = (vector.copy(), last_round)
            while len(_opened) > _OPENED_MAX:
                _opened.popitem(last=False)
    return vector


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
