"""``meshfl.simulate``: a whole federation of MSPs in one process, for notebooks and tests.

It runs the very ServerApp and ClientApp a deployment runs, on the in-process engine
(messages serialized as on the wire up to ``SERIALIZE_UP_TO`` MSPs; without privacy,
deterministic under ``seed``) or, with ``backend="ray"``, on Flower's Simulation Engine.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

import numpy as np
import pandas as pd
from pydantic import SkipValidation

from meshfl.agents import registry
from meshfl.agents.base import Agent, GlobalModel
from meshfl.agents.personalization import Personalized, personalize, validation_splits
from meshfl.config.errors import ConfigError, DataSchemaError, FederationFailedError
from meshfl.config.validation import Count, Float, Positive, Seed, Skew, checked
from meshfl.federation.client_app import DECLINED, NodeData, make_client_app
from meshfl.federation.engine import run_in_process
from meshfl.federation.errors import LocalFailure, local_msp_failures
from meshfl.federation.ray_backend import Shipped, run_on_ray
from meshfl.federation.sealed_model import open_global
from meshfl.federation.server_app import AgentPlan, AgentRun, make_server_app
from meshfl.privacy.budget import msp_level_noise_report
from meshfl.privacy.config import DPConfig
from meshfl.privacy.ledger import PrivacyLedger
from meshfl.secure.backend import Aggregator, Sealed, Sealer, plaintext_backend

__all__ = [
    "FederationOutcome",
    "SimulationResult",
    "federate",
    "make_partitions",
    "raise_if_untrained",
    "simulate",
    "simulation_keys",
    "warn_if_unevaluated",
]

log = logging.getLogger("meshfl")

Backend = Literal["in-process", "ray"]
SecureAggregation = Literal["ckks", "plaintext"]
SERIALIZE_UP_TO = 100
"""Simulations of up to this many MSPs serialize every message by default (see simulate)."""
MSPData: TypeAlias = pd.DataFrame | NodeData | str | os.PathLike[str]


@dataclass
class SimulationResult:
    """What a simulated federation produced.

    Attributes
    ----------
    agent : str
        The agent trained.
    history : pandas.DataFrame
        One row per round: MSPs that contributed, training and evaluation metrics
        (evaluation is weighted by each MSP's held-out examples), seconds. Beside the
        headline metric, ``baseline_<metric>`` is what a trivial predictor scores on the
        same held-out rows, and ``worse_than_baseline`` whether the model does worse. With
        privacy, ``epsilon_max`` and ``snr``: the round's signal-to-noise estimate, a power
        of 2 (below 1 the updates are mostly noise; :mod:`meshfl.privacy.snr`).
    model : GlobalModel
        The final global model (``predict``, ``save``, ``evaluate``).
    partitions : list of NodeData
        Each MSP's training and held-out rows.
    bytes_sent, bytes_received : int
        Wire bytes from the coordinator to the MSPs and back (in-process engine only).
    privacy : pandas.DataFrame or None
        With differential privacy: per MSP, the ε it reports having spent on the agent (the
        coordinator's mirror of the MSPs' ledgers), the budget, and the rounds it declined.
    stopped_reason : str or None
        Why the run ended before its last round (e.g. every MSP's budget was spent).
    state_dir : Path or None
        Where the MSPs' state (privacy ledgers) lives: ``<state_dir>/msp-<i>/privacy``.
    versions : list of Sealed
        The model versions the coordinator stored, one sealed round sum per round
        (ciphertext under ``"ckks"``). ``model`` was opened MSP-side, with an MSP's key.
    plan : AgentPlan
        The plan that ran (agent config, rounds, seed, sampling, privacy); the baselines of
        :func:`meshfl.baselines.compare` rerun it on each MSP alone and on pooled rows.
    """

    agent: str
    history: pd.DataFrame
    model: GlobalModel
    partitions: list[NodeData] = field(repr=False)
    bytes_sent: int = 0
    bytes_received: int = 0
    privacy: pd.DataFrame | None = None
    stopped_reason: str | None = None
    state_dir: Path | None = None
    versions: list[Sealed] = field(default_factory=list, repr=False)
    plan: AgentPlan | None = field(default=None, repr=False)

    @property
    def test_data(self) -> pd.DataFrame:
        """Every MSP's held-out rows, pooled (a test set no single MSP could hold)."""
        return self.model.agent.pool([p.test for p in self.partitions if p.test is not None])

    def personalized(self, *, choose: bool = True) -> list[Personalized]:
        """Each MSP's own model from the federated one, in MSP order.

        See :func:`meshfl.agents.personalization.personalize`: partial pooling or local
        fine-tuning of the global model, and (``choose``) the MSP's choice among
        personalized, global and local-only on validation splits of its training rows,
        validated from globals that never saw those rows (:func:`cross_fitted_globals`:
        one more federation of the plan per fold, unless the agent removes rows itself).
        """
        rounds = self.plan.rounds if self.plan is not None else max(len(self.history), 1)
        seed = self.plan.seed if self.plan is not None else 0
        crossed = None
        if choose and self.plan is not None:
            crossed = cross_fitted_globals(self.plan, self.partitions)
        return [
            personalize(
                self.model.agent,
                self.model.vector,
                p.train,
                rounds=rounds,
                seed=seed + i,
                choose=choose,
                fold_globals=None if crossed is None else crossed[i],
            )
            for i, p in enumerate(self.partitions)
        ]

    def clipping(self) -> pd.DataFrame:
        """Values outside the agent's public bounds, per MSP and column, in its train rows.

        One row per MSP and column (``msp, column, low, high, values, below, above,
        clipped, share``); empty for agents without per-column bounds. In a deployment each
        MSP sees only its own (logged when it prepares its data); a simulation holds every
        MSP's rows, so it can show them side by side.
        """
        frames = []
        for i, part in enumerate(self.partitions):
            report = self.model.agent.clip_report(part.train)
            if report is not None:
                frames.append(report.to_frame().assign(msp=i))
        columns = ["msp", "column", "low", "high", "values", "below", "above", "clipped", "share"]
        if not frames:
            return pd.DataFrame(columns=columns)
        return pd.concat(frames, ignore_index=True)[columns]

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
    data: Sequence[MSPData] | None = None,
    samples_per_msp: int = 400,
    alpha: float = 0.5,
    size_skew: float = 0.5,
    test_fraction: float = 0.25,
) -> list[NodeData]:
    """Per-MSP training and held-out rows: the user's own, or non-IID synthetic ones."""
    if data is None:
        parts: list[Any] = agent.synthetic_partitions(
            num_msps,
            samples_per_msp=samples_per_msp,
            seed=seed,
            alpha=alpha,
            size_skew=size_skew,
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
        try:
            if isinstance(part, NodeData):
                test = None if part.test is None else agent.load_data(part.test)
                out.append(NodeData(agent.load_data(part.train), test))
            else:
                frame = agent.load_data(part)
                train, test = agent.split(frame, test_fraction=test_fraction, seed=seed + i)
                out.append(NodeData(train, test))
        except DataSchemaError as err:
            if data is None:
                raise
            raise DataSchemaError(f"MSP {i}'s data (data[{i}]): {err}") from err
    return out


@dataclass
class FederationOutcome:
    """A plan's run (sealed, as the coordinator holds it) and its model opened MSP-side."""

    run: AgentRun
    vector: np.ndarray
    bytes_sent: int = 0
    bytes_received: int = 0
    msp_of_node: dict[int, int] = field(default_factory=dict)
    """Each node id's MSP index (its partition), where the engine tells (in-process)."""


def federate(
    plan: AgentPlan,
    partitions: Sequence[NodeData],
    *,
    backend: Backend = "in-process",
    secure_aggregation: SecureAggregation = "ckks",
    progress: bool = False,
    state_dir: str | os.PathLike[str] | None = None,
    serialize: bool | None = None,
) -> FederationOutcome:
    """Run one agent's plan over the given MSP partitions.

    MSP ``i`` keeps its state (privacy ledger) in ``<state_dir>/msp-<i>``; without a
    ``state_dir`` a plan with privacy gets a fresh temporary one. With ``"ckks"`` a fresh
    key set is made for the run: the coordinator gets only its public context, the
    simulated MSPs the secret one. The returned ``vector`` is the final global model opened
    with an MSP's key, as any MSP of the mesh can; the coordinator never opens it.
    """
    if state_dir is None and plan.privacy is not None:
        state_dir = tempfile.mkdtemp(prefix="meshfl-state-")
    root = Path(state_dir) if state_dir is not None else None
    sealer_for, aggregator, msp_sealer = simulation_keys(
        secure_aggregation, num_msps=len(partitions)
    )
    results: dict[str, AgentRun] = {}
    bar = _progress(plan, enabled=progress)
    metric = plan.build_agent().metric

    def on_round(record: dict[str, Any]) -> None:
        if bar is not None:
            postfix: dict[str, Any] = {"msps": record["msps"]}
            if metric in record:
                postfix[metric] = f"{record[metric]:.3f}"
            if "epsilon_max" in record:
                postfix["ε"] = f"{record['epsilon_max']:.3g}"
            if "snr" in record:
                postfix["snr"] = f"{record['snr']:g}"
            bar.set_postfix(postfix)
            bar.update(1)

    server_app = make_server_app([plan], aggregator, on_round=on_round, results=results)
    parts = list(partitions)
    client_app = make_client_app(
        _Partitions(Shipped(parts)),
        sealer=sealer_for,
        state_dir=None
        if root is None
        else (lambda ctx: root / f"msp-{int(ctx.node_config['partition-id'])}"),
        min_contributors=plan.min_msps,
    )
    try:
        if backend == "in-process":
            wire = len(parts) <= SERIALIZE_UP_TO if serialize is None else serialize
            grid = run_in_process(
                server_app, client_app, num_nodes=len(parts), seed=plan.seed, serialize=wire
            )
            sent, received = grid.bytes_sent, grid.bytes_received
            # node i of the in-process grid holds partition i
            msp_of_node = {int(node): i for i, node in enumerate(grid.get_node_ids())}
        elif backend == "ray":
            run_on_ray(server_app, client_app, num_nodes=len(parts))
            sent = received = 0
            msp_of_node = {}
        else:
            raise AssertionError(f"unknown backend {backend!r}")  # simulate admits no other
    finally:
        if bar is not None:
            bar.close()
    if plan.agent not in results:
        raise RuntimeError(f"the {backend} backend finished without a result for {plan.agent!r}")
    run = results[plan.agent]
    vector = open_global(run.agent, run.sealed_history, msp_sealer, seed=run.seed)
    return FederationOutcome(run, vector, sent, received, msp_of_node)


def cross_fitted_globals(
    plan: AgentPlan,
    partitions: Sequence[NodeData],
    *,
    folds: int = 5,
    validation_fraction: float = 0.25,
) -> list[list[np.ndarray]] | None:
    """Per MSP, one global model per validation split of its training rows, trained by
    the federation without that split's held-out rows.

    MSP ``i``'s splits are :func:`~meshfl.agents.personalization.validation_splits` of its
    training rows with seed ``plan.seed + i`` (as :func:`personalize` makes them). Split
    ``f`` of every MSP is held out at once: ``folds`` federations of the plan (plaintext:
    the sum is the same), each on ``1 - 1/folds`` of every MSP's rows, so the model an MSP
    validates from never saw the rows it is scored on (the leak it would otherwise have:
    the global model was trained on all of them). ``None`` for an agent that can take an
    MSP's rows out of a global model itself (``without_rows``, e.g. ``revenue``).
    """
    agent = plan.build_agent()
    if callable(getattr(agent, "without_rows", None)):
        return None
    splits = []
    for i, part in enumerate(partitions):
        frame = agent.load_data(part.train)
        found, _ = validation_splits(
            agent, frame, fraction=validation_fraction, seed=plan.seed + i, folds=folds
        )
        splits.append(found)
    vectors = []
    for f in range(max((len(found) for found in splits), default=0)):
        fold = [
            NodeData(found[f][0] if f < len(found) else part.train)
            for found, part in zip(splits, partitions, strict=True)
        ]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]ecure aggregation is OFF.*")
            vectors.append(federate(plan, fold, secure_aggregation="plaintext").vector)
    return [vectors[: len(found)] for found in splits]


@checked
def simulation_keys(
    secure_aggregation: SecureAggregation, *, num_msps: Count = 1
) -> tuple[Callable[[Any], Sealer], Aggregator, Sealer]:
    """Per-MSP sealer factory, the coordinator's aggregator, and one MSP's sealer.

    The factory rebuilds the MSPs' sealer from serialized key material, so it can be
    shipped to other processes (Ray workers); each process builds it once and its simulated
    MSPs share it (it is read-only, and a secret context is 4 MB). With CKKS, sums may add
    up ``num_msps`` payloads (at least the key set's default), and each payload is bounded
    accordingly.
    """
    if secure_aggregation == "plaintext":
        sealer, plain = plaintext_backend()
        return (lambda _ctx: sealer), plain, sealer
    if secure_aggregation == "ckks":
        from meshfl.secure.ckks import DEFAULT_MAX_CONTRIBUTORS, ephemeral_ckks_backend

        most = max(DEFAULT_MAX_CONTRIBUTORS, int(num_msps))
        msp_sealer, public = ephemeral_ckks_backend(max_contributors=most)
        secret = msp_sealer.to_bytes()
        return _SharedSealer(Shipped(secret), most), public, msp_sealer
    raise AssertionError(f"unknown secure_aggregation {secure_aggregation!r}")  # checked


@dataclass(frozen=True)
class _SharedSealer:
    """The simulated MSPs' CKKS sealer from its secret context bytes: one per process."""

    secret: Shipped[bytes] = field(repr=False)
    max_contributors: int

    def __call__(self, _context: Any) -> Sealer:
        return _ckks_sealer(self.secret.value, self.max_contributors)


@dataclass(frozen=True)
class _Partitions:
    """Each simulated MSP's data, by its partition id (shipped once to Ray's workers)."""

    parts: Shipped[list[NodeData]]

    def __call__(self, _agent: str, context: Any) -> NodeData:
        return self.parts.value[int(context.node_config["partition-id"])]


@functools.lru_cache(maxsize=2)
def _ckks_sealer(secret: bytes, max_contributors: int) -> Sealer:
    from meshfl.secure.ckks import CKKSSealer

    return CKKSSealer.from_bytes(secret, max_contributors=max_contributors)


@checked
def simulate(
    *,
    agent: str,
    num_msps: Count | None = None,
    rounds: Count | None = None,
    seed: Seed = 0,
    data: SkipValidation[Sequence[MSPData] | None] = None,  # _sim_partitions checks it
    agent_config: Mapping[str, Any] | None = None,
    samples_per_msp: Count = 400,
    alpha: Positive = 0.5,
    size_skew: Skew = 0.5,
    fraction_train: Annotated[float, Float("in (0, 1]", lambda v: 0 < v <= 1)] = 1.0,
    min_msps: Count | None = None,
    privacy: DPConfig | None = None,
    secure_aggregation: SecureAggregation = "ckks",
    masking: bool = True,
    state_dir: str | os.PathLike[str] | None = None,
    backend: Backend = "in-process",
    progress: bool = True,
    serialize_messages: bool | None = None,
) -> SimulationResult:
    """Simulate a federation of ``num_msps`` MSPs training one agent.

    Parameters
    ----------
    agent : str
        Agent name (``meshfl.agents.built()`` lists those available).
    num_msps : int, optional
        MSPs in the federation; ``None``: one per entry of ``data``, else 5.
    rounds : int, optional
        Federated rounds; ``None``: the agent's ``suggested_rounds()`` (3 for most agents).
    seed : int
        Seeds data generation, partitioning, model initialisation and local training.
        Which MSPs are sampled and all privacy noise come from OS entropy, never from it:
        a run with ``fraction_train < 1`` or with privacy is not bit-for-bit repeatable.
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
        MSPs sampled per round; fewest valid updates a round needs (default 1; with
        ``unit="msp"`` privacy, every sampled MSP, since each adds a share of the noise).
    privacy : DPConfig, optional
        Differential privacy (``None``: off). Each MSP keeps a persistent ledger and
        declines rounds that would exceed ``privacy.epsilon``.
    secure_aggregation : {"ckks", "plaintext"}
        ``"ckks"`` (default): MSPs send TenSEAL CKKS ciphertexts that the coordinator adds
        with a public context only, and global models stay sealed. ``"plaintext"`` turns
        that protection off (for tests and comparison; it warns loudly).
    masking : bool
        With CKKS, rounds of 3 or more MSPs also carry pairwise masks inside the ciphertexts
        (docs/threat-model.md), so that no key holder, not even an MSP colluding with the
        coordinator, reads one MSP's update. ``False`` turns that off and warns.
    state_dir : path, optional
        The MSPs' state (privacy ledgers); reuse it to go on spending the same budgets, as a
        restarted MSP would. Default: a fresh temporary directory.
    backend : {"in-process", "ray"}
        ``"ray"`` runs on Flower's Simulation Engine (``pip install meshfl[ray]``).
    progress : bool
        Show a progress bar.
    serialize_messages : bool, optional
        Pass every message through Flower's wire format and count its bytes, as deployed;
        ``None``: up to :data:`SERIALIZE_UP_TO` MSPs (beyond, by reference: fast at scale).

    Raises
    ------
    FederationFailedError
        When no round produced a valid update (every MSP failed, or every round was
        skipped), listing each MSP's error: the sentence of what it raised (the simulated
        MSPs run in this process), else why the coordinator dropped its reply. A run whose
        MSPs only declined for their privacy budgets returns instead, with
        ``stopped_reason`` and the ``privacy`` table saying so.

    Warns
    -----
    UserWarning
        When the model trained but no MSP could evaluate it in the last round (metrics
        missing), with each MSP's error.

    Examples
    --------
    >>> import meshfl
    >>> result = meshfl.simulate(agent="anomaly", num_msps=3, rounds=2, seed=0, progress=False)
    >>> list(result.history["round"])
    [1, 2]
    >>> bool(result.history["auc"].iloc[-1] > 0.6)
    True
    """
    if num_msps is None:
        own = data is not None and not isinstance(data, (pd.DataFrame, str, os.PathLike))
        num_msps = len(data) if own else 5  # type: ignore[arg-type]
    plan = _sim_plan(agent, num_msps, rounds, seed, agent_config, fraction_train, min_msps, privacy)
    plan = plan.model_copy(update={"masking": masking})
    partitions = _sim_partitions(plan, data, samples_per_msp, alpha, size_skew)
    state_dir = _sim_state_dir(state_dir, privacy)
    engine = _Engine(backend, secure_aggregation, progress, serialize_messages)
    with local_msp_failures() as failures:  # the simulated MSPs' own errors, in full
        outcome = federate(plan, partitions, state_dir=state_dir, **engine.options())
    raise_if_untrained(outcome, failures)
    warn_if_unevaluated(outcome, failures)
    return _sim_result(plan, partitions, outcome, state_dir)


@dataclass(frozen=True)
class _Engine:
    """How :func:`simulate` runs its federation (:func:`federate`'s options)."""

    backend: Backend
    secure_aggregation: SecureAggregation
    progress: bool
    serialize: bool | None

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _sim_plan(
    agent: str,
    num_msps: int,
    rounds: int | None,
    seed: int,
    agent_config: Mapping[str, Any] | None,
    fraction_train: float,
    min_msps: int | None,
    privacy: DPConfig | None,
) -> AgentPlan:
    """The plan :func:`simulate` runs: ``num_msps`` checked, ``rounds`` and ``min_msps`` set."""
    if rounds is None:
        rounds = registry.get(agent)(dict(agent_config or {})).suggested_rounds()
    if min_msps is None:
        msp_level = privacy is not None and privacy.unit == "msp"
        # MSP-level rounds sample MSPs by Poisson draws; each adds 1/min_msps of the noise,
        # so min_msps is a draw's 1% quantile: rounds that fall short are skipped unsent.
        shares = binomial_quantile(0.01, num_msps, fraction_train)
        min_msps = max(1, shares) if msp_level else 1
        min_msps = max(min_msps, registry.get(agent).min_msps)
    if num_msps < min_msps:
        raise ConfigError(
            f"The 'num_msps' parameter of simulate must be at least {min_msps} here: a round "
            f"of agent {agent!r} needs {min_msps} MSPs' updates (min_msps). Got {num_msps} "
            "instead."
        )
    return AgentPlan(
        agent=agent,
        agent_config=dict(agent_config or {}),
        rounds=rounds,
        seed=seed,
        fraction_train=fraction_train,
        min_msps=min_msps,
        min_available_msps=num_msps,
        privacy=privacy,
    )


def _sim_partitions(
    plan: AgentPlan,
    data: Sequence[pd.DataFrame | NodeData | str | os.PathLike[str]] | None,
    samples_per_msp: int,
    alpha: float,
    size_skew: float,
) -> list[NodeData]:
    """Each MSP's rows (the user's ``data`` or synthetic ones); warns when MSP-level noise
    would swamp the signal."""
    the_agent = plan.build_agent()
    partitions = make_partitions(
        the_agent,
        num_msps=plan.min_available_msps,
        seed=plan.seed,
        data=data,
        samples_per_msp=samples_per_msp,
        alpha=alpha,
        size_skew=size_skew,
    )
    if plan.privacy is not None and plan.privacy.unit == "msp":
        warn_if_noise_swamps_signal(plan, the_agent)
    return partitions


def _sim_state_dir(
    state_dir: str | os.PathLike[str] | None, privacy: DPConfig | None
) -> str | os.PathLike[str] | None:
    """``state_dir``, or a fresh temporary directory when privacy needs one and none is given."""
    if state_dir is None and privacy is not None:
        state_dir = tempfile.mkdtemp(prefix="meshfl-state-")
    return state_dir


def _sim_result(
    plan: AgentPlan,
    partitions: list[NodeData],
    outcome: FederationOutcome,
    state_dir: str | os.PathLike[str] | None,
) -> SimulationResult:
    """What :func:`simulate` returns, the privacy table read from the MSPs' ledgers."""
    run = outcome.run
    if plan.privacy is not None:
        warn_if_worse_than_baseline(run, plan.privacy)
    return SimulationResult(
        agent=plan.agent,
        history=pd.DataFrame(run.history),
        model=run.agent.model(outcome.vector),
        partitions=partitions,
        bytes_sent=outcome.bytes_sent,
        bytes_received=outcome.bytes_received,
        versions=run.versions,
        privacy=_privacy_table(
            run,
            plan.privacy,
            plan.min_available_msps,
            Path(state_dir) if state_dir is not None else None,
        ),
        stopped_reason=run.stopped_reason,
        state_dir=Path(state_dir) if state_dir is not None else None,
        plan=plan,
    )


def _privacy_table(
    run: AgentRun, privacy: DPConfig | None, num_msps: int, state_dir: Path | None
) -> pd.DataFrame | None:
    """ε per MSP, exact, read from each simulated MSP's own ledger.

    The coordinator's mirror only holds ε rounded up to 1/20 of the budget (what MSPs send);
    it is the ``epsilon_reported`` column, NaN for an MSP that never replied. A ledger that
    cannot be trusted raises :class:`~meshfl.privacy.ledger.LedgerCorruptError`, saying how
    to recover: no table ever shows less ε than was released.
    """
    if privacy is None:
        return None
    declined = [0] * num_msps
    for record in run.history:
        for msp in record.get("declined_msps", []):
            declined[msp] += 1
    reported = [run.epsilon_by_msp.get(i, math.nan) for i in range(num_msps)]
    if state_dir is not None:
        spent = [
            PrivacyLedger(state_dir / f"msp-{i}" / "privacy").epsilon(
                run.agent.name, delta=privacy.delta, accountant=privacy.accountant
            )
            for i in range(num_msps)
        ]
    else:
        spent = reported
    return pd.DataFrame(
        {
            "msp": range(num_msps),
            "epsilon_spent": spent,
            "epsilon_reported": reported,
            "epsilon_budget": privacy.epsilon,
            "delta": privacy.delta,
            "declined_rounds": declined,
        }
    )


MAX_LISTED = 20
"""The most MSPs a failure's message lists (the exception's ``failures`` holds them all)."""


def raise_if_untrained(outcome: FederationOutcome, local: Sequence[LocalFailure] = ()) -> None:
    """Raise :class:`~meshfl.config.errors.FederationFailedError` when no round of the run
    produced a valid update, naming each MSP's error.

    ``local`` holds what the MSPs raised where they ran in this process
    (:func:`~meshfl.federation.errors.local_msp_failures`): the sentences that name what to
    fix. An MSP without one is described by why the coordinator dropped its reply (a code
    and a fixed sentence). A run in which MSPs only declined (privacy budget spent) and
    none failed does not raise: its ``stopped_reason`` and privacy table say so.
    """
    run = outcome.run
    if run.versions or not run.results:
        return
    failures = _msp_errors(run, local, outcome.msp_of_node)
    declined: dict[tuple[int, str], list[int]] = {}
    for number, result in _numbered(run):
        for msp, reason in result.declined:
            declined.setdefault((msp, reason), []).append(number)
    if declined and not failures and all(why == DECLINED for _, why in declined):
        return  # privacy budgets did what they are for
    for (msp, reason), numbers in declined.items():
        why = reason.removeprefix("declined: ")
        failures.setdefault(msp, []).append(f"declined in {_rounds_text(numbers)}: {why}")
    rounds = {}
    for number, result in _numbered(run):
        why = result.skipped_reason or "the global model is unchanged"
        if result.no_reply:
            why += f"; {result.no_reply} sampled MSP(s) sent no reply"
        rounds[number] = why
    name, n = run.agent.name, len(run.results)
    lines = [
        f"No round of agent {name!r} produced a valid update ({n} round(s)), so there is "
        "no trained model to return. "
        + ("Each MSP's error:" if failures else "No MSP reported an error; the rounds:")
    ]
    known = {f.msp for f in local} | set(outcome.msp_of_node.values())
    known |= {msp for msp, _ in declined}
    for msp in sorted(failures)[:MAX_LISTED]:
        who = f"MSP {msp}" if msp in known else f"node {msp}"
        lines += [f"  {who}: {reason}" for reason in failures[msp]]
    if len(failures) > MAX_LISTED:
        lines.append(
            f"  ... and {len(failures) - MAX_LISTED} more MSP(s) (the exception's 'failures')."
        )
    by_reason: dict[str, list[int]] = {}
    for number, why in rounds.items():
        by_reason.setdefault(why, []).append(number)
    lines += [f"{_rounds_text(numbers).capitalize()}: {why}." for why, numbers in by_reason.items()]
    lines.append(
        "Fix what the errors name (the MSPs' data, or agent_config) and run again."
        if failures
        else "Check fraction_train, min_msps and masking, and run again."
    )
    raise FederationFailedError("\n".join(lines), agent=name, failures=failures, rounds=rounds)


def _numbered(run: AgentRun) -> list[tuple[int, Any]]:
    """``(round number, RoundResult)`` of each round the run played."""
    return [(int(rec["round"]), res) for rec, res in zip(run.history, run.results, strict=False)]


def _rounds_text(numbers: Sequence[int]) -> str:
    shown = ", ".join(map(str, numbers[:10])) + (", ..." if len(numbers) > 10 else "")
    return f"round {shown}" if len(numbers) == 1 else f"rounds {shown}"


def _phase(message_type: str) -> str:
    return message_type.split(".", 1)[0]


def _msp_errors(
    run: AgentRun, local: Sequence[LocalFailure], msp_of_node: Mapping[int, int]
) -> dict[int, list[str]]:
    """Each MSP's distinct errors: its own sentence where it ran here, else the
    coordinator's reason for dropping its replies (by node id where its MSP is unknown)."""
    own: dict[int, dict[str, list[str]]] = {}
    for failure in local:
        phases = own.setdefault(failure.msp, {}).setdefault(failure.error, [])
        if _phase(failure.phase) not in phases:
            phases.append(_phase(failure.phase))
    out = {
        msp: [f"{error} (in {', '.join(phases)})" for error, phases in errors.items()]
        for msp, errors in own.items()
    }
    dropped: dict[tuple[int, str], list[int]] = {}
    for number, result in _numbered(run):
        for node, reason in result.dropped:
            dropped.setdefault((msp_of_node.get(node, node), reason), []).append(number)
    for (msp, reason), numbers in dropped.items():
        if "train" in {p for phases in own.get(msp, {}).values() for p in phases}:
            continue  # its own sentence says more than the coordinator's fixed one
        out.setdefault(msp, []).append(f"dropped in {_rounds_text(numbers)}: {reason}")
    return out


def warn_if_unevaluated(
    outcome: FederationOutcome, local: Sequence[LocalFailure] = ()
) -> str | None:
    """Warn (``UserWarning``) when the model trained but no MSP evaluated it in the last
    round, so the history holds no metrics; names each MSP's error where it ran here.
    Returns the warning's text, or ``None``."""
    run = outcome.run
    last = run.history[-1] if run.history else {}
    if not run.versions or "examples" in last or run.agent.metric in last:
        return None  # evaluated (Agent.evaluate's metrics include "examples")
    errors: dict[int, list[str]] = {}
    for failure in local:
        if _phase(failure.phase) == "evaluate" and failure.error not in errors.get(failure.msp, []):
            errors.setdefault(failure.msp, []).append(failure.error)
    listed = [
        f"  MSP {msp}: {error}" for msp in sorted(errors)[:MAX_LISTED] for error in errors[msp]
    ]
    message = "\n".join(
        [
            f"The {run.agent.name} model trained, but no MSP could evaluate it in the last "
            "round, so the history holds no metrics. "
            + (
                "Each MSP's error on its held-out rows:"
                if listed
                else "The MSPs' errors are in their own logs (logger 'meshfl.msp')."
            ),
            *listed,
        ]
    )
    warnings.warn(message, UserWarning, stacklevel=3)
    return message


def binomial_quantile(p: float, n: int, q: float) -> int:
    """The smallest ``k`` with ``P(Binomial(n, q) <= k) >= p``."""
    if q >= 1:
        return n
    total = 0.0
    for k in range(n + 1):
        log_pmf = (
            math.lgamma(n + 1)
            - math.lgamma(k + 1)
            - math.lgamma(n - k + 1)
            + k * math.log(q)
            + (n - k) * math.log1p(-q)
        )
        total += math.exp(log_pmf)
        if total >= p:
            return k
    return n


def warn_if_noise_swamps_signal(plan: AgentPlan, agent: Agent[Any]) -> None:
    """Say loudly when MSP-level noise will drown every update (too few MSPs for the ε)."""
    assert plan.privacy is not None
    report = msp_level_noise_report(
        plan.privacy,
        dim=agent.update_size(agent.init_vector(seed=plan.seed)),
        msps_per_round=plan.min_msps,
        sample_rate=plan.fraction_train,
        rounds=plan.rounds,
    )
    if report is not None:
        warnings.warn(report, UserWarning, stacklevel=3)


def warn_if_worse_than_baseline(run: AgentRun, privacy: DPConfig) -> str | None:
    """Warn (``UserWarning``) when the final private model is worse than a trivial one.

    The last round's evaluation on the MSPs' held-out rows is compared with the trivial
    baseline on the same rows (``baseline_<metric>``: the majority class, AUC 0.5, a
    seasonal naive forecast, ...). Returns the warning's text, or ``None``.
    """
    if not run.history or not run.history[-1].get("worse_than_baseline"):
        return None
    last, metric = run.history[-1], run.agent.metric
    message = (
        f"The private {run.agent.name} model is worse than a trivial baseline on held-out "
        f"data: {metric}={last[metric]:.4g} against {last[f'baseline_{metric}']:.4g} "
        f"({_baseline_name(run.agent)}) at ε={privacy.epsilon:g} (δ={privacy.delta:g}, "
        f"unit={privacy.unit!r}; signal-to-noise ≈ {last.get('snr', math.nan):g} in the last "
        "round). The noise swamps the updates: raise ε, give the MSPs more rows, train fewer "
        "rounds, or do not deploy this model."
    )
    warnings.warn(message, UserWarning, stacklevel=3)
    return message


def _baseline_name(agent: Agent[Any]) -> str:
    return {
        "accuracy": "the majority class",
        "macro_f1": "the best constant prediction",
        "auc": "a constant score",
        "neg_smape": "the seasonal naive forecast",
        "sla_hit_rate": "the greedy dispatcher",
        "rouge_l": "the most frequent answer",
    }.get(agent.metric, "a trivial predictor")


def _progress(plan: AgentPlan, *, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    from meshfl.agents.frozen_encoder import FrozenEncoderMixin

    bar = tqdm(total=plan.rounds, desc=f"meshfl {plan.agent}", unit="round")
    if isinstance(plan.build_agent(), FrozenEncoderMixin):  # minutes at 0% otherwise
        bar.set_postfix_str("round 1 encodes each MSP's texts once (cached after)")
    return bar
