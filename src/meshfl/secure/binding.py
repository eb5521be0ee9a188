"""Binding tags: how an MSP checks that a sealed sum really is the sum of several MSPs' updates.

A coordinator holds the public context, which is enough to *encrypt*. Without more, it could
send MSP A's sealed update to MSP B dressed up as "the global model", and B would train and
evaluate on A's update alone (a decryption oracle that leaks through B's behaviour). Tags
close that.

Every payload ends with :data:`TAG_SLOTS` integer slots: MSP ``i`` puts there
``tag(K, scope, i)``, a pseudo-random function of

* ``K``, the *binding key*, which every MSP derives from the secret key it holds and the
  coordinator cannot compute (:attr:`meshfl.secure.backend.Sealer.binding_key`);
* the *scope*: run, agent, round and the number of noise shares of that round
  (:func:`scope_of`);
* ``i``, the MSP's node id.

Slots add up like every other value, so the sum of the payloads of contributors ``L`` ends
with ``Σ_{i∈L} tag(K, scope, i)``. The coordinator sends the list ``L`` with each sum, and an
MSP opening it recomputes that sum of tags (:func:`check_tags`). The coordinator can add,
subtract, scale ciphertexts and add anything it encrypts itself, but without ``K`` the only
combination whose tag slots come out right is each listed contributor's payload exactly
once: a substituted update, a contributor counted twice, an update from another round or
run, or a list padded with invented node ids all fail the check, except with probability
about ``(2 · tolerance / TAG_RANGE)^TAG_SLOTS`` ≈ 2^-96 per attempt.

Tags are small integers (at most :data:`TAG_RANGE` / 2 in magnitude), so that even a sum of
many of them stays far inside CKKS's exact range, and CKKS's rounding error (~1e-6 here) stays
far below the check's tolerance of 0.25.

What tags do not stop: an MSP that colludes with the coordinator holds ``K`` (every MSP
does, as it holds the shared secret key) and can forge anything; with the shared key it can
read every update anyway (docs/threat-model.md). With the plaintext back end ``K`` is public
and tags protect nothing, like the rest of that back end.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from meshfl.config.errors import InvalidUpdateError

__all__ = [
    "TAG_RANGE",
    "TAG_SLOTS",
    "Binding",
    "UnverifiedAggregateError",
    "check_tags",
    "scope_of",
    "tags",
]

TAG_SLOTS = 8
"""Integer slots at the end of every payload."""

TAG_RANGE = 2**13
"""Tags are integers in ``[-TAG_RANGE/2, TAG_RANGE/2)``: 13 bits per slot, 104 in all."""

TOLERANCE = 0.25
"""How far a decrypted tag sum may sit from the expected integer (CKKS rounding)."""


class UnverifiedAggregateError(InvalidUpdateError):
    """A sealed model that is not provably the sum of enough MSPs' updates for this round.

    Its message is a fixed sentence: nothing computed from what was decrypted may leave the
    MSP, not even in an error.
    """


@dataclass(frozen=True)
class Binding:
    """What a sealed payload is bound to: run, agent, round, noise shares; for a sum, who.

    The coordinator writes it next to each sealed sum; MSPs check it against the tags.
    ``contributors`` is empty for a single MSP's update.
    """

    run_id: str
    agent: str
    server_round: int
    shares: int = 1
    contributors: tuple[int, ...] = ()

    @property
    def scope(self) -> str:
        """The string every contributor's tag was computed over."""
        return scope_of(self.run_id, self.agent, self.server_round, self.shares)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), as it travels and is stored."""
        return json.dumps(
            {
                "agent": self.agent,
                "contributors": [int(c) for c in self.contributors],
                "round": int(self.server_round),
                "run": self.run_id,
                "shares": int(self.shares),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Binding:
        """Inverse of :meth:`to_json`; raises :class:`InvalidUpdateError` on anything else."""
        try:
            data = json.loads(text)
            contributors = data["contributors"]
            if not isinstance(contributors, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in contributors
            ):
                raise TypeError("contributors must be a list of ints")
            binding = cls(
                run_id=_text(data["run"]),
                agent=_text(data["agent"]),
                server_round=_number(data["round"]),
                shares=_number(data["shares"]),
                contributors=tuple(contributors),
            )
        except (KeyError, TypeError, ValueError, RecursionError) as err:
            raise InvalidUpdateError("a sealed payload's binding is malformed") from err
        return binding


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _number(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("expected an int")
    return value


def scope_of(run_id: str, agent: str, server_round: int, shares: int = 1) -> str:
    """The canonical scope of one round: what a tag binds an update to, besides the node."""
    return json.dumps([run_id, agent, int(server_round), int(shares)], separators=(",", ":"))


def tags(key: bytes, scope: str, node: int) -> np.ndarray:
    """``tag(K, scope, node)``: :data:`TAG_SLOTS` integers from HMAC-SHA-256, as float64."""
    digest = hmac.new(key, f"{scope}|{int(node)}".encode(), hashlib.sha256).digest()
    words = np.frombuffer(digest, dtype="<u4").astype(np.int64)
    return ((words % TAG_RANGE) - TAG_RANGE // 2).astype(np.float64)


def check_tags(
    found: np.ndarray,
    *,
    key: bytes,
    binding: Binding,
    min_contributors: int,
) -> None:
    """Raise :class:`UnverifiedAggregateError` unless ``found`` proves ``binding``.

    ``found`` are the decrypted tag slots of a sum. The sum must name at least
    ``max(min_contributors, binding.shares)`` distinct contributors, and its tags must equal
    the sum of theirs. The error's text is fixed: it says nothing about ``found``.
    """
    contributors: Sequence[int] = binding.contributors
    needed = max(int(min_contributors), int(binding.shares), 1)
    if len(set(contributors)) != len(contributors) or len(contributors) < needed:
        raise UnverifiedAggregateError(
            "the sealed model is not the sum of enough distinct MSPs' updates; not using it"
        )
    expected = np.zeros(TAG_SLOTS)
    for node in contributors:
        expected += tags(key, binding.scope, node)
    found = np.asarray(found, dtype=np.float64)
    if found.shape != (TAG_SLOTS,) or not np.all(np.abs(found - expected) <= TOLERANCE):
        raise UnverifiedAggregateError(
            "the sealed model's tags do not match its contributors; not using it"
        )
