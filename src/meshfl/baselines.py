"""Reference points for a federation: each MSP alone, and everyone's data pooled.

Both run through the same engine and agent code as the federation (a "federation" of one
node), with the same rounds, so the comparison isolates what federation adds:

* **local-only** — every MSP trains on its own rows only; the mesh's promise is that the
  federated model beats the *average* of these on data from all MSPs;
* **centralized** — one party holds everyone's training rows (what privacy forbids); the
  upper reference the federation approaches.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from meshfl.agents.base import GlobalModel
from meshfl.federation.client_app import NodeData
from meshfl.federation.server_app import AgentPlan
from meshfl.simulation import federate

__all__ = ["Baselines", "centralized", "local_only"]


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
