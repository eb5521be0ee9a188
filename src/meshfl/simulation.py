"""``meshfl.simulate``: a whole federation of MSPs in one process, for notebooks and tests.

It runs the very ServerApp and ClientApp a deployment runs, on the in-process engine
(every message serialized as on the wire, deterministic under ``seed``) or, with
``backend="ray"``, on Flower's Simulation Engine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from meshfl.agents.base import Agent, GlobalModel
from meshfl.config.errors import ConfigError
from meshfl.data.partition import partition, train_test_split
from meshfl.federation.client_app import NodeData, make_client_app
from meshfl.federation.engine import run_in_process
from meshfl.federation.server_app import AgentPlan, AgentRun, make_server_app

__all__ = ["SimulationResult", "federate", "make_partitions", "simulate"]

log = logging.getLogger("meshfl")

Backend = Literal["in-process", "ray"]


@dataclass
class SimulationResult:
    """What a simulated federation produced.

    Attributes
    ----------
    agent : str
        The agent trained.
    history : pandas.DataFrame
        One row per round: MSPs that contributed, training and evaluation metrics
        (evaluation is weighted by each MSP's held-out examples), seconds.
    model : GlobalModel
        The final global model (``predict``, ``save``, ``evaluate``).
    partitions : list of NodeData
        Each MSP's training and held-out rows.
    bytes_sent, bytes_received : int
        Wire bytes from the coordinator to the MSPs and back (in-process engine only).
    """

    agent: str
    history: pd.DataFrame
    model: GlobalModel
    partitions: list[NodeData] = field(repr=False)
    bytes_sent: int = 0
    bytes_received: int = 0

    @property
    def test_data(self) -> pd.DataFrame:
        """Every MSP's held-out rows, pooled (a test set no single MSP could hold)."""
        return pd.concat([p.test for p in self.partitions if p.test is not None], ignore_index=True)

    def evaluate(
        self, data: pd.DataFrame | str | os.PathLike[str] | None = None
    ) -> dict[str, float]:
        """Metrics of the final model on ``data`` (default: the pooled held-out rows)."""
        return self.model.evaluate(self.test_data if data is None else data)

    def __repr__(self) -> str:
        return (
            f"SimulationResult(agent={self.agent!r}, rounds={len(self.history)}, "
            f"msps={len(self.partitions)}, model={self.model!r})"
        )


def make_partitions(
    agent: Agent[Any],
    *,
    num_msps: int,
    seed: int,
    data: Sequence[pd.DataFrame | NodeData | str | os.PathLike[str]] | None = None,
    samples_per_msp: int = 400,
    alpha: float = 0.5,
    size_skew: float = 0.5,
    test_fraction: float = 0.25,
) -> list[NodeData]:
    """Per-MSP training and held-out rows: the user's own, or non-IID synthetic ones."""
    if data is None:
        pooled = agent.synthetic_data(num_msps * samples_per_msp, seed=seed)
        parts: list[Any] = partition(
            pooled,
            num_msps,
            label_column=agent.label_column,
            alpha=alpha,
            size_skew=size_skew,
            seed=seed,
        )
    else:
        if isinstance(data, (pd.DataFrame, str, os.PathLike)) or len(data) != num_msps:
            got = type(data).__name__ if not isinstance(data, Sequence) else f"{len(data)} item(s)"
            raise ConfigError(
                f"The 'data' parameter of simulate must be a list of {num_msps} per-MSP "
                f"partitions (one per MSP: DataFrame, CSV path or NodeData). Got {got} instead."
            )
        parts = list(data)
    out = []
    for i, part in enumerate(parts):
        if isinstance(part, NodeData):
            test = None if part.test is None else agent.load_data(part.test)
            out.append(NodeData(agent.load_data(part.train), test))
        else:
            frame = agent.load_data(part)
            train, test = train_test_split(frame, test_fraction=test_fraction, seed=seed + i)
            out.append(NodeData(train, test))
    return out


def federate(
    plan: AgentPlan,
    partitions: Sequence[NodeData],
    *,
    backend: Backend = "in-process",
    progress: bool = False,
) -> tuple[AgentRun, int, int]:
    """Run one agent's plan over the given MSP partitions; returns the run and wire bytes."""
    results: dict[str, AgentRun] = {}
    bar = _progress(plan, enabled=progress)

    def on_round(record: dict[str, Any]) -> None:
        if bar is not None:
            metric = plan.build_agent().metric
            if metric in record:
                bar.set_postfix({metric: f"{record[metric]:.3f}", "msps": record["msps"]})
            bar.update(1)

    server_app = make_server_app([plan], on_round=on_round, results=results)
    parts = list(partitions)
    client_app = make_client_app(lambda _agent, ctx: parts[int(ctx.node_config["partition-id"])])
    try:
        if backend == "in-process":
            grid = run_in_process(server_app, client_app, num_nodes=len(parts), seed=plan.seed)
            sent, received = grid.bytes_sent, grid.bytes_received
        elif backend == "ray":
            _run_on_ray(server_app, client_app, num_nodes=len(parts))
            sent = received = 0
        else:
            raise ConfigError(
                "The 'backend' parameter of simulate must be 'in-process' or 'ray'. "
                f"Got {backend!r} instead."
            )
    finally:
        if bar is not None:
            bar.close()
    if plan.agent not in results:
        raise RuntimeError(f"the {backend} backend finished without a result for {plan.agent!r}")
    return results[plan.agent], sent, received


def simulate(
    *,
    agent: str,
    num_msps: int = 5,
    rounds: int = 3,
    seed: int = 0,
    data: Sequence[pd.DataFrame | NodeData | str | os.PathLike[str]] | None = None,
    agent_config: Mapping[str, Any] | None = None,
    samples_per_msp: int = 400,
    alpha: float = 0.5,
    size_skew: float = 0.5,
    fraction_train: float = 1.0,
    min_msps: int = 1,
    backend: Backend = "in-process",
    progress: bool = True,
) -> SimulationResult:
    """Simulate a federation of ``num_msps`` MSPs training one agent.

    Parameters
    ----------
    agent : str
        Agent name (``meshfl.agents.built()`` lists those available).
    num_msps : int
        MSPs in the federation.
    rounds : int
        Federated rounds.
    seed : int
        Seeds data generation, partitioning, sampling and local training.
    data : list, optional
        The user's own data, one entry per MSP: a DataFrame or CSV path (split 75/25 into
        training and held-out rows) or a :class:`NodeData`. ``None`` generates synthetic,
        non-IID data (label skew ``alpha``, size skew ``size_skew``).
    agent_config : mapping, optional
        Overrides of the agent's config (e.g. ``{"encoder": "tiny"}``).
    samples_per_msp : int
        Synthetic rows per MSP on average.
    alpha, size_skew : float
        Dirichlet label skew (smaller is more skewed) and log-normal size skew.
    fraction_train, min_msps : float, int
        MSPs sampled per round; fewest valid updates a round needs.
    backend : {"in-process", "ray"}
        ``"ray"`` runs on Flower's Simulation Engine (``pip install meshfl[ray]``).
    progress : bool
        Show a progress bar on the console.

    Returns
    -------
    SimulationResult

    Examples
    --------
    >>> import meshfl
    >>> result = meshfl.simulate(agent="anomaly", num_msps=3, rounds=2, seed=0, progress=False)
    >>> list(result.history["round"])
    [1, 2]
    >>> bool(result.history["auc"].iloc[-1] > 0.6)
    True
    """
    if not isinstance(num_msps, int) or num_msps < 1:
        raise ConfigError(
            "The 'num_msps' parameter of simulate must be an integer >= 1. "
            f"Got {num_msps!r} instead."
        )
    plan = AgentPlan(
        agent=agent,
        agent_config=dict(agent_config or {}),
        rounds=rounds,
        seed=seed,
        fraction_train=fraction_train,
        min_msps=min_msps,
        min_available_msps=num_msps,
    )
    the_agent = plan.build_agent()
    partitions = make_partitions(
        the_agent,
        num_msps=num_msps,
        seed=seed,
        data=data,
        samples_per_msp=samples_per_msp,
        alpha=alpha,
        size_skew=size_skew,
    )
    run, sent, received = federate(plan, partitions, backend=backend, progress=progress)
    return SimulationResult(
        agent=agent,
        history=pd.DataFrame(run.history),
        model=run.agent.model(run.vector),
        partitions=partitions,
        bytes_sent=sent,
        bytes_received=received,
    )


def _progress(plan: AgentPlan, *, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=plan.rounds, desc=f"meshfl {plan.agent}", unit="round")


def _run_on_ray(server_app: Any, client_app: Any, *, num_nodes: int) -> None:
    try:
        import ray  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            "backend='ray' needs Flower's Simulation Engine: pip install 'meshfl[ray]'."
        ) from err
    from flwr.simulation import run_simulation

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=num_nodes,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
