"""Agent ``collaboration``: partner matching between MSPs from profiles and past projects.

Each row of an MSP's data is one past joint project: both partners' profiles (services,
certifications, regions, verticals, size) and whether the project succeeded. A frozen
sentence encoder (MiniLM-L6 by default, shipped with meshfl) embeds every profile field once;
a small shared projection (:class:`meshfl.models.pair_projection.PairProjection`) is trained
contrastively, pair by pair, so that partners whose projects succeeded score high together.
Only the projection is trained, sent and averaged (FedAvg; McMahan et al., AISTATS 2017):
it is what keeps DP-SGD affordable (noise grows with the trained dimension) and the
encrypted update small.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from meshfl.agents.base import Agent, GlobalModel, PartitionRequest
from meshfl.agents.frozen_encoder import FrozenEncoderMixin
from meshfl.agents.registry import register
from meshfl.agents.torch_module import TorchModuleMixin
from meshfl.agents.update import Update
from meshfl.config.base import MeshflConfig
from meshfl.config.errors import DataSchemaError
from meshfl.data.collaboration_data import (
    COLLABORATION_SCHEMA,
    PAIR_SCHEMA,
    PROFILE_FIELDS,
    PROFILE_SCHEMA,
    joint_projects,
)
from meshfl.models.flat import set_flat
from meshfl.models.pair_projection import (
    PairProjection,
    pair_loss,
    score_matrix,
    score_pairs,
    train_pairs,
)
from meshfl.models.ranking import roc_auc
from meshfl.privacy.budget import DPStep

__all__ = ["Collaboration", "CollaborationConfig", "CollaborationModel", "PairData"]

_NO_CERTIFICATIONS = "none"
_KEY_SEPARATOR = "\x1f"


class CollaborationConfig(MeshflConfig):
    """Configuration of the ``collaboration`` agent."""

    encoder: str = Field(
        "minilm",
        description="'minilm' (bundled, pretrained), 'tiny' (tests), a local path or a HF name "
        "(e.g. 'sentence-transformers/all-mpnet-base-v2').",
    )
    max_length: int = Field(64, ge=8, le=512, description="Tokens kept per profile field.")
    projection_dim: int = Field(
        32, ge=2, le=1024, description="Width of the trained projection (even)."
    )
    local_epochs: int = Field(3, ge=1, le=1000, description="Local epochs per round.")
    learning_rate: float = Field(3e-4, gt=0, le=1, description="Adam learning rate.")
    batch_size: int = Field(32, ge=1, description="Local mini-batch size.")
    weight_decay: float = Field(0.0, ge=0, le=1, description="Adam weight decay (no DP).")
    dp_optimizer: Literal["sgd", "adam"] = Field(
        "adam", description="Optimizer under DP-SGD, fed the privatised gradient."
    )
    dp_learning_rate: float = Field(1e-3, gt=0, le=100, description="Learning rate under DP-SGD.")
    dp_batch_size: int = Field(
        128, ge=1, description="Expected Poisson batch under DP-SGD (larger: less noise per step)."
    )
    recall_k: int = Field(10, ge=1, le=10_000, description="k of the recall@k metric.")
    allow_download: bool = Field(False, description="Let transformers fetch a named encoder.")

    @field_validator("projection_dim")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("be even (half of it pairs with the other half)")
        return value


@dataclass(frozen=True)
class PairData:
    """Prepared local data: cached features of both partners, outcomes and profile keys.

    ``features`` has shape ``(n, 2, fields * dim)``; ``keys`` ``(n, 2)`` identifies each
    partner's profile (its field texts), for the ranking metric.
    """

    features: np.ndarray
    targets: np.ndarray | None
    keys: np.ndarray

    def __len__(self) -> int:
        return len(self.features)


def _field_texts(frame: pd.DataFrame, prefix: str = "") -> dict[str, list[str]]:
    """Each profile field's texts; missing certifications read as 'none'."""
    out: dict[str, list[str]] = {}
    for field in PROFILE_FIELDS:
        column = f"{prefix}{field}"
        if column in frame.columns:
            out[field] = [
                _NO_CERTIFICATIONS if pd.isna(v) else str(v).strip() for v in frame[column].tolist()
            ]
        else:  # only certifications is optional
            out[field] = [_NO_CERTIFICATIONS] * len(frame)
    return out


def _keys(texts: Mapping[str, list[str]]) -> np.ndarray:
    return np.array(
        [_KEY_SEPARATOR.join(parts) for parts in zip(*texts.values(), strict=True)], dtype=object
    )


