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
from typing import Any

import numpy as np

from meshfl.agents.base import Agent
from meshfl.config.errors import MeshflError
from meshfl.secure.aggregate import open_payload
from meshfl.secure.backend import Sealed, Sealer

__all__ = ["next_history", "open_global", "reveal_global_model"]

log = logging.getLogger("meshfl.secure")


def next_history(agent: Agent[Any], history: Sequence[Sealed], new_sum: Sealed) -> list[Sealed]:
    """The sealed sums that define the global model after ``new_sum`` joins ``history``."""
    return [*history, new_sum] if agent.combine_uses_previous else [new_sum]


_OPENED_MAX = 32
_opened: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_opened_lock = threading.Lock()


def _digest(previous: str, sealed: Sealed) -> str:
    h = hashlib.sha256(previous.encode())
    h.update(f"{sealed.backend}:{sealed.key_id}:{sealed.length}".encode())
    for chunk in sealed.chunks:
        h.update(hashlib.sha256(chunk).digest())
    return h.hexdigest()


def open_global(
    agent: Agent[Any], history: Sequence[Sealed], sealer: Sealer, *, seed: int
) -> np.ndarray:
    """The global vector, rebuilt MSP-side from the sealed round sums (needs the secret key).

    Agents that build on the previous model replay every round's sum; an MSP process keeps
    the vectors it opened last (keyed by agent, config, seed and a hash chain over the
    sums), so round ``r`` opens only the newest sum rather than all ``r``.
    """
    scope = f"{agent.name}:{agent.config.model_dump_json()}:{seed}"
    digests: list[str] = []
    chain = scope
    for sealed in history:
        chain = _digest(chain, sealed)
        digests.append(chain)
    start, vector = 0, None
    with _opened_lock:
        for i in range(len(digests), 0, -1):
            hit = _opened.get((scope, digests[i - 1]))
            if hit is not None:
                _opened.move_to_end((scope, digests[i - 1]))
                start, vector = i, hit.copy()
                break
    if vector is None:
        vector = agent.init_vector(seed=seed)
    for i in range(start, len(history)):
        summed, total_weight = open_payload(sealer.open(history[i]))
        vector = np.asarray(
            agent.combine(vector, summed, total_weight, server_round=i + 1), dtype=np.float64
        )
    if history and start < len(history):
        with _opened_lock:
            _opened[(scope, digests[-1])] = vector.copy()
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
