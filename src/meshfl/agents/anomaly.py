"""Agent ``anomaly``: anomalies in operational metrics, by a federated isolation forest.

Split features and thresholds come from the mesh's public feature bounds and a public seed
(:mod:`meshfl.models.isolation_forest`), so every MSP grows the same trees without seeing
anyone's data; the update is the vector of leaf counts, which sums across MSPs. Each round
grows a new block of ``trees_per_round`` trees: the global model is the concatenation of the
blocks' summed counts, so the forest (and its score) gets better round by round.

**The MSP's own columns.** ``features`` names any columns: numeric ones with public
``bounds``, categorical ones with a public category list in ``categorical``. A category is
coded by its place in the list (``c`` stands at ``c + 0.5`` in a public range
``[0, k + 2]``; ``k`` is "other", for values not on the list, ``k + 1`` "missing"), so the
random splits, drawn uniformly in that range, cut between categories and isolate the rare
ones. With ``allow_missing=True`` numeric columns may hold missing values (NaN), which go
left at every split on their feature, so rows missing it share one region: common
missingness is normal, rare missingness stands out. Values outside the bounds land where
the bound would; :meth:`Anomaly.prepare` counts them per column and logs a warning at the
MSP (:meth:`Anomaly.clip_report`), and the counts never leave it.

**Privacy.** ``unit="sample"``: each MSP adds Gaussian noise to its leaf counts (a row is in
one leaf per tree: L2 sensitivity ``sqrt(trees_per_round)``). ``unit="msp"``: each MSP's
count vector is scaled to L2 norm ``max_grad_norm`` (C) and gets its share of distributed
noise (:func:`meshfl.federation.msp_privacy.bounded_contribution`): the sum is then the
leaf counts of every MSP weighted by ``C / norm``, and the score, which rescales each tree
to ``subsample_size`` virtual points, reads only the leaves' proportions.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from meshfl.agents.base import Agent, GlobalModel
from meshfl.agents.registry import register
from meshfl.agents.update import Update
from meshfl.config.base import MeshflConfig
from meshfl.config.errors import DataSchemaError
from meshfl.data.ops_metrics_data import operational_metrics
from meshfl.data.schema import (
    ClipReport,
    Column,
    Schema,
    check_category_lists,
    count_clipped,
    feature_matrix,
    label_array,
    load_frame,
)
from meshfl.data.schemas import OPS_METRIC_BOUNDS, OPS_METRIC_FEATURES, OPS_METRICS_SCHEMA
from meshfl.models import isolation_forest as iforest
from meshfl.models import partial_pooling
from meshfl.models.prefix_cache import carry_on
from meshfl.models.ranking import average_precision, roc_auc
from meshfl.privacy.budget import DPStep
from meshfl.privacy.events import Mechanism
from meshfl.privacy.mechanisms import add_gaussian_noise

__all__ = ["Anomaly", "AnomalyConfig", "AnomalyModel"]

_log = logging.getLogger("meshfl.agents.anomaly")


class AnomalyConfig(MeshflConfig):
    """Configuration of the ``anomaly`` agent."""

    features: tuple[str, ...] = Field(OPS_METRIC_FEATURES, min_length=1)
    bounds: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: dict(OPS_METRIC_BOUNDS),
        description="Public (low, high) range of every feature; splits are drawn inside it.",
    )
    categorical: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Public category list of every categorical feature; values not listed "
        "count as 'other', missing ones as 'missing'.",
    )
    allow_missing: bool = Field(
        False,
        description="Let numeric features hold missing values (NaN); they go left at every "
        "split on their feature.",
    )
    trees_per_round: int = Field(10, ge=1, le=1000, description="Trees grown per round.")
    depth: int = Field(8, ge=1, le=iforest.MAX_DEPTH, description="Depth of every tree.")
    subsample_size: int = Field(256, ge=2, description="Virtual subsample size psi.")
    structure_seed: int = Field(0, ge=0, description="Public seed of the trees' splits.")

    @model_validator(mode="after")
    def _bounds_cover_features(self) -> AnomalyConfig:
        if len(set(self.features)) != len(self.features):
            raise ValueError("list every feature once")
        check_category_lists(self.categorical, self.features, 1000)
        if "bounds" in self.model_fields_set:
            both = [f for f in self.categorical if f in self.bounds]
            if both:
                raise ValueError(
                    f"{', '.join(both)} {'is' if len(both) == 1 else 'are'} categorical "
                    "(in 'categorical'): give categories there, and no bounds"
                )
        numeric = self.numeric
        missing = [f for f in numeric if f not in self.bounds]
        if missing:
            raise ValueError(
                f"give public bounds for every numeric feature (or list it in 'categorical' "
                f"with its categories); bounds lack {', '.join(missing)}"
            )
        bad = [f for f in numeric if not self.bounds[f][0] < self.bounds[f][1]]
        if bad:
            raise ValueError(f"give bounds with low < high; {', '.join(bad)} do not")
        return self

    @property
    def numeric(self) -> tuple[str, ...]:
        """The numeric features, in ``features`` order."""
        return tuple(f for f in self.features if f not in self.categorical)

    def feature_range(self, feature: str) -> tuple[float, float]:
        """The public range splits are drawn in: the bounds, or ``[0, k + 2]`` for a
        categorical feature of ``k`` categories (plus 'other' and 'missing')."""
        if feature in self.categorical:
            return 0.0, float(len(self.categorical[feature]) + 2)
        low, high = self.bounds[feature]
        return float(low), float(high)


@dataclass(frozen=True)
class MetricsData:
    """Prepared local data: the feature matrix and, where present, the anomaly labels."""

    X: np.ndarray
    labels: np.ndarray | None
    clipping: ClipReport | None = None
    paths: dict[bytes, tuple[np.ndarray, int]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """The path-length sums of ``X`` over the trees of the last few models evaluated, and
    how many trees hold mass, by the digest of the model's vector: a round's model is the
    last round's plus new trees, so evaluating it scores only those (:meth:`Anomaly.evaluate`)."""

    def __len__(self) -> int:
        return len(self.X)


