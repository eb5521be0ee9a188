"""Agent ``nlp_query``: natural-language questions over the mesh's insights.

Retrieval-augmented generation (Lewis et al., "Retrieval-Augmented Generation for
Knowledge-Intensive NLP Tasks", NeurIPS 2020) in its simplest form: a frozen sentence encoder
(MiniLM-L6 by default) embeds the question and each insight of the store, the ``top_k``
insights closest to the question (cosine) become the context, and a T5 generates the answer
from ``"question: ... context: ..."`` (:mod:`meshfl.models.seq2seq`). Only a small subset of
the generator is trained and averaged across MSPs (FedAvg; McMahan et al., AISTATS 2017):
LoRA adapters and the last blocks' linear weights. The frozen base (a tiny T5 from a public
seed offline, or a pretrained FLAN-T5) is identical at every MSP and never travels.
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, model_validator

from meshfl.agents.base import Agent, GlobalModel
from meshfl.agents.frozen_encoder import FrozenEncoderMixin
from meshfl.agents.registry import register
from meshfl.agents.torch_module import TorchModuleMixin
from meshfl.agents.update import Update
from meshfl.config.base import MeshflConfig
from meshfl.config.errors import ConfigError, DataSchemaError
from meshfl.data.insights import INSIGHT_SEPARATOR, INSIGHTS_SCHEMA, mesh_questions
from meshfl.models.flat import get_flat, set_flat
from meshfl.models.seq2seq import (
    Seq2Seq,
    Seq2SeqLM,
    TinyT5Shape,
    build_seq2seq,
    encode_pairs,
    generate,
    load_seq2seq,
    sequence_loss,
)
from meshfl.privacy.budget import DPStep

__all__ = [
    "Answer",
    "NlpQuery",
    "NlpQueryConfig",
    "NlpQueryModel",
    "QueryData",
    "normalize_answer",
    "rouge_l",
    "split_insights",
]


class NlpQueryConfig(MeshflConfig):
    """Configuration of the ``nlp_query`` agent."""

    encoder: str = Field(
        "minilm",
        description="Retrieval encoder: 'minilm' (bundled), 'tiny' (tests), a path or HF name.",
    )
    encoder_max_length: int = Field(64, ge=8, le=512, description="Tokens kept per text.")
    top_k: int = Field(2, ge=1, le=32, description="Insights retrieved as the context.")
    generator: str = Field(
        "tiny",
        description="Seq2seq model: 'tiny' (T5 from config, offline), a path or HF name "
        "such as 'google/flan-t5-small'.",
    )
    base_seed: int = Field(0, ge=0, description="Public seed of the tiny generator's frozen base.")
    d_model: int = Field(64, ge=8, le=1024, description="Width of the tiny generator.")
    num_layers: int = Field(2, ge=1, le=12, description="Encoder and decoder blocks (tiny).")
    num_heads: int = Field(4, ge=1, le=32, description="Attention heads (tiny).")
    d_ff: int = Field(128, ge=8, le=8192, description="Feed-forward width (tiny).")
    lora_rank: int = Field(8, ge=0, le=256, description="LoRA rank on q/v (0: no adapters).")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scale numerator (update x alpha/r).")
    train_last_layers: int = Field(
        1, ge=0, le=48, description="Last encoder and decoder blocks trained in full."
    )
    max_source_tokens: int = Field(64, ge=8, le=1024, description="Tokens of question + context.")
    max_answer_tokens: int = Field(8, ge=2, le=128, description="Tokens of an answer (with end).")
    local_epochs: int = Field(3, ge=1, le=1000, description="Local epochs per round.")
    learning_rate: float = Field(3e-3, gt=0, le=1, description="Adam learning rate.")
    batch_size: int = Field(32, ge=1, description="Local mini-batch size.")
    dp_optimizer: Literal["sgd", "adam"] = Field(
        "sgd", description="Optimizer under DP-SGD (Adam amplifies noise-only coordinates)."
    )
    dp_learning_rate: float = Field(1.0, gt=0, le=100, description="Learning rate under DP-SGD.")
    dp_batch_size: int = Field(64, ge=1, description="Expected Poisson batch under DP-SGD.")
    allow_download: bool = Field(False, description="Let transformers fetch named models.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> NlpQueryConfig:
        if self.generator == "tiny" and self.d_model % self.num_heads:
            raise ValueError(
                f"The 'd_model' parameter of NlpQueryConfig must be a multiple of 'num_heads' "
                f"({self.num_heads}). Got {self.d_model} instead."
            )
        return self


@dataclass(frozen=True)
class QueryData:
    """Prepared local data: packed token ids for training and for generation, references."""

    train_features: np.ndarray
    labels: np.ndarray
    features: np.ndarray
    references: list[str]
    retrieved: np.ndarray
    """Whether the answer appears in the retrieved context, per row (retrieval recall)."""

    def __len__(self) -> int:
        return len(self.features)


@dataclass(frozen=True)
class Answer:
    """What :meth:`NlpQueryModel.ask` returns: the answer and the insights it used."""

    text: str
    insights: list[str]
    scores: list[float]


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lowercase, punctuation removed, whitespace collapsed (SQuAD-style answer matching)."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence of words; Lin, 2004) of two normalised strings."""
    p, r = prediction.split(), reference.split()
    if not p or not r:
        return float(p == r)
    table = [[0] * (len(r) + 1) for _ in range(len(p) + 1)]
    for i, a in enumerate(p):
        for j, b in enumerate(r):
            table[i + 1][j + 1] = (
                table[i][j] + 1 if a == b else max(table[i][j + 1], table[i + 1][j])
            )
    lcs = table[-1][-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def split_insights(insights: str | Sequence[str]) -> list[str]:
    """The non-empty insights of a store given as one-per-line text or as a list."""
    items = insights.split(INSIGHT_SEPARATOR) if isinstance(insights, str) else list(insights)
    return [s.strip() for s in map(str, items) if s.strip()]


@register
class NlpQuery(FrozenEncoderMixin, TorchModuleMixin, Agent[QueryData]):
    """Answers questions about the mesh's insights: retrieval + a federated seq2seq model."""

    name = "nlp_query"
    summary = "natural-language questions over the mesh's insights"
    config_class = NlpQueryConfig
    fast_config = {"encoder": "tiny", "local_epochs": 1}  # noqa: RUF012
    schema = INSIGHTS_SCHEMA
    metric = "rouge_l"
    label_column = "topic"
    config: NlpQueryConfig

    # -- frozen parts ----------------------------------------------------------------
    @property
    def encoder_max_length(self) -> int:
        return self.config.encoder_max_length

    def seq2seq(self, *, seed: int = 0) -> tuple[Seq2Seq, Seq2SeqLM]:
        """A fresh generator: frozen base, adapters (initialised from ``seed``), wrapper."""
        c = self.config
        seq = build_seq2seq(
            c.generator,
            base_seed=c.base_seed,
            shape=TinyT5Shape(c.d_model, c.num_layers, c.num_heads, c.d_ff),
            lora_rank=c.lora_rank,
            lora_alpha=c.lora_alpha,
            last_layers=c.train_last_layers,
            seed=seed,
            allow_download=c.allow_download,
        )
        wrapper = Seq2SeqLM(
            seq.model,
            source_length=c.max_source_tokens,
            target_length=c.max_answer_tokens,
            pad_id=seq.pad_id,
        )
        return seq, wrapper

    # -- data ------------------------------------------------------------------------
    def synthetic_data(self, n: int, *, seed: int) -> pd.DataFrame:
        return mesh_questions(n, seed=seed)

    def retrieve(
        self, questions: Sequence[str], stores: Sequence[Sequence[str]]
    ) -> list[tuple[list[str], list[float]]]:
        """The ``top_k`` insights of each store closest to its question, with their scores."""
        texts = list(questions) + [s for store in stores for s in store]
        embeddings = self.encoder.encode(texts)
        out, offset = [], len(questions)
        for i, store in enumerate(stores):
            rows = embeddings[offset : offset + len(store)]
            offset += len(store)
            scores = rows @ embeddings[i]
            top = np.argsort(-scores, kind="stable")[: self.config.top_k]
            out.append(([store[j] for j in top], [float(scores[j]) for j in top]))
        return out

    @staticmethod
    def source_text(question: str, context: Sequence[str]) -> str:
        """The generator's input for a question and its retrieved insights."""
        return f"question: {question} context: {' '.join(context)}"

    def prepare(self, frame: pd.DataFrame) -> QueryData:
        frame = self.load_data(frame)
        stores = [split_insights(s) for s in frame["insights"]]
        empty = [i for i, s in enumerate(stores) if not s]
        if empty:
            raise DataSchemaError(
                "Column 'insights' of the nlp_query data must hold at least one insight per "
                f"row (one per line); row {empty[0]} holds none."
            )
        questions = frame["question"].astype(str).tolist()
        answers = frame["answer"].astype(str).tolist()
        contexts = [c for c, _ in self.retrieve(questions, stores)]
        sources = [self.source_text(q, c) for q, c in zip(questions, contexts, strict=True)]
        seq = self._frozen()
        c = self.config
        lengths = {"source_length": c.max_source_tokens, "target_length": c.max_answer_tokens}
        train_features, labels = encode_pairs(seq, sources, answers, **lengths)
        features, _ = encode_pairs(seq, sources, None, **lengths)
        assert labels is not None
        tok = seq.tokenizer
        references = [
            normalize_answer(tok.decode(tok(a, add_special_tokens=False)["input_ids"]))
            for a in answers
        ]
        retrieved = np.array(
            [
                normalize_answer(a) in normalize_answer(" ".join(ctx))
                for a, ctx in zip(answers, contexts, strict=True)
            ]
        )
        return QueryData(train_features, labels, features, references, retrieved)

    def _base(self) -> tuple[Seq2Seq, Seq2SeqLM]:
        return self.seq2seq(seed=0)

    def _frozen(self) -> Seq2Seq:
        """The shared frozen base (tokenizer and special ids); never trained."""
        c = self.config
        return load_seq2seq(
            c.generator,
            base_seed=c.base_seed,
            shape=TinyT5Shape(c.d_model, c.num_layers, c.num_heads, c.d_ff),
            allow_download=c.allow_download,
        )

    def encode_questions(
        self, questions: Sequence[str], stores: Sequence[Sequence[str]]
    ) -> tuple[np.ndarray, list[tuple[list[str], list[float]]]]:
        """Packed generator inputs (no targets) of questions over stores, and what was retrieved."""
        retrieved = self.retrieve(questions, stores)
        sources = [
            self.source_text(q, ctx) for q, (ctx, _) in zip(questions, retrieved, strict=True)
        ]
        features, _ = encode_pairs(
            self._frozen(),
            sources,
            None,
            source_length=self.config.max_source_tokens,
            target_length=self.config.max_answer_tokens,
        )
        return features, retrieved

    # -- federated learning ----------------------------------------------------------
    def fresh_module(self) -> Seq2SeqLM:
        return self._base()[1]

    def init_vector(self, *, seed: int) -> np.ndarray:
        _, wrapper = self.seq2seq(seed=seed)
        return get_flat(wrapper)

    def local_update(
        self,
        vector: np.ndarray,
        local: QueryData,
        *,
        server_round: int,
        seed: int,
        dp: DPStep | None = None,
    ) -> Update:
        if len(local) == 0:
            raise DataSchemaError("nlp_query needs question-answer rows to train on.")
        _, wrapper = self._base()
        set_flat(wrapper, vector)
        return self.train_update(
            wrapper,
            local.train_features,
            local.labels,
            examples=len(local),
            seed=seed,
            dp=dp,
            loss_fn=sequence_loss,
            train=_train,
        )

    def _answers(self, vector: np.ndarray, features: np.ndarray) -> list[str]:
        return self._generate(self.generator(vector), features)

    def generator(self, vector: np.ndarray) -> Seq2SeqLM:
        """A generator holding ``vector`` (a fresh copy of the base: ~40 ms, so reuse it)."""
        _, wrapper = self._base()
        set_flat(wrapper, vector)
        return wrapper

    def _generate(self, wrapper: Seq2SeqLM, features: np.ndarray) -> list[str]:
        seq = self._frozen()
        ids = generate(
            wrapper,
            features,
            max_new_tokens=self.config.max_answer_tokens,
            start_id=seq.start_id,
            eos_id=seq.eos_id,
        )
        return [seq.tokenizer.decode(row, skip_special_tokens=True) for row in ids]

    def evaluate(self, vector: np.ndarray, local: QueryData) -> dict[str, float]:
        predictions = [normalize_answer(a) for a in self._answers(vector, local.features)]
        pairs = list(zip(predictions, local.references, strict=True))
        n = max(len(pairs), 1)
        # The trivial baseline: one constant answer, the most frequent held-out reference
        # (the majority class of free text), for every question.
        constant = Counter(local.references).most_common(1)[0][0] if local.references else ""
        return {
            "rouge_l": float(sum(rouge_l(p, r) for p, r in pairs) / n),
            "baseline_rouge_l": float(sum(rouge_l(constant, r) for r in local.references) / n),
            "exact_match": float(sum(p == r for p, r in pairs) / n),
            "retrieval_recall": float(np.mean(local.retrieved)) if len(pairs) else 0.0,
            "examples": float(len(pairs)),
        }

    def model(self, vector: np.ndarray) -> NlpQueryModel:
        return NlpQueryModel(self, vector)


def _train(
    module: Seq2SeqLM,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> float:
    """Adam on the trainable subset; returns the last epoch's mean loss."""
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    x, y = torch.as_tensor(features), torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(seed)
    module.train()
    last = 0.0
    for _ in range(epochs):
        total = 0.0
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = sequence_loss(module(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        last = total / len(x)
    module.eval()
    return last


class NlpQueryModel(GlobalModel):
    """The global ``nlp_query`` model: ask questions over a store of insights."""

    agent: NlpQuery

    @functools.cached_property
    def _generator(self) -> Seq2SeqLM:
        # Built once per model: a fresh copy of the base cost ~40 ms of every prediction.
        return self.agent.generator(self.vector)

    def ask(self, question: str, insights: str | Sequence[str]) -> Answer:
        """Answer ``question`` from ``insights`` (a list, or one insight per line).

        Returns
        -------
        Answer
            The generated answer, the insights retrieved as its context and their scores.
        """
        return self.ask_many([question], [insights])[0]

    def ask_many(
        self, questions: Sequence[str], insights: Sequence[str | Sequence[str]]
    ) -> list[Answer]:
        """:meth:`ask` for many questions at once, each with its own insight store."""
        stores = [split_insights(s) for s in insights]
        if len(stores) != len(questions) or any(not s for s in stores):
            raise ConfigError(
                "The 'insights' parameter of ask must hold at least one insight per question "
                f"({len(questions)} question(s)). Got {len(stores)} store(s), "
                f"{sum(not s for s in stores)} of them empty, instead."
            )
        features, retrieved = self.agent.encode_questions([str(q) for q in questions], stores)
        texts = self.agent._generate(self._generator, features)
        return [Answer(t, ctx, sc) for t, (ctx, sc) in zip(texts, retrieved, strict=True)]

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """The answer to each row's ``question`` from its ``insights`` column."""
        missing = [col for col in ("question", "insights") if col not in frame.columns]
        if missing:
            raise DataSchemaError(
                f"nlp_query answers from 'question' and 'insights' columns; the DataFrame "
                f"lacks {', '.join(map(repr, missing))}."
            )
        answers = self.ask_many(frame["question"].astype(str).tolist(), frame["insights"].tolist())
        return np.array([a.text for a in answers], dtype=object)
