"""One MSP's training round under its privacy budget: plan, check, train, record, or decline.

The order matters and is the point of this module:

0. the agent's ledger is held (:meth:`~meshfl.privacy.ledger.PrivacyLedger.hold`, a lock
   across threads and processes) from step 1 to step 4: two runs on one state directory take
   turns, and the one that waited reads the ledger afresh and re-plans, so it can only
   decline, never overspend; one that waits too long declines, saying so;
1. a message already in the ledger (same run, same round, same coordinator session: a
   replay) is declined, so no event is ever counted twice. A round re-sent by a restarted
   coordinator (new session) is trained and charged again: both releases happened;
2. the mechanism is planned from the budget and the ledger (:func:`plan_round`); if it does
   not fit, the MSP declines with the reason — nothing crashes, nothing is spent;
3. the update is computed under that mechanism;
4. the event is written to the ledger (fsynced) *before* the update leaves the MSP, so a
   crash can only ever over-count, never under-count, what was spent.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from meshfl.agents.base import Agent
from meshfl.agents.update import Update
from meshfl.config.errors import ConfigError, MeshflError
from meshfl.federation.records import Decline, RoundInstructions
from meshfl.privacy.accountant import PrivacyBudgetExhausted
from meshfl.privacy.budget import DPStep, plan_round
from meshfl.privacy.config import DPConfig
from meshfl.privacy.events import Mechanism
from meshfl.privacy.ledger import LedgerBusyError, PrivacyLedger
from meshfl.privacy.mechanisms import add_gaussian_noise, clip_l2

__all__ = ["bounded_contribution", "msp_contribution", "msp_statistics", "train_round"]

logger = logging.getLogger(__name__)


def train_round(
    agent: Agent[Any],
    ins: RoundInstructions,
    vector: np.ndarray,
    local: Any,
    *,
    seed: int,
    ledger: PrivacyLedger | None,
    msp: int,
) -> tuple[Update, float] | Decline:
    """The MSP's update from the global ``vector``, and its ε so far; or a :class:`Decline`.

    Under differential privacy, planning, training and recording are one step: the ledger is
    held throughout. Raises :class:`~meshfl.privacy.ledger.LedgerCorruptError` when the
    ledger cannot be trusted (nothing is trained).
    """
    dp = ins.context.privacy
    if dp is None:
        update = agent.local_update(vector, local, server_round=ins.server_round, seed=seed)
        return update, 0.0
    if ledger is None:
        raise MeshflError(
            "This MSP was asked to train under differential privacy but has no state "
            "directory for its privacy ledger; start it with a state directory."
        )
    try:
        with ledger.hold(agent.name):
            planned = _plan(agent, ins, dp, local, ledger=ledger, msp=msp)
            if isinstance(planned, Decline):
                return planned
            round_dp, step, key = planned
            update = _private_update(agent, ins, vector, local, seed=seed, dp=round_dp, step=step)
            if not ledger.record(
                agent.name, key, step.event(), delta=round_dp.delta, accountant=round_dp.accountant
            ):  # pragma: no cover - the ledger is held since the replay check
                raise MeshflError(
                    f"The privacy ledger already holds {key!r}; the update is not sent."
                )
            return update, ledger.epsilon(
                agent.name, delta=round_dp.delta, accountant=round_dp.accountant
            )
    except LedgerBusyError as err:
        logger.warning("MSP %d declines round %d: %s", msp, ins.server_round, err)
        return Decline(
            "another run on this MSP's state directory held the privacy ledger of "
            f"{agent.name!r} for more than {err.waited:g} s (it trains a round of its own); "
            "declining rather than planning from a ledger that is about to change",
            ledger.epsilon(agent.name, delta=dp.delta, accountant=dp.accountant),
            msp,
        )


def _plan(
    agent: Agent[Any],
    ins: RoundInstructions,
    dp: DPConfig,
    local: Any,
    *,
    ledger: PrivacyLedger,
    msp: int,
) -> tuple[DPConfig, DPStep, str] | Decline:
    """The round's DP config, its planned step and its ledger key; or a decline (a replay, a
    mechanism that does not fit, a spent budget). Called with the ledger held."""
    key = f"{ins.context.run_id}:{ins.server_round}:{ins.context.session}"
    spent = ledger.epsilon(agent.name, delta=dp.delta, accountant=dp.accountant)
    if key in ledger.keys(agent.name):
        return Decline(
            f"round {ins.server_round} of run {ins.context.run_id!r} (coordinator session "
            f"{ins.context.session!r}) is already in the privacy ledger: this message is a "
            "replay, and training it again would spend privacy twice",
            spent,
            msp,
        )
    dp.check_records(len(local), who=f"MSP {msp}")
    shape = _mechanism(agent, ins, dp, local, spent, msp)
    if isinstance(shape, Decline):
        return shape
    dp, mechanism, rate, steps = shape
    try:
        step = plan_round(
            dp,
            ledger.events(agent.name),
            mechanism=mechanism,
            sample_rate=rate,
            steps=steps,
            rounds_left=ins.rounds_left,
        )
    except PrivacyBudgetExhausted as err:
        return Decline(str(err), spent, msp)
    return dp, step, key


def _mechanism(
    agent: Agent[Any],
    ins: RoundInstructions,
    dp: DPConfig,
    local: Any,
    spent: float,
    msp: int,
) -> tuple[DPConfig, Mechanism, float, int] | Decline:
    """The round's DP config, mechanism, sample rate and steps for ``dp.unit``, or a decline."""
    if dp.unit == "sample":
        mechanism, rate, steps = agent.privacy_shape(local)
        return dp, mechanism, rate, steps
    elif agent.supports_msp_dp:
        # One noise multiplier for every MSP of the round, planned by the coordinator from
        # public inputs: the sum then carries exactly the noise each ledger records. This
        # MSP only checks that it can afford it (plan_round declines otherwise).
        if ins.context.noise_multiplier is None:
            return Decline(
                "the coordinator planned no noise multiplier for this unit='msp' round",
                spent,
                msp,
            )
        dp = dp.model_copy(update={"noise_multiplier": ins.context.noise_multiplier})
        # Charged in full (rate 1), whatever the sampling: who took part is no secret to the
        # coordinator, nor to the MSPs, who verify each sum's contributors, so amplification
        # by sampling holds against neither (docs/privacy.md).
        return dp, "gaussian", 1.0, 1
    else:
        raise ConfigError(
            f"Agent {agent.name!r} does not support unit='msp' differential privacy; "
            "use unit='sample'."
        )


