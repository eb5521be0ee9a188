"""Text classification on a frozen sentence encoder: what the text agents share.

``threat_intel``, ``market_intel`` and ``compliance`` all embed each text once with a frozen
encoder (MiniLM-L6 by default, shipped with meshfl; see :mod:`meshfl.models.text_encoder`)
and federate only a small multi-task head on those embeddings (FedAvg; McMahan et al.,
AISTATS 2017), trained with Adam or, under sample-level DP, with DP-SGD (Abadi et al., CCS
2016; :func:`meshfl.privacy.dpsgd.train_private`). Freezing the encoder is what makes the
mesh affordable and private: the embeddings are computed once per text and cached for every
epoch and round, DP-SGD only has to privatise ~10^4-10^5 head parameters instead of the
encoder's 22 million (far less noise for the same ε), and only the head travels.

:class:`TextClassifier` holds that machinery; an agent says which column holds the text,
how many classes each task has and how labels become integer targets. Agents whose tasks
are plain label columns (one class per row and task) derive from
:class:`CategoricalTextClassifier`, which also brings the evaluation and the model
(``predict``, ``predict_proba``, ``predict_details``).
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections.abc import Iterable, Sized
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeAlias

import numpy as np
import pandas as pd
import torch
from pydantic import AfterValidator, Field

from meshfl.agents.base import Agent, GlobalModel
from meshfl.agents.frozen_encoder import FrozenEncoderMixin
from meshfl.agents.torch_module import TorchModuleMixin
from meshfl.agents.update import Update
from meshfl.config.base import MeshflConfig
from meshfl.config.errors import DataSchemaError
from meshfl.models import closed_form
from meshfl.models.flat import set_flat
from meshfl.models.heads import MultiTaskHead, multitask_loss, predict_proba, train_head
from meshfl.privacy.budget import DPStep
from meshfl.privacy.events import Mechanism
from meshfl.privacy.mechanisms import add_gaussian_noise

__all__ = [
    "CategoricalTextClassifier",
    "LabelSet",
    "TextClassifier",
    "TextClassifierConfig",
    "TextClassifierModel",
    "TextData",
    "Texts",
    "classification_metrics",
]

Texts: TypeAlias = str | Iterable[str] | pd.Series | pd.DataFrame
"""What a text model predicts from: one text, texts, or a frame with the text column."""


def _distinct(value: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(value)) != len(value):
        raise ValueError("hold distinct labels")
    return value


LabelSet = Annotated[tuple[str, ...], Field(min_length=2), AfterValidator(_distinct)]
"""A config field holding a task's labels: at least two, all distinct."""


class TextClassifierConfig(MeshflConfig):
    """Fields every text-classification agent has (encoder, head, local training, DP-SGD)."""

    encoder: str = Field(
        "minilm",
        description="'minilm' (bundled, pretrained), 'tiny' (tests), a local path or a HF name.",
    )
    max_length: int = Field(96, ge=8, le=512, description="Tokens kept per text.")
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
    allow_download: bool = Field(False, description="Let transformers fetch a named encoder.")
    trainer: Literal["sgd", "closed_form"] = Field(
        "sgd",
        description=(
            "'sgd': a head trained by local epochs and FedAvg (DP-SGD under DP); "
            "'closed_form': a discriminant solved from summed statistics of the embeddings, "
            "one exchange, one Gaussian mechanism under DP (meshfl.models.closed_form)."
        ),
    )
    closed_form: Literal["lda", "nearest_mean"] = Field(
        "lda",
        description=(
            "With trainer='closed_form': LDA (sends the second-moment matrix too) or nearest "
            "class mean with priors (no second moment: a smaller update)."
        ),
    )
    shrinkage: float = Field(
        0.1, ge=0, le=1, description="With closed_form='lda': covariance shrinkage (1: isotropic)."
    )
    count_weight: float = Field(
        0.3,
        gt=0,
        le=10,
        description=(
            "With trainer='closed_form': weight of the class counts in the statistics' "
            "Gaussian mechanism (smaller: less noise on the sums, more on the counts)."
        ),
    )


@dataclass(frozen=True)
class TextData:
    """Prepared local data: cached embeddings and integer targets (one column per task)."""

    features: np.ndarray
    targets: np.ndarray | None

    def __len__(self) -> int:
        return len(self.features)


