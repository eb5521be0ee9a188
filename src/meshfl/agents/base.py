"""The interface every meshfl agent implements, and the global model it produces.

An agent is stateless apart from its config: the global model is a flat vector that the
agent knows how to interpret. That keeps federation, privacy and encryption agnostic of
model families: they only ever see vectors, weights and privacy events (see
:class:`meshfl.agents.update.Update`).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
import pandas as pd

from meshfl.agents.update import Update
from meshfl.config.base import MeshflConfig
from meshfl.config.errors import ConfigError
from meshfl.data.partition import partition, train_test_split
from meshfl.data.schema import (
    ClipReport,
    Schema,
    inherit_validation,
    is_validated,
    load_frame,
)
from meshfl.privacy.events import Mechanism

if TYPE_CHECKING:  # the budget module loads the accountant (Opacus, torch)
    from meshfl.privacy.budget import DPStep

__all__ = ["Agent", "GlobalModel", "PartitionRequest"]


def _version() -> str:
    """meshfl's installed version (the header of a saved model records it)."""
    try:
        return metadata.version("meshfl")
    except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
        return "unknown"


LocalT = TypeVar("LocalT")


@dataclass(frozen=True)
class PartitionRequest:
    """What :meth:`Agent.synthetic_partitions` was asked for, as one value.

    Agents that deal synthetic data out their own way override
    :meth:`Agent._partition_synthetic`, which receives it.
    """

    num_msps: int
    samples_per_msp: int
    """Rows per MSP on average (an agent whose MSPs own a series: periods per series)."""
    seed: int
    alpha: float = 0.5
    """Dirichlet concentration of the label skew (smaller: more skew)."""
    size_skew: float = 0.5
    """Sigma of the log-normal the MSPs' shares of the data are drawn from (0: equal sizes)."""

    def keywords(self) -> dict[str, Any]:
        """Everything but ``num_msps``, as the keyword arguments of the data modules'
        ``*_partitions`` functions (``samples_per_msp``, ``seed``, ``alpha``, ``size_skew``)."""
        return {
            "samples_per_msp": self.samples_per_msp,
            "seed": self.seed,
            "alpha": self.alpha,
            "size_skew": self.size_skew,
        }


