"""Agent ``client_health``: churn risk from tabular client features, by federated boosted trees.

The model is a histogram gradient-boosted forest (:mod:`meshfl.models.hist_gbdt`) grown **one
tree level per federated round**: each MSP computes the log-loss gradients and hessians of
its clients under the finished trees, and sends, for every open node of the level being
grown, per feature and bin, the sums of ``g`` and ``h``. The coordinator adds those
histograms under CKKS without reading them; every MSP then replays :meth:`ClientHealth.combine`
on the sums, which picks each node's best split and values its children. So
``rounds = trees x max_depth`` (a tree whose nodes all stop splitting early finishes early
and the next round starts a new tree), and after every round the model is a complete
predictor whose AUC rises round by round.

Bins are laid out inside **public** feature ranges (config ``bounds``, linear or
``log1p``-spaced), so every MSP bins identically without a message. A quantile sketch of the
pooled data would fit the data better, but it is a query on private data that would have to
be noised and paid for from the same ε before the first tree; public ranges cost nothing.

Under differential privacy (``unit="sample"``) each MSP adds Gaussian noise to its
histograms. A client is in one open node and one bin per feature, and contributes
``(g, c·h)`` with ``g² + c²h² < 1`` (``g = p - y``, ``h = p(1-p)``; hessians travel
scaled by ``c =`` :data:`HESSIAN_SCALE` ``= sqrt(8)``, the largest factor that keeps that
bound, so their noise is ``sqrt(8)`` times smaller once scaled back), so adding or removing
one client moves the update by an L2 norm below ``sqrt(k)``, ``k`` the features a tree's
histograms cover (all of them, or ``feature_fraction`` of them drawn per tree from a public
seed): that is the sensitivity, with no clipping needed (the DPConfig's ``max_grad_norm``
does not apply). Each round is one Gaussian mechanism over all rows; node totals are
averaged over the features' noisy histograms, and a child needs ``min_child_hessian`` of
(noisy) hessian. Under ``unit="msp"`` a histogram's sensitivity to a whole MSP would grow
with the MSP's size, so each MSP scales its whole histogram vector to L2 norm
``max_grad_norm`` (C) before adding its share of distributed noise
(:func:`meshfl.federation.msp_privacy.bounded_contribution`): the sum is the histograms of
every MSP's clients weighted by ``C / norm``, i.e. boosting with one public-bounded weight
per MSP, and split gains and leaf values (ratios of ``G`` and ``H``) keep their meaning.

Choosing splits from noisy histograms spends most of a small ε on noise. With
``split_mode="random"`` the splits of every tree are drawn from the public seed instead
(Maddock et al., CCS 2022, "totally random" trees): a round grows a whole tree, an MSP sends
only the ``(g, c·h)`` sums of its leaves (``2**max_depth x 2`` values) and a client sits in
one leaf, so the sensitivity is 1 and ``rounds = trees``. The trees are weaker, but under
DP at ε ≈ 1 the model is far better (see docs/agents.md).

At least 3 MSPs must contribute to every round's sum (:attr:`ClientHealth.min_msps`):
with two, either could subtract its own histograms and read the other's.

**The MSP's own columns.** ``features`` names any columns; numeric ones need public
``bounds``, categorical ones a public category list in ``categorical`` (``{"plan": ("basic",
"pro")}``): public so that the histograms' shape, and so the update's, never depends on an
MSP's data. Each category is one bin, plus one bin for values not on the list ("other")
and one for missing values; splits on them are LightGBM's categorical splits (a set of
categories goes left), which an ordinal code would not allow and a one-hot encoding would
pay for with one more feature per category, i.e. a larger DP sensitivity. With
``allow_missing=True`` numeric columns may hold missing values (NaN): every feature gets a
missing-value bin and each split learns which side they go, as LightGBM does. Values outside
the bounds fall in the first or last bin; :meth:`ClientHealth.prepare` counts them per
column and logs a warning at the MSP (:meth:`ClientHealth.clip_report`), and the counts never
leave it.

The finished model exports as a LightGBM text model
(:meth:`ClientHealthModel.to_lightgbm`); ``lightgbm.Booster(model_str=...)`` loads it and
predicts the same probabilities as :meth:`ClientHealthModel.predict_proba`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from meshfl.agents.base import Agent, GlobalModel, PartitionRequest
from meshfl.agents.registry import register
from meshfl.agents.update import Update
from meshfl.config.base import MeshflConfig
from meshfl.config.errors import DataSchemaError
from meshfl.data.client_health_data import (
    CLIENT_HEALTH_BOUNDS,
    CLIENT_HEALTH_FEATURES,
    CLIENT_HEALTH_LOG_FEATURES,
    CLIENT_HEALTH_SCHEMA,
    client_health,
    client_health_partitions,
)
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
from meshfl.models import hist_gbdt as gbdt
from meshfl.models.prefix_cache import carry_on
from meshfl.models.ranking import average_precision, roc_auc
from meshfl.privacy.events import Mechanism
from meshfl.privacy.mechanisms import add_gaussian_noise

if TYPE_CHECKING:
    import lightgbm

    from meshfl.privacy.budget import DPStep

__all__ = [
    "HESSIAN_SCALE",
    "ClientHealth",
    "ClientHealthConfig",
    "ClientHealthModel",
    "HealthData",
]

LABEL = "churned"

_log = logging.getLogger("meshfl.agents.client_health")

HESSIAN_SCALE = float(np.sqrt(8.0))
"""Factor the hessian histograms travel scaled by (and are divided by again in ``combine``).