def classification_metrics(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 (over all ``proba`` columns) and log-loss of one single-label task."""
    from sklearn.metrics import f1_score

    pred = proba.argmax(1)
    loss = -np.mean(np.log(proba[np.arange(len(pred)), y] + 1e-12))
    macro_f1 = f1_score(y, pred, labels=np.arange(proba.shape[1]), average="macro", zero_division=0)
    return {
        "accuracy": float(np.mean(pred == y)),
        "macro_f1": float(macro_f1),
        "loss": float(loss),
    }


def majority_baseline(y: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 of always predicting the majority class of ``y``.

    The majority class is the best constant predictor of ``y`` for both (a constant class
    ``c`` of share ``p`` scores accuracy ``p`` and macro-F1 ``2p/(1+p)/n_classes``).

    Examples
    --------
    >>> majority_baseline(np.array([0, 1, 1, 2]), 4)
    {'accuracy': 0.5, 'macro_f1': 0.16666666666666666}
    """
    from sklearn.metrics import f1_score

    y = np.asarray(y, dtype=np.int64)
    if y.size == 0:
        return {}
    majority = int(np.bincount(y, minlength=n_classes).argmax())
    pred = np.full_like(y, majority)
    macro_f1 = f1_score(y, pred, labels=np.arange(n_classes), average="macro", zero_division=0)
    return {"accuracy": float(np.mean(pred == y)), "macro_f1": float(macro_f1)}


class TextClassifier(FrozenEncoderMixin, TorchModuleMixin, Agent[TextData]):
    """A frozen text encoder and a federated multi-task head on its embeddings.

    Subclasses set :attr:`text_column` and implement :meth:`task_sizes`, :meth:`targets`,
    :meth:`evaluate` and :meth:`model`; everything else (encoding and caching, the head,
    local training with or without DP-SGD, the DP-SGD round shape) is shared.
    """

    text_column: ClassVar[str]
    """The column of :attr:`schema` that holds the text to classify."""
    label_fields: ClassVar[dict[str, str]] = {}
    """The config field that lists each label column's labels (``{"threat_class":
    "classes"}``): what an error about an unknown label tells the user to set."""
    config: TextClassifierConfig

    @abstractmethod
    def task_sizes(self) -> tuple[int, ...]:
        """Classes per task of the head (each task is one softmax)."""

    @abstractmethod
    def targets(self, frame: pd.DataFrame) -> np.ndarray:
        """Integer targets of validated rows, shape ``(n, len(task_sizes()))``."""

    # -- the closed-form head (trainer="closed_form") -----------------------------------
    first_task_exclusive: ClassVar[bool] = False
    """Whether every record is in exactly one class of the first task (then the closed-form
    statistics release each of its classes instead of the count and embedding sum, which
    lowers their sensitivity: :class:`meshfl.models.closed_form.StatisticsLayout`)."""

    @property
    def closed(self) -> bool:
        """Whether the head is solved from summed statistics (``trainer="closed_form"``)."""
        return self.config.trainer == "closed_form"

    @property
    def layout(self) -> closed_form.StatisticsLayout:
        """Where each statistic of the closed-form head sits in the vector."""
        return closed_form.StatisticsLayout(
            self.encoder.dim,
            self.task_sizes(),
            second_moment=self.config.closed_form == "lda",
            count_scale=self.config.count_weight,
            total=not self.first_task_exclusive,
        )

    def membership_cap(self) -> float:
        """Most classes (beyond each task's first) one record counts in: its sensitivity.

        One class per task here; multi-label agents bound it by a public parameter.
        """
        return float(len(self.task_sizes()))

    def discriminant(self, vector: np.ndarray) -> closed_form.DiscriminantHead:
        """The classifier solved from a global vector's statistics (solved once per vector)."""
        key = hashlib.sha256(np.ascontiguousarray(vector, dtype=np.float64).tobytes()).digest()
        cached = self.__dict__.get("_discriminant")
        if cached is None or cached[0] != key:
            head = closed_form.DiscriminantHead(
                vector, self.layout, shrinkage=self.config.shrinkage
            )
            cached = (key, head)
            self.__dict__["_discriminant"] = cached
        return cached[1]

    def suggested_rounds(self) -> int:
        """One for the closed-form head (a single exchange is the whole fit), else 3."""
        return 1 if self.closed else super().suggested_rounds()

    def init_vector(self, *, seed: int) -> np.ndarray:
        if self.closed:
            return np.zeros(self.layout.size)
        return super().init_vector(seed=seed)

    def update_size(self, vector: np.ndarray) -> int:
        return self.layout.size if self.closed else super().update_size(vector)

    def combine(
        self, vector: np.ndarray, summed: np.ndarray, total_weight: float, *, server_round: int
    ) -> np.ndarray:
        # The closed-form head's global vector is the mesh's summed statistics (weight 1 each).
        if self.closed:
            return np.asarray(summed, dtype=np.float64)
        return super().combine(vector, summed, total_weight, server_round=server_round)

    def privacy_shape(self, local: Sized) -> tuple[Mechanism, float, int]:
        if self.closed:  # one Gaussian mechanism on the statistics of all records
            return "gaussian", 1.0, 1
        return super().privacy_shape(local)

    def noised_release(self, update: Update) -> tuple[np.ndarray, float] | None:
        """The closed-form head's noisy statistics, with their noise std (DP-SGD: None)."""
        if not self.closed or update.privacy_event.mechanism != "gaussian":
            return None
        variance = float(update.vector[-1])
        if not variance > 0:
            return None
        return update.vector[self.layout.private], float(np.sqrt(variance))

    def closed_form_update(self, local: TextData, dp: DPStep | None) -> Update:
        """This MSP's statistics; under ``dp``, through one Gaussian mechanism.

        Adjacency is add/remove of one record (one text with its labels). The noise is drawn
        from OS entropy (:func:`meshfl.privacy.mechanisms.add_gaussian_noise`), never from
        the run's seed; its variance travels in the clear (it follows from the plan).
        """
        targets = self.labelled(local, "train")
        layout, cap = self.layout, self.membership_cap()
        packed = closed_form.statistics(
            local.features, closed_form.memberships(targets, layout, cap), layout
        )
        metrics = {"examples": float(len(local))}
        if dp is None:
            return Update(vector=packed, weight=1.0, metrics=metrics)
        sensitivity = closed_form.sensitivity(layout, cap)
        packed[layout.private] = add_gaussian_noise(
            packed[layout.private], sensitivity=sensitivity, noise_multiplier=dp.noise_multiplier
        )
        packed[-1] = (dp.noise_multiplier * sensitivity) ** 2
        return Update(vector=packed, weight=1.0, metrics=metrics, privacy_event=dp.event())

    # -- the trained head (trainer="sgd") ---------------------------------------------
    def head(self) -> MultiTaskHead:
        """A freshly built head of this config's shape (parameters not yet loaded)."""
        return MultiTaskHead(
            self.encoder.dim,
            self.task_sizes(),
            hidden=self.config.hidden,
            input_scale=float(np.sqrt(self.encoder.dim)),
        )

    def fresh_module(self) -> MultiTaskHead:
        return self.head()

    def label_codes(self, frame: pd.DataFrame, column: str, labels: tuple[str, ...]) -> np.ndarray:
        """Positions in ``labels`` of ``frame[column]``.

        Unknown labels raise, naming every one of them and the config field that lists the
        column's labels (:attr:`label_fields`), which is how a user's own labels are given.
        """
        index = {label: i for i, label in enumerate(labels)}
        codes = frame[column].map(index)
        if codes.isna().any():
            unknown = frame[column][codes.isna()]
            row = int(np.flatnonzero(codes.isna().to_numpy())[0])
            names = sorted({str(v) for v in unknown.dropna()})
            missing = int(unknown.isna().sum())
            every = ", ".join(map(repr, names[:20])) + (", ..." if len(names) > 20 else "")
            if missing:
                every += f"{' and ' if names else ''}{missing} missing label(s)"
            field = self.label_fields.get(column)
            held = sorted({str(v) for v in frame[column].dropna()})
            example = f"({', '.join(map(repr, held))})" if len(held) <= 20 else "(...)"
            fix = (
                f"List every label of your MSPs' data in the config field {field!r} "
                f"({type(self.config).__name__}.{field}), the same for every MSP, e.g. "
                f"agent_config={{{field!r}: {example}}} for this data's labels; or map the "
                "rows onto the configured labels."
                if field is not None
                else "Map the rows onto the configured labels."
            )
            raise DataSchemaError(
                f"Column {column!r} of the {self.name} data must hold one of the configured "
                f"labels ({', '.join(labels)}); row {row} holds {unknown.iloc[0]!r}, and in "
                f"all the column holds {every} outside them. {fix}"
            )
        return codes.to_numpy(dtype=np.int64)

    def prepare(self, frame: pd.DataFrame) -> TextData:
        frame = self.load_data(frame)
        features = self.encoder.encode(frame[self.text_column].tolist())
        return TextData(features, self.targets(frame))

    def embed(self, texts: Texts) -> np.ndarray:
        """Embeddings of one text, of texts, or of a DataFrame's :attr:`text_column`."""
        if isinstance(texts, str):
            texts = [texts]
        elif isinstance(texts, pd.DataFrame):
            if self.text_column not in texts.columns:
                raise DataSchemaError(
                    f"{self.name} predicts from a {self.text_column!r} column; the DataFrame "
                    f"has {', '.join(map(str, texts.columns))}."
                )
            texts = texts[self.text_column]
        return self.encoder.encode([str(t) for t in texts])

    def probabilities(self, vector: np.ndarray, features: np.ndarray) -> list[np.ndarray]:
        """Class probabilities per task of the head ``vector`` on embeddings ``features``."""
        if self.closed:
            return self.discriminant(vector).predict_proba(features)
        head = self.head()
        set_flat(head, vector)
        return predict_proba(head, features)

    def labelled(self, local: TextData, doing: str) -> np.ndarray:
        """The targets of ``local``; raises if it has none (``doing``: "train", "evaluate")."""
        if local.targets is None or len(local) == 0:
            raise DataSchemaError(f"{self.name} needs labelled rows to {doing} on.")
        return local.targets

    def local_update(
        self,
        vector: np.ndarray,
        local: TextData,
        *,
        server_round: int,
        seed: int,
        dp: DPStep | None = None,
    ) -> Update:
        if self.closed:
            return self.closed_form_update(local, dp)
        targets = self.labelled(local, "train")
        head = self.head()
        set_flat(head, vector)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # dropout masks
            return self.train_update(
                head,
                local.features,
                targets,
                examples=len(local),
                seed=seed,
                dp=dp,
                loss_fn=multitask_loss,
                train=train_head,
            )


class CategoricalTextClassifier(TextClassifier):
    """A text classifier whose tasks are label columns: one class per row and task.

    The first task is the headline: ``evaluate`` reports its ``accuracy``, ``macro_f1`` and
    ``loss``, and ``<column>_accuracy`` for each further task.
    """

    model_class: ClassVar[type[TextClassifierModel]]
    first_task_exclusive = True  # one label per row and task

    @abstractmethod
    def tasks(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """``(column, labels)`` of each task, headline task first."""

    def task_sizes(self) -> tuple[int, ...]:
        return tuple(len(labels) for _, labels in self.tasks())

    def targets(self, frame: pd.DataFrame) -> np.ndarray:
        return np.stack([self.label_codes(frame, c, labels) for c, labels in self.tasks()], axis=1)

    def evaluate(self, vector: np.ndarray, local: TextData) -> dict[str, float]:
        targets = self.labelled(local, "evaluate")
        first, *others = self.probabilities(vector, local.features)
        metrics = classification_metrics(first, targets[:, 0])
        loss = metrics.pop("loss")
        for t, ((column, _), proba) in enumerate(zip(self.tasks()[1:], others, strict=True), 1):
            metrics[f"{column}_accuracy"] = float(np.mean(proba.argmax(1) == targets[:, t]))
        metrics["loss"] = loss
        baseline = majority_baseline(targets[:, 0], first.shape[1])
        if self.metric in baseline:
            metrics[f"baseline_{self.metric}"] = baseline[self.metric]
        metrics["examples"] = float(len(targets))
        return metrics

    def model(self, vector: np.ndarray) -> TextClassifierModel:
        return self.model_class(self, vector)


class TextClassifierModel(GlobalModel):
    """A global model of a :class:`CategoricalTextClassifier`: labels of texts, per task."""

    agent: CategoricalTextClassifier

    @property
    def classes_(self) -> np.ndarray:
        """Labels of the headline task, in the column order of :meth:`predict_proba`."""
        return np.asarray(self.agent.tasks()[0][1])

    def _probabilities(self, texts: Texts) -> list[np.ndarray]:
        return self.agent.probabilities(self.vector, self.agent.embed(texts))

    def predict_proba(self, texts: Texts) -> np.ndarray:
        """Probability of each headline label (columns ordered as :attr:`classes_`)."""
        return self._probabilities(texts)[0]

    def predict(self, texts: Texts) -> np.ndarray:
        """The most likely headline label of each text."""
        return self.classes_[self.predict_proba(texts).argmax(1)]

    def predict_details(self, texts: Texts) -> pd.DataFrame:
        """The headline label, its probability, and the most likely label of every other task."""
        first, *others = self._probabilities(texts)
        (column, _), *rest = self.agent.tasks()
        details: dict[str, Any] = {column: self.classes_[first.argmax(1)]}
        details["confidence"] = first.max(1)
        for (name, labels), proba in zip(rest, others, strict=True):
            details[name] = np.asarray(labels)[proba.argmax(1)]
        return pd.DataFrame(details)
