"""Agent ``market_intel``: pricing and market signals, and their sentiment, in market text.

Vendor price changes, new services, end-of-life notices, acquisitions, outages and licensing
changes, as an MSP's feed collects them (channel press, distributor bulletins, partner
notices, community posts), classified into a *signal* and a *sentiment* for the MSP. The
model is the mesh's text stack (:mod:`meshfl.agents.text_classifier`): a frozen sentence
encoder (bundled MiniLM-L6 offline; a local RoBERTa/BERT through ``encoder=``) and a
federated two-task head. Only the head is trained and sent, because market texts are short
and few per MSP: a 22M-parameter encoder fine-tuned on a few hundred texts under DP-SGD
would drown in noise, while a head of ~10^4 parameters learns from them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from meshfl.agents.registry import register
from meshfl.agents.text_classifier import (
    CategoricalTextClassifier,
    LabelSet,
    TextClassifierConfig,
    TextClassifierModel,
    TextData,
    classification_metrics,
)
from meshfl.data.market_text import MARKET_SIGNALS, MARKET_TEXT_SCHEMA, SENTIMENTS, market_text

__all__ = ["MarketIntel", "MarketIntelConfig", "MarketIntelModel"]


class MarketIntelConfig(TextClassifierConfig):
    """Configuration of the ``market_intel`` agent."""

    signals: LabelSet = MARKET_SIGNALS
    sentiments: LabelSet = SENTIMENTS


class MarketIntelModel(TextClassifierModel):
    """The global ``market_intel`` model: signal and sentiment of market texts.

    ``predict`` gives signals, ``predict_proba`` their probabilities (columns ``classes_``),
    ``predict_details`` a DataFrame of signal, confidence and sentiment.
    """

    agent: MarketIntel


@register
class MarketIntel(CategoricalTextClassifier):
    """Market signal (price increase, outage, ...) and sentiment of market and pricing text."""

    name = "market_intel"
    summary = "sentiment and pricing signals in market text"
    config_class = MarketIntelConfig
    fast_config = {"encoder": "tiny", "local_epochs": 1}  # noqa: RUF012
    schema = MARKET_TEXT_SCHEMA
    metric = "macro_f1"
    label_column = "signal"
    text_column = "text"
    label_fields = {"signal": "signals", "sentiment": "sentiments"}  # noqa: RUF012
    model_class = MarketIntelModel
    config: MarketIntelConfig

    def synthetic_data(self, n: int, *, seed: int) -> pd.DataFrame:
        return market_text(n, seed=seed)

    def tasks(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return (("signal", self.config.signals), ("sentiment", self.config.sentiments))

    def evaluate(self, vector: np.ndarray, local: TextData) -> dict[str, float]:
        """Signal ``accuracy``, ``macro_f1`` (headline: signals are imbalanced) and ``loss``;
        ``sentiment_accuracy`` and ``sentiment_macro_f1``; ``examples``."""
        metrics = super().evaluate(vector, local)
        proba = self.probabilities(vector, local.features)[1]
        sentiment = classification_metrics(proba, self.labelled(local, "evaluate")[:, 1])
        metrics["sentiment_macro_f1"] = sentiment["macro_f1"]
        return metrics
