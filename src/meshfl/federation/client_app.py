"""The MSP side: a Flower ``ClientApp`` with one train and one evaluate handler per agent.

Message types are ``train.<agent>`` and ``evaluate.<agent>``. The agent's config travels
with every message (the coordinator decides how the mesh trains); the MSP decides where its
data comes from through a *data provider*, a function ``(agent_name, context) -> NodeData``.
Prepared data (for the text agents: embeddings of the frozen encoder) is cached per node,
agent config and split, so it is computed once, not once per round.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from meshfl.agents import registry
from meshfl.agents.base import Agent
from meshfl.agents.update import Update
from meshfl.config.errors import ConfigError, MeshflError
from meshfl.config.validation import Count, check
from meshfl.federation.errors import guard
from meshfl.federation.masked_round import (
    KEYS_ACTION,
    UNMASK_ACTION,
    MaskingMemory,
    decode_key_request,
    decode_plan,
    decode_unmask_request,
    encode_key_reply,
    encode_shares,
    encode_unmask_reply,
)
from meshfl.federation.msp_privacy import train_round
from meshfl.federation.records import (
    Decline,
    RoundInstructions,
    decode_instructions,
    encode_decline,
    encode_evaluation,
    encode_update,
)
from meshfl.federation.sealed_model import Verification, open_global
from meshfl.privacy.ledger import PrivacyLedger
from meshfl.privacy.noise import attribute_releases
from meshfl.privacy.report import reported_epsilon
from meshfl.privacy.snr import update_snr
from meshfl.secure.aggregate import PAYLOAD_EXTRA, seal_payload
from meshfl.secure.backend import PLAINTEXT, Sealed, Sealer
from meshfl.secure.binding import Binding, tags
from meshfl.secure.masking import round_scope
from meshfl.secure.secagg import (
    MIN_MASKED,
    MaskedShares,
    MaskingPlan,
    answer_unmask,
    seal_masked,
    start_mask,
)

if TYPE_CHECKING:
    from meshfl.secure.ckks import CKKSSealer

_OptionalCount = Count | None

__all__ = [
    "DECLINED_UNMASKED",
    "DataProvider",
    "MSPNode",
    "NodeData",
    "derive_seed",
    "make_client_app",
]

log = logging.getLogger("meshfl.msp")


@dataclass(frozen=True)
class NodeData:
    """One MSP's data for one agent: rows to train on and held-out rows to evaluate on."""

    train: pd.DataFrame
    test: pd.DataFrame | None = None


DataProvider = Callable[[str, Context], NodeData]
StateDirectory = Callable[[Context], "str | os.PathLike[str]"]
SealerProvider = Callable[[Context], Sealer]


def derive_seed(*parts: int) -> int:
    """A 32-bit seed derived from integers (run seed, round, node), stable across processes."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


DECLINED = "declined: this MSP's privacy budget cannot afford the round"
"""The one sentence a declining MSP sends (the detailed reason stays in its own log)."""

DECLINED_UNMASKED = "declined: this MSP takes part only in masked rounds"
"""The sentence an MSP that requires masking (node config ``require-masking``) sends when
a round's plan is unmasked."""


def _reported(epsilon: float, ins: RoundInstructions) -> float:
    dp = ins.context.privacy
    return reported_epsilon(epsilon, dp.epsilon) if dp is not None else 0.0


def node_index(context: Context) -> int:
    """The node's partition id in simulations, else its node id."""
    return int(context.node_config.get("partition-id", context.node_id))


DEFAULT_MIN_CONTRIBUTORS = 2
"""An MSP's own floor on the MSPs a sealed model must add up (node config ``min-contributors``)."""


