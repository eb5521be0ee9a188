"""The per-agent server strategy: sample MSPs, check and add their sealed updates, average metrics.

It follows the shape of Flower's :class:`flwr.serverapp.strategy.Strategy` (configure and
aggregate, for training and for evaluation) but does not subclass it: Flower's strategies
hand the global model around as a plaintext ``ArrayRecord``, and a meshfl coordinator never
holds a readable model. Its global model is a list of sealed round sums
(:mod:`meshfl.federation.sealed_model`); adding ciphertexts is all it can do, and all it does.

As in Flower, ``aggregate_train`` returns what the round gave (a :class:`RoundResult`: the
new sealed sum or None, and the averaged training metrics) and :meth:`AgentStrategy.start`
owns the round loop, returning an :class:`AgentRun`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from meshfl.agents.base import Agent
from meshfl.config.errors import InvalidUpdateError
from meshfl.federation.errors import E_HISTORY, reply_error_kind
from meshfl.federation.masked_round import (
    KEYS_ACTION,
    UNMASK_ACTION,
    decode_key_reply,
    decode_shares,
    decode_unmask_reply,
    encode_key_request,
    encode_plan,
    encode_unmask_request,
)
from meshfl.federation.records import (
    Decline,
    RoundContext,
    decode_evaluation,
    decode_update,
    encode_instructions,
)
from meshfl.federation.sealed_model import history_digest, next_history
from meshfl.privacy.noise import report_sampling
from meshfl.privacy.snr import coarse, median_snr, msp_level_snr
from meshfl.secure.aggregate import PAYLOAD_EXTRA
from meshfl.secure.backend import Aggregator, Sealed
from meshfl.secure.binding import Binding
from meshfl.secure.masking import DEFAULT_DROPOUT, threshold_for
from meshfl.secure.secagg import MIN_MASKED, MaskRecoveryError, Ring, RoundMasking, UnmaskReply

if TYPE_CHECKING:
    from meshfl.store.model_store import ModelStore

__all__ = [
    "AgentRun",
    "AgentStrategy",
    "RoundCallback",
    "RoundOutcome",
    "RoundResult",
    "weighted_mean",
]

log = logging.getLogger("meshfl.federation")

_ENTROPY = random.SystemRandom()
"""Which MSPs take part is drawn from OS entropy: no seed or config value predicts it."""


RoundCallback = Callable[[dict[str, Any]], None]
"""Called with each round's history record as soon as the round ends."""


@dataclass(frozen=True)
class RoundResult:
    """What one round of one agent's training gave (the server's view; no update content).

    :meth:`AgentStrategy.aggregate_train` returns it, as Flower's returns its aggregated
    arrays and metrics: ``sealed_sum`` is the new sealed round sum (None when the global
    model is unchanged) and ``train_metrics`` the MSPs' training metrics, averaged.
    """

    sampled: int = 0
    accepted: int = 0
    dropped: tuple[tuple[int, str], ...] = ()
    declined: tuple[tuple[int, str], ...] = ()
    no_reply: int = 0
    """Sampled MSPs whose reply never came (within the round's timeout)."""
    drop_kinds: dict[str, int] = field(default_factory=dict)
    """Dropped replies by kind: an MSP's error code (``E_DATA``...), ``flower_error``,
    ``malformed``, ``round_full``, ``bad_ciphertext``, ``bad_binding``."""
    train_metrics: dict[str, float] = field(default_factory=dict)
    skipped_reason: str | None = None
    bytes_received: int = 0
    snr: float | None = None
    """Lower median of the accepted updates' coarse signal-to-noise estimates (a power of
    2), when the MSPs sent any (sample-level DP)."""
    sealed_sum: Sealed | None = None
    """The round's sealed sum, bound to its contributors, when the global model changed."""
    masked: bool = False
    """Whether the round's updates were masked (:mod:`meshfl.secure.secagg`)."""
    mask_failure: str | None = None
    """Why a masked round's masks could not be removed (``unmask_shares``,
    ``unmask_pairwise``, ``unmask_keys``): the round failed closed, nothing was stored."""
    unmask_no_reply: int = 0
    """MSPs whose update is in the sum but that did not answer the unmask request."""

    @property
    def changed(self) -> bool:
        """Whether the round added a sum to the global model."""
        return self.sealed_sum is not None

    @property
    def all_declined(self) -> bool:
        """Whether MSPs declined (privacy budget spent) and none sent an update."""
        return bool(self.declined) and self.accepted == 0


