"""The masking protocol's two roles, as pure functions and values (no I/O, no Flower).

SecAgg+ (Bell et al., CCS 2020) on CKKS ciphertexts; the arithmetic is in
:mod:`meshfl.secure.masking`. One round, for the sampled MSPs ``U`` (at least 3):

1. **Plan** (coordinator): a random neighbour graph over ``U``
   (:func:`~meshfl.secure.masking.neighbour_graph`) and the Shamir threshold ``t``; each MSP
   ``i`` gets a :class:`MaskingPlan`: its neighbours, their X25519 public keys (advertised
   once per run; MSPs pin them) and ``t``.
2. **Mask** (MSP ``i``, :func:`mask_update`): a fresh 32-byte self-mask seed ``b_i`` from
   OS entropy; for each neighbour ``j`` the round's pairwise seed ``s_ij`` (HKDF of the X25519
   secret, bound to run, coordinator session, agent, round and the pair). It adds
   ``PRG(b_i) + Σ_{j>i} PRG(s_ij) - Σ_{j<i} PRG(s_ij)`` to every ciphertext's ``c0`` modulo
   each data prime, and sends, with the masked update, Shamir shares of ``b_i`` (threshold
   ``t``) for itself and each neighbour, each encrypted (AES-GCM) to its holder
   (:class:`MaskedShares`).
3. **Unmask** (coordinator → each MSP in ``S``, those whose update is in the sum): the
   encrypted shares addressed to it, ``S`` and ``D0`` (sampled, but no update in the sum).
   The MSP answers once per round (:func:`answer_unmask`): the share of ``b_i`` for each
   ``i`` in ``S``, the seed ``s_ij`` for each neighbour ``i`` in ``D0``; never both for one
   neighbour, and nothing unless ``S`` has at least ``min_survivors`` MSPs.
4. **Recover** (coordinator, :meth:`RoundMasking.correction`): each ``b_i`` of ``S`` from
   ``t`` shares, and the seeds of the pairs of ``S`` with ``D0``; their masks summed. The
   coordinator subtracts that from the *sum* of the ciphertexts. MSPs of ``S`` that do not
   answer (``D1``) only need ``t`` shares of their ``b_i`` from the others. Anything missing
   raises :class:`MaskRecoveryError`, naming what: the round fails closed.

No function here removes a mask from one MSP's ciphertext: :meth:`RoundMasking.correction`
returns the total mask of ``S``, which only the sum of ``S``'s ciphertexts carries.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from meshfl.config.errors import InvalidUpdateError, MeshflError
from meshfl.secure.backend import Sealed
from meshfl.secure.masking import (
    DEFAULT_DROPOUT,
    SEED_BYTES,
    KeyPair,
    decrypt_share,
    encrypt_share,
    mask_sum,
    neighbour_graph,
    recover_secret,
    split_secret,
    threshold_for,
)

__all__ = [
    "MIN_MASKED",
    "MaskRecoveryError",
    "MaskedShares",
    "MaskingPlan",
    "Ring",
    "RoundMasking",
    "UnmaskReply",
    "UnmaskRequest",
    "answer_unmask",
    "mask_for",
    "mask_update",
    "seal_masked",
    "start_mask",
]

MIN_MASKED = 3
"""Rounds of fewer sampled MSPs are not masked: in a sum of two, each reads the other's
update by subtracting its own, masks or not."""


class Ring(Protocol):
    """What masking needs of a CKKS sealer or aggregator (both are rings)."""

    @property
    def moduli(self) -> tuple[int, ...]: ...

    def mask_size(self, length: int) -> int: ...

    def shift(self, sealed: Sealed, mask: np.ndarray, *, subtract: bool = False) -> Sealed: ...


class SealingRing(Ring, Protocol):
    """A ring that seals, adding a mask as it packs (:class:`~meshfl.secure.ckks.CKKSSealer`)."""

    def seal(
        self, values: np.ndarray, *, mask: np.ndarray | Callable[[], np.ndarray] | None = None
    ) -> Sealed: ...


class MaskRecoveryError(MeshflError):
    """A round's masks cannot be removed from its sum: the round fails closed.

    ``kind`` names the reason for the round log: ``unmask_shares`` (fewer than ``t`` shares
    of some MSP's self-mask seed came back) or ``unmask_pairwise`` (a seed shared with an
    MSP that sent nothing is held only by MSPs that vanished too).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class MaskingPlan:
    """What the coordinator tells one MSP for one round."""

    neighbours: tuple[int, ...]
    public_keys: tuple[bytes, ...]
    """The neighbours' X25519 public keys, in the same order."""
    threshold: int