@functools.lru_cache(maxsize=256)
def _block(
    low: tuple[float, ...], high: tuple[float, ...], n_trees: int, depth: int, seed: int, block: int
) -> iforest.ForestStructure:
    return iforest.grow_structure(
        np.array(low),
        np.array(high),
        n_trees=n_trees,
        depth=depth,
        seed=np.random.default_rng([seed, block]),
    )


@register
class Anomaly(Agent[MetricsData]):
    """Isolation-forest anomaly scores for operational metrics, federated by leaf counts."""

    name = "anomaly"
    summary = "anomalies in operational metrics"
    config_class = AnomalyConfig
    fast_config = {"trees_per_round": 4, "depth": 5}  # noqa: RUF012
    schema = OPS_METRICS_SCHEMA
    metric = "auc"
    label_column = "profile"
    # Under unit="msp" an MSP's leaf counts (norm >= sqrt(rows·trees)) are scaled to norm
    # max_grad_norm before its noise share: a whole MSP then moves the sum by at most that.
    supports_msp_dp = True
    msp_contribution = "statistics"
    combine_uses_previous = True  # each round appends its trees' counts
    config: AnomalyConfig

    @property
    def block_size(self) -> int:
        """Length of one round's update: leaves of ``trees_per_round`` trees."""
        return self.config.trees_per_round * 2**self.config.depth

    def forest(self, n_blocks: int) -> iforest.ForestStructure:
        """The public structure of the first ``n_blocks`` rounds' trees (built once)."""
        forests: dict[int, iforest.ForestStructure] = self.__dict__.setdefault("_forests", {})
        if n_blocks not in forests:
            if n_blocks - 1 in forests:  # the forest grows by one block a round
                grown = iforest.concat_structures(forests[n_blocks - 1], self.block(n_blocks - 1))
            else:
                grown = functools.reduce(
                    iforest.concat_structures, map(self.block, range(n_blocks))
                )
            while len(forests) >= 2:  # a round needs two sizes (train, evaluate)
                del forests[min(forests)]
            forests[n_blocks] = grown
        return forests[n_blocks]

    def block(self, index: int) -> iforest.ForestStructure:
        """The public structure of round block ``index``'s trees alone."""
        ranges = [self.config.feature_range(f) for f in self.config.features]
        low = tuple(lo for lo, _ in ranges)
        high = tuple(hi for _, hi in ranges)
        return _block(
            low,
            high,
            self.config.trees_per_round,
            self.config.depth,
            self.config.structure_seed,
            index,
        )

    @property
    def _builtin_columns(self) -> bool:
        c = self.config
        return c.features == OPS_METRIC_FEATURES and not c.categorical and not c.allow_missing

    def load_data(self, data: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
        if self._builtin_columns:
            return load_frame(data, self.schema)
        c = self.config
        schema = Schema(
            "anomaly data",
            (
                *(
                    Column(f, "category", nullable=True)
                    if f in c.categorical
                    else Column(f, "number", nullable=c.allow_missing)
                    for f in c.features
                ),
                Column("is_anomaly", "bool", required=False),
            ),
        )
        try:
            return load_frame(data, schema)
        except DataSchemaError as err:
            if "missing values" in str(err) and not c.allow_missing:
                raise DataSchemaError(
                    f"{err} Or set allow_missing=True in the anomaly config: missing values "
                    "then go left at every split on their feature."
                ) from None
            raise

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """The forest's input matrix of a validated frame: numeric columns as floats (NaN
        where missing), a categorical one as ``code + 0.5`` (code: index in its public list,
        ``k`` for 'other', ``k + 1`` for 'missing')."""
        return feature_matrix(frame, self.config.features, self.config.categorical, code_offset=0.5)

    def clip_report(self, data: pd.DataFrame | str | os.PathLike[str]) -> ClipReport:
        """Per numeric feature, the values of ``data`` outside the public bounds (they land
        where the bound would). It describes private data: keep it at the MSP."""
        c = self.config
        return count_clipped(self.load_data(data), {f: c.bounds[f] for f in c.numeric}, c.numeric)

    def synthetic_data(self, n: int, *, seed: int) -> pd.DataFrame:
        return operational_metrics(n, seed=seed)

    def prepare(self, frame: pd.DataFrame) -> MetricsData:
        frame = self.load_data(frame)
        c = self.config
        X = self.encode(frame)
        clipping = count_clipped(X, {f: c.bounds[f] for f in c.numeric}, c.features)
        clipping.warn("anomaly data", logger=_log)
        labels = label_array(
            frame,
            "is_anomaly",
            "Column 'is_anomaly' of the anomaly data has missing values; give true/false "
            "for every row, or drop the column (it is only for evaluation).",
        )
        return MetricsData(X, labels, clipping)

    def init_vector(self, *, seed: int) -> np.ndarray:
        return np.zeros(0)

    def update_size(self, vector: np.ndarray) -> int:
        return self.block_size

    def _blocks_in(self, vector: np.ndarray) -> int:
        if vector.size % self.block_size:
            raise DataSchemaError(
                f"An anomaly model vector must hold whole blocks of {self.block_size} leaf "
                f"counts; got {vector.size} values."
            )
        return vector.size // self.block_size

    def privacy_shape(self, local: MetricsData) -> tuple[Mechanism, float, int]:
        # One Gaussian mechanism on the round's leaf counts, over all rows.
        return "gaussian", 1.0, 1

    def local_update(
        self,
        vector: np.ndarray,
        local: MetricsData,
        *,
        server_round: int,
        seed: int,
        dp: DPStep | None = None,
    ) -> Update:
        # The next block follows the blocks already in the global model (not the round
        # number), so a skipped round cannot misalign counts and trees.
        # Only the new block's trees are counted: a round's work does not grow with the forest.
        counts = iforest.leaf_counts(
            self.block(self._blocks_in(vector)), local.X, allow_missing=self.config.allow_missing
        )
        if dp is None:
            return Update(vector=counts, weight=1.0, metrics={"examples": float(len(local))})
        # A row lands in exactly one leaf of each tree: adding or removing it changes
        # trees_per_round counts by one, an L2 sensitivity of sqrt(trees_per_round).
        noisy = add_gaussian_noise(
            counts,
            sensitivity=float(np.sqrt(self.config.trees_per_round)),
            noise_multiplier=dp.noise_multiplier,
        )  # noise from OS entropy, never from the public seed
        return Update(
            vector=noisy,
            weight=1.0,
            metrics={"examples": float(len(local))},
            privacy_event=dp.event(),
        )

    def noised_release(self, update: Update) -> tuple[np.ndarray, float] | None:
        """The noisy leaf counts, with noise std ``sigma·sqrt(trees_per_round)``."""
        event = update.privacy_event
        if event.mechanism != "gaussian":
            return None
        sensitivity = float(np.sqrt(self.config.trees_per_round))
        return update.vector, event.noise_multiplier * sensitivity

    def combine(
        self, vector: np.ndarray, summed: np.ndarray, total_weight: float, *, server_round: int
    ) -> np.ndarray:
        return np.concatenate([vector, summed])

    def _scores_of(self, vector: np.ndarray, local: MetricsData) -> np.ndarray:
        """:meth:`score_samples` of ``local.X``, from the path sums of the rounds before.

        The first ``k`` round blocks of a vector are the model of round ``k``, and they never
        change: the path sums of ``local.X`` over them are kept (by the digest of those
        blocks), so each round scores only its own new trees.
        """
        n_blocks = self._blocks_in(vector)
        if n_blocks == 0 or len(local) == 0:
            return self.score_samples(vector, local.X)
        vector = np.ascontiguousarray(vector, dtype=np.float64)
        size = self.block_size
        # One pass over the vector gives the digests of last round's model and this one's.
        digest = hashlib.sha256(vector[: (n_blocks - 1) * size].data.cast("B"))
        before = digest.digest()
        digest.update(vector[(n_blocks - 1) * size :].data.cast("B"))
        key = digest.digest()

        def extend(start: int, kept: tuple[np.ndarray, int] | None) -> tuple[np.ndarray, int]:
            total, trees = (np.zeros(len(local)), 0) if kept is None else (kept[0].copy(), kept[1])
            for index in range(start, n_blocks):
                sums, n = iforest.path_sums(
                    self.block(index),
                    vector[index * size : (index + 1) * size],
                    local.X,
                    subsample_size=self.config.subsample_size,
                    allow_missing=self.config.allow_missing,
                )
                total += sums
                trees += n
            return total, trees

        total, trees = carry_on(local.paths, ((n_blocks, key), (n_blocks - 1, before)), extend)
        return iforest.score_from_path_sums(total, trees, self.config.subsample_size)

    def score_samples(self, vector: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Scores on sklearn's scale (lower is more abnormal); 0-tree models score all -0.5."""
        n_blocks = self._blocks_in(vector)
        if n_blocks == 0:
            return np.full(len(X), -0.5)
        return iforest.score_samples(
            self.forest(n_blocks),
            vector,
            X,
            subsample_size=self.config.subsample_size,
            allow_missing=self.config.allow_missing,
        )

    def evaluate(self, vector: np.ndarray, local: MetricsData) -> dict[str, float]:
        score = self._scores_of(vector, local)
        out = {"mean_score": float(score.mean()), "examples": float(len(local))}
        if local.labels is not None and 0 < local.labels.sum() < len(local.labels):
            out["auc"] = float(roc_auc(local.labels, -score))
            out["baseline_auc"] = 0.5  # a constant score ranks nothing
            out["average_precision"] = float(average_precision(local.labels, -score))
        return out

    def model(self, vector: np.ndarray) -> AnomalyModel:
        return AnomalyModel(self, vector)

    def personalize(self, vector: np.ndarray, local: MetricsData, *, seed: int) -> np.ndarray:
        """Leaf counts of this MSP's normal regime, shrunk towards everyone else's.

        Per tree, the MSP's own leaf counts ``n`` are read as drawn from a Dirichlet centred
        on the other MSPs' leaf proportions ``q`` (the global counts less its own); the
        concentration ``alpha`` maximises the Dirichlet-multinomial likelihood of ``n``
        (:func:`meshfl.models.partial_pooling.dirichlet_concentration`) and the personalized
        counts are its posterior mean, ``n + alpha·q``. An MSP whose normal looks like the
        mesh's keeps the global forest; one with a regime of its own gets its own. No noise
        is added: the counts stay with the MSP.
        """
        n_blocks = self._blocks_in(vector)
        if n_blocks == 0 or len(local) == 0:
            return np.asarray(vector, dtype=np.float64)
        leaves = 2**self.config.depth
        own = iforest.leaf_counts(self.forest(n_blocks), local.X).reshape(-1, leaves)
        total = np.clip(np.asarray(vector, dtype=np.float64), 0.0, None).reshape(-1, leaves)
        others = np.clip(total - own, 0.0, None)
        if others.sum() < 1.0:  # nobody else's rows: the MSP alone
            return own.ravel()
        alpha = partial_pooling.dirichlet_concentration(own, others)
        if np.isinf(alpha):
            return np.asarray(vector, dtype=np.float64)
        share = others / others.sum(axis=1, keepdims=True).clip(min=1e-300)
        return (own + alpha * share).ravel()


class AnomalyModel(GlobalModel):
    """The global anomaly model, with scikit-learn's ``IsolationForest`` conventions."""

    agent: Anomaly

    @property
    def n_trees(self) -> int:
        """Trees in the forest."""
        return self.vector.size // 2**self.agent.config.depth

    def _features(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        features = list(self.agent.config.features)
        if isinstance(X, pd.DataFrame):
            missing = [f for f in features if f not in X.columns]
            if missing:
                raise DataSchemaError(
                    f"The anomaly model scores columns {', '.join(features)}; "
                    f"the DataFrame lacks {', '.join(missing)}."
                )
            if self.agent._builtin_columns:
                return X[features].to_numpy(dtype=np.float64)
            frame = self.agent.load_data(X.drop(columns=["is_anomaly"], errors="ignore"))
            return self.agent.encode(frame)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(features):
            raise DataSchemaError(
                f"The anomaly model needs an array of shape (n, {len(features)}) "
                f"(features {', '.join(features)}); got shape {X.shape}."
            )
        return X

    def score_samples(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Anomaly score in ``[-1, 0)``; lower is more abnormal (as sklearn)."""
        return self.agent.score_samples(self.vector, self._features(X))

    def decision_function(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """``score_samples + 0.5``: negative for outliers (sklearn's contamination="auto")."""
        return self.score_samples(X) + 0.5

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """``-1`` for outliers, ``+1`` for inliers."""
        return np.where(self.decision_function(X) < 0, -1, 1)