class Agent(ABC, Generic[LocalT]):
    """One of the mesh's agent models.

    Subclasses set the class attributes and implement the abstract methods; the
    federation calls them in this order each round: :meth:`prepare` (once per MSP and
    data set), :meth:`local_update` on every sampled MSP, :meth:`combine` on the summed
    updates, :meth:`evaluate` on every MSP's held-out data.

    Parameters
    ----------
    config : MeshflConfig or mapping, optional
        The agent's configuration (an instance of :attr:`config_class`, or a mapping of
        its fields). ``None`` takes the defaults.
    **overrides
        Individual config fields, applied on top of ``config``.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    config_class: ClassVar[type[MeshflConfig]]
    schema: ClassVar[Schema]
    metric: ClassVar[str]
    """The headline evaluation metric (a key of :meth:`evaluate`'s result).

    :meth:`evaluate` also reports ``baseline_<metric>``: what a trivial predictor scores on
    the same held-out rows (the majority class, AUC 0.5, a seasonal naive forecast, ...).
    """
    higher_is_better: ClassVar[bool] = True
    """Whether a larger :attr:`metric` is better (every built agent's is: ``revenue``
    reports ``neg_smape``)."""
    label_column: ClassVar[str]
    """Column whose distribution the partitioner skews across MSPs (non-IID)."""
    combine_uses_previous: ClassVar[bool] = False
    """Whether :meth:`combine` builds on the previous global vector (not just the new sum)."""
    supports_msp_dp: ClassVar[bool] = True
    """Whether MSP-level DP (bound the MSP's contribution, add distributed noise) fits the agent."""
    msp_contribution: ClassVar[Literal["delta", "statistics"]] = "delta"
    """What MSP-level DP bounds to norm ``max_grad_norm``: the model delta (agents that average
    parameters) or the statistics vector the agent sends (agents that count: leaf counts,
    histograms), see :func:`meshfl.federation.msp_privacy.bounded_contribution`."""
    min_msps: ClassVar[int] = 1
    """Fewest MSPs a round's sum may come from (a plan asking for fewer is refused)."""
    fast_config: ClassVar[Mapping[str, Any]] = {}
    """Config overrides that make the agent quick enough for the contract tests
    (``tests/agents/test_contract.py`` builds every registered agent with them): a tiny
    encoder, one local epoch, few trees. Empty when the defaults are already quick."""

    def __init__(self, config: MeshflConfig | Mapping[str, Any] | None = None, **overrides: Any):
        if isinstance(config, MeshflConfig):
            if not isinstance(config, self.config_class):
                raise ConfigError(
                    f"The 'config' parameter of agent {self.name!r} must be a "
                    f"{self.config_class.__name__}. Got a {type(config).__name__} instead."
                )
            values = config.model_dump()
        elif config is None:
            values = {}
        elif isinstance(config, Mapping):
            values = dict(config)
        else:
            raise ConfigError(
                f"The 'config' parameter of agent {self.name!r} must be a "
                f"{self.config_class.__name__}, a mapping or None. Got {config!r} instead."
            )
        values.update(overrides)
        self.config = self.config_class.model_validate(values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # -- data ------------------------------------------------------------------------
    @abstractmethod
    def synthetic_data(self, n: int, *, seed: int) -> pd.DataFrame:
        """Seeded synthetic MSP data of this agent's schema (``n`` rows)."""

    def synthetic_partitions(
        self,
        num_msps: int,
        *,
        samples_per_msp: int,
        seed: int,
        alpha: float = 0.5,
        size_skew: float = 0.5,
    ) -> list[pd.DataFrame]:
        """Seeded synthetic data of ``num_msps`` MSPs that differ the way real ones do.

        The default draws ``num_msps * samples_per_msp`` rows and deals them out with
        Dirichlet label skew ``alpha`` and log-normal size skew (see
        :func:`meshfl.data.partition.partition`). Agents whose MSPs each own a whole object
        (a revenue series, a dispatch environment) override :meth:`_partition_synthetic`.
        """
        request = PartitionRequest(num_msps, samples_per_msp, seed, alpha, size_skew)
        return self._partition_synthetic(request)

    def _partition_synthetic(self, request: PartitionRequest) -> list[pd.DataFrame]:
        """The partitions :meth:`synthetic_partitions` returns (the hook agents override)."""
        return self._partition_pooled(self._pooled_synthetic(request), request, self.label_column)

    def _pooled_synthetic(self, request: PartitionRequest) -> pd.DataFrame:
        """``num_msps * samples_per_msp`` rows of :meth:`synthetic_data`, not yet dealt out.

        They are validated here, once: the MSPs' parts are rows of a valid frame and are not
        checked again (:func:`meshfl.data.schema.inherit_validation`).
        """
        pooled = self.synthetic_data(request.num_msps * request.samples_per_msp, seed=request.seed)
        return self.load_data(pooled)

    def _validated_once(self, parts: list[pd.DataFrame]) -> list[pd.DataFrame]:
        """``parts`` (generated per MSP), validated as one frame rather than one by one.

        Where the validated whole keeps every part's columns and dtypes, validation changed
        nothing, and each part is recorded as valid (as rows of a valid frame); otherwise
        the parts are returned as they are, to be validated one by one.
        """
        if not parts or all(is_validated(part, self.schema) for part in parts):
            return parts  # cut from one frame validated where it was drawn
        pooled = self.load_data(pd.concat(parts, ignore_index=True))
        if all(part.dtypes.equals(pooled.dtypes) for part in parts):
            inherit_validation(pooled, *parts)
        return parts

    @staticmethod
    def _partition_pooled(
        pooled: pd.DataFrame, request: PartitionRequest, label_column: str
    ) -> list[pd.DataFrame]:
        """Deal ``pooled`` out to the request's MSPs, skewed over ``label_column``."""
        return partition(
            pooled,
            request.num_msps,
            label_column=label_column,
            alpha=request.alpha,
            size_skew=request.size_skew,
            seed=request.seed,
        )

    def split(
        self, frame: pd.DataFrame, *, test_fraction: float, seed: int
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """One MSP's rows as (training, held-out); the default is a seeded random split.

        Agents whose held-out data must come after the training data (forecasting) override it.
        """
        return train_test_split(frame, test_fraction=test_fraction, seed=seed)

    def load_data(self, data: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
        """Validate a user's DataFrame or CSV file against :attr:`schema`."""
        return load_frame(data, self.schema)

    def pool(self, frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
        """Rows of several MSPs as one frame (e.g. every MSP's held-out rows, to score on).

        The default stacks them. Agents whose rows are keyed within an MSP (a revenue
        series by its dates) override it so that two MSPs' keys cannot collide.
        """
        return pd.concat(list(frames), ignore_index=True)

    def clip_report(self, data: pd.DataFrame | str | os.PathLike[str]) -> ClipReport | None:
        """Per column, the values of ``data`` outside the agent's public bounds; ``None``
        for agents without per-column bounds. It describes the MSP's private data: it stays
        at the MSP (its log, its own code) and never reaches the coordinator."""
        return None

    def use_cache_dir(self, directory: str | os.PathLike[str]) -> None:
        """Keep expensive per-record features (e.g. embeddings) under ``directory``.

        Called by a deployed MSP with a folder of its own state directory, since each of its
        messages runs in a fresh process; agents without such features ignore it.
        """

    @abstractmethod
    def prepare(self, frame: pd.DataFrame) -> LocalT:
        """Turn validated rows into the features local training needs (done once per data set)."""

    # -- federated learning ----------------------------------------------------------
    def suggested_rounds(self) -> int:
        """Rounds that give a useful model when the user names none (``simulate``, CLI)."""
        return 3

    @abstractmethod
    def init_vector(self, *, seed: int) -> np.ndarray:
        """The global model before round 1, as a flat vector."""

    @abstractmethod
    def local_update(
        self,
        vector: np.ndarray,
        local: LocalT,
        *,
        server_round: int,
        seed: int,
        dp: DPStep | None = None,
    ) -> Update:
        """Train (or count) on one MSP's data starting from the global ``vector``.

        With ``dp`` the agent applies that sample-level mechanism (DP-SGD or the Gaussian
        mechanism) and returns its event in ``Update.privacy_event``.
        """

    def fit_alone(
        self, local: LocalT, *, rounds: int, seed: int, start: np.ndarray | None = None
    ) -> np.ndarray:
        """``rounds`` rounds of this agent's training on one MSP's data alone, without DP.

        What a federation of this one MSP computes (its update is the whole sum), without
        the engine: from ``start`` (default :meth:`init_vector`), each round is
        :meth:`local_update` then :meth:`combine`. It runs inside the MSP: nothing leaves it.
        """
        vector = self.init_vector(seed=seed) if start is None else np.asarray(start, np.float64)
        for r in range(1, rounds + 1):
            update = self.local_update(vector, local, server_round=r, seed=seed + r)
            vector = self.combine(
                vector, update.vector * update.weight, update.weight, server_round=r
            )
        return vector

    def personalization_rounds(self) -> int:
        """Rounds of local fine-tuning that :meth:`personalize` runs by default (1)."""
        return 1

    def personalize(self, vector: np.ndarray, local: LocalT, *, seed: int) -> np.ndarray:
        """A model of one MSP's own data, built from the global model ``vector``.

        The default fine-tunes the global model on ``local``: :meth:`fit_alone` from
        ``vector`` for :meth:`personalization_rounds` rounds (a neural head: more local
        epochs; boosted trees: more trees fitted to the local residuals). No DP noise is
        added: the personalized model is computed, kept and used inside the MSP and never
        leaves it, so it releases nothing (publishing it, or predictions from it to others,
        would be a release of the MSP's data that no ledger covers). Agents whose model is
        built from summed statistics override it with partial pooling: the MSP's own
        statistics combined with the federation's, in an amount estimated from its data
        (``revenue``, ``anomaly``).

        Returns a vector of the same kind as the global one (:meth:`model`,
        :meth:`evaluate` take it). :func:`meshfl.agents.personalization.personalize` wraps it with
        a choice, on a local validation split, among global, personalized and local-only.
        """
        return self.fit_alone(local, rounds=self.personalization_rounds(), seed=seed, start=vector)

    @abstractmethod
    def privacy_shape(self, local: LocalT) -> tuple[Mechanism, float, int]:
        """``(mechanism, sample_rate, steps)`` of one round of sample-level DP on ``local``."""

    def update_size(self, vector: np.ndarray) -> int:
        """Length of the update vector MSPs send in a round that starts from ``vector``.

        The default (parameter averaging) is the length of the global vector itself.
        """
        return int(vector.size)

    def combine(
        self, vector: np.ndarray, summed: np.ndarray, total_weight: float, *, server_round: int
    ) -> np.ndarray:
        """The next global vector from the weighted sum of the round's updates.

        The default is federated averaging: ``summed / total_weight``.
        """
        return summed / total_weight

    def noised_release(self, update: Update) -> tuple[np.ndarray, float | np.ndarray] | None:
        """What of a sample-level Gaussian-mechanism ``update`` carries noise, and its std.

        ``(coordinates, noise_std)``: the noisy coordinates of ``update.vector`` and the
        standard deviation of the noise on each; the signal-to-noise estimate
        (:func:`meshfl.privacy.snr.gaussian_snr`) is a post-processing of them. ``None``
        (the default) when the agent cannot say.
        """
        return None

    @abstractmethod
    def evaluate(self, vector: np.ndarray, local: LocalT) -> dict[str, float]:
        """Metrics of the model ``vector`` on prepared data; includes ``"examples"``.

        Implementations also return ``baseline_<metric>`` (see :attr:`metric`) whenever
        they return the headline metric, so that a model worse than a constant shows.
        """

    def worse_than_baseline(self, metrics: Mapping[str, float]) -> bool | None:
        """Whether ``metrics[metric]`` is worse than ``metrics["baseline_" + metric]``.

        ``None`` when either is missing (or not a number).

        Examples
        --------
        >>> from meshfl.agents import get
        >>> get("anomaly")().worse_than_baseline({"auc": 0.33, "baseline_auc": 0.5})
        True
        """
        value = metrics.get(self.metric)
        baseline = metrics.get(f"baseline_{self.metric}")
        if value is None or baseline is None:
            return None
        value, baseline = float(value), float(baseline)
        if not (np.isfinite(value) and np.isfinite(baseline)):
            return None
        return value < baseline if self.higher_is_better else value > baseline

    @abstractmethod
    def model(self, vector: np.ndarray) -> GlobalModel:
        """Wrap a global vector as a usable model (``predict``, ``save``)."""


class GlobalModel:
    """A trained global model: an agent, its config and the flat vector.

    Agents subclass it to add ``predict`` and friends. :meth:`save` writes one ``.npz``
    file holding the vector and a JSON header (agent, config, meshfl version); no pickle
    is involved, so loading a model file cannot run code.
    """

    load: ClassVar[Callable[[str | os.PathLike[str]], GlobalModel]]
    """Read a model written by :meth:`save`: :func:`meshfl.agents.registry.load` (as is
    ``meshfl.load``), which finds the agent's class by name. The registry sets it when it is
    imported, which importing :mod:`meshfl.agents` does."""

    def __init__(self, agent: Agent[Any], vector: np.ndarray):
        self.agent = agent
        self.vector = np.asarray(vector, dtype=np.float64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(agent={self.agent.name!r}, parameters={self.vector.size})"

    def evaluate(self, data: pd.DataFrame | str | os.PathLike[str]) -> dict[str, float]:
        """Metrics of this model on labelled data of the agent's schema."""
        frame = self.agent.load_data(data)
        return self.agent.evaluate(self.vector, self.agent.prepare(frame))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to ``path`` (a ``.npz`` file); returns the path written."""
        path = Path(path)
        if path.suffix != ".npz":
            path = (
                path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
            )
        header = {
            "format": "meshfl.model/1",
            "agent": self.agent.name,
            "config": self.agent.config.model_dump(mode="json"),
            "meshfl_version": _version(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            np.savez_compressed(fh, vector=self.vector, header=np.array(json.dumps(header)))
        return path
