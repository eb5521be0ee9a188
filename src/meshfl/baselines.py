"""Reference points for a federation: each MSP alone, and everyone's data pooled.

Both run through the same engine and agent code as the federation (a "federation" of one
node), with the same rounds, so the comparison isolates what federation adds:

* **local-only** — every MSP trains on its own rows only, and is scored on its own held-out
  rows: what an MSP gets by going alone, the bar its federated (or personalized) model must
  clear on the same rows. Never with DP, whatever the plan: going alone shares nothing;
* **centralized** — one party holds everyone's training rows (what privacy forbids); the
  upper reference the federation approaches.

These reference *models* are what "baselines" means here. They are not the trivial
baselines of an agent's metrics (``baseline_<metric>`` in ``evaluate``: the majority class,
AUC 0.5, ...), nor benchmarks: :mod:`meshfl.bench` (``meshfl bench ...``) and the
repository's ``benchmarks/`` scripts use these references to measure what federation adds.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from meshfl.agents.base import GlobalModel
from meshfl.agents.personalization import personalize as personalize_msp
from meshfl.federation.client_app import NodeData
from meshfl.federation.server_app import AgentPlan
from meshfl.simulation import cross_fitted_globals, federate

if TYPE_CHECKING:
    from meshfl.simulation import SimulationResult

__all__ = ["Baselines", "Comparison", "centralized", "compare", "local_only"]


@dataclass
class Baselines:
    """Models of the two references, with their seconds per round."""

    local: list[GlobalModel]
    central: GlobalModel
    local_seconds_per_round: float
    central_seconds_per_round: float


def _one_node(plan: AgentPlan, train: pd.DataFrame) -> tuple[GlobalModel, float]:
    plan = plan.model_copy(update={"min_msps": 1, "fraction_train": 1.0, "min_available_msps": 1})
    # One party holds the data: there is no coordinator to hide it from, so no encryption
    # (and no warning about it).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure aggregation is OFF.*")
        outcome = federate(plan, [NodeData(train, train)], secure_aggregation="plaintext")
    run = outcome.run
    seconds = sum(r["seconds"] for r in run.history) / max(len(run.history), 1)
    return run.agent.model(outcome.vector), seconds


def local_only(plan: AgentPlan, partitions: Sequence[NodeData]) -> tuple[list[GlobalModel], float]:
    """One model per MSP, trained on that MSP's rows only; and mean seconds per round.

    Without the plan's DP: an MSP that goes alone shares nothing and adds no noise, which
    is what joining the mesh must beat.
    """
    plan = plan.model_copy(update={"privacy": None})
    runs = [_one_node(plan, p.train) for p in partitions]
    return [m for m, _ in runs], sum(s for _, s in runs) / len(runs)


def centralized(plan: AgentPlan, partitions: Sequence[NodeData]) -> tuple[GlobalModel, float]:
    """One model trained on every MSP's rows pooled; and seconds per round."""
    pooled = plan.build_agent().pool([p.train for p in partitions])
    return _one_node(plan, pooled)


@dataclass
class Comparison:
    """A federation against its references: pooled, and per MSP on its own held-out rows.

    Per MSP (:attr:`per_msp`, one row each) the federated model, the MSP's personalized
    model (:func:`meshfl.agents.personalization.personalize`), its local-only model and the
    trivial baseline (``baseline_<metric>`` of ``evaluate``) are scored on that MSP's own
    held-out rows: the honest question for an MSP is whether joining beats going alone on
    its own data. ``federated`` and ``centralized`` are scored on everyone's held-out rows
    pooled. ``str(comparison)`` is a one-line summary, e.g. ``auc: federated 0.931 (pooled);
    per MSP on its own rows, mean: federated 0.912, personalized 0.948, local-only 0.903
    (best 0.951), baseline 0.500; centralized 0.933``.
    """

    metric: str
    federated: float
    """The federated model on every MSP's held-out rows, pooled."""
    local: list[float]
    """Each MSP's local-only model on that MSP's own held-out rows, in MSP order."""
    centralized: float | None
    local_models: list[GlobalModel] = field(repr=False)
    central_model: GlobalModel | None = field(repr=False)
    per_msp: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    """One row per MSP: ``msp``, ``examples`` (held-out rows scored), ``federated``,
    ``personalized``, ``local_only``, ``baseline`` (each on the MSP's own held-out rows) and
    ``choice`` (the candidate its personalization kept)."""
    personalized_models: list[GlobalModel] | None = field(default=None, repr=False)
    local_on_pooled: list[float] = field(default_factory=list)
    """Each MSP's local-only model on everyone's held-out rows, pooled: how far what one MSP
    learns alone carries to the mesh's data (not what the MSP gets on its own rows)."""

    @property
    def local_mean(self) -> float:
        """The average MSP alone, on its own rows: what the mesh must beat."""
        return float(np.nanmean(self.local))

    @property
    def local_best(self) -> float:
        """The best single MSP alone, on its own rows."""
        return float(np.nanmax(self.local))

    @property
    def local_on_pooled_mean(self) -> float:
        """The average local-only model on everyone's held-out rows (pooled)."""
        return float(np.nanmean(self.local_on_pooled))

    @property
    def local_on_pooled_best(self) -> float:
        """The best local-only model on everyone's held-out rows (pooled)."""
        return float(np.nanmax(self.local_on_pooled))

    @property
    def federated_mean(self) -> float:
        """The federated model on each MSP's own rows, averaged over MSPs."""
        return float(np.nanmean(self.per_msp["federated"]))

    @property
    def personalized_mean(self) -> float | None:
        """Each MSP's personalized model on its own rows, averaged (``None``: not run)."""
        if self.personalized_models is None:
            return None
        return float(np.nanmean(self.per_msp["personalized"]))

    def __str__(self) -> str:
        text = (
            f"{self.metric}: federated {self.federated:.3f} (pooled); per MSP on its own "
            f"rows, mean: federated {self.federated_mean:.3f}"
        )
        if self.personalized_mean is not None:
            text += f", personalized {self.personalized_mean:.3f}"
        text += f", local-only {self.local_mean:.3f} (best {self.local_best:.3f})"
        baseline = self.per_msp["baseline"]
        if baseline.notna().any():
            text += f", baseline {float(np.nanmean(baseline)):.3f}"
        if self.centralized is not None:
            text += f"; centralized {self.centralized:.3f}"
        return text


