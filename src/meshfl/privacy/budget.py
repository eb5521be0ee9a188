"""Deciding one round's private mechanism from the budget and what the ledger already holds.

Before every round an MSP turns its :class:`~meshfl.privacy.config.DPConfig`, its ledger
history and the round's shape (mechanism, sampling rate, steps) into a :class:`DPStep`:

* with a fixed ``noise_multiplier`` the step is used as it is, if composing it with the
  history stays within ε;
* otherwise the noise multiplier is calibrated so that this round *and every round still
  planned*, composed with the history, spend at most ε. A fresh MSP therefore spreads ε
  evenly over the plan; an MSP restarted mid-run, or joining a second run, spends only what
  is left.

Either way, when nothing fits, :class:`~meshfl.privacy.accountant.PrivacyBudgetExhausted`
is raised and the MSP declines the round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshfl.privacy.accountant import PrivacyBudgetExhausted, calibrate_noise, epsilon_spent
from meshfl.privacy.config import DPConfig
from meshfl.privacy.events import Mechanism, PrivacyEvent

__all__ = ["SPENT_FRACTION", "DPStep", "msp_level_noise_report", "plan_round"]

SPENT_FRACTION = 0.99
"""Share of ε after which a budget counts as spent."""


@dataclass(frozen=True)
class DPStep:
    """The private mechanism an MSP applies in one round."""

    mechanism: Mechanism
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    unit: str

    def event(self) -> PrivacyEvent:
        """The ledger event of this step."""
        return PrivacyEvent(
            mechanism=self.mechanism,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self.steps,
            unit=self.unit,  # type: ignore[arg-type]
        )


def plan_round(
    dp: DPConfig,
    history: Sequence[PrivacyEvent],
    *,
    mechanism: Mechanism,
    sample_rate: float,
    steps: int,
    rounds_left: int,
) -> DPStep:
    """This round's mechanism, within the budget; raises ``PrivacyBudgetExhausted``.

    A budget with less than :data:`SPENT_FRACTION` of ε left counts as spent: what remains
    would only buy a round drowned in noise.
    """
    spent = epsilon_spent(history, delta=dp.delta, accountant=dp.accountant)
    if spent >= SPENT_FRACTION * dp.epsilon:
        raise PrivacyBudgetExhausted(
            f"ε spent is {spent:.4g} of the budget ε={dp.epsilon:g} (δ={dp.delta:g}); "
            "the budget is spent, declining"
        )
    if dp.noise_multiplier is not None:
        step = DPStep(mechanism, dp.noise_multiplier, sample_rate, steps, dp.max_grad_norm, dp.unit)
        after = epsilon_spent([*history, step.event()], delta=dp.delta, accountant=dp.accountant)
        if after > dp.epsilon:
            raise PrivacyBudgetExhausted(
                f"the next round would raise ε from {spent:.4g} to {after:.4g}, over the budget "
                f"ε={dp.epsilon:g} (δ={dp.delta:g}); declining"
            )
        return step
    sigma = calibrate_noise(
        epsilon=dp.epsilon,
        delta=dp.delta,
        sample_rate=sample_rate,
        steps=steps * max(rounds_left, 1),
        history=history,
        accountant=dp.accountant,
    )
    return DPStep(mechanism, sigma, sample_rate, steps, dp.max_grad_norm, dp.unit)


def msp_level_noise_report(
    dp: DPConfig, *, dim: int, msps_per_round: int, sample_rate: float, rounds: int
) -> str | None:
    """A sentence when MSP-level noise would drown every update, else ``None``.

    Each MSP's delta is clipped to norm C; the averaged update of ``m`` MSPs is at most C
    long, while the noise on it has norm ``sigma·C·sqrt(dim)/m``. When that ratio exceeds 1 the
    averaged update is mostly noise.
    """
    if dp.noise_multiplier is not None:
        sigma = dp.noise_multiplier
    else:
        sigma = calibrate_noise(
            epsilon=dp.epsilon,
            delta=dp.delta,
            sample_rate=sample_rate,
            steps=rounds,
            accountant=dp.accountant,
        )
    ratio = sigma * dim**0.5 / max(msps_per_round, 1)
    if ratio <= 1:
        return None
    needed = int(sigma * dim**0.5) + 1
    return (
        f"MSP-level DP with ε={dp.epsilon:g} over {rounds} round(s) needs noise multiplier "
        f"sigma={sigma:.3g}: with {msps_per_round} MSP(s) per round the noise on the averaged "
        f"update is {ratio:.3g}x the largest possible signal ({dim} parameters), so training "
        f"will not learn. It needs about {needed} MSPs per round, a larger ε, fewer rounds, "
        "or unit='sample'."
    )