@dataclass(frozen=True)
class MaskedShares:
    """An MSP's encrypted Shamir shares of its self-mask seed, one per holder."""

    holders: tuple[int, ...]
    boxes: tuple[bytes, ...]


@dataclass(frozen=True)
class UnmaskRequest:
    """What the coordinator asks of one MSP after the train replies."""

    survivors: tuple[int, ...]
    """``S``: the MSPs whose masked updates are in the sum."""
    dropped: tuple[int, ...]
    """``D0``: sampled MSPs whose update is not in the sum."""
    boxes: Mapping[int, bytes] = field(default_factory=dict)
    """Sender → the encrypted share of its seed that this MSP holds."""


@dataclass(frozen=True)
class UnmaskReply:
    """An MSP's answer: shares of survivors' seeds, pairwise seeds with dropped neighbours."""

    shares: Mapping[int, bytes] = field(default_factory=dict)
    seeds: Mapping[int, bytes] = field(default_factory=dict)


def _aad(scope: bytes, sender: int, receiver: int) -> bytes:
    return b"|".join((scope, str(int(sender)).encode(), str(int(receiver)).encode()))


# --- the MSP ----------------------------------------------------------------------------


def mask_for(
    ring: Ring,
    length: int,
    *,
    node: int,
    keys: KeyPair,
    plan: MaskingPlan,
    scope: bytes,
) -> tuple[np.ndarray, MaskedShares]:
    """One MSP's total mask for a payload of ``length`` values this round, and the encrypted
    shares of its self-mask seed (pass the mask to ``CKKSSealer.seal(..., mask=)``).

    The seed ``b_i`` is drawn here from OS entropy and never leaves but as shares.
    """
    if len(plan.neighbours) != len(plan.public_keys) or node in plan.neighbours:
        raise InvalidUpdateError("the masking plan does not list one key per other neighbour")
    holders = (node, *plan.neighbours)
    # Above half the holders (as threshold_for always is): two disjoint groups of holders
    # never both rebuild the seed, and a coordinator cannot lower t to what one colluding
    # neighbour and the MSP's own share reach.
    if not (2 <= plan.threshold <= len(holders) and 2 * plan.threshold > len(holders)):
        raise InvalidUpdateError(
            f"the masking plan's threshold {plan.threshold} is outside "
            f"[max(2, {len(holders) // 2 + 1}), {len(holders)}] for {len(holders)} share holders"
        )
    own = secrets.token_bytes(SEED_BYTES)  # OS entropy: fresh every round
    terms = [(own, True)]
    shares = split_secret(own, plan.threshold, holders)
    boxes = [encrypt_share(keys.self_share_key(scope, node), shares[node], _aad(scope, node, node))]
    for peer, public in zip(plan.neighbours, plan.public_keys, strict=True):
        terms.append((keys.pairwise_seed(public, scope, node, peer), node < peer))
        key = keys.share_key(public, scope, node, peer)
        boxes.append(encrypt_share(key, shares[peer], _aad(scope, node, peer)))
    total = mask_sum(terms, ring.moduli, ring.mask_size(length))
    return total, MaskedShares(holders, tuple(boxes))


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _masking_pool() -> ThreadPoolExecutor:
    """This process's worker for masks computed while ciphertexts are encrypted (both
    release the GIL). One per process id: a ClientApp forked from a warm process must not
    inherit a pool whose thread stayed behind in the parent."""
    pid = os.getpid()
    if pid not in _POOLS:
        _POOLS[pid] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshfl-mask")
    return _POOLS[pid]


def start_mask(
    ring: Ring,
    length: int,
    *,
    node: int,
    keys: KeyPair,
    plan: MaskingPlan,
    scope: bytes,
) -> Future[tuple[np.ndarray, MaskedShares]]:
    """Start computing :func:`mask_for` in this process's masking worker thread.

    A round's mask depends on the payload's length only, never on its values: an MSP
    starts it when the round's plan arrives and trains meanwhile, then seals with it
    (:func:`seal_masked`). Both the keystreams and X25519 release the GIL.
    """
    return _masking_pool().submit(
        mask_for, ring, length, node=node, keys=keys, plan=plan, scope=scope
    )