A client adds ``(g, c·h)`` to its bins; ``sup (g² + c²h²)`` over the model's output stays 1
for every ``c <= sqrt(8)`` (``p²(1 + c²(1-p)²)`` then increases on ``[0, 1]``), so the
sensitivity does not change while the Gaussian noise on the hessians, once divided by
``c``, is ``sqrt(8)`` times smaller. Without DP the scaling is undone exactly up to rounding.
"""


class ClientHealthConfig(MeshflConfig):
    """Configuration of the ``client_health`` agent (LightGBM's names where one exists)."""

    features: tuple[str, ...] = Field(CLIENT_HEALTH_FEATURES, min_length=1)
    bounds: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: dict(CLIENT_HEALTH_BOUNDS),
        description="Public (low, high) range of every feature; the bins lie inside it.",
    )
    categorical: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Public category list of every categorical feature, e.g. "
        "{'plan': ('basic', 'pro', 'enterprise')}; values not listed count as 'other', "
        "missing ones as 'missing'.",
    )
    allow_missing: bool = Field(
        False,
        description="Let numeric features hold missing values (NaN): each gets a "
        "missing-value bin and every split learns which side they go (as LightGBM).",
    )
    log_bins: tuple[str, ...] | None = Field(
        None,
        description="Features whose bins are spaced evenly in log1p (right-skewed ones); "
        "None: the built-in skewed features among `features`.",
    )
    n_bins: int = Field(32, ge=2, le=256, description="Histogram bins per feature.")
    max_depth: int = Field(
        3, ge=1, le=gbdt.MAX_DEPTH, description="Levels per tree = rounds per tree."
    )
    learning_rate: float = Field(0.2, gt=0, le=1, description="Shrinkage of every leaf.")
    lambda_l2: float = Field(1.0, ge=0, description="L2 regularisation of leaf values.")
    min_child_hessian: float = Field(
        1.0, ge=0, description="Smallest hessian sum of a child (min_sum_hessian_in_leaf)."
    )
    min_split_gain: float = Field(0.0, ge=0, description="Smallest gain of a split.")
    max_delta_step: float = Field(
        0.0, ge=0, description="Bound on raw leaf values (0: none); helps under DP noise."
    )
    feature_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of the features each tree may split on (a public random draw per "
        "tree); under DP a smaller share means smaller updates and less noise per bin.",
    )
    feature_seed: int = Field(
        0, ge=0, description="Public seed of the per-tree feature draw and of random splits."
    )
    split_mode: Literal["best", "random"] = Field(
        "best",
        description="'best': histogram split search, one tree level per round; 'random': "
        "splits drawn from the public seed, one whole tree per round, only leaf sums sent "
        "(much less noise under DP, weaker trees without it).",
    )

    @model_validator(mode="after")
    def _bounds_cover_features(self) -> ClientHealthConfig:
        if len(set(self.features)) != len(self.features):
            raise ValueError("list every feature once")
        if LABEL in self.features:
            raise ValueError(f"{LABEL!r} is the label; it cannot be a feature")
        check_category_lists(
            self.categorical,
            self.features,
            min(self.n_bins + self.allow_missing, gbdt.MAX_CATEGORY_BINS) - 2,
        )
        if "bounds" in self.model_fields_set:
            both = [f for f in self.categorical if f in self.bounds]
            if both:
                raise ValueError(
                    f"{', '.join(both)} {'is' if len(both) == 1 else 'are'} categorical "
                    "(in 'categorical'): give categories there, and no bounds"
                )
        numeric = [f for f in self.features if f not in self.categorical]
        missing = [f for f in numeric if f not in self.bounds]
        if missing:
            raise ValueError(
                f"give public bounds for every numeric feature (or list it in 'categorical' "
                f"with its categories); bounds lack {', '.join(missing)}"
            )
        bad = [
            f
            for f in numeric
            if not (np.isfinite(self.bounds[f]).all() and self.bounds[f][0] < self.bounds[f][1])
        ]
        if bad:
            raise ValueError(f"give finite bounds with low < high; {', '.join(bad)} do not")
        unknown = [f for f in self.log_bins or () if f not in numeric]
        if unknown:
            raise ValueError(f"log_bins must name numeric features; {', '.join(unknown)} are not")
        return self

    @property
    def numeric(self) -> tuple[str, ...]:
        """The numeric features, in ``features`` order."""
        return tuple(f for f in self.features if f not in self.categorical)

    def params(self) -> gbdt.GBDTParams:
        """The tree-growing parameters."""
        return gbdt.GBDTParams(
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            lambda_l2=self.lambda_l2,
            min_child_hessian=self.min_child_hessian,
            min_split_gain=self.min_split_gain,
            max_delta_step=self.max_delta_step,
        )


