"""The coordinator side: a Flower ``ServerApp`` that runs rounds for each planned agent.

Each agent gets an :class:`AgentPlan` (rounds, sampling, minimum MSPs, timeout) and its own
:class:`~meshfl.federation.strategy.AgentStrategy`, built from the plan by :func:`run_plan`.
The round loop is the strategy's own :meth:`~meshfl.federation.strategy.AgentStrategy.start`,
as in Flower: it reports progress, commits each round and keeps a per-round history.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import MutableMapping, Sequence
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from pydantic import Field, field_validator, model_validator

from meshfl.agents import registry
from meshfl.agents.base import Agent
from meshfl.config.base import MeshflConfig
from meshfl.config.errors import ConfigError
from meshfl.federation.records import RoundContext
from meshfl.federation.strategy import AgentRun, AgentStrategy, RoundCallback
from meshfl.privacy.accountant import calibrate_noise
from meshfl.privacy.config import DPConfig
from meshfl.secure.backend import PLAINTEXT, Aggregator
from meshfl.store.model_store import ModelStore

__all__ = ["AgentPlan", "AgentRun", "make_server_app", "planned_noise", "run_plan"]


class AgentPlan(MeshflConfig):
    """How the coordinator trains one agent."""

    agent: str = Field(description="Agent name (see meshfl.agents.names()).")
    agent_config: dict[str, Any] = Field(default_factory=dict, description="The agent's config.")
    rounds: int = Field(3, ge=1, le=100_000, description="Federated rounds.")
    fraction_train: float = Field(1.0, gt=0, le=1, description="MSPs sampled per round.")
    min_msps: int = Field(1, ge=1, description="Fewest valid updates a round needs.")
    fraction_evaluate: float = Field(1.0, gt=0, le=1, description="MSPs asked to evaluate.")
    round_timeout: float | None = Field(None, gt=0, description="Seconds to wait for replies.")
    min_available_msps: int = Field(1, ge=1, description="MSPs connected before a round starts.")
    connect_timeout: float = Field(300.0, gt=0, description="Seconds to wait for them.")
    seed: int = Field(0, ge=0, description="Seeds sampling and local randomness.")
    privacy: DPConfig | None = Field(None, description="Differential privacy; None is off.")
    masking: bool = Field(
        True,
        description="Mask updates inside the ciphertexts (CKKS, rounds of 3 or more MSPs), so "
        "that no single key holder reads an MSP's update (meshfl.secure.secagg).",
    )
    masking_dropout: float = Field(
        1 / 3,
        ge=0,
        lt=0.5,
        description="Share of an MSP's neighbours that may drop between sending and "
        "unmasking before a masked round fails closed.",
    )

    @field_validator("agent")
    @classmethod
    def _built(cls, name: str) -> str:
        registry.get(name)  # raises with the valid names
        return name

    @model_validator(mode="after")
    def _enough_msps_for_agent(self) -> AgentPlan:
        needed = registry.get(self.agent).min_msps
        if self.min_msps < needed:
            raise ValueError(
                f"set min_msps to at least {needed} for agent {self.agent!r} (got "
                f"{self.min_msps}): a smaller sum would expose what single MSPs sent"
            )
        return self

    @model_validator(mode="after")
    def _privacy_fits_agent(self) -> AgentPlan:
        msp_level = self.privacy is not None and self.privacy.unit == "msp"
        if msp_level and not registry.get(self.agent).supports_msp_dp:
            raise ValueError(
                f"use unit='sample' for agent {self.agent!r}: its update is a vector of "
                "sums whose sensitivity to a whole MSP grows with the MSP's size, and the "
                "agent does not bound them per MSP (supports_msp_dp=False), so MSP-level "
                "noise would not cover them"
            )
        return self

    def build_agent(self) -> Agent[Any]:
        """The agent this plan trains, configured."""
        return registry.get(self.agent)(self.agent_config)


def planned_noise(plan: AgentPlan) -> float:
    """The one noise multiplier (sigma) of an MSP-level private plan, from public inputs only.

    ``rounds`` Gaussian mechanisms, each charged in full (an MSP may be drawn every round,
    and who took part is known, so sampling does not amplify), spend the plan's ε; every MSP
    adds a share of this sigma and checks it against its own ledger.
    """
    dp = plan.privacy
    if dp is None:
        raise ConfigError("planned_noise needs a plan with privacy")
    if dp.noise_multiplier is not None:
        return float(dp.noise_multiplier)
    return calibrate_noise(
        epsilon=dp.epsilon,
        delta=dp.delta,
        sample_rate=1.0,  # no amplification: participation is known (see train_round)
        steps=plan.rounds,
        accountant=dp.accountant,
        unit="msp",
        mechanism="gaussian",
    )


def run_plan(
    grid: Grid,
    plan: AgentPlan,
    aggregator: Aggregator,
    *,
    on_round: RoundCallback | None = None,
    store: ModelStore | None = None,
    run_id: str | None = None,
) -> AgentRun:
    """Run every round of one plan over ``grid``; returns the sealed model and the history.

    Builds the plan's :class:`AgentStrategy` and runs its :meth:`AgentStrategy.start`. With
    a ``store``, every round is committed (sealed sum, model history, metrics, ε
    mirror) before the new model goes out for evaluation, and a plan whose ``run_id`` the
    store already holds resumes after its last committed round: a coordinator killed
    mid-run and restarted on the same state directory loses and repeats nothing.
    """
    agent = plan.build_agent()
    run_id = run_id or uuid.uuid4().hex
    msp_level = plan.privacy is not None and plan.privacy.unit == "msp"
    if msp_level and aggregator.backend == PLAINTEXT:
        raise ConfigError(
            "unit='msp' differential privacy needs secure aggregation (CKKS): each MSP's "
            "update carries only its 1/min_msps share of the noise, and with the plaintext "
            "back end the coordinator reads every update. Use secure aggregation, or "
            "unit='sample'."
        )
    if not plan.masking and aggregator.backend != PLAINTEXT:
        warnings.warn(
            f"masking is off for agent {plan.agent!r}: every MSP holds the CKKS secret key, "
            "so an MSP colluding with the coordinator reads every individual update (and "
            "unit='msp' noise shares protect only the sum). Leave masking on (AgentPlan "
            "masking=True, the default) unless you trust every MSP not to collude.",
            UserWarning,
            stacklevel=2,
        )
    strategy = AgentStrategy(
        agent,
        aggregator,
        fraction_train=plan.fraction_train,
        min_msps=plan.min_msps,
        fraction_evaluate=plan.fraction_evaluate,
        seed=plan.seed,
        min_available=plan.min_available_msps,
        connect_timeout=plan.connect_timeout,
        context=RoundContext(
            run_id=run_id,
            session=uuid.uuid4().hex,
            total_rounds=plan.rounds,
            privacy=plan.privacy,
            noise_shares=plan.min_msps,
            noise_multiplier=planned_noise(plan) if msp_level else None,
        ),
        masking=plan.masking,
        masking_dropout=plan.masking_dropout,
    )
    return strategy.start(
        grid,
        num_rounds=plan.rounds,
        timeout=plan.round_timeout,
        store=store,
        plan=plan.model_dump(mode="json"),
        on_round=on_round,
    )


def make_server_app(
    plans: Sequence[AgentPlan],
    aggregator: Aggregator,
    *,
    on_round: RoundCallback | None = None,
    results: MutableMapping[str, AgentRun] | None = None,
    store: ModelStore | None = None,
    run_id: str | None = None,
) -> ServerApp:
    """A ``ServerApp`` that runs ``plans`` one after the other, adding sealed updates.

    ``aggregator`` holds only public material (CKKS: the public context). ``results``
    (optional) receives each agent's :class:`AgentRun` by name; ``on_round`` is called with
    each round's history record as soon as the round ends. ``store`` and ``run_id`` go to
    :func:`run_plan`: every round is committed, and a run id the store holds resumes (one
    id for all plans; the store keys runs by run id and agent).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        for plan in plans:
            run = run_plan(grid, plan, aggregator, on_round=on_round, store=store, run_id=run_id)
            if results is not None:
                results[plan.agent] = run

    return app