def _private_update(
    agent: Agent[Any],
    ins: RoundInstructions,
    vector: np.ndarray,
    local: Any,
    *,
    seed: int,
    dp: DPConfig,
    step: DPStep,
) -> Update:
    """The update trained under the planned ``step``: DP-SGD, or clipped and noised per MSP."""
    if dp.unit == "sample":
        return agent.local_update(vector, local, server_round=ins.server_round, seed=seed, dp=step)
    # MSP-level DP: bound this MSP's whole contribution to norm C = max_grad_norm (its
    # sensitivity to adding or removing the MSP) and add its share of the noise; the
    # coordinator's sum of at least noise_shares contributions carries N(0, sigma^2 C^2).
    raw = agent.local_update(vector, local, server_round=ins.server_round, seed=seed)
    contribution = bounded_contribution(agent, raw, vector, dp.max_grad_norm)
    noisy = add_gaussian_noise(
        contribution,
        sensitivity=dp.max_grad_norm,
        noise_multiplier=step.noise_multiplier,
        shares=ins.context.noise_shares,
    )  # noise from OS entropy, never from the public seed
    if msp_contribution(agent) == "delta":
        released = vector + noisy
    else:
        # an agent whose statistics travel in a form of their own (public scales, public
        # slots such as the noise variance) maps the noisy statistics back to it: a
        # post-processing of the noisy release and of public values only
        finish = getattr(agent, "msp_release", None)
        released = (
            noisy
            if finish is None
            else finish(
                noisy,
                noise_std=step.noise_multiplier * dp.max_grad_norm,
                shares=ins.context.noise_shares,
            )
        )
    return Update(
        vector=released,
        weight=1.0,
        # Only the example count leaves the MSP: the loss and the delta's norm are
        # computed on raw data and are not covered by the noise.
        metrics={"examples": raw.metrics.get("examples", 0.0)},
        privacy_event=step.event(),
    )


def msp_contribution(agent: Agent[Any]) -> str:
    """What an agent's MSP-level release bounds: ``"delta"`` (its model delta, for agents
    that average parameters) or ``"statistics"`` (the summed statistics it sends, for
    agents that count); see :attr:`meshfl.agents.base.Agent.msp_contribution`."""
    return str(getattr(agent, "msp_contribution", "delta"))


def bounded_contribution(
    agent: Agent[Any], raw: Update, vector: np.ndarray, clip_norm: float
) -> np.ndarray:
    """One MSP's whole contribution to a round's sum, scaled to L2 norm at most ``clip_norm``.

    For parameter-averaging agents it is the model delta ``raw.vector - vector``. For
    counting agents (``msp_contribution = "statistics"``: anomaly's leaf counts,
    client_health's G/H histograms) it is the statistics vector itself, whose norm grows with
    the MSP's rows (at least ``sqrt(rows * trees)`` for leaf counts): scaling it to norm
    ``clip_norm`` bounds the sum's sensitivity to a whole MSP by ``clip_norm`` whatever its
    size. Scaling (rather than turning counts into frequencies, or capping rows) spends all
    of that bound on signal whenever the statistics are longer than ``clip_norm``, as leaf
    counts always are for ``clip_norm <= sqrt(trees)`` (docs/privacy.md). Within an MSP the
    statistics keep their proportions (a leaf's share of a tree, a bin's gradient against its
    hessian): the sum is every MSP's statistics weighted by ``clip_norm / norm``.

    An agent whose update also carries public values (revenue's noise variance) or whose
    statistics need public per-coordinate scales to share the bound well says which vector
    is bounded through ``msp_statistics(vector)``; ``msp_release`` maps the noisy vector
    back (see :func:`msp_statistics`).
    """
    if msp_contribution(agent) == "statistics":
        contribution = msp_statistics(agent, raw.vector)
    else:
        contribution = np.asarray(raw.vector, dtype=np.float64) - vector
    clipped, _ = clip_l2(contribution, clip_norm)
    return clipped


def msp_statistics(agent: Agent[Any], vector: np.ndarray) -> np.ndarray:
    """The statistics vector an MSP-level release of a counting agent bounds and noises.

    The agent's update itself, unless the agent says otherwise with ``msp_statistics``:
    revenue drops the trailing slot that carries the (public) noise variance and applies
    public per-coordinate scales, so that its shared-shape statistics ``Xᵀy`` get a fair
    share of the norm ``C`` against ``XᵀX`` and the counts; its ``msp_release`` undoes the
    scales on the noisy vector and writes the slot with its known value.
    """
    own = getattr(agent, "msp_statistics", None)
    out = np.asarray(vector, dtype=np.float64) if own is None else own(vector)
    return np.asarray(out, dtype=np.float64)
