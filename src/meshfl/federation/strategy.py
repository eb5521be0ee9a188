"""The per-agent server strategy: sample MSPs, check and add their sealed updates, average metrics.

It follows the shape of Flower's :class:`flwr.serverapp.strategy.Strategy` (configure and
aggregate, for training and for evaluation) but does not subclass it: Flower's strategies
hand the global model around as a plaintext ``ArrayRecord``, and a meshfl coordinator never
holds a readable model. Its global model is a list of sealed round sums
(:mod:`meshfl.federation.sealed_model`); adding ciphertexts is all it can do, and all it does.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Message
from flwr.serverapp import Grid

from meshfl.agents.base import Agent
from meshfl.config.errors import InvalidUpdateError
from meshfl.federation.records import (
    Decline,
    RoundContext,
    decode_evaluation,
    decode_update,
    encode_instructions,
)
from meshfl.federation.sealed_model import next_history
from meshfl.secure.backend import Aggregator, Sealed

__all__ = ["AgentStrategy", "RoundOutcome", "weighted_mean"]

log = logging.getLogger("meshfl.federation")


@dataclass
class RoundOutcome:
    """What happened in one round of one agent (the server's view; no update content)."""

    sampled: int = 0
    accepted: int = 0
    dropped: list[tuple[int, str]] = field(default_factory=list)
    declined: list[tuple[int, str]] = field(default_factory=list)
    train_metrics: dict[str, float] = field(default_factory=dict)
    skipped_reason: str | None = None
    bytes_received: int = 0


def weighted_mean(
    metrics: list[dict[str, float]], weight_key: str = "examples"
) -> dict[str, float]:
    """Average each metric over MSPs weighted by ``weight_key``; the weights themselves add up."""
    if not metrics:
        return {}
    weights = np.array([m.get(weight_key, 1.0) for m in metrics], dtype=np.float64)
    keys = sorted(set().union(*metrics))
    out: dict[str, float] = {}
    for key in keys:
        present = [(m[key], w) for m, w in zip(metrics, weights, strict=True) if key in m]
        values, ws = np.array([v for v, _ in present]), np.array([w for _, w in present])
        out[key] = float(ws.sum()) if key == weight_key else float(np.dot(values, ws) / ws.sum())
    return out


class AgentStrategy:
    """Federated rounds for one agent, on sealed updates.

    Parameters
    ----------
    agent : Agent
        The agent trained by this strategy.
    aggregator : Aggregator
        Checks and adds sealed updates (CKKS with the public context, or the plaintext twin).
    fraction_train : float
        Fraction of connected MSPs sampled for training each round.
    min_msps : int
        Fewest valid updates a round needs; with fewer, the global model is kept.
    fraction_evaluate : float
        Fraction of MSPs asked to evaluate each new global model.
    seed : int
        Seeds MSP sampling and the initial model; forwarded to MSPs for their randomness.
    min_available : int
        MSPs that must be connected before a round starts.
    connect_timeout : float
        Seconds to wait for them; after that the round starts with those connected.
    context : RoundContext, optional
        Run id, planned rounds and privacy settings sent to every MSP.
    """

    def __init__(
        self,
        agent: Agent[Any],
        aggregator: Aggregator,
        *,
        fraction_train: float = 1.0,
        min_msps: int = 1,
        fraction_evaluate: float = 1.0,
        seed: int = 0,
        min_available: int = 1,
        connect_timeout: float = 300.0,
        context: RoundContext | None = None,
    ):
        self.agent = agent
        self.aggregator = aggregator
        self.fraction_train = fraction_train
        self.min_msps = min_msps
        self.fraction_evaluate = fraction_evaluate
        self.seed = seed
        self.min_available = min_available
        self.connect_timeout = connect_timeout
        self.context = context or RoundContext()
        self.history: list[Sealed] = []
        """The sealed round sums that make the current global model."""
        self.versions: list[Sealed] = []
        """Every round's sealed sum, in order: the stored model versions."""
        self.update_length = agent.update_size(agent.init_vector(seed=seed)) + 1
        self.outcome = RoundOutcome()
        self.epsilon_by_msp: dict[int, float] = {}
        """Mirror of each MSP's ε spent on this agent, as the MSPs report it."""

    # -- sampling ------------------------------------------------------------------------
    def _connected(self, grid: Grid) -> list[int]:
        deadline = time.monotonic() + self.connect_timeout
        while len(nodes := sorted(int(n) for n in grid.get_node_ids())) < self.min_available:
            if time.monotonic() > deadline:
                log.warning(
                    "%s: only %d of %d MSPs connected after %.0f s; going on with them",
                    self.agent.name,
                    len(nodes),
                    self.min_available,
                    self.connect_timeout,
                )
                break
            time.sleep(0.2)
        return nodes

    def _sample(self, grid: Grid, fraction: float, server_round: int, salt: int) -> list[int]:
        nodes = self._connected(grid)
        k = min(len(nodes), max(self.min_msps, math.ceil(fraction * len(nodes))))
        rng = np.random.default_rng([self.seed, server_round, salt])
        # Sample positions, not ids: node ids are unsigned 64-bit and must not pass
        # through a numpy array (they would become floats and lose their low bits).
        picks: Any = rng.choice(len(nodes), size=k, replace=False) if nodes else []
        return sorted(nodes[int(i)] for i in picks)

    def _messages(self, phase: str, nodes: list[int], server_round: int) -> list[Message]:
        content = encode_instructions(
            self.agent,
            self.history,
            server_round=server_round,
            seed=self.seed,
            context=self.context,
        )
        return [
            Message(
                content,
                dst_node_id=node,
                message_type=f"{phase}.{self.agent.name}",
                group_id=f"{self.agent.name}:{server_round}",
            )
            for node in nodes
        ]

    # -- training ------------------------------------------------------------------------
    def configure_train(self, server_round: int, grid: Grid) -> Iterable[Message]:
        """``train.<agent>`` messages to this round's sampled MSPs."""
        nodes = self._sample(grid, self.fraction_train, server_round, salt=0)
        self.outcome = RoundOutcome(sampled=len(nodes))
        return self._messages("train", nodes, server_round)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> bool:
        """Check and add the sealed updates; returns whether the global model changed."""
        accepted: list[Sealed] = []
        metrics: list[dict[str, float]] = []
        for reply in replies:
            node = int(reply.metadata.src_node_id)
            try:
                decoded = decode_update(reply)
                if isinstance(decoded, Decline):
                    self._declined(server_round, decoded)
                    continue
                self.aggregator.check(decoded.sealed, expected_length=self.update_length)
            except InvalidUpdateError as err:
                log.warning(
                    "%s round %d: dropped the reply of MSP node %d: %s",
                    self.agent.name,
                    server_round,
                    node,
                    err,
                )
                self.outcome.dropped.append((node, str(err)))
                continue
            self.epsilon_by_msp[decoded.msp if decoded.msp >= 0 else node] = decoded.epsilon_spent
            self.outcome.bytes_received += decoded.sealed.nbytes
            accepted.append(decoded.sealed)
            metrics.append(decoded.metrics)
        self.outcome.accepted = len(accepted)
        if self.outcome.declined and not accepted:
            return self._skip(
                server_round,
                f"all {len(self.outcome.declined)} MSP(s) that replied declined "
                "(privacy budget spent); the global model is unchanged",
            )
        if len(accepted) < self.min_msps:
            return self._skip(
                server_round,
                f"only {len(accepted)} valid update(s), fewer than min_msps={self.min_msps}; "
                "the global model is unchanged",
            )
        total = self.aggregator.add(accepted)
        self.versions.append(total)
        self.history = next_history(self.agent, self.history, total)
        self.outcome.train_metrics = weighted_mean(metrics)
        return True

    def _declined(self, server_round: int, decline: Decline) -> None:
        log.warning(
            "%s round %d: MSP %d declined: %s",
            self.agent.name,
            server_round,
            decline.msp,
            decline.reason,
        )
        self.epsilon_by_msp[decline.msp] = decline.epsilon_spent
        self.outcome.declined.append((decline.msp, decline.reason))

    def _skip(self, server_round: int, reason: str) -> bool:
        self.outcome.skipped_reason = reason
        log.warning("%s round %d: %s", self.agent.name, server_round, reason)
        return False

    # -- evaluation ----------------------------------------------------------------------
    def configure_evaluate(self, server_round: int, grid: Grid) -> Iterable[Message]:
        """``evaluate.<agent>`` messages carrying the current sealed global model."""
        nodes = self._sample(grid, self.fraction_evaluate, server_round, salt=1)
        return self._messages("evaluate", nodes, server_round)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> dict[str, float]:
        """Metrics averaged over MSPs, weighted by their held-out examples."""
        metrics = []
        for reply in replies:
            try:
                metrics.append(decode_evaluation(reply))
            except InvalidUpdateError as err:
                log.warning(
                    "%s round %d: dropped the evaluation of MSP node %d: %s",
                    self.agent.name,
                    server_round,
                    int(reply.metadata.src_node_id),
                    err,
                )
        return weighted_mean(metrics)