def seal_masked(
    ring: SealingRing,
    payload: np.ndarray,
    pending: Future[tuple[np.ndarray, MaskedShares]],
) -> tuple[Sealed, MaskedShares]:
    """Seal one MSP's payload with the round mask :func:`start_mask` is computing: the
    ciphertexts are encrypted first, the mask (awaited only then) added as they are packed.

    The same ciphertext as ``ring.seal(payload, mask=mask_for(...)[0])``. Started before
    training, the mask is ready by now; started just before, it takes about the time of
    the longer of the two on a machine with a core to spare.
    """
    try:
        sealed = ring.seal(payload, mask=lambda: pending.result()[0])
    finally:
        result = pending.result()  # never leave the worker running behind an error
    return sealed, result[1]


def mask_update(
    ring: Ring,
    sealed: Sealed,
    *,
    node: int,
    keys: KeyPair,
    plan: MaskingPlan,
    scope: bytes,
) -> tuple[Sealed, MaskedShares]:
    """Mask one MSP's already sealed update for the round (:func:`mask_for`, then shift)."""
    mask, shares = mask_for(ring, sealed.length, node=node, keys=keys, plan=plan, scope=scope)
    return ring.shift(sealed, mask), shares


def answer_unmask(
    request: UnmaskRequest,
    *,
    node: int,
    keys: KeyPair,
    neighbours: Mapping[int, bytes],
    scope: bytes,
    min_survivors: int = MIN_MASKED,
) -> UnmaskReply:
    """One MSP's answer to the round's unmask request (call it at most once per round).

    ``neighbours`` are this round's neighbours with the public keys the MSP pinned. The
    request names the survivors and dropped MSPs of this MSP's neighbourhood (itself and its
    neighbours). Raises :class:`InvalidUpdateError` (answering nothing) when it names an MSP
    both as a survivor and as dropped, leaves this MSP out of the survivors, leaves a
    neighbour unnamed, or names fewer than ``min_survivors`` survivors there: with fewer than
    ``t`` of them no self-mask of the neighbourhood could be rebuilt, and a sum of so few
    would expose single updates (SecAgg+ aborts there too). Over the complete graph every
    sampled MSP is a neighbour, so the MSP sees the whole round's split.
    """
    survivors, dropped = set(request.survivors), set(request.dropped)
    if survivors & dropped:
        raise InvalidUpdateError("the unmask request names an MSP both as sent and as dropped")
    if node not in survivors:
        raise InvalidUpdateError("the unmask request leaves this MSP's own update out")
    if set(neighbours) - survivors - dropped:
        raise InvalidUpdateError(
            "the unmask request names some of this MSP's neighbours neither as sent nor as dropped"
        )
    if len(survivors) < min_survivors:
        raise InvalidUpdateError(
            f"the unmask request names {len(survivors)} survivors, fewer than {min_survivors}"
        )
    shares: dict[int, bytes] = {}
    seeds: dict[int, bytes] = {}
    for sender, box in request.boxes.items():
        if sender not in survivors or (sender != node and sender not in neighbours):
            continue
        if sender == node:
            key = keys.self_share_key(scope, node)
        else:
            key = keys.share_key(neighbours[sender], scope, sender, node)
        shares[sender] = decrypt_share(key, box, _aad(scope, sender, node))
    for peer in sorted(dropped & set(neighbours)):
        seeds[peer] = keys.pairwise_seed(neighbours[peer], scope, node, peer)
    return UnmaskReply(shares, seeds)


# --- the coordinator --------------------------------------------------------------------


