"""Agent ``threat_intel``: classify security events and log lines into threat classes and severity.

A frozen sentence encoder (MiniLM-L6 by default, shipped with meshfl) embeds each log line
once; a small multi-task head (threat class, severity) is trained locally and averaged
across MSPs (FedAvg; McMahan et al., AISTATS 2017). Only the head's parameters travel.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator

from meshfl.agents.base import Agent, GlobalModel
from meshfl.agents.registry import register
from meshfl.agents.update import Update
from meshfl.config.base import MeshflConfig
from meshfl.config.errors import DataSchemaError
from meshfl.data.synthetic import (
    SECURITY_EVENTS_SCHEMA,
    SEVERITIES,
    THREAT_CLASSES,
    security_events,
)
from meshfl.models.flat import get_flat, set_flat
from meshfl.models.heads import MultiTaskHead, multitask_loss, predict_proba, train_head
from meshfl.models.text_encoder import TextEncoder, load_text_encoder
from meshfl.privacy.budget import DPStep
from meshfl.privacy.dpsgd import train_private
from meshfl.privacy.events import Mechanism, PrivacyEvent

__all__ = ["ThreatIntel", "ThreatIntelConfig", "ThreatIntelModel"]


class ThreatIntelConfig(MeshflConfig):
    """Configuration of the ``threat_intel`` agent."""

    encoder: str = Field(
        "minilm",
        description="'minilm' (bundled, pretrained), 'tiny' (tests), a local path or a HF name.",
    )
    max_length: int = Field(96, ge=8, le=512, description="Tokens kept per log line.")
    hidden: int = Field(0, ge=0, le=4096, description="Hidden width of the head (0: linear).")
    local_epochs: int = Field(5, ge=1, le=1000, description="Local epochs per round.")
    learning_rate: float = Field(1e-2, gt=0, le=1, description="Adam learning rate of the head.")
    batch_size: int = Field(32, ge=1, description="Local mini-batch size.")
    dp_optimizer: Literal["sgd", "adam"] = Field(
        "sgd", description="Optimizer under DP-SGD (noisy gradients suit plain SGD)."
    )
    dp_learning_rate: float = Field(1.0, gt=0, le=100, description="Learning rate under DP-SGD.")
    dp_batch_size: int = Field(
        128, ge=1, description="Expected Poisson batch under DP-SGD (larger: less noise per step)."
    )
    classes: tuple[str, ...] = Field(THREAT_CLASSES, min_length=2)
    severities: tuple[str, ...] = Field(SEVERITIES, min_length=2)
    allow_download: bool = Field(False, description="Let transformers fetch a named encoder.")

    @field_validator("classes", "severities")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("hold distinct labels")
        return value


@dataclass(frozen=True)
class TextData:
    """Prepared local data: cached embeddings and integer targets (class, severity)."""

    features: np.ndarray
    targets: np.ndarray | None

    def __len__(self) -> int:
        return len(self.features)


@register
class ThreatIntel(Agent[TextData]):
    """Threat classes and severity of security events, from the log line's text."""

    name = "threat_intel"
    summary = "classify security events and log lines into threat classes with severity"
    config_class = ThreatIntelConfig
    schema = SECURITY_EVENTS_SCHEMA
    metric = "accuracy"
    label_column = "threat_class"
    config: ThreatIntelConfig

    @property
    def encoder(self) -> TextEncoder:
        """The frozen encoder (loaded once per process and spec)."""
        return load_text_encoder(
            self.config.encoder,
            max_length=self.config.max_length,
            allow_download=self.config.allow_download,
        )

    def use_cache_dir(self, directory: str | os.PathLike[str]) -> None:
        self.encoder.persist_to(directory)

    def synthetic_data(self, n: int, *, seed: int) -> pd.DataFrame:
        return security_events(n, seed=seed)

    def head(self) -> MultiTaskHead:
        """A freshly built head of this config's shape (parameters not yet loaded)."""
        return MultiTaskHead(
            self.encoder.dim,
            (len(self.config.classes), len(self.config.severities)),
            hidden=self.config.hidden,
            input_scale=float(np.sqrt(self.encoder.dim)),
        )

    def _targets(self, frame: pd.DataFrame) -> np.ndarray:
        columns = []
        for column, labels in (
            ("threat_class", self.config.classes),
            ("severity", self.config.severities),
        ):
            index = {label: i for i, label in enumerate(labels)}
            codes = frame[column].map(index)
            if codes.isna().any():
                row = int(np.flatnonzero(codes.isna().to_numpy())[0])
                raise DataSchemaError(
                    f"Column {column!r} of the threat_intel data must hold one of "
                    f"{', '.join(labels)}; row {row} holds {frame[column].iloc[row]!r}."
                )
            columns.append(codes.to_numpy(dtype=np.int64))
        return np.stack(columns, axis=1)

    def prepare(self, frame: pd.DataFrame) -> TextData:
        frame = self.load_data(frame)
        features = self.encoder.encode(frame["message"].tolist())
        return TextData(features, self._targets(frame))

    def init_vector(self, *, seed: int) -> np.ndarray:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return get_flat(self.head())

    def privacy_shape(self, local: TextData) -> tuple[Mechanism, float, int]:
        # DP-SGD with Poisson sampling: rate q = batch / n, round(1 / q) steps per epoch.
        rate = min(1.0, self.config.dp_batch_size / max(len(local), 1))
        return "dp-sgd", rate, self.config.local_epochs * max(1, round(1 / rate))

    def local_update(
        self,
        vector: np.ndarray,
        local: TextData,
        *,
        server_round: int,
        seed: int,
        dp: DPStep | None = None,
    ) -> Update:
        if local.targets is None or len(local) == 0:
            raise DataSchemaError("threat_intel needs labelled rows to train on.")
        head = self.head()
        set_flat(head, vector)
        event = PrivacyEvent.none()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # dropout masks
            if dp is None:
                loss = train_head(
                    head,
                    local.features,
                    local.targets,
                    epochs=self.config.local_epochs,
                    lr=self.config.learning_rate,
                    batch_size=self.config.batch_size,
                    seed=seed,
                )
            else:
                result = train_private(
                    head,
                    local.features,
                    local.targets,
                    loss_fn=multitask_loss,
                    epochs=self.config.local_epochs,
                    batch_size=self.config.dp_batch_size,
                    lr=self.config.dp_learning_rate,
                    noise_multiplier=dp.noise_multiplier,
                    max_grad_norm=dp.max_grad_norm,
                    seed=seed,
                    optimizer=self.config.dp_optimizer,
                )
                if (result.steps, result.sample_rate) != (dp.steps, dp.sample_rate):
                    raise RuntimeError(  # the ledger must record what actually ran
                        f"DP-SGD ran {result.steps} steps at rate {result.sample_rate}, "
                        f"but the round was planned as {dp.steps} at {dp.sample_rate}"
                    )
                loss, event = result.loss, dp.event()
        metrics = {"examples": float(len(local))}
        if dp is None:  # the training loss is computed on raw data: not private
            metrics["train_loss"] = loss
        return Update(
            vector=get_flat(head), weight=float(len(local)), metrics=metrics, privacy_event=event
        )

    def evaluate(self, vector: np.ndarray, local: TextData) -> dict[str, float]:
        from sklearn.metrics import f1_score

        if local.targets is None:
            raise DataSchemaError("threat_intel needs labelled rows to evaluate on.")
        head = self.head()
        set_flat(head, vector)
        proba_class, proba_sev = predict_proba(head, local.features)
        y_class, y_sev = local.targets[:, 0], local.targets[:, 1]
        pred = proba_class.argmax(1)
        eps = 1e-12
        loss = -np.mean(np.log(proba_class[np.arange(len(pred)), y_class] + eps))
        return {
            "accuracy": float(np.mean(pred == y_class)),
            "macro_f1": float(
                f1_score(
                    y_class,
                    pred,
                    labels=np.arange(len(self.config.classes)),
                    average="macro",
                    zero_division=0,
                )
            ),
            "severity_accuracy": float(np.mean(proba_sev.argmax(1) == y_sev)),
            "loss": float(loss),
            "examples": float(len(pred)),
        }

    def model(self, vector: np.ndarray) -> ThreatIntelModel:
        return ThreatIntelModel(self, vector)