def _score(model: GlobalModel, test: pd.DataFrame | None, key: str) -> float:
    """``model``'s ``key`` metric on ``test`` (NaN without rows or where it is undefined)."""
    if test is None or len(test) == 0:
        return float("nan")
    return float(model.evaluate(test).get(key, float("nan")))


def compare(
    result: SimulationResult,
    *,
    with_centralized: bool = True,
    personalize: bool = True,
    choose: bool = True,
) -> Comparison:
    """Score a simulation's model and its references, pooled and per MSP.

    The references run the same plan (agent config, rounds, seed) as ``result`` on its
    partitions: each MSP alone, and (``with_centralized``) everyone's rows pooled. Each
    MSP's local-only model is scored on that MSP's own held-out rows, as are the federated
    model and (``personalize``) the MSP's personalized model; ``choose`` lets each MSP pick
    among personalized, global and local-only on validation splits of its training rows
    (:func:`meshfl.agents.personalization.personalize`), validated from globals trained
    without each split's rows (:func:`meshfl.simulation.cross_fitted_globals`: one more
    federation of the plan per fold).

    Examples
    --------
    >>> import meshfl
    >>> from meshfl.baselines import compare
    >>> result = meshfl.simulate(agent="anomaly", num_msps=3, rounds=2, progress=False,
    ...                          secure_aggregation="plaintext")  # doctest: +SKIP
    >>> print(compare(result))  # doctest: +SKIP
    auc: federated 0.93 (pooled); per MSP on its own rows, mean: federated 0.92, ...
    """
    plan = result.plan
    if plan is None:
        raise ValueError("compare needs the plan of a meshfl.simulate result (result.plan)")
    model = result.model
    agent, metric = model.agent, model.agent.metric
    tests = [p.test for p in result.partitions if p.test is not None]
    pooled = agent.pool(tests)
    local_models, _ = local_only(plan, result.partitions)
    central_model = centralized(plan, result.partitions)[0] if with_centralized else None
    crossed = None
    if personalize and choose:  # the models each MSP validates its choice from
        crossed = cross_fitted_globals(plan, result.partitions)
    rows, mine = [], []
    for i, (part, alone) in enumerate(zip(result.partitions, local_models, strict=True)):
        row: dict[str, object] = {"msp": i}
        row["examples"] = _score(model, part.test, "examples")
        row["federated"] = _score(model, part.test, metric)
        if personalize:
            kept = personalize_msp(
                agent,
                model.vector,
                part.train,
                rounds=plan.rounds,
                seed=plan.seed + i,
                choose=choose,
                local=alone.vector,
                fold_globals=None if crossed is None else crossed[i],
            )
            mine.append(kept.model)
            row["personalized"] = _score(kept.model, part.test, metric)
            row["choice"] = kept.choice
        else:
            row["personalized"], row["choice"] = float("nan"), None
        row["local_only"] = _score(alone, part.test, metric)
        row["baseline"] = _score(model, part.test, f"baseline_{metric}")
        rows.append(row)
    per_msp = pd.DataFrame(rows)
    return Comparison(
        metric=metric,
        federated=_score(model, pooled, metric),
        local=per_msp["local_only"].tolist(),
        centralized=None if central_model is None else _score(central_model, pooled, metric),
        local_models=local_models,
        central_model=central_model,
        per_msp=per_msp,
        personalized_models=mine if personalize else None,
        local_on_pooled=[_score(m, pooled, metric) for m in local_models],
    )
