"""The coordinator side: a Flower ``ServerApp`` that runs rounds for each planned agent.

Each agent gets an :class:`AgentPlan` (rounds, sampling, minimum MSPs, timeout) and its own
:class:`~meshfl.federation.strategy.AgentStrategy`. The driver loop is meshfl's rather than
``Strategy.start`` so that it can report progress and keep a per-round history; it calls the
same four strategy methods.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from pydantic import Field, field_validator, model_validator

from meshfl.agents import registry
from meshfl.agents.base import Agent
from meshfl.config.base import MeshflConfig
from meshfl.config.errors import ConfigError
from meshfl.federation.records import RoundContext
from meshfl.federation.strategy import AgentStrategy
from meshfl.privacy.accountant import calibrate_noise
from meshfl.privacy.config import DPConfig
from meshfl.privacy.snr import coarse, msp_level_snr
from meshfl.secure.aggregate import PAYLOAD_EXTRA
from meshfl.secure.backend import PLAINTEXT, Aggregator, Sealed
from meshfl.store.model_store import ModelStore

__all__ = ["AgentPlan", "AgentRun", "make_server_app", "planned_noise", "run_plan"]

log = logging.getLogger("meshfl.federation")

RoundCallback = Callable[[dict[str, Any]], None]


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
                "counts whose sensitivity to a whole MSP grows with the MSP's size, so "
                "MSP-level noise would drown it"
            )
        return self

    def build_agent(self) -> Agent[Any]:
        """The agent this plan trains, configured."""
        return registry.get(self.agent)(self.agent_config)


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

    With a ``store``, every round is committed (sealed sum, model history, metrics, ε
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
            sample_fraction=plan.fraction_train,
            noise_shares=plan.min_msps,
            noise_multiplier=planned_noise(plan) if msp_level else None,
        ),
    )
    run = AgentRun(agent=agent, seed=plan.seed)
    done = 0
    if store is not None:
        store.start_run(run_id, agent.name, plan.model_dump(mode="json"))
        done, strategy.history = store.resume_state(run_id, agent.name)
        strategy.epsilon_by_msp.update(store.epsilon_mirror(agent.name))
        if done:
            log.info("%s: resuming run %s after round %d", agent.name, run_id, done)
    for server_round in range(done + 1, plan.rounds + 1):
        start = time.perf_counter()
        replies = grid.send_and_receive(
            strategy.configure_train(server_round, grid), timeout=plan.round_timeout
        )
        changed = strategy.aggregate_train(server_round, replies)
        if store is not None:  # on disk before any MSP sees the new model
            store.commit_round(
                run_id=run_id,
                agent=agent.name,
                round=server_round,
                sealed_sum=strategy.versions[-1] if changed else None,
                history=strategy.history,
                metrics=strategy.outcome.train_metrics,
                epsilon_by_msp=strategy.epsilon_by_msp,
                n_msps=strategy.outcome.accepted,
            )
        evaluation = strategy.aggregate_evaluate(
            server_round,
            grid.send_and_receive(
                strategy.configure_evaluate(server_round, grid), timeout=plan.round_timeout
            ),
        )
        outcome = strategy.outcome
        record: dict[str, Any] = {
            "agent": agent.name,
            "round": server_round,
            "sampled": outcome.sampled,
            "msps": outcome.accepted,
            "dropped": len(outcome.dropped),
            "declined": len(outcome.declined),
            "declined_msps": [msp for msp, _ in outcome.declined],
            "skipped": outcome.skipped_reason is not None,
        }
        record.update(
            {
                k if k.startswith("train_") else f"train_{k}": v
                for k, v in outcome.train_metrics.items()
            }
        )
        record.update(evaluation)
        if store is not None and evaluation:
            store.update_metrics(
                run_id=run_id, agent=agent.name, round=server_round, metrics=evaluation
            )
        if plan.privacy is not None:
            record["epsilon_max"] = max(strategy.epsilon_by_msp.values(), default=0.0)
            record["snr"] = _round_snr(strategy)
        record["worse_than_baseline"] = agent.worse_than_baseline(evaluation)
        _log_quality(agent, plan, server_round, record)
        record["update_bytes"] = outcome.bytes_received
        record["seconds"] = time.perf_counter() - start
        run.history.append(record)
        if on_round is not None:
            on_round(record)
        if outcome.declined and outcome.accepted == 0:
            run.stopped_reason = (
                f"stopped after round {server_round} of {plan.rounds}: every MSP that replied "
                "declined because its privacy budget is spent"
            )
            log.warning("%s: %s", agent.name, run.stopped_reason)
            break
    if store is not None:
        store.finish_run(
            run_id, agent.name, status="stopped" if run.stopped_reason else "completed"
        )
    run.sealed_history = list(strategy.history)
    run.versions = list(strategy.versions)
    run.epsilon_by_msp = dict(strategy.epsilon_by_msp)
    return run


def _round_snr(strategy: AgentStrategy) -> float:
    """The round's coarse signal-to-noise estimate (NaN when no update was added).

    Sample-level DP: the lower median of what the MSPs sent. MSP-level DP: computed here
    from public values only (contributors, the planned sigma, the update's length).
    """
    outcome, context = strategy.outcome, strategy.context
    if outcome.skipped_reason is not None or outcome.accepted == 0:
        return math.nan
    if context.privacy is not None and context.privacy.unit == "msp":
        sigma = context.noise_multiplier or 0.0
        dim = strategy.update_length - PAYLOAD_EXTRA
        return coarse(msp_level_snr(outcome.accepted, sigma, dim, shares=context.noise_shares))
    return math.nan if outcome.snr is None else outcome.snr


def _log_quality(
    agent: Agent[Any], plan: AgentPlan, server_round: int, record: dict[str, Any]
) -> None:
    """Log the round's signal-to-noise estimate, and warn when DP made the model trivial."""
    if plan.privacy is None:
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
        plan.privacy.epsilon,
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
            plan.privacy.epsilon,
            snr,
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
