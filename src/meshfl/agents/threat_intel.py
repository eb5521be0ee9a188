"""Agent ``threat_intel``: classify security events and log lines into threat classes and severity.

A frozen sentence encoder (MiniLM-L6 by default, shipped with meshfl) embeds each log line
once; a small multi-task head (threat class, severity) is trained locally and averaged
across MSPs (FedAvg; McMahan et al., AISTATS 2017). Only the head's parameters travel. The
shared machinery lives in :mod:`meshfl.agents.text_classifier`.
"""

from __future__ import annotations

import pandas as pd

from meshfl.agents.registry import register
from meshfl.agents.text_classifier import (
    CategoricalTextClassifier,
    LabelSet,
    TextClassifierConfig,
    TextClassifierModel,
    TextData,
)
from meshfl.data.schemas import SECURITY_EVENTS_SCHEMA, SEVERITIES, THREAT_CLASSES
from meshfl.data.security_events_data import security_events

__all__ = ["TextData", "ThreatIntel", "ThreatIntelConfig", "ThreatIntelModel"]


class ThreatIntelConfig(TextClassifierConfig):
    """Configuration of the ``threat_intel`` agent."""

    classes: LabelSet = THREAT_CLASSES
    severities: LabelSet = SEVERITIES


class ThreatIntelModel(TextClassifierModel):
    """The global ``threat_intel`` model: threat class and severity of log lines.

    ``predict`` gives threat classes, ``predict_proba`` their probabilities (columns
    ``classes_``), ``predict_details`` a DataFrame of class, confidence and severity.
    """

    agent: ThreatIntel


@register
class ThreatIntel(CategoricalTextClassifier):
    """Threat classes and severity of security events, from the log line's text."""

    name = "threat_intel"
    summary = "classify security events and log lines into threat classes with severity"
    config_class = ThreatIntelConfig
    fast_config = {"encoder": "tiny", "local_epochs": 1}  # noqa: RUF012
    schema = SECURITY_EVENTS_SCHEMA
    metric = "accuracy"
    label_column = "threat_class"
    text_column = "message"
    label_fields = {"threat_class": "classes", "severity": "severities"}  # noqa: RUF012
    model_class = ThreatIntelModel
    config: ThreatIntelConfig

    def synthetic_data(self, n: int, *, seed: int) -> pd.DataFrame:
        return security_events(n, seed=seed)

    def tasks(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return (("threat_class", self.config.classes), ("severity", self.config.severities))