RoundOutcome = RoundResult
"""The former name of :class:`RoundResult`."""


@dataclass
class AgentRun:
    """The outcome of a plan, as the coordinator holds it: sealed, with a per-round history."""

    agent: Agent[Any]
    seed: int
    sealed_history: list[Sealed] = field(default_factory=list)
    """The sealed round sums that make the final global model (open with an MSP's key)."""
    versions: list[Sealed] = field(default_factory=list)
    """Every round's sealed sum: the model versions the coordinator stored."""
    history: list[dict[str, Any]] = field(default_factory=list)
    epsilon_by_msp: dict[int, float] = field(default_factory=dict)
    stopped_reason: str | None = None
    results: list[RoundResult] = field(default_factory=list, repr=False)
    """Each round's :class:`RoundResult` (this run's rounds, not those resumed from a
    store): which MSPs' replies were dropped or declined and why, why a round was skipped."""


def _decline_kind(reason: str) -> str:
    """``masking`` for client_app's DECLINED_UNMASKED, else ``budget`` (its DECLINED)."""
    return "masking" if "only in masked rounds" in reason else "budget"


def _why_declined(declined: Iterable[tuple[int, str]]) -> str:
    """What the MSPs' fixed decline sentences say, in words for the run's log."""
    texts = {
        "budget": "its privacy budget is spent",
        "masking": "it takes part only in masked rounds and this plan does not mask updates",
    }
    return " or ".join(texts[k] for k in sorted({_decline_kind(r) for _, r in declined}))


@dataclass(frozen=True)
class _Draw:
    """What :meth:`AgentStrategy.configure_train` decided for the round it configured."""

    sampled: int = 0
    skipped_reason: str | None = None
    nodes: tuple[int, ...] = ()
    """The nodes sent a train message."""
    masking: RoundMasking | None = None
    grid: Grid | None = None
    mask_failure: str | None = None
    """``unmask_keys``: too few sampled MSPs gave their masking key; nothing was sent."""


@dataclass
class _Tally:
    """The replies of one round as :meth:`AgentStrategy.aggregate_train` sorts them."""

    accepted: list[Sealed] = field(default_factory=list)
    contributors: list[int] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    snrs: list[float | None] = field(default_factory=list)
    dropped: list[tuple[int, str]] = field(default_factory=list)
    declined: list[tuple[int, str]] = field(default_factory=list)
    drop_kinds: Counter[str] = field(default_factory=Counter)
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