def recall_at_k(scores: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Mean over queries with a relevant candidate of the share of them ranked in the top k.

    ``scores[i, j]`` is query ``i``'s score of candidate ``j`` (``-inf`` excludes a
    candidate); ``relevant`` is a boolean matrix of the same shape. Returns ``nan`` when no
    query has a relevant candidate.

    Examples
    --------
    >>> scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])
    >>> relevant = np.array([[False, False, True], [True, False, False]])
    >>> recall_at_k(scores, relevant, k=2)
    0.5
    """
    queries = np.flatnonzero(relevant.any(axis=1))
    if len(queries) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argsort(-scores[queries], axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(relevant[queries], top, axis=1).sum(axis=1)
    return float(np.mean(hits / relevant[queries].sum(axis=1)))


@register
class Collaboration(FrozenEncoderMixin, TorchModuleMixin, Agent[PairData]):
    """Partner matching: how likely a joint project of two MSPs is to succeed, from profiles."""

    name = "collaboration"
    summary = "partner matching between MSPs from profiles and past projects"
    config_class = CollaborationConfig
    fast_config = {"encoder": "tiny", "local_epochs": 1}  # noqa: RUF012
    schema = COLLABORATION_SCHEMA
    metric = "auc"
    label_column = "outcome"
    config: CollaborationConfig

    def synthetic_data(self, n: int, *, seed: int) -> pd.DataFrame:
        return joint_projects(n, seed=seed)

    def _partition_synthetic(self, request: PartitionRequest) -> list[pd.DataFrame]:
        """Synthetic projects of the MSPs, skewed by region (Dirichlet ``alpha``).

        An MSP knows the projects of its own partner network, which is mostly regional, so
        the non-IID skew is over the first partner's home region. Skewing by outcome (the
        default) would leave some MSPs with failed projects only: nothing to tell good
        partners from bad ones, which is not what an MSP's records look like.
        """
        pooled = self._pooled_synthetic(request)
        pooled["home_region"] = pooled["a_regions"].str.split(",").str[0]
        parts = self._partition_pooled(pooled, request, "home_region")
        return [part.drop(columns="home_region") for part in parts]

    def projection(self) -> PairProjection:
        """A freshly built projection of this config's shape (parameters not yet loaded)."""
        dim = self.encoder.dim
        return PairProjection(
            dim * len(PROFILE_FIELDS), self.config.projection_dim, input_scale=float(np.sqrt(dim))
        )

    def fresh_module(self) -> PairProjection:
        return self.projection()

    # -- features ----------------------------------------------------------------------
    def profile_features(self, *profiles: Mapping[str, list[str]]) -> list[np.ndarray]:
        """Concatenated field embeddings of each group of profiles, ``(n, fields * dim)``.

        Every field of every group goes to the encoder in one call: a single pair is one
        forward pass of a few texts, not one per field and side.
        """
        texts = [t for group in profiles for field in PROFILE_FIELDS for t in group[field]]
        embedded = self.encoder.encode(texts)
        out, start = [], 0
        for group in profiles:
            n = len(group[PROFILE_FIELDS[0]])
            fields = embedded[start : start + n * len(PROFILE_FIELDS)]
            start += n * len(PROFILE_FIELDS)
            # rows are field-major: (fields, n, dim) -> (n, fields * dim)
            out.append(fields.reshape(len(PROFILE_FIELDS), n, -1).transpose(1, 0, 2).reshape(n, -1))
        return out

    def pair_features(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Features ``(n, 2, fields * dim)`` and profile keys ``(n, 2)`` of validated pairs."""
        sides = [_field_texts(frame, f"{side}_") for side in ("a", "b")]
        features = np.stack(self.profile_features(*sides), axis=1)
        keys = np.stack([_keys(t) for t in sides], axis=1)
        return features, keys

    def prepare(self, frame: pd.DataFrame) -> PairData:
        frame = self.load_data(frame)
        features, keys = self.pair_features(frame)
        targets = frame["outcome"].astype(bool).to_numpy().astype(np.int64)
        return PairData(features, targets, keys)

    # -- federated learning ------------------------------------------------------------
    def local_update(
        self,
        vector: np.ndarray,
        local: PairData,
        *,
        server_round: int,
        seed: int,
        dp: DPStep | None = None,
    ) -> Update:
        if local.targets is None or len(local) == 0:
            raise DataSchemaError("collaboration needs labelled project rows to train on.")
        model = self.projection()
        set_flat(model, vector)
        # Under DP the unit of privacy is one past project (one pair): the loss is per pair.
        return self.train_update(
            model,
            local.features,
            local.targets,
            examples=len(local),
            seed=seed,
            dp=dp,
            loss_fn=pair_loss,
            train=train_pairs,
            weight_decay=self.config.weight_decay,
        )

    def evaluate(self, vector: np.ndarray, local: PairData) -> dict[str, float]:
        if local.targets is None:
            raise DataSchemaError("collaboration needs labelled project rows to evaluate on.")
        model = self.projection()
        set_flat(model, vector)
        logits = score_pairs(model, local.features)
        y = local.targets
        proba = 1.0 / (1.0 + np.exp(-logits))
        eps = 1e-12
        loss = -np.mean(y * np.log(proba + eps) + (1 - y) * np.log(1 - proba + eps))
        out = {
            "accuracy": float(np.mean((proba >= 0.5) == y)),
            "loss": float(loss),
            "examples": float(len(y)),
        }
        if 0 < y.sum() < len(y):
            out["auc"] = float(roc_auc(y, logits))
            out["baseline_auc"] = 0.5  # a constant score ranks nothing
        recall = self._recall(model, local)
        if np.isfinite(recall):
            out["recall_at_k"] = recall
        return out

    def _recall(self, model: PairProjection, local: PairData) -> float:
        """recall@k: each profile's successful held-out partners among all other profiles."""
        assert local.targets is not None
        codes, _ = pd.factorize(local.keys.reshape(-1))
        _, first = np.unique(codes, return_index=True)  # where each profile first appears
        codes = codes.reshape(-1, 2)
        profiles = local.features.reshape(-1, local.features.shape[-1])[first]
        scores = score_matrix(model, profiles, profiles)
        np.fill_diagonal(scores, -np.inf)  # a profile is not its own partner
        relevant = np.zeros(scores.shape, dtype=bool)
        won = codes[local.targets == 1]
        relevant[won[:, 0], won[:, 1]] = True
        relevant[won[:, 1], won[:, 0]] = True
        np.fill_diagonal(relevant, False)
        return recall_at_k(scores, relevant, self.config.recall_k)

    def model(self, vector: np.ndarray) -> CollaborationModel:
        return CollaborationModel(self, vector)


ProfileLike: TypeAlias = Mapping[str, Any] | pd.Series | pd.DataFrame


class CollaborationModel(GlobalModel):
    """The global ``collaboration`` model: scores partner pairs and recommends partners."""

    agent: Collaboration

    @functools.cached_property
    def _projection(self) -> PairProjection:
        # Built once per model: loading the vector into a fresh module cost half of a
        # single-pair prediction. Only read afterwards (forward passes), so threads share it.
        model = self.agent.projection()
        set_flat(model, self.vector)
        return model.eval()

    def predict(self, pairs: pd.DataFrame | str | os.PathLike[str]) -> np.ndarray:
        """Probability that a joint project of each pair succeeds.

        Parameters
        ----------
        pairs : DataFrame or path
            Rows with both partners' profile columns (``a_services`` ... ``b_size``; see
            :data:`meshfl.data.collaboration_data.PAIR_SCHEMA`); an ``outcome`` is not needed.
        """
        from meshfl.data.schema import load_frame

        frame = load_frame(pairs, PAIR_SCHEMA)
        features, _ = self.agent.pair_features(frame)
        return 1.0 / (1.0 + np.exp(-score_pairs(self._projection, features)))

    def recommend(
        self,
        profile: ProfileLike,
        candidates: pd.DataFrame | Iterable[Mapping[str, Any]],
        k: int = 10,
    ) -> pd.DataFrame:
        """The ``k`` candidates most likely to make a successful partner for ``profile``.

        Parameters
        ----------
        profile : mapping, Series or one-row DataFrame
            The MSP looking for a partner: ``services``, ``regions``, ``verticals``,
            ``size`` and optionally ``certifications`` (see
            :data:`meshfl.data.collaboration_data.PROFILE_SCHEMA`).
        candidates : DataFrame or iterable of mappings
            Potential partners, with the same fields (and any others, e.g. ``name``, which
            are passed through). A candidate identical to ``profile`` is skipped.
        k : int
            How many to return.

        Returns
        -------
        pandas.DataFrame
            The best ``k`` candidates, best first, with their columns plus ``score`` (the
            probability that a joint project succeeds) and ``rank`` (1 = best).
        """
        from meshfl.config.validation import Count, check

        k = check(k, Count, "k", where="recommend")
        if isinstance(profile, pd.DataFrame):
            if len(profile) != 1:
                raise DataSchemaError(
                    "recommend takes one profile; the DataFrame given has "
                    f"{len(profile)} rows. Pass one row (e.g. frame.iloc[[0]])."
                )
            query = profile
        elif isinstance(profile, (Mapping, pd.Series)):
            query = pd.DataFrame([dict(profile)])
        else:
            raise DataSchemaError(
                "The 'profile' parameter of recommend must be a mapping, a Series or a one-row "
                f"DataFrame of profile fields. Got a {type(profile).__name__} instead."
            )
        pool = (
            candidates.reset_index(drop=True)
            if isinstance(candidates, pd.DataFrame)
            else pd.DataFrame([dict(c) for c in candidates])
        )
        if pool.empty:
            raise DataSchemaError("recommend needs at least one candidate partner. Got none.")
        query = PROFILE_SCHEMA.validate(query)
        pool = PROFILE_SCHEMA.validate(pool)
        q_texts, c_texts = _field_texts(query), _field_texts(pool)
        keep = _keys(c_texts) != _keys(q_texts)[0]
        logits = score_matrix(
            self._projection,
            *self.agent.profile_features(q_texts, c_texts),
        )[0]
        logits[~keep] = -np.inf
        order = np.argsort(-logits, kind="stable")[: min(k, int(keep.sum()))]
        out = pool.iloc[order].reset_index(drop=True)
        out["score"] = 1.0 / (1.0 + np.exp(-logits[order]))
        out["rank"] = np.arange(1, len(out) + 1)
        return out