class ThreatIntelModel(GlobalModel):
    """The global ``threat_intel`` model: threat class and severity of log lines."""

    agent: ThreatIntel

    @property
    def classes_(self) -> np.ndarray:
        """Threat class labels, in the column order of :meth:`predict_proba`."""
        return np.asarray(self.agent.config.classes)

    def _features(self, texts: str | Iterable[str] | pd.Series | pd.DataFrame) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        elif isinstance(texts, pd.DataFrame):
            if "message" not in texts.columns:
                raise DataSchemaError(
                    "threat_intel predicts from a 'message' column; the DataFrame has "
                    f"{', '.join(map(str, texts.columns))}."
                )
            texts = texts["message"]
        return self.agent.encoder.encode([str(t) for t in texts])

    def _probabilities(self, texts: Any) -> list[np.ndarray]:
        head = self.agent.head()
        set_flat(head, self.vector)
        return predict_proba(head, self._features(texts))

    def predict_proba(self, texts: str | Iterable[str] | pd.Series | pd.DataFrame) -> np.ndarray:
        """Probability of each threat class (columns ordered as :attr:`classes_`)."""
        return self._probabilities(texts)[0]

    def predict(self, texts: str | Iterable[str] | pd.Series | pd.DataFrame) -> np.ndarray:
        """The most likely threat class of each text."""
        return self.classes_[self.predict_proba(texts).argmax(1)]

    def predict_details(
        self, texts: str | Iterable[str] | pd.Series | pd.DataFrame
    ) -> pd.DataFrame:
        """Threat class, its probability and the most likely severity of each text."""
        proba_class, proba_sev = self._probabilities(texts)
        return pd.DataFrame(
            {
                "threat_class": self.classes_[proba_class.argmax(1)],
                "confidence": proba_class.max(1),
                "severity": np.asarray(self.agent.config.severities)[proba_sev.argmax(1)],
            }
        )