class MSPNode:
    """One MSP's handlers and what they keep between messages.

    It caches built agents (per agent and config), prepared data (per node, agent, config
    and split), privacy ledgers (per state directory) and sealers (per node). See
    :func:`make_client_app` for the parameters.
    """

    def __init__(
        self,
        data: DataProvider,
        *,
        sealer: SealerProvider | None = None,
        state_dir: StateDirectory | None = None,
        min_contributors: int | None = None,
        require_masking: bool | None = None,
    ):
        self.data = data
        self.sealer = sealer
        self.state_dir = state_dir
        self.min_contributors = check(
            min_contributors, _OptionalCount, "min_contributors", where="make_client_app"
        )
        self.agents: dict[tuple[str, str], Agent[Any]] = {}
        self.prepared: dict[tuple[int, str, str, str], Any] = {}
        self.ledgers: dict[Path, PrivacyLedger] = {}
        self.sealers: dict[int, Sealer] = {}
        self.require_masking = require_masking
        self.masking = MaskingMemory()

    def sealer_for(self, context: Context) -> Sealer:
        """The node's sealer: the given provider's, else CKKS from ``secret-key``."""
        if context.node_id not in self.sealers:
            if self.sealer is not None:
                self.sealers[context.node_id] = self.sealer(context)
            elif "secret-key" in context.node_config:
                from meshfl.secure.ckks import CKKSSealer

                path = str(context.node_config["secret-key"])
                self.sealers[context.node_id] = CKKSSealer.from_file(path)
            else:
                raise MeshflError(
                    "This MSP has no key to open the sealed global model: set the node "
                    "config's 'secret-key' to the MSPs' secret context file (meshfl keys init)."
                )
        return self.sealers[context.node_id]

    def ledger_for(self, context: Context) -> PrivacyLedger | None:
        """The privacy ledger in the node's state directory (None without one)."""
        if self.state_dir is not None:
            directory = Path(self.state_dir(context))
        elif "state-dir" in context.node_config:
            directory = Path(str(context.node_config["state-dir"]))
        else:
            return None
        if directory not in self.ledgers:
            self.ledgers[directory] = PrivacyLedger(directory / "privacy")
        return self.ledgers[directory]

    def agent_for(self, ins: RoundInstructions) -> tuple[Agent[Any], str]:
        """The agent the instructions name, built with their config, and the config's key."""
        key = json.dumps(ins.agent_config, sort_keys=True)
        if (ins.agent, key) not in self.agents:
            self.agents[(ins.agent, key)] = registry.get(ins.agent)(ins.agent_config)
        return self.agents[(ins.agent, key)], key

    def local(self, agent: Agent[Any], key: str, context: Context, split: str) -> Any:
        """The node's prepared rows for ``agent`` (``split``: "train" or "test")."""
        cache_key = (context.node_id, agent.name, key, split)
        if cache_key not in self.prepared:
            if "state-dir" in context.node_config:  # a deployed MSP: one process per message
                agent.use_cache_dir(Path(str(context.node_config["state-dir"])) / "cache")
            node_data = self.data(agent.name, context)
            frame = (
                node_data.train if split == "train" or node_data.test is None else node_data.test
            )
            self.prepared[cache_key] = agent.prepare(frame)
        return self.prepared[cache_key]

    def verification(
        self, ins: RoundInstructions, agent: Agent[Any], context: Context, before: int
    ) -> Verification:
        """What a sealed model must prove before this MSP uses it (its own floor)."""
        floor = self.min_contributors  # given: a simulation, whose driver is the coordinator
        if floor is None:
            configured = context.node_config.get("min-contributors", DEFAULT_MIN_CONTRIBUTORS)
            floor = check(configured, Count, "min-contributors", where="the node config")
            floor = max(floor, agent.min_msps)
        return Verification(ins.context.run_id, before_round=before, min_contributors=floor)

    @staticmethod
    def open_model(
        ins: RoundInstructions,
        agent: Agent[Any],
        box: Sealer,
        context: Context,
        verify: Verification,
    ) -> np.ndarray:
        """The global model the message describes: what it carries, on what this MSP opened.

        A deployed MSP (one process per message) keeps the last model it opened in its
        state directory, so that messages need carry only the sums it has not seen.
        """
        state = context.node_config.get("state-dir")
        return open_global(
            agent,
            ins.sealed,
            box,
            seed=ins.seed,
            verify=verify,
            base=ins.history_base,
            base_digest=ins.history_digest,
            memo_dir=Path(str(state)) / "models" if state is not None else None,
        )

    def requires_masking(self, context: Context) -> bool:
        """Whether this MSP declines unmasked rounds: the given setting, else the node
        config's ``require-masking`` (default false)."""
        if self.require_masking is not None:
            return self.require_masking
        value = context.node_config.get("require-masking", False)
        if not isinstance(value, bool):
            got = f"Got {value!r} instead."
            raise ConfigError(f"The node config's 'require-masking' must be true or false. {got}")
        return value

    def train(self, message: Message, context: Context) -> Message:
        """Train one round on the opened global model; reply with a sealed update or a decline."""
        ins = decode_instructions(message)
        agent, key = self.agent_for(ins)
        msp = node_index(context)
        plan = decode_plan(message.content)
        if plan is None and self.requires_masking(context):
            # Before the data, the model or the ledger are touched: nothing is trained or
            # spent. Under an unmasked plan any holder of the CKKS secret key (every MSP)
            # colluding with the coordinator would read this MSP's update.
            log.warning(
                "%s round %d: declined: the coordinator's plan does not mask updates and this "
                "MSP requires masking (node config require-masking)",
                agent.name,
                ins.server_round,
            )
            # ε 0: the coordinator keeps the larger of what it holds and what MSPs report.
            public = Decline(DECLINED_UNMASKED, 0.0, msp)
            return Message(encode_decline(public), reply_to=message)
        box = self.sealer_for(context)
        dp = ins.context.privacy
        if dp is not None and dp.unit == "msp" and box.backend == PLAINTEXT:
            raise MeshflError(
                "unit='msp' differential privacy needs secure aggregation: each update carries "
                "only its share of the noise, and the plaintext back end shows every update "
                "to the coordinator"
            )
        self._check_mirror(message, ins, agent, self.ledger_for(context))
        # Never train from a model that is not provably a sum of enough MSPs' updates.
        verify = self.verification(ins, agent, context, before=ins.server_round)
        rows = self.local(agent, key, context, "train")
        vector = self.open_model(ins, agent, box, context, verify)
        # The round's mask depends on the update's length only: it is computed while the
        # MSP trains, and a round this MSP would refuse to mask is refused before training.
        masker = None
        if plan is not None:
            length = agent.update_size(vector) + PAYLOAD_EXTRA
            masker = self._masker(ins, agent, plan, box, context, length)
        with attribute_releases(  # labels the noise for a test's audit; else a no-op
            msp=msp, node=context.node_id, run=ins.context.run_id, round=ins.server_round
        ):
            outcome = train_round(
                agent,
                ins,
                vector,
                rows,
                seed=derive_seed(ins.seed, ins.server_round, msp),
                ledger=self.ledger_for(context),
                msp=msp,
            )
        if isinstance(outcome, Decline):
            # The reason stays here: its numbers (ε before and after) would give the
            # MSP's size away. The coordinator gets a fixed sentence and a coarse ε.
            log.warning("%s round %d: declined: %s", agent.name, ins.server_round, outcome.reason)
            public = Decline(DECLINED, _reported(outcome.epsilon_spent, ins), msp)
            return Message(encode_decline(public), reply_to=message)
        update, epsilon = outcome
        content = self._sealed_update(
            ins, agent, update, epsilon, box, context, records=len(rows), masker=masker
        )
        return Message(content, reply_to=message)

    # -- masking (meshfl.secure.secagg) ----------------------------------------------------
    MASKED_ROUNDS_KEPT = 16
    """Masked rounds not yet unmasked that an MSP remembers per run. An answered round is
    forgotten (only the latest round number is kept), so the state stays small."""

    @staticmethod
    def _mask_dir(context: Context) -> Path | None:
        """Where a deployed MSP keeps its masking state (None: in memory)."""
        state = context.node_config.get("state-dir")
        return Path(str(state)) / "masking" if state is not None else None

    def _masker(
        self,
        ins: RoundInstructions,
        agent: Agent[Any],
        plan: MaskingPlan,
        box: Sealer,
        context: Context,
        length: int,
    ) -> Callable[[np.ndarray], tuple[Sealed, MaskedShares, bytes]]:
        """Starts the round's mask for a payload of ``length`` values as ``plan`` says
        (once per round), and returns what seals and masks the payload with it."""
        if not hasattr(box, "shift"):
            raise MeshflError("a masked round needs the CKKS back end")
        ring = cast("CKKSSealer", box)
        run_id = ins.context.run_id
        scope = round_scope(run_id, ins.context.session, agent.name, ins.server_round)
        where = (self._mask_dir(context), context.node_id, run_id, context.state)
        with self.masking.run(*where) as state:
            keys = self.masking.keys(state)
            MaskingMemory.pin(state, plan)
            # A scope masked twice has the same pairwise masks: one run unmasked with the
            # MSP alive, one with it "dropped", would reveal its update. So no round is
            # masked unless it comes after every one masked before (this one included),
            # however many rounds the MSP has forgotten since.
            stream = f"{ins.context.session}\x00{agent.name}"
            latest = state.setdefault("latest", {})
            if ins.server_round <= latest.get(stream, 0):
                raise MeshflError(
                    f"this MSP already masked round {latest[stream]} of this session; "
                    f"it masks only later rounds (asked for round {ins.server_round})"
                )
            latest[stream] = ins.server_round
        pending = start_mask(ring, length, node=context.node_id, keys=keys, plan=plan, scope=scope)

        def mask(payload: np.ndarray) -> tuple[Sealed, MaskedShares, bytes]:
            if payload.size != length:
                pending.cancel()
                raise MeshflError(
                    f"{agent.name}'s update holds {payload.size - PAYLOAD_EXTRA} values, but "
                    f"its update_size says {length - PAYLOAD_EXTRA}: the coordinator checks "
                    "every update against update_size, so fix the agent's update_size"
                )
            masked, shares = seal_masked(ring, payload, pending)
            with self.masking.run(*where) as state:
                rounds = state.setdefault("rounds", {})
                rounds[scope.hex()] = {
                    "neighbours": {
                        str(n): k.hex()
                        for n, k in zip(plan.neighbours, plan.public_keys, strict=True)
                    },
                    "threshold": plan.threshold,
                }
                for old in list(rounds)[: -self.MASKED_ROUNDS_KEPT]:
                    del rounds[old]
            return masked, shares, keys.public

        return mask

    def mask_keys(self, message: Message, context: Context) -> Message:
        """This MSP's X25519 public key for the run (made from OS entropy on first ask)."""
        run_id = decode_key_request(message)
        with self.masking.run(
            self._mask_dir(context), context.node_id, run_id, context.state
        ) as state:
            public = self.masking.keys(state).public
        return Message(encode_key_reply(public), reply_to=message)

    def unmask(self, message: Message, context: Context) -> Message:
        """Answer a masked round's unmask request, once: shares of the survivors' self-mask
        seeds, pairwise seeds with neighbours that sent nothing (never both for one)."""
        (run_id, session, agent, server_round), request = decode_unmask_request(message)
        scope = round_scope(run_id, session, agent, server_round)
        with self.masking.run(
            self._mask_dir(context), context.node_id, run_id, context.state
        ) as state:
            entry = state.get("rounds", {}).get(scope.hex())
            if entry is None:
                raise MeshflError(
                    "this MSP has no masked update of this round left to unmask (it answers "
                    "a round's unmask request once)"
                )
            reply = answer_unmask(
                request,
                node=context.node_id,
                keys=self.masking.keys(state),
                neighbours={int(n): bytes.fromhex(k) for n, k in entry["neighbours"].items()},
                scope=scope,
                min_survivors=max(MIN_MASKED, int(entry["threshold"])),
            )
            del state["rounds"][scope.hex()]  # answered once: nothing more to give for it
        return Message(encode_unmask_reply(reply), reply_to=message)

    @staticmethod
    def _check_mirror(
        message: Message, ins: RoundInstructions, agent: Agent[Any], ledger: PrivacyLedger | None
    ) -> None:
        """Refuse to train on a ledger behind the coordinator's mirror of it."""
        dp = ins.context.privacy
        mirror = message.content.config_records.get("mirror")
        if dp is not None and ledger is not None and mirror is not None:
            # A ledger behind the coordinator's mirror lost events: training on it would
            # spend that privacy again (LedgerBehindError says how to recover).
            ledger.check_against(
                agent.name,
                float(mirror.get("epsilon", 0.0)),  # type: ignore[arg-type]
                delta=dp.delta,
                accountant=dp.accountant,
                budget=dp.epsilon,
            )

    @staticmethod
    def _sealed_update(
        ins: RoundInstructions,
        agent: Agent[Any],
        update: Update,
        epsilon: float,
        box: Sealer,
        context: Context,
        *,
        records: int,
        masker: Callable[[np.ndarray], tuple[Sealed, MaskedShares, bytes]] | None = None,
    ) -> RecordDict:
        """The reply's content: the sealed, bound update and what may travel in the clear."""
        dp = ins.context.privacy
        # Pre-weight, append the weight and this MSP's tag for the round, seal: the
        # coordinator only ever sees ciphertext, and cannot pass it off as anything else.
        binding = Binding(
            ins.context.run_id, agent.name, ins.server_round, ins.context.noise_shares
        )
        tag = tags(box.binding_key, binding.scope, context.node_id)
        # Under DP every MSP weighs 1: the weight is its row count, and every key holder
        # would read the exact total of rows from a sum, which no noise covers.
        weight = 1.0 if dp is not None else update.weight
        payload = seal_payload(update.vector, weight, tag=tag)
        masking: tuple[MaskedShares, bytes] | None = None
        if masker is not None:  # a masked round: the ciphertext is useless on its own
            sealed, shares, public = masker(payload)
            masking = (shares, public)
        else:
            sealed = box.seal(payload)
        sealed = replace(sealed, binding=binding.to_json())
        content = encode_update(
            sealed,
            # Under DP nothing computed from the raw rows leaves in the clear: the noise
            # covers the sealed update only, not a training loss.
            metrics={} if dp is not None else dict(update.metrics),
            epsilon_spent=_reported(epsilon, ins),
            msp=node_index(context),
            # A post-processing of the private update, to a power of 2 (a size hint of one
            # power of 2); under unit="msp" the coordinator computes it from public values.
            snr=update_snr(agent, update, records=records)
            if dp is not None and dp.unit == "sample"
            else None,
        )
        if masking is None:
            return content
        shares, public = masking
        return encode_shares(content, shares, public)

    def evaluate(self, message: Message, context: Context) -> Message:
        """Evaluate the opened global model on the node's held-out rows."""
        ins = decode_instructions(message)
        agent, key = self.agent_for(ins)
        verify = self.verification(ins, agent, context, before=ins.server_round + 1)
        box = self.sealer_for(context)
        vector = self.open_model(ins, agent, box, context, verify)
        metrics = agent.evaluate(vector, self.local(agent, key, context, "test"))
        return Message(encode_evaluation(metrics), reply_to=message)

    def history(self, message: Message, context: Context) -> Message:
        """Open and keep the sums a history message carries (an MSP catching up)."""
        ins = decode_instructions(message)
        agent, _ = self.agent_for(ins)
        verify = self.verification(ins, agent, context, before=ins.server_round + 1)
        self.open_model(ins, agent, self.sealer_for(context), context, verify)
        return Message(RecordDict(), reply_to=message)