HISTORY_CHUNK = 8
"""The most sums of the global model one message carries: a node that lacks more (a new
MSP, or one that restarted without its state) gets the history in messages of this many."""


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
    masking : bool
        Mask updates inside the ciphertexts (:mod:`meshfl.secure.secagg`) in every round
        that samples at least 3 MSPs; CKKS only (the plaintext twin has nothing to mask).
    masking_dropout : float
        Share of an MSP's neighbours that may vanish between sending and unmasking before
        the round fails closed; in [0, 0.5).
    masking_degree : int, optional
        Neighbours per MSP (default: everyone up to 24 MSPs, then ``3·log2(n)``).
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
        masking: bool = True,
        masking_dropout: float = DEFAULT_DROPOUT,
        masking_degree: int | None = None,
    ):
        threshold_for(3, masking_dropout)  # checks it, with a sentence naming it
        self.masking = bool(masking) and hasattr(aggregator, "shift")
        self.masking_dropout = masking_dropout
        self.masking_degree = masking_degree
        self.mask_keys: dict[int, bytes] = {}
        """Each node's X25519 public key for this run, as it advertised it."""
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
        self._draw = _Draw()
        """What configure_train decided for the round that aggregate_train adds up next."""
        self.epsilon_by_msp: dict[int, float] = {}
        """Mirror of each MSP's ε spent on this agent, as the MSPs report it."""
        self.msp_of_node: dict[int, int] = {}
        """The MSP id each node reported (its partition id in simulations)."""
        self.delivered: dict[int, int] = {}
        """How many sums of the global model each node has opened (it answered a message
        that carried them): later messages to it leave those out."""
        self._sent = 0
        """The length of the history the messages of the current phase describe."""
        self._chain: list[str] = [""]
        self._chained: list[Sealed] = []
        self._timeout: float | None = None
        """Each phase's wait for replies (``start``'s ``timeout``)."""

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

    def _messages(
        self,
        phase: str,
        nodes: list[int],
        server_round: int,
        masking: RoundMasking | None = None,
    ) -> list[Message]:
        """One message per node, carrying the sums of the global model it has not opened.

        A growing model (``combine_uses_previous``) would otherwise send every earlier
        round's sum in every message, and a round would cost more the later it comes.
        """
        self._sent = len(self.history)
        contents: dict[int, RecordDict] = {}
        messages = []
        for node in nodes:
            base = self._base(node)
            if base not in contents:
                contents[base] = encode_instructions(
                    self.agent,
                    self.history[base:],
                    server_round=server_round,
                    seed=self.seed,
                    context=self.context,
                    history_base=base,
                    history_digest=self._prefix_digest(base),
                )
            content = contents[base]
            if phase == "train":
                content = self._with_mirror(content, node)
            if masking is not None:
                content = encode_plan(content, masking.plan_for(node))
            messages.append(
                Message(
                    content,
                    dst_node_id=node,
                    message_type=f"{phase}.{self.agent.name}",
                    group_id=f"{self.agent.name}:{server_round}",
                )
            )
        return messages

    def _catch_up(self, grid: Grid, nodes: list[int], server_round: int, last_round: int) -> None:
        """Bring the nodes that lack more than :data:`HISTORY_CHUNK` sums up to date first.

        Each ``query.<agent>`` message carries the next chunk of sums (up to ``last_round``)
        after what the node holds; the node opens and keeps them, and answers with nothing.
        A node that fails or does not answer gets the rest in the phase's own message.
        """
        if not self.agent.combine_uses_previous:
            return
        lagging = [n for n in nodes if len(self.history) - self._base(n) > HISTORY_CHUNK]
        while lagging:
            contents: dict[int, RecordDict] = {}
            for base in {self._base(n) for n in lagging}:
                contents[base] = encode_instructions(
                    self.agent,
                    self.history[base : base + HISTORY_CHUNK],
                    server_round=last_round,
                    seed=self.seed,
                    context=self.context,
                    history_base=base,
                    history_digest=self._prefix_digest(base),
                )
            messages = [
                Message(
                    contents[self._base(node)],
                    dst_node_id=node,
                    message_type=f"query.{self.agent.name}",
                    group_id=f"{self.agent.name}:{server_round}",
                )
                for node in lagging
            ]
            reach = {node: self._base(node) + HISTORY_CHUNK for node in lagging}
            caught = set()
            for reply in grid.send_and_receive(messages, timeout=self._timeout):
                node = int(reply.metadata.src_node_id)
                if node in reach and not reply.has_error():
                    self.delivered[node] = reach[node]
                    caught.add(node)
            lagging = [
                n for n in lagging if n in caught and len(self.history) - reach[n] > HISTORY_CHUNK
            ]

    def _base(self, node: int) -> int:
        """How many leading sums the message to ``node`` may leave out."""
        if not self.agent.combine_uses_previous:  # the history is the latest sum only
            return 0
        return min(self.delivered.get(node, 0), len(self.history))

    def _prefix_digest(self, k: int) -> str:
        """The hash chain over the first ``k`` sums of the global model (kept in step)."""
        held = len(self._chained)
        if held > len(self.history) or any(
            a is not b for a, b in zip(self._chained, self.history, strict=False)
        ):
            self._chain, self._chained, held = [""], [], 0
        for sealed in self.history[held:]:
            self._chain.append(history_digest([sealed], self._chain[-1]))
            self._chained.append(sealed)
        return self._chain[k]

    def _note_delivery(self, reply: Message) -> None:
        """Record what a reply shows the node holds: the phase's history, or (E_HISTORY)
        nothing it can rely on."""
        node = int(reply.metadata.src_node_id)
        if not reply.has_error():
            self.delivered[node] = self._sent
        elif reply.error.code == E_HISTORY.code:
            self.delivered.pop(node, None)

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
        self._draw = _Draw(sampled=len(nodes))
        if poisson and len(nodes) < self.min_msps:
            # Each MSP would add 1/min_msps of the noise: fewer would under-noise the sum.
            # Nothing is sent, so nothing is trained or spent.
            reason = (
                f"the Poisson draw at rate {self.fraction_train:g} sampled "
                f"{len(nodes)} MSP(s), fewer than min_msps={self.min_msps} (each adds "
                f"1/{self.min_msps} of the noise); skipped before any MSP trained"
            )
            self._draw = replace(self._draw, skipped_reason=reason)
            log.warning("%s round %d: %s", self.agent.name, server_round, reason)
            return []
        self._catch_up(grid, nodes, server_round, last_round=server_round - 1)
        masking = None
        if self.masking and len(nodes) >= MIN_MASKED:
            keyed = self._with_keys(grid, nodes, server_round)
            if len(keyed) < MIN_MASKED:
                reason = (
                    f"masking: only {len(keyed)} of {len(nodes)} sampled MSP(s) gave their "
                    f"masking key in time; a masked round needs {MIN_MASKED}; the round failed "
                    "closed before any MSP trained, the global model is unchanged"
                )
                self._draw = replace(self._draw, skipped_reason=reason, mask_failure="unmask_keys")
                log.warning("%s round %d: %s", self.agent.name, server_round, reason)
                return []
            nodes = keyed
            masking = RoundMasking.draw(
                nodes,
                {n: self.mask_keys[n] for n in nodes},
                dropout=self.masking_dropout,
                degree=self.masking_degree,
            )
        self._draw = replace(self._draw, nodes=tuple(nodes), masking=masking, grid=grid)
        return self._messages("train", nodes, server_round, masking)

    def _with_keys(self, grid: Grid, nodes: list[int], server_round: int) -> list[int]:
        """The nodes whose masking key this strategy holds, asking those it lacks first.

        The keys live in this strategy's memory only, so a coordinator that restarted asks
        every MSP again in its first masked round (each answers with the key pair it keeps
        for the run, the one its neighbours pinned), at the moment MSPs are slowest: they
        reconnect and first drain what the killed coordinator had sent. A key that comes
        after the exchange's timeout is lost with it. So when fewer than
        :data:`~meshfl.secure.secagg.MIN_MASKED` MSPs are keyed, those that gave no reply at
        all are asked once more (an MSP that has caught up answers the new request at once),
        within ``connect_timeout``: an MSP without a key is not ready for a masked round, as
        one that has not connected.
        """
        deadline = time.monotonic() + self.connect_timeout
        lacking = [n for n in nodes if n not in self.mask_keys]
        unanswered = self._ask_keys(grid, lacking, server_round)
        keyed = [n for n in nodes if n in self.mask_keys]
        left = deadline - time.monotonic()
        if unanswered and len(keyed) < MIN_MASKED and left > 0:
            log.warning(
                "%s round %d: %d MSP(s) gave no masking key in time; asking them again",
                self.agent.name,
                server_round,
                len(unanswered),
            )
            timeout = left if self._timeout is None else min(self._timeout, left)
            self._ask_keys(grid, unanswered, server_round, timeout=timeout)
            keyed = [n for n in nodes if n in self.mask_keys]
        return keyed

    def _ask_keys(
        self, grid: Grid, lacking: list[int], server_round: int, *, timeout: float | None = None
    ) -> list[int]:
        """Ask ``lacking`` for their masking keys; returns those that sent no reply at all."""
        if not lacking:
            return []
        messages = [
            Message(
                encode_key_request(self.context.run_id),
                dst_node_id=node,
                message_type=f"query.{KEYS_ACTION}",
                group_id=f"{self.agent.name}:{server_round}:keys",
            )
            for node in lacking
        ]
        replied = set()
        wait = self._timeout if timeout is None else timeout
        for reply in grid.send_and_receive(messages, timeout=wait):
            node = int(reply.metadata.src_node_id)
            replied.add(node)
            try:
                key = decode_key_reply(reply)
            except Exception:  # whatever a reply holds, it is dropped, never raised
                log.warning(
                    "%s round %d: MSP node %d gave no masking key; it sits the round out",
                    self.agent.name,
                    server_round,
                    node,
                )
                continue
            if node in lacking:
                self.mask_keys[node] = key
        return [n for n in lacking if n not in replied]

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

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> RoundResult:
        """Check and add the sealed updates; returns the round's result.

        The result's ``sealed_sum`` is the new round sum, which this strategy's global model
        (``history``) and ``versions`` now end with, or None when the model is unchanged. A
        malformed, foreign, stale or duplicate reply is dropped by name and the round goes
        on. The sum is bound to the nodes it adds up, which MSPs check against its tags
        before they use it (:mod:`meshfl.secure.binding`).
        """
        draw, self._draw = self._draw, _Draw()
        tally = _Tally()
        seen = 0
        for reply in replies:
            seen += 1
            self._take(server_round, reply, tally, draw.masking)
        result = RoundResult(
            sampled=draw.sampled,
            no_reply=0 if draw.skipped_reason is not None else max(0, draw.sampled - seen),
            accepted=len(tally.accepted),
            dropped=tuple(tally.dropped),
            declined=tuple(tally.declined),
            drop_kinds=dict(tally.drop_kinds),
            skipped_reason=draw.skipped_reason,
            bytes_received=tally.bytes_received,
            snr=median_snr(tally.snrs),
            masked=draw.masking is not None,
            mask_failure=draw.mask_failure,
        )
        if draw.skipped_reason is not None:
            return result
        shortfall = self._shortfall(tally)
        if shortfall is not None:
            log.warning("%s round %d: %s", self.agent.name, server_round, shortfall)
            return replace(result, skipped_reason=shortfall)
        total = self.aggregator.add(tally.accepted)
        if draw.masking is not None:
            try:
                total, missing = self._unmask(server_round, draw, tally.contributors, total)
            except MaskRecoveryError as err:
                reason = f"masking: {err}; the round failed closed, the global model is unchanged"
                log.warning("%s round %d: %s", self.agent.name, server_round, reason)
                return replace(result, skipped_reason=reason, mask_failure=err.kind)
            result = replace(result, unmask_no_reply=missing)
        total = replace(
            total, binding=self._binding(server_round, tuple(tally.contributors)).to_json()
        )
        self.versions.append(total)
        self.history = next_history(self.agent, self.history, total)
        return replace(result, sealed_sum=total, train_metrics=weighted_mean(tally.metrics))

    def _unmask(
        self, server_round: int, draw: _Draw, survivors: list[int], total: Sealed
    ) -> tuple[Sealed, int]:
        """The sum of ``survivors``' masked updates with its masks removed, and how many
        survivors did not answer; raises :class:`MaskRecoveryError` (fail closed).

        Only the sum is ever unmasked: the correction is the total mask of the survivors.
        """
        masking, grid = draw.masking, draw.grid
        assert masking is not None and grid is not None
        requests = masking.requests(survivors, draw.nodes)
        messages = [
            Message(
                encode_unmask_request(
                    request,
                    run_id=self.context.run_id,
                    session=self.context.session,
                    agent=self.agent.name,
                    server_round=server_round,
                ),
                dst_node_id=node,
                message_type=f"query.{UNMASK_ACTION}",
                group_id=f"{self.agent.name}:{server_round}:unmask",
            )
            for node, request in requests.items()
        ]
        replies: dict[int, UnmaskReply] = {}
        for reply in grid.send_and_receive(messages, timeout=self._timeout):
            node = int(reply.metadata.src_node_id)
            if node not in requests or node in replies:
                continue
            try:
                replies[node] = decode_unmask_reply(reply)
            except Exception:  # whatever a reply holds, it is dropped, never raised
                log.warning(
                    "%s round %d: MSP node %d did not answer the unmask request",
                    self.agent.name,
                    server_round,
                    node,
                )
        ring = cast(Ring, self.aggregator)  # CKKS: self.masking checked it can shift
        try:
            correction = masking.correction(
                survivors, draw.nodes, replies, ring, self.update_length
            )
        except MaskRecoveryError:
            raise
        except Exception as err:  # a malformed reply must not abort the run: fail closed
            raise MaskRecoveryError(
                "unmask_shares", f"the unmask replies could not be used ({type(err).__name__})"
            ) from None
        unmasked = ring.shift(total, correction, subtract=True)
        return unmasked, len(requests) - len(replies)

    def _take(
        self,
        server_round: int,
        reply: Message,
        tally: _Tally,
        masking: RoundMasking | None = None,
    ) -> None:
        """Sort one reply into ``tally``: accepted, declined, or dropped by name."""
        node = int(reply.metadata.src_node_id)
        self._note_delivery(reply)
        kind = "malformed"  # what went wrong, if something does: the step it failed at
        try:
            if reply.has_error():
                kind = reply_error_kind(reply.error)
            decoded = decode_update(reply)
            if isinstance(decoded, Decline):
                self._declined(server_round, decoded, tally)
                return
            kind = "round_full"
            room = getattr(self.aggregator, "max_contributors", None)
            if room is not None and len(tally.accepted) >= room:
                raise InvalidUpdateError(
                    f"the round already holds max_contributors={room} updates, as many "
                    "as one sum under this key set adds up without leaving its range"
                )
            kind = "bad_ciphertext"
            self.aggregator.check(decoded.sealed, expected_length=self.update_length)
            kind = "bad_binding"
            self._check_binding(server_round, node, decoded.sealed, set(tally.contributors))
            if masking is not None:
                kind = "bad_masking"
                shares, public = decode_shares(reply)
                if public != self.mask_keys.get(node):
                    self.mask_keys.pop(node, None)  # asked again next round
                    raise InvalidUpdateError(
                        "the update was masked under another key than the one the MSP "
                        "advertised (it lost its state?)"
                    )
                masking.accept(node, shares)
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
            tally.drop_kinds[kind] += 1
            tally.dropped.append((node, reason))
            return
        msp = decoded.msp if decoded.msp >= 0 else node
        self.msp_of_node[node] = msp
        self.epsilon_by_msp[msp] = max(decoded.epsilon_spent, self.epsilon_by_msp.get(msp, 0.0))
        tally.bytes_received += decoded.sealed.nbytes
        tally.accepted.append(decoded.sealed)
        tally.contributors.append(node)
        tally.metrics.append(decoded.metrics)
        tally.snrs.append(decoded.snr)

    def _declined(self, server_round: int, decline: Decline, tally: _Tally) -> None:
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
        tally.declined.append((decline.msp, decline.reason))

    def _shortfall(self, tally: _Tally) -> str | None:
        """Why the round's valid updates cannot make a new global model, if they cannot."""
        if tally.declined and not tally.accepted:
            return (
                f"all {len(tally.declined)} MSP(s) that replied declined "
                f"({_why_declined(tally.declined)}); the global model is unchanged"
            )
        if len(tally.accepted) < self.min_msps:
            return (
                f"only {len(tally.accepted)} valid update(s), fewer than min_msps={self.min_msps}; "
                "the global model is unchanged"
            )
        return None

    # -- evaluation ----------------------------------------------------------------------
    def configure_evaluate(self, server_round: int, grid: Grid) -> Iterable[Message]:
        """``evaluate.<agent>`` messages carrying the current sealed global model."""
        nodes = self._sample(grid, self.fraction_evaluate)
        self._catch_up(grid, nodes, server_round, last_round=server_round)
        return self._messages("evaluate", nodes, server_round)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> dict[str, float]:
        """Metrics averaged over MSPs, weighted by their held-out examples."""
        metrics = []
        for reply in replies:
            self._note_delivery(reply)
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

    # -- the round loop ------------------------------------------------------------------
    def start(
        self,
        grid: Grid,
        *,
        num_rounds: int | None = None,
        timeout: float | None = None,
        store: ModelStore | None = None,
        plan: Mapping[str, Any] | None = None,
        on_round: RoundCallback | None = None,
    ) -> AgentRun:
        """Run the rounds over ``grid``, as Flower's ``Strategy.start`` does; returns the run.

        Each round configures and adds up training, then evaluates the new global model, and
        ends with a history record (passed to ``on_round`` at once). ``num_rounds`` defaults
        to the context's ``total_rounds``; ``timeout`` is each phase's wait for replies.
        With a ``store``, the run is recorded under the context's run id with ``plan``, and
        every round is committed (sealed sum, model history, metrics, ε mirror) before the
        new model goes out for evaluation; a run id the store already holds resumes after
        its last committed round. The run stops early once every MSP that replied declined.
        """
        rounds = self.context.total_rounds if num_rounds is None else num_rounds
        run = AgentRun(agent=self.agent, seed=self.seed)
        self._timeout = timeout
        done = self._resume(store, plan) if store is not None else 0
        for server_round in range(done + 1, rounds + 1):
            result, record = self._round(grid, server_round, timeout=timeout, store=store)
            run.history.append(record)
            run.results.append(result)
            if on_round is not None:
                on_round(record)
            if result.all_declined:
                run.stopped_reason = (
                    f"stopped after round {server_round} of {rounds}: every MSP that replied "
                    f"declined because {_why_declined(result.declined)}"
                )
                log.warning("%s: %s", self.agent.name, run.stopped_reason)
                break
        if store is not None:
            store.finish_run(
                self.context.run_id,
                self.agent.name,
                status="stopped" if run.stopped_reason else "completed",
            )
        run.sealed_history = list(self.history)
        run.versions = list(self.versions)
        run.epsilon_by_msp = dict(self.epsilon_by_msp)
        return run

    def _resume(self, store: ModelStore, plan: Mapping[str, Any] | None) -> int:
        """Record the run in ``store`` and take up its state; returns the rounds it holds."""
        run_id, name = self.context.run_id, self.agent.name
        store.start_run(run_id, name, plan if plan is not None else {})
        done, self.history = store.resume_state(run_id, name)
        self.epsilon_by_msp.update(store.epsilon_mirror(name))
        if done:
            log.info("%s: resuming run %s after round %d", name, run_id, done)
        return done

    def _round(
        self, grid: Grid, server_round: int, *, timeout: float | None, store: ModelStore | None
    ) -> tuple[RoundResult, dict[str, Any]]:
        """Train, commit, evaluate: one round, with its history record."""
        start = time.perf_counter()
        replies = grid.send_and_receive(self.configure_train(server_round, grid), timeout=timeout)
        result = self.aggregate_train(server_round, replies)
        run_id, name = self.context.run_id, self.agent.name
        if store is not None:  # on disk before any MSP sees the new model
            store.commit_round(
                run_id=run_id,
                agent=name,
                round=server_round,
                sealed_sum=result.sealed_sum,
                history=self.history,
                metrics=result.train_metrics,
                epsilon_by_msp=self.epsilon_by_msp,
                n_msps=result.accepted,
            )
        evaluation = self.aggregate_evaluate(
            server_round,
            grid.send_and_receive(self.configure_evaluate(server_round, grid), timeout=timeout),
        )
        if store is not None and evaluation:
            store.update_metrics(run_id=run_id, agent=name, round=server_round, metrics=evaluation)
        record = self._record(server_round, result, evaluation)
        record["seconds"] = time.perf_counter() - start
        return result, record

    def _record(
        self, server_round: int, result: RoundResult, evaluation: dict[str, float]
    ) -> dict[str, Any]:
        """The round's history record (without its duration), logged."""
        record: dict[str, Any] = {
            "agent": self.agent.name,
            "round": server_round,
            "sampled": result.sampled,
            "msps": result.accepted,
            "dropped": len(result.dropped),
            "dropped_by_kind": dict(result.drop_kinds),
            "no_reply": result.no_reply,
            "declined": len(result.declined),
            "declined_msps": [msp for msp, _ in result.declined],
            "declined_by_kind": dict(Counter(_decline_kind(r) for _, r in result.declined)),
            "skipped": result.skipped_reason is not None,
            "skipped_reason": result.skipped_reason,
            "masked": result.masked,
            "unmask_failed": result.mask_failure,
            "unmask_no_reply": result.unmask_no_reply,
        }
        record.update(
            {
                k if k.startswith("train_") else f"train_{k}": v
                for k, v in result.train_metrics.items()
            }
        )
        record.update(evaluation)
        if self.context.privacy is not None:
            record["epsilon_max"] = max(self.epsilon_by_msp.values(), default=0.0)
            record["snr"] = self._round_snr(result)
        record["worse_than_baseline"] = self.agent.worse_than_baseline(evaluation)
        self._log_quality(server_round, record)
        record["update_bytes"] = result.bytes_received
        return record

    def _round_snr(self, result: RoundResult) -> float:
        """The round's coarse signal-to-noise estimate (NaN when no update was added).

        Sample-level DP: the lower median of what the MSPs sent. MSP-level DP: computed here
        from public values only (contributors, the planned sigma, the update's length).
        """
        context = self.context
        if result.skipped_reason is not None or result.accepted == 0:
            return math.nan
        if context.privacy is not None and context.privacy.unit == "msp":
            sigma = context.noise_multiplier or 0.0
            dim = self.update_length - PAYLOAD_EXTRA
            return coarse(msp_level_snr(result.accepted, sigma, dim, shares=context.noise_shares))
        return math.nan if result.snr is None else result.snr

    def _log_quality(self, server_round: int, record: dict[str, Any]) -> None:
        """Log the round's signal-to-noise estimate, and warn when DP made the model trivial."""
        agent, privacy = self.agent, self.context.privacy
        if privacy is None:
            if record["worse_than_baseline"]:
                log.info(
                    "%s round %d: %s=%.4g is worse than the trivial baseline's %.4g",
                    agent.name,
                    server_round,
                    agent.metric,
                    record[agent.metric],
                    record[f"baseline_{agent.metric}"],
                )
            return
        snr = record.get("snr", math.nan)
        log.info(
            "%s round %d: signal-to-noise ≈ %g (ε=%g)",
            agent.name,
            server_round,
            snr,
            privacy.epsilon,
        )
        if record["worse_than_baseline"]:
            log.warning(
                "%s round %d: the private model is worse than the trivial baseline on held-out "
                "data: %s=%.4g against %.4g (ε=%g, signal-to-noise ≈ %g); the noise swamps the "
                "update: raise ε, give MSPs more rows, or plan fewer rounds",
                agent.name,
                server_round,
                agent.metric,
                record[agent.metric],
                record[f"baseline_{agent.metric}"],
                privacy.epsilon,
                snr,
            )
