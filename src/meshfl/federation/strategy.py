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
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
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
from meshfl.privacy.noise import report_sampling
from meshfl.privacy.snr import median_snr
from meshfl.secure.aggregate import PAYLOAD_EXTRA
from meshfl.secure.backend import Aggregator, Sealed
from meshfl.secure.binding import Binding

__all__ = ["AgentStrategy", "RoundOutcome", "weighted_mean"]

log = logging.getLogger("meshfl.federation")

_ENTROPY = random.SystemRandom()
"""Which MSPs take part is drawn from OS entropy: no seed or config value predicts it."""


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
    snr: float | None = None
    """Lower median of the accepted updates' coarse signal-to-noise estimates (a power of
    2), when the MSPs sent any (sample-level DP)."""


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
        self.update_length = agent.update_size(agent.init_vector(seed=seed)) + PAYLOAD_EXTRA
        self.outcome = RoundOutcome()
        self.epsilon_by_msp: dict[int, float] = {}
        """Mirror of each MSP's ε spent on this agent, as the MSPs report it."""
        self.msp_of_node: dict[int, int] = {}
        """The MSP id each node reported (its partition id in simulations)."""

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

    def _sample(self, grid: Grid, fraction: float, *, poisson: bool = False) -> list[int]:
        """MSPs for one phase, drawn from OS entropy (no seed reaches it).

        With ``poisson`` each MSP joins independently with probability ``fraction``: the
        sampling that MSP-level privacy accounting assumes, at exactly the rate the MSPs
        record. Otherwise ``max(min_msps, ⌈fraction·N⌉)`` MSPs without replacement.
        """
        nodes = self._connected(grid)
        if poisson:
            chosen = [node for node in nodes if _ENTROPY.random() < fraction]
            # the rate actually used, for a test's audit (record_releases_for_tests); else a no-op
            report_sampling(
                "msp",
                rate=fraction,
                population=len(nodes),
                drawn=len(chosen),
                run=self.context.run_id,
            )
            return chosen
        k = min(len(nodes), max(self.min_msps, math.ceil(fraction * len(nodes))))
        return sorted(_ENTROPY.sample(nodes, k))

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
                self._with_mirror(content, node) if phase == "train" else content,
                dst_node_id=node,
                message_type=f"{phase}.{self.agent.name}",
                group_id=f"{self.agent.name}:{server_round}",
            )
            for node in nodes
        ]

    def _with_mirror(self, content: RecordDict, node: int) -> RecordDict:
        """Under DP, the ε this coordinator holds for ``node``: an MSP whose ledger shows
        less refuses to train (its ledger lost events, see PrivacyLedger.check_against)."""
        msp = self.msp_of_node.get(node)
        if self.context.privacy is None or msp not in self.epsilon_by_msp:
            return content
        mirror = ConfigRecord({"epsilon": float(self.epsilon_by_msp[msp])})
        return RecordDict({**dict(content.items()), "mirror": mirror})

    # -- training ------------------------------------------------------------------------
    def configure_train(self, server_round: int, grid: Grid) -> Iterable[Message]:
        """``train.<agent>`` messages to this round's sampled MSPs."""
        privacy = self.context.privacy
        poisson = privacy is not None and privacy.unit == "msp"
        nodes = self._sample(grid, self.fraction_train, poisson=poisson)
        self.outcome = RoundOutcome(sampled=len(nodes))
        if poisson and len(nodes) < self.min_msps:
            # Each MSP would add 1/min_msps of the noise: fewer would under-noise the sum.
            # Nothing is sent, so nothing is trained or spent.
            self.outcome.skipped_reason = (
                f"the Poisson draw at rate {self.fraction_train:g} sampled "
                f"{len(nodes)} MSP(s), fewer than min_msps={self.min_msps} (each adds "
                f"1/{self.min_msps} of the noise); skipped before any MSP trained"
            )
            log.warning(
                "%s round %d: %s", self.agent.name, server_round, self.outcome.skipped_reason
            )
            return []
        return self._messages("train", nodes, server_round)

    def _binding(self, server_round: int, contributors: tuple[int, ...] = ()) -> Binding:
        return Binding(
            self.context.run_id,
            self.agent.name,
            server_round,
            self.context.noise_shares,
            contributors,
        )

    def _check_binding(self, server_round: int, node: int, sealed: Sealed, seen: set[int]) -> None:
        """Drop, by name, an update bound to another run, agent or round, or a second one."""
        if node in seen:
            raise InvalidUpdateError("a second reply from the same MSP in this round (duplicate)")
        if not sealed.binding:
            raise InvalidUpdateError("the update is not bound to a run, agent and round")
        if Binding.from_json(sealed.binding) != self._binding(server_round):
            raise InvalidUpdateError(
                "the update is bound to another run, agent or round (stale or replayed)"
            )

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> bool:
        """Check and add the sealed updates; returns whether the global model changed.

        A malformed, foreign, stale or duplicate reply is dropped by name and the round goes
        on. The sum is bound to the nodes it adds up, which MSPs check against its tags
        before they use it (:mod:`meshfl.secure.binding`).
        """
        accepted: list[Sealed] = []
        contributors: list[int] = []
        metrics: list[dict[str, float]] = []
        snrs: list[float | None] = []
        for reply in replies:
            node = int(reply.metadata.src_node_id)
            try:
                decoded = decode_update(reply)
                if isinstance(decoded, Decline):
                    self._declined(server_round, decoded)
                    continue
                room = getattr(self.aggregator, "max_contributors", None)
                if room is not None and len(accepted) >= room:
                    raise InvalidUpdateError(
                        f"the round already holds max_contributors={room} updates, as many "
                        "as one sum under this key set adds up without leaving its range"
                    )
                self.aggregator.check(decoded.sealed, expected_length=self.update_length)
                self._check_binding(server_round, node, decoded.sealed, set(contributors))
            except Exception as err:  # whatever a reply holds, it is dropped, never raised
                reason = (
                    str(err)
                    if isinstance(err, InvalidUpdateError)
                    else f"the reply could not be checked ({type(err).__name__})"
                )
                log.warning(
                    "%s round %d: dropped the reply of MSP node %d: %s",
                    self.agent.name,
                    server_round,
                    node,
                    reason,
                )
                self.outcome.dropped.append((node, reason))
                continue
            msp = decoded.msp if decoded.msp >= 0 else node
            self.msp_of_node[node] = msp
            self.epsilon_by_msp[msp] = max(decoded.epsilon_spent, self.epsilon_by_msp.get(msp, 0.0))
            self.outcome.bytes_received += decoded.sealed.nbytes
            accepted.append(decoded.sealed)
            contributors.append(node)
            metrics.append(decoded.metrics)
            snrs.append(decoded.snr)
        self.outcome.accepted = len(accepted)
        self.outcome.snr = median_snr(snrs)
        if self.outcome.skipped_reason is not None:
            return False
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
        total = replace(
            self.aggregator.add(accepted),
            binding=self._binding(server_round, tuple(contributors)).to_json(),
        )
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
        self.epsilon_by_msp[decline.msp] = max(
            decline.epsilon_spent, self.epsilon_by_msp.get(decline.msp, 0.0)
        )
        self.outcome.declined.append((decline.msp, decline.reason))

    def _skip(self, server_round: int, reason: str) -> bool:
        self.outcome.skipped_reason = reason
        log.warning("%s round %d: %s", self.agent.name, server_round, reason)
        return False

    # -- evaluation ----------------------------------------------------------------------
    def configure_evaluate(self, server_round: int, grid: Grid) -> Iterable[Message]:
        """``evaluate.<agent>`` messages carrying the current sealed global model."""
        nodes = self._sample(grid, self.fraction_evaluate)
        return self._messages("evaluate", nodes, server_round)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> dict[str, float]:
        """Metrics averaged over MSPs, weighted by their held-out examples."""
        metrics = []
        for reply in replies:
            try:
                metrics.append(decode_evaluation(reply))
            except Exception as err:  # whatever a reply holds, it is dropped, never raised
                log.warning(
                    "%s round %d: dropped the evaluation of MSP node %d: %s",
                    self.agent.name,
                    server_round,
                    int(reply.metadata.src_node_id),
                    err
                    if isinstance(err, InvalidUpdateError)
                    else f"the reply could not be read ({type(err).__name__})",
                )
        return weighted_mean(metrics)