@dataclass(frozen=True)
class HealthData:
    """Prepared local data: encoded feature values, their bins, where present churn labels,
    and the count of values outside the public bounds (private: it stays at the MSP)."""

    X: np.ndarray
    bins: np.ndarray
    labels: np.ndarray | None
    clipping: ClipReport | None = None
    margins: dict[bytes, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    """The margins of ``X`` over the finished trees of the last few forests, by the trees'
    digest: finished trees never change, so a round computes only the trees after them
    (:meth:`ClientHealth.margin_of`)."""

    def __len__(self) -> int:
        return len(self.X)


@functools.lru_cache(maxsize=64)
def _edges(
    bounds: tuple[tuple[float, float], ...], logs: tuple[bool, ...], n_bins: int
) -> tuple[np.ndarray, ...]:
    out = []
    for (low, high), log in zip(bounds, logs, strict=True):
        edges = gbdt.bin_edges(low, high, n_bins, log=log)
        edges.flags.writeable = False
        out.append(edges)
    return tuple(out)


@functools.lru_cache(maxsize=64)
def _code_edges(width: int) -> np.ndarray:
    edges = np.arange(width - 1, dtype=np.float64) + 0.5
    edges.flags.writeable = False
    return edges


@register
class ClientHealth(Agent[HealthData]):
    """Churn risk of an MSP's clients, federated gradient-boosted trees (exports to LightGBM)."""

    name = "client_health"
    summary = "churn risk from tabular client features"
    config_class = ClientHealthConfig
    fast_config = {"n_bins": 8, "max_depth": 2}  # noqa: RUF012
    schema = CLIENT_HEALTH_SCHEMA
    metric = "auc"
    label_column = LABEL
    combine_uses_previous = True  # the forest grows on the previous one
    # Under unit="msp" an MSP's histograms (norm up to rows·sqrt(features)) are scaled to
    # norm max_grad_norm before its noise share: a whole MSP moves the sum by at most that.
    supports_msp_dp = True
    msp_contribution = "statistics"
    min_msps = 3
    config: ClientHealthConfig

    # -- bins and data -----------------------------------------------------------------
    @property
    def edges(self) -> tuple[np.ndarray, ...]:
        """Inner bin edges of every feature: from the public bounds for a numeric one,
        ``0.5, 1.5, ...`` between the codes of a categorical one."""
        c = self.config
        numeric = _edges(
            tuple((float(c.bounds[f][0]), float(c.bounds[f][1])) for f in c.numeric),
            tuple(f in self.log_features for f in c.numeric),
            c.n_bins,
        )
        by_name = dict(zip(c.numeric, numeric, strict=True))
        return tuple(
            by_name[f] if f in by_name else _code_edges(len(c.categorical[f]) + 2)
            for f in c.features
        )

    @property
    def layout(self) -> gbdt.BinLayout | None:
        """How histogram bins map to values (None: numeric bins only, as before)."""
        c = self.config
        if not c.allow_missing and not c.categorical:
            return None
        return gbdt.BinLayout(
            c.n_bins,
            missing=c.allow_missing,
            categorical={
                i: len(c.categorical[f]) + 2 for i, f in enumerate(c.features) if f in c.categorical
            },
        )

    @functools.cached_property
    def log_features(self) -> tuple[str, ...]:
        """Features whose bins are ``log1p``-spaced."""
        if self.config.log_bins is not None:
            return self.config.log_bins
        return tuple(f for f in self.config.numeric if f in CLIENT_HEALTH_LOG_FEATURES)

    @property
    def n_bins(self) -> int:
        """Bins per feature in a histogram (a missing-value bin included)."""
        return self.config.n_bins + int(self.config.allow_missing)

    @property
    def _builtin_columns(self) -> bool:
        c = self.config
        return c.features == CLIENT_HEALTH_FEATURES and not c.categorical and not c.allow_missing

    def load_data(self, data: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
        if self._builtin_columns:
            return load_frame(data, self.schema)
        c = self.config
        schema = Schema(
            "client_health data",
            (
                *(
                    Column(f, "category", nullable=True)
                    if f in c.categorical
                    else Column(f, "number", nullable=c.allow_missing)
                    for f in c.features
                ),
                Column(LABEL, "bool", required=False),
            ),
        )
        try:
            return load_frame(data, schema)
        except DataSchemaError as err:
            if "missing values" in str(err) and not c.allow_missing:
                raise DataSchemaError(
                    f"{err} Or set allow_missing=True in the client_health config: each "
                    "feature then gets a missing-value bin and the trees learn where missing "
                    "values go."
                ) from None
            raise

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """The model's input matrix of a validated frame: numeric columns as floats (NaN
        where missing), categorical ones as codes (see :func:`encode_categories`)."""
        return feature_matrix(frame, self.config.features, self.config.categorical)

    def clip_report(self, data: pd.DataFrame | str | os.PathLike[str]) -> ClipReport:
        """Per numeric feature, the values of ``data`` outside the public bounds.

        They fall in the first or last bin, i.e. count as the bound. The report describes
        the MSP's private data: keep it at the MSP.
        """
        c = self.config
        frame = self.load_data(data)
        return count_clipped(frame, {f: c.bounds[f] for f in c.numeric}, c.numeric)

    def synthetic_data(self, n: int, *, seed: int) -> pd.DataFrame:
        return client_health(n, seed=seed)

    def _partition_synthetic(self, request: PartitionRequest) -> list[pd.DataFrame]:
        # Each MSP has its own mix of client segments and its own service quality: the
        # features shift between MSPs, and the churn rates with them.
        return self._validated_once(
            client_health_partitions(
                request.num_msps, **request.keywords(), min_size=min(20, request.samples_per_msp)
            )
        )

    def prepare(self, frame: pd.DataFrame) -> HealthData:
        frame = self.load_data(frame)
        X = self.encode(frame)
        c = self.config
        clipping = count_clipped(X, {f: c.bounds[f] for f in c.numeric}, c.features)
        clipping.warn("client_health data", logger=_log)
        labels = label_array(
            frame,
            LABEL,
            f"Column {LABEL!r} of the client_health data has missing values; give "
            "true/false for every client, or drop the column to only score clients.",
        )
        layout = self.layout
        bins = gbdt.bin_rows(X, self.edges, missing_bin=layout.missing_bin if layout else None)
        return HealthData(X, bins, labels, clipping)

    # -- federated learning --------------------------------------------------------------
    def forest(self, vector: np.ndarray) -> gbdt.Forest:
        """The forest a global vector encodes."""
        return gbdt.Forest.from_vector(vector, self.config.max_depth)

    def init_vector(self, *, seed: int) -> np.ndarray:
        return gbdt.Forest.empty(self.config.max_depth).to_vector()

    def suggested_rounds(self) -> int:
        """Ten trees: one round per level (``best`` splits) or per tree (``random``)."""
        return 10 * (1 if self.config.split_mode == "random" else self.config.max_depth)

    def personalization_rounds(self) -> int:
        """Three trees boosted on the MSP's own clients, from the global forest's margin."""
        return 3 * (1 if self.config.split_mode == "random" else self.config.max_depth)

    @property
    def features_per_tree(self) -> int:
        """Features each tree's histograms cover: ``feature_fraction`` of them, at least 1."""
        n = len(self.config.features)
        return max(1, min(n, round(self.config.feature_fraction * n)))

    def tree_features(self, tree: int) -> np.ndarray:
        """Indices of the features tree ``tree`` may split on (public: seed and tree index)."""
        n, k = len(self.config.features), self.features_per_tree
        if k == n:
            return np.arange(n)
        rng = np.random.default_rng([self.config.feature_seed, tree])
        return np.sort(rng.choice(n, size=k, replace=False))

    def random_splits(self, tree: int) -> tuple[np.ndarray, np.ndarray]:
        """``(feature, bin)`` of every internal node of tree ``tree`` in ``split_mode="random"``."""
        rng = np.random.default_rng([self.config.feature_seed, 0x5EED, tree])
        return gbdt.random_structure(
            self.config.max_depth,
            self.tree_features(tree).tolist(),
            self.config.n_bins,
            rng,
            layout=self.layout,
        )

    def update_size(self, vector: np.ndarray) -> int:
        if self.config.split_mode == "random":
            return int(2**self.config.max_depth) * 2  # (g, h) sums per leaf
        # Fixed: the widest level's 2**(max_depth-1) nodes x features x bins x (g, h). A
        # narrower level leaves its unused node slots at zero; the coordinator, which
        # cannot open the model, checks every round's updates against one length, and
        # learns nothing about the tree's shape from it.
        return self._slots * self.features_per_tree * self.n_bins * 2

    @property
    def _slots(self) -> int:
        return int(2 ** (self.config.max_depth - 1))

    def privacy_shape(self, local: HealthData) -> tuple[Mechanism, float, int]:
        # One Gaussian mechanism on the round's histograms, over all rows.
        return "gaussian", 1.0, 1

    @property
    def sensitivity(self) -> float:
        """L2 sensitivity of one round's histograms to one client: ``sqrt(features_per_tree)``."""
        if self.config.split_mode == "random":
            return 1.0  # a client sits in one leaf
        return float(np.sqrt(self.features_per_tree))

    def local_update(
        self,
        vector: np.ndarray,
        local: HealthData,
        *,
        server_round: int,
        seed: int,
        dp: DPStep | None = None,
    ) -> Update:
        if local.labels is None:
            raise DataSchemaError(
                f"Training client_health needs the {LABEL!r} column (true/false per client); "
                "this MSP's data has none."
            )
        forest = self.forest(vector)
        tree, _ = forest.growing()
        # Standard boosting: a tree is fitted to the gradients of the model before it.
        margin = self.margin_of(forest, local, trees=tree)
        grad, hess = gbdt.logloss_gradients(margin, local.labels)
        hess = hess * HESSIAN_SCALE
        if self.config.split_mode == "random":
            feature, split_bin = self.random_splits(tree)
            hist = gbdt.leaf_sums(feature, split_bin, local.bins, grad, hess).ravel()
        else:
            slot = gbdt.level_slots(forest, local.bins, layout=self.layout)
            bins = local.bins[:, self.tree_features(tree)]
            hist = gbdt.histograms(
                bins, slot, grad, hess, n_slots=self._slots, n_bins=self.n_bins
            ).ravel()
        metrics = {"examples": float(len(local))}
        if dp is None:
            p = np.clip(gbdt.sigmoid(margin), 1e-12, 1 - 1e-12)
            y = local.labels
            metrics["train_logloss"] = float(-np.mean(y * np.log(p) + (~y) * np.log(1 - p)))
            return Update(vector=hist, weight=1.0, metrics=metrics)
        noisy = add_gaussian_noise(
            hist,
            sensitivity=self.sensitivity,
            noise_multiplier=dp.noise_multiplier,
        )  # noise from OS entropy, never from the public seed
        # Only the example count leaves the MSP: a loss on raw data is not covered by noise.
        return Update(vector=noisy, weight=1.0, metrics=metrics, privacy_event=dp.event())

    def noised_release(self, update: Update) -> tuple[np.ndarray, float] | None:
        """The noisy G/H histograms, with noise std ``sigma·sensitivity``."""
        event = update.privacy_event
        if event.mechanism != "gaussian":
            return None
        return update.vector, event.noise_multiplier * self.sensitivity

    def combine(
        self, vector: np.ndarray, summed: np.ndarray, total_weight: float, *, server_round: int
    ) -> np.ndarray:
        forest = self.forest(vector)
        tree = forest.growing()[0]
        if self.config.split_mode == "random":
            sums = np.asarray(summed, dtype=np.float64).reshape(-1, 2)
            feature, split_bin = self.random_splits(tree)
            return gbdt.grow_random_tree(
                forest,
                feature,
                split_bin,
                sums / [1.0, HESSIAN_SCALE],
                self.config.params(),
                layout=self.layout,
            ).to_vector()
        features = self.tree_features(tree)
        hist = np.asarray(summed, dtype=np.float64).reshape(
            self._slots, len(features), self.n_bins, 2
        )
        hist = hist / np.array([1.0, HESSIAN_SCALE])
        grown = gbdt.grow_level(
            forest, hist, self.config.params(), features=features.tolist(), layout=self.layout
        )
        return grown.to_vector()

    def predict_margin(self, vector: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Log-odds of churn of the rows of ``X`` (encoded, columns in ``config.features``
        order; see :meth:`encode`)."""
        return gbdt.predict_margin(self.forest(vector), X, self.edges, layout=self.layout)

    def margin_of(
        self, forest: gbdt.Forest, local: HealthData, *, trees: int | None = None
    ) -> np.ndarray:
        """:func:`~meshfl.models.hist_gbdt.predict_margin` of ``local.X`` over the first
        ``trees`` trees, going on from the margin of the finished trees kept from the round
        before (the same bits), so that a round's work does not grow with the forest."""
        count = forest.n_trees if trees is None else trees
        finished = min(count, forest.growing()[0])
        edges = hashlib.sha256(b"".join(e.tobytes() for e in self.edges)).digest()
        predict = functools.partial(
            gbdt.predict_margin, forest, local.X, self.edges, layout=self.layout
        )

        def extend(start: int, margin: np.ndarray | None) -> np.ndarray:
            out = predict(trees=finished, start=start, margin=margin)
            out.setflags(write=False)  # kept: shared with the next round
            return out

        prefixes = [(k, edges + gbdt.forest_digest(forest, k)) for k in (finished, finished - 1)]
        margin = carry_on(local.margins, [p for p in prefixes if p[0] >= 0], extend)
        if count > finished:
            margin = predict(trees=count, start=finished, margin=margin)
        return margin

    def evaluate(self, vector: np.ndarray, local: HealthData) -> dict[str, float]:
        p = gbdt.sigmoid(self.margin_of(self.forest(vector), local))
        out = {"examples": float(len(local)), "mean_risk": float(p.mean())}
        y = local.labels
        if y is not None:
            q = np.clip(p, 1e-12, 1 - 1e-12)
            out["logloss"] = float(-np.mean(y * np.log(q) + (~y) * np.log(1 - q)))
            out["accuracy"] = float(np.mean((p > 0.5) == y))
            if 0 < y.sum() < len(y):
                out["auc"] = float(roc_auc(y, p))
                out["baseline_auc"] = 0.5  # a constant risk ranks nothing
                out["average_precision"] = float(average_precision(y, p))
        return out

    def model(self, vector: np.ndarray) -> ClientHealthModel:
        return ClientHealthModel(self, vector)


class ClientHealthModel(GlobalModel):
    """The global churn model: boosted trees that also load as a ``lightgbm.Booster``."""

    agent: ClientHealth

    @property
    def forest(self) -> gbdt.Forest:
        """The trees (:class:`meshfl.models.hist_gbdt.Forest`)."""
        return self.agent.forest(self.vector)

    @property
    def n_trees(self) -> int:
        """Trees in the model (the one still growing included)."""
        return self.forest.n_trees

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The columns the model reads, in order."""
        return self.agent.config.features

    @property
    def categories(self) -> dict[str, tuple[str, ...]]:
        """The public category list of each categorical feature."""
        return dict(self.agent.config.categorical)

    def encode(self, X: pd.DataFrame) -> np.ndarray:
        """The numeric matrix the model (and its LightGBM export) reads from a raw frame:
        categories as codes (index in :attr:`categories`; ``len`` for an unlisted value,
        ``len + 1`` for a missing one), numeric columns as floats with NaN where missing."""
        return self._features(X)

    def _features(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        features = list(self.feature_names)
        if isinstance(X, pd.DataFrame):
            missing = [f for f in features if f not in X.columns]
            if missing:
                raise DataSchemaError(
                    f"The client_health model reads columns {', '.join(features)}; "
                    f"the DataFrame lacks {', '.join(missing)}."
                )
            if self.agent._builtin_columns:
                values = X[features].to_numpy(dtype=np.float64)
            else:
                frame = self.agent.load_data(X.drop(columns=[LABEL], errors="ignore"))
                values = self.agent.encode(frame)
        else:
            values = np.asarray(X, dtype=np.float64)
            if values.ndim != 2 or values.shape[1] != len(features):
                raise DataSchemaError(
                    f"The client_health model needs an array of shape (n, {len(features)}) "
                    f"(features {', '.join(features)}). Got shape {values.shape} instead."
                )
        if self.agent.config.allow_missing:
            if np.isinf(values).any():
                raise DataSchemaError(
                    "The client_health model needs finite or missing (NaN) feature values; "
                    "fill or drop the rows with infinite values first."
                )
        elif not np.all(np.isfinite(values)):
            raise DataSchemaError(
                "The client_health model needs finite feature values; fill or drop the rows "
                "with missing (NaN) or infinite values first, or train with "
                "allow_missing=True."
            )
        return values

    def predict_margin(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Log-odds of churn (LightGBM's ``raw_score``)."""
        return self.agent.predict_margin(self.vector, self._features(X))

    def predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Probability of churn of every row, shape ``(n,)`` (as ``Booster.predict``)."""
        return gbdt.sigmoid(self.predict_margin(X))

    def predict(self, X: pd.DataFrame | np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Whether each client is predicted to churn (probability above ``threshold``)."""
        return self.predict_proba(X) > threshold

    def to_lightgbm(self) -> str:
        """The model as LightGBM text; ``lightgbm.Booster(model_str=...)`` loads it.

        With categorical features or missing values, LightGBM predicts on :meth:`encode`'s
        matrix (category codes, NaN where a numeric value is missing)."""
        c = self.agent.config
        return gbdt.to_lightgbm(
            self.forest,
            self.agent.edges,
            feature_names=c.features,
            bounds=[
                c.bounds[f] if f in c.bounds and f not in c.categorical else (0.0, 1.0)
                for f in c.features
            ],
            learning_rate=c.learning_rate,
            layout=self.agent.layout,
        )

    def to_booster(self) -> lightgbm.Booster:
        """The model as a ``lightgbm.Booster``."""
        import lightgbm

        return lightgbm.Booster(model_str=self.to_lightgbm())

    def save_lightgbm(self, path: str | os.PathLike[str]) -> str:
        """Write the LightGBM text model to ``path`` (``lightgbm.Booster(model_file=path)``)."""
        text = self.to_lightgbm()
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return os.fspath(path)

    def describe(self) -> dict[str, Any]:
        """Trees, leaves and features used, for a quick look at the model."""
        forest = self.forest
        used = sorted({self.feature_names[f] for f in forest.feature[forest.kind == gbdt.SPLIT]})
        return {
            "trees": forest.n_trees,
            "leaves": int(np.sum(forest.kind == gbdt.LEAF)),
            "base_rate": float(gbdt.sigmoid(forest.base_margin)),
            "features_used": used,
        }