@dataclass
class RoundMasking:
    """The coordinator's view of one masked round: the graph, the keys, the shares."""

    graph: dict[int, tuple[int, ...]]
    public_keys: Mapping[int, bytes]
    threshold: int
    shares: dict[int, MaskedShares] = field(default_factory=dict)
    """Each sender's encrypted shares, as its train reply brought them."""

    @classmethod
    def draw(
        cls,
        nodes: Sequence[int],
        public_keys: Mapping[int, bytes],
        *,
        dropout: float = DEFAULT_DROPOUT,
        degree: int | None = None,
    ) -> RoundMasking:
        """A fresh graph (OS entropy) over ``nodes`` and the threshold its degree needs."""
        graph = neighbour_graph(nodes, degree)
        holders = 1 + min((len(v) for v in graph.values()), default=0)
        return cls(graph, dict(public_keys), threshold_for(holders, dropout))

    def plan_for(self, node: int) -> MaskingPlan:
        peers = self.graph[node]
        return MaskingPlan(peers, tuple(self.public_keys[p] for p in peers), self.threshold)

    def accept(self, node: int, shares: MaskedShares) -> None:
        """Keep a sender's shares; raises :class:`InvalidUpdateError` unless they go to
        exactly the sender and its neighbours."""
        if tuple(shares.holders) != (node, *self.graph.get(node, ())) or len(shares.boxes) != len(
            shares.holders
        ):
            raise InvalidUpdateError("the update's mask shares do not match its neighbours")
        self.shares[node] = shares

    def requests(
        self, survivors: Sequence[int], sampled: Sequence[int]
    ) -> dict[int, UnmaskRequest]:
        """One request per survivor: the shares it holds of survivors' seeds, and ``S`` and
        ``D0`` as far as its neighbourhood (itself and its neighbours) goes: that is all an
        MSP acts on, and the whole lists would make the round's bytes grow with n²."""
        s = tuple(sorted(int(n) for n in survivors))
        alive = set(s)
        d0 = set(int(n) for n in sampled) - alive
        boxes: dict[int, dict[int, bytes]] = {j: {} for j in s}
        for sender in s:
            held = self.shares[sender]
            for holder, box in zip(held.holders, held.boxes, strict=True):
                if holder in boxes:
                    boxes[holder][sender] = box
        requests = {}
        for j in s:
            near = sorted({j, *self.graph[j]})
            requests[j] = UnmaskRequest(
                tuple(n for n in near if n in alive), tuple(n for n in near if n in d0), boxes[j]
            )
        return requests

    def correction(
        self,
        survivors: Sequence[int],
        sampled: Sequence[int],
        replies: Mapping[int, UnmaskReply],
        ring: Ring,
        length: int,
    ) -> np.ndarray:
        """The total mask the sum of ``survivors``' ciphertexts carries.

        Raises :class:`MaskRecoveryError` (the round fails closed) when a self-mask seed
        has fewer than ``t`` shares back, or a pairwise seed with a dropped MSP is held
        only by survivors that did not answer.
        """
        s = sorted(int(n) for n in survivors)
        d0 = set(int(n) for n in sampled) - set(s)
        moduli, count = ring.moduli, ring.mask_size(length)
        terms: list[tuple[bytes, bool]] = []
        short = []
        held: dict[int, dict[int, bytes]] = {sender: {} for sender in s}
        for holder, reply in replies.items():
            for sender, share in reply.shares.items():
                if sender in held:
                    held[sender][holder] = share
        for sender in s:
            got = held[sender]
            if len(got) < self.threshold:
                short.append(sender)
                continue
            try:
                seed = recover_secret(got, self.threshold)
            except InvalidUpdateError as err:
                raise MaskRecoveryError("unmask_shares", f"MSP node {sender}: {err}") from None
            terms.append((seed, True))
        if short:
            raise MaskRecoveryError(
                "unmask_shares",
                f"{len(short)} MSP(s)' self-masks could not be removed: fewer than the "
                f"threshold t={self.threshold} of their share holders answered the unmask "
                "request",
            )
        missing = 0
        for sender in s:
            for peer in self.graph[sender]:
                if peer not in d0:
                    continue
                seed_ = replies[sender].seeds.get(peer) if sender in replies else None
                if seed_ is None or len(seed_) != SEED_BYTES:
                    missing += 1
                    continue
                terms.append((seed_, sender < peer))  # the sign ``sender`` added it with
        if missing:
            raise MaskRecoveryError(
                "unmask_pairwise",
                f"{missing} mask(s) shared with MSPs that sent nothing could not be removed: "
                "the survivors that hold them did not answer the unmask request",
            )
        return mask_sum(terms, moduli, count)