def make_client_app(
    data: DataProvider,
    *,
    sealer: SealerProvider | None = None,
    state_dir: StateDirectory | None = None,
    min_contributors: int | None = None,
    require_masking: bool | None = None,
) -> ClientApp:
    """A ``ClientApp`` that trains and evaluates every built agent on this MSP's data.

    Parameters
    ----------
    data : callable
        ``data(agent_name, context)`` returns the MSP's :class:`NodeData` for that agent.
        When ``NodeData.test`` is None, evaluation runs on the training rows.
    sealer : callable, optional
        ``sealer(context)`` is the MSP's :class:`~meshfl.secure.backend.Sealer`: it opens
        the sealed global model and seals the update. Defaults to a CKKS sealer from the
        node config's ``secret-key`` (the MSPs' secret context file).
    state_dir : callable, optional
        ``state_dir(context)`` is the MSP's state directory (its privacy ledger lives
        there). Defaults to the node config's ``state-dir``; training under differential
        privacy needs one.
    min_contributors : int, optional
        The fewest distinct MSPs whose updates a sealed model must provably add up before
        this MSP trains or evaluates on it (:class:`~meshfl.federation.sealed_model.
        Verification`). It is the MSP's own floor: the coordinator's ``min_msps`` cannot
        lower it. Defaults to the node config's ``min-contributors``, else
        :data:`DEFAULT_MIN_CONTRIBUTORS`, and then never below the agent's own ``min_msps``.
        Simulations pass their plan's ``min_msps`` (local-only baselines train alone).
    require_masking : bool, optional
        Decline every round whose plan does not mask updates (:mod:`meshfl.secure.secagg`),
        with the fixed sentence :data:`DECLINED_UNMASKED`; nothing is trained or spent.
        Without masking, any MSP (all hold the CKKS secret key) colluding with the
        coordinator reads this MSP's update. Defaults to the node config's
        ``require-masking`` (``meshfl-node --require-masking``), else false.
    """
    app = ClientApp()
    node = MSPNode(
        data,
        sealer=sealer,
        state_dir=state_dir,
        min_contributors=min_contributors,
        require_masking=require_masking,
    )
    # Whatever a handler raises leaves as a code and a fixed sentence; the details stay in
    # this MSP's log (meshfl.federation.errors): an error's text is a decryption oracle.
    for name in registry.built():
        app.train(name)(guard(node.train))
        app.evaluate(name)(guard(node.evaluate))
        app.query(name)(guard(node.history))
    app.query(KEYS_ACTION)(guard(node.mask_keys))
    app.query(UNMASK_ACTION)(guard(node.unmask))
    return app
