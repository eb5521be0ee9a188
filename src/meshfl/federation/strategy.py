"""The per-agent server strategy: sample MSPs, sum their payloads, combine, average metrics.

It implements Flower's :class:`flwr.serverapp.strategy.Strategy` interface, so it also runs
under ``Strategy.start``; meshfl's own round driver (:mod:`meshfl.federation.server_app`)
calls the same four methods and adds progress reporting and a per-round history.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, MetricRecordValues
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from meshfl.agents.base import Agent
from meshfl.config.errors import InvalidUpdateError
from meshfl.federation.records import (
    Decline,
    RoundContext,
    decode_evaluation,
    decode_update,
    encode_instructions,
)
from meshfl.secure.aggregate import open_payload, sum_payloads

__all__ = ["AgentStrategy", "RoundOutcome"]

log = logging.getLogger("meshfl.federation")


@dataclass
class RoundOutcome:
    """What happened in one round of one agent (the server's view; no update content)."""

    sampled: int = 0
    accepted: int = 0
    dropped: list[tuple[int, str]] = field(default_factory=list)
    train_metrics: dict[str, float] = field(default_factory=dict)
    declined: list[tuple[int, str]] = field(default_factory=list)
    skipped_reason: str | None = None


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


def _record(metrics: dict[str, float]) -> MetricRecord:
    return MetricRecord(cast(dict[str, MetricRecordValues], dict(metrics)))


class AgentStrategy(Strategy):
    """Federated rounds for one agent.

    Parameters
    ----------
    agent : Agent
        The agent trained by this strategy.
    fraction_train : float
        Fraction of connected MSPs sampled for training each round.
    min_msps : int
        Fewest valid replies a round needs; with fewer, the global model is kept.
    fraction_evaluate : float
        Fraction of MSPs asked to evaluate each new global model.
    seed : int
        Seeds MSP sampling and is forwarded to MSPs for their local randomness.
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
        *,
        fraction_train: float = 1.0,
        min_msps: int = 1,
        fraction_evaluate: float = 1.0,
        seed: int = 0,
        min_available: int = 1,
        connect_timeout: float = 300.0,
        context: RoundContext | None = None,
    ):
        self.min_available = min_available
        self.connect_timeout = connect_timeout
        self.agent = agent
        self.fraction_train = fraction_train
        self.min_msps = min_msps
        self.fraction_evaluate = fraction_evaluate
        self.seed = seed
        self.context = context or RoundContext()
        self.vector = np.zeros(0)
        self.outcome = RoundOutcome()
        self.epsilon_by_msp: dict[int, float] = {}
        """Mirror of each MSP's ε spent on this agent, as the MSPs report it."""

    # -- helpers -----------------------------------------------------------------------
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

    def _messages(
        self, phase: str, nodes: list[int], arrays: ArrayRecord, server_round: int
    ) -> list[Message]:
        self.vector = arrays["vector"].numpy()
        content = encode_instructions(
            self.agent,
            self.vector,
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

    # -- Flower's Strategy interface ----------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self._sample(grid, self.fraction_train, server_round, salt=0)
        self.outcome = RoundOutcome(sampled=len(nodes))
        return self._messages("train", nodes, arrays, server_round)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        expected = self.agent.update_size(self.vector) + 1
        payloads, metrics = [], []
        for reply in replies:
            node = int(reply.metadata.src_node_id)
            try:
                decoded = decode_update(reply, expected_size=expected)
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
            key = decoded.msp if decoded.msp >= 0 else node
            self.epsilon_by_msp[key] = decoded.epsilon_spent
            if isinstance(decoded, Decline):
                log.warning(
                    "%s round %d: MSP %d declined: %s",
                    self.agent.name,
                    server_round,
                    key,
                    decoded.reason,
                )
                self.outcome.declined.append((key, decoded.reason))
                continue
            payloads.append(decoded.payload)
            metrics.append(decoded.metrics)
        self.outcome.accepted = len(payloads)
        if self.outcome.declined and not payloads:
            self.outcome.skipped_reason = (
                f"all {len(self.outcome.declined)} MSP(s) that replied declined "
                "(privacy budget spent); the global model is unchanged"
            )
            log.warning(
                "%s round %d: %s", self.agent.name, server_round, self.outcome.skipped_reason
            )
            return None, None
        if len(payloads) < self.min_msps:
            self.outcome.skipped_reason = (
                f"only {len(payloads)} valid update(s), fewer than min_msps={self.min_msps}; "
                "the global model is unchanged"
            )
            log.warning(
                "%s round %d: %s", self.agent.name, server_round, self.outcome.skipped_reason
            )
            return None, None
        summed, total_weight = open_payload(sum_payloads(payloads))
        new = self.agent.combine(self.vector, summed, total_weight, server_round=server_round)
        self.vector = np.asarray(new, dtype=np.float64)
        self.outcome.train_metrics = weighted_mean(metrics)
        return ArrayRecord({"vector": Array(self.vector)}), _record(self.outcome.train_metrics)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self._sample(grid, self.fraction_evaluate, server_round, salt=1)
        return self._messages("evaluate", nodes, arrays, server_round)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
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
        return _record(weighted_mean(metrics)) if metrics else None

    def summary(self) -> None:
        log.info(
            "AgentStrategy(%s): fraction_train=%s, min_msps=%d, fraction_evaluate=%s",
            self.agent.name,
            self.fraction_train,
            self.min_msps,
            self.fraction_evaluate,
        )
