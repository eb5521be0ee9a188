"""Reference points for a federation: each MSP alone, and everyone's data pooled.

Both run through the same engine and agent code as the federation (a "federation" of one
node), with the same rounds, so the comparison isolates what federation adds:

* **local-only** — every MSP trains on its own rows only; the mesh's promise is that the
  federated model beats the *average* of these on data from all MSPs;
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
from meshfl.federation.client_app import NodeData
from meshfl.federation.server_app import AgentPlan
from meshfl.simulation import federate

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
    """One model per MSP, trained on that MSP's rows only; and mean seconds per round."""
    runs = [_one_node(plan, p.train) for p in partitions]
    return [m for m, _ in runs], sum(s for _, s in runs) / len(runs)


def centralized(plan: AgentPlan, partitions: Sequence[NodeData]) -> tuple[GlobalModel, float]:
    """One model trained on every MSP's rows pooled; and seconds per round."""
    pooled = pd.concat([p.train for p in partitions], ignore_index=True)
    return _one_node(plan, pooled)


@dataclass
class Comparison:
    """A federation against its two references, all scored on the pooled held-out rows.

    ``str(comparison)`` is a one-line summary, e.g. ``accuracy: federated 0.789, local-only
    mean 0.572 (best 0.640), centralized 0.849``.
    """

    metric: str
    federated: float
    local: list[float]
    """Each MSP's local-only model, in MSP order."""
    centralized: float | None
    local_models: list[GlobalModel] = field(repr=False)
    central_model: GlobalModel | None = field(repr=False)

    @property
    def local_mean(self) -> float:
        """The average MSP alone: what the mesh must beat."""
        return float(np.mean(self.local))

    @property
    def local_best(self) -> float:
        """The best single MSP alone."""
        return float(np.max(self.local))

    def __str__(self) -> str:
        text = (
            f"{self.metric}: federated {self.federated:.3f}, local-only mean "
            f"{self.local_mean:.3f} (best {self.local_best:.3f})"
        )
        if self.centralized is not None:
            text += f", centralized {self.centralized:.3f}"
        return text


def compare(result: SimulationResult, *, with_centralized: bool = True) -> Comparison:
    """Score a simulation's model and both references on its pooled held-out rows.

    The references run the same plan (agent config, rounds, seed) as ``result`` on its
    partitions: each MSP alone, and (``with_centralized``) everyone's rows pooled.

    Examples
    --------
    >>> import meshfl
    >>> from meshfl.baselines import compare
    >>> result = meshfl.simulate(agent="anomaly", num_msps=3, rounds=2, progress=False,
    ...                          secure_aggregation="plaintext")  # doctest: +SKIP
    >>> print(compare(result))  # doctest: +SKIP
    auc: federated 0.93, local-only mean 0.88 (best 0.91), centralized 0.93
    """
    plan = result.plan
    if plan is None:
        raise ValueError("compare needs the plan of a meshfl.simulate result (result.plan)")
    test = result.test_data
    metric = result.model.agent.metric
    local_models, _ = local_only(plan, result.partitions)
    central_model = centralized(plan, result.partitions)[0] if with_centralized else None
    return Comparison(
        metric=metric,
        federated=result.evaluate()[metric],
        local=[m.evaluate(test)[metric] for m in local_models],
        centralized=None if central_model is None else central_model.evaluate(test)[metric],
        local_models=local_models,
        central_model=central_model,
    )
