"""Agent ``compliance``: map controls and audit evidence to framework requirements, met or gap.

Each piece of evidence (a control description, a ticket note, an auditor's comment) is
mapped to every requirement it covers across SOC 2, ISO/IEC 27001, HIPAA and GDPR
(multi-label: one MFA control answers four frameworks) and classified as showing those
requirements *met* or a *gap*. The model is the mesh's text stack
(:mod:`meshfl.agents.text_classifier`): a frozen sentence encoder (bundled MiniLM-L6 offline;
a local RoBERTa through ``encoder=``) and a federated head with one binary task per
requirement (a two-way softmax: the same loss as a sigmoid with binary cross-entropy) and
one for the status. Only the head is trained and sent: an MSP holds a few hundred evidence
items, far too few to fine-tune an encoder, let alone under DP-SGD.

:meth:`ComplianceModel.gap_report` turns a client's evidence into the list of requirements
per framework that are not met: evidence shows a gap, or no evidence covers them.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import AfterValidator, Field

from meshfl.agents.base import GlobalModel
from meshfl.agents.registry import register
from meshfl.agents.text_classifier import (
    LabelSet,
    TextClassifier,
    TextClassifierConfig,
    TextData,
    Texts,
)
from meshfl.config.errors import DataSchemaError
from meshfl.data.compliance_text import (
    COMPLIANCE_EVIDENCE_SCHEMA,
    COMPLIANCE_STATUSES,
    FRAMEWORKS,
    REQUIREMENT_SEPARATOR,
    REQUIREMENTS,
    compliance_evidence,
    framework_of,
)

__all__ = ["Compliance", "ComplianceConfig", "ComplianceModel", "multilabel_f1"]


def _requirement_ids(value: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(value)) != len(value):
        raise ValueError("hold distinct requirement ids")
    for rid in value:
        if len(rid.split()) < 2 or REQUIREMENT_SEPARATOR in rid:
            raise ValueError(
                f"hold ids of the form '<framework> <id>' (e.g. 'SOC2 CC6.1'), not {rid!r}"
            )
    return value


class ComplianceConfig(TextClassifierConfig):
    """Configuration of the ``compliance`` agent."""

    requirements: Annotated[
        tuple[str, ...], Field(min_length=1), AfterValidator(_requirement_ids)
    ] = Field(
        tuple(REQUIREMENTS),
        description="The requirement catalogue the head maps to ('<framework> <id>' each).",
    )
    statuses: LabelSet = COMPLIANCE_STATUSES
    threshold: float = Field(
        0.5, gt=0, lt=1, description="Probability above which evidence maps to a requirement."
    )
    max_labels: int = Field(
        4,
        ge=1,
        le=1000,
        description=(
            "With trainer='closed_form': requirements one text counts in at most (a text "
            "mapped to more counts a share in each); bounds its DP sensitivity."
        ),
    )


def multilabel_f1(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Macro- and micro-F1 of boolean label matrices ``(n, labels)``.

    The macro average runs over the labels that occur in ``truth`` or in ``predicted``
    (an F1 of a label that is neither present nor predicted is undefined, not 0 or 1).
    """
    tp = (truth & predicted).sum(0).astype(float)
    errors = (truth ^ predicted).sum(0).astype(float)  # false positives + false negatives
    seen = (tp + errors) > 0
    if not seen.any():
        return 1.0, 1.0
    macro = float(np.mean(2 * tp[seen] / (2 * tp[seen] + errors[seen])))
    micro = float(2 * tp.sum() / (2 * tp.sum() + errors.sum()))
    return macro, micro


@register
class Compliance(TextClassifier):
    """Requirements (SOC 2, ISO 27001, HIPAA, GDPR) and met/gap status of audit evidence."""

    name = "compliance"
    summary = "map controls and evidence to SOC 2 / ISO 27001 / HIPAA / GDPR requirements"
    config_class = ComplianceConfig
    fast_config = {"encoder": "tiny", "local_epochs": 1}  # noqa: RUF012
    schema = COMPLIANCE_EVIDENCE_SCHEMA
    metric = "macro_f1"
    label_column = "framework"
    text_column = "text"
    label_fields = {"status": "statuses"}  # noqa: RUF012
    config: ComplianceConfig

    def synthetic_data(self, n: int, *, seed: int) -> pd.DataFrame:
        return compliance_evidence(n, seed=seed)

    def task_sizes(self) -> tuple[int, ...]:
        # One two-way task per requirement (absent / present), then the status.
        return (2,) * len(self.config.requirements) + (len(self.config.statuses),)

    def membership_cap(self) -> float:
        """``max_labels`` requirements and the status: what one text may count in."""
        return float(min(self.config.max_labels, len(self.config.requirements)) + 1)

    def requirement_matrix(self, mappings: pd.Series) -> np.ndarray:
        """Boolean ``(n, requirements)`` matrix of a ``requirements`` column."""
        index = {rid: j for j, rid in enumerate(self.config.requirements)}
        matrix = np.zeros((len(mappings), len(index)), dtype=bool)
        for row, cell in enumerate(mappings.tolist()):
            for rid in (part.strip() for part in str(cell).split(REQUIREMENT_SEPARATOR)):
                if not rid:
                    continue
                if rid not in index:
                    raise DataSchemaError(
                        f"Column 'requirements' of the compliance data must hold requirement "
                        f"ids of the agent's catalogue separated by {REQUIREMENT_SEPARATOR!r} "
                        f"(e.g. 'SOC2 CC6.1; GDPR Art.32'); row {row} holds {rid!r}, which is "
                        "not one. Fix the row, or add the id to the 'requirements' parameter "
                        "of ComplianceConfig."
                    )
                matrix[row, index[rid]] = True
        return matrix

    def targets(self, frame: pd.DataFrame) -> np.ndarray:
        status = self.label_codes(frame, "status", self.config.statuses)
        matrix = self.requirement_matrix(frame["requirements"]).astype(np.int64)
        return np.concatenate([matrix, status[:, None]], axis=1)

    def scores(self, vector: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probability of each requirement ``(n, requirements)`` and of each status."""
        *per_requirement, status = self.probabilities(vector, features)
        return np.stack([p[:, 1] for p in per_requirement], axis=1), status

    def evaluate(self, vector: np.ndarray, local: TextData) -> dict[str, float]:
        """Requirement mapping ``macro_f1`` (headline), ``micro_f1``, ``exact_match``;
        ``status_accuracy``, ``gap_f1`` (F1 of the shortfall class); per-label ``loss``."""
        targets = self.labelled(local, "evaluate")
        proba, status = self.scores(vector, local.features)
        truth = targets[:, :-1].astype(bool)
        predicted = proba > self.config.threshold
        macro, micro = multilabel_f1(truth, predicted)
        gap = self.config.statuses.index("gap") if "gap" in self.config.statuses else -1
        status_pred, status_true = status.argmax(1), targets[:, -1]
        _, gap_f1 = multilabel_f1((status_true == gap)[:, None], (status_pred == gap)[:, None])
        eps = 1e-12
        loss = -np.mean(truth * np.log(proba + eps) + ~truth * np.log(1 - proba + eps))
        # The best constant predictor of the mapping: every requirement that occurs in the
        # held-out rows, for every row (a constant set S scores 2p/(1+p) on each label of S
        # of share p and 0 elsewhere, so taking every occurring label maximizes macro-F1).
        constant = np.broadcast_to(truth.any(0), truth.shape)
        baseline_macro, _ = multilabel_f1(truth, constant)
        return {
            "macro_f1": macro,
            "baseline_macro_f1": baseline_macro,
            "micro_f1": micro,
            "exact_match": float(np.mean((truth == predicted).all(1))),
            "status_accuracy": float(np.mean(status_pred == status_true)),
            "gap_f1": gap_f1,
            "loss": float(loss),
            "examples": float(len(targets)),
        }

    def model(self, vector: np.ndarray) -> ComplianceModel:
        return ComplianceModel(self, vector)


class ComplianceModel(GlobalModel):
    """The global ``compliance`` model: requirements and status of evidence, and gap reports."""

    agent: Compliance

    @property
    def requirements_(self) -> np.ndarray:
        """Requirement ids, in the column order of :meth:`predict_proba`."""
        return np.asarray(self.agent.config.requirements)

    def _scores(self, texts: Texts) -> tuple[np.ndarray, np.ndarray]:
        return self.agent.scores(self.vector, self.agent.embed(texts))

    def _mapped(self, proba: np.ndarray) -> np.ndarray:
        # Evidence is always about something: below the threshold, keep the likeliest.
        mapped = proba > self.agent.config.threshold
        mapped[np.arange(len(proba)), proba.argmax(1)] = True
        return mapped

    def predict_proba(self, texts: Texts) -> np.ndarray:
        """Probability that each text covers each requirement (columns :attr:`requirements_`)."""
        return self._scores(texts)[0]

    def predict(self, texts: Texts) -> np.ndarray:
        """The requirements each text covers, as ``"; "``-joined ids (the data's format)."""
        return self.predict_details(texts)["requirements"].to_numpy()

    def predict_details(self, texts: Texts) -> pd.DataFrame:
        """Per text: ``requirements`` (joined ids), ``status`` and ``confidence`` of the status."""
        proba, status = self._scores(texts)
        ids = self.requirements_
        return pd.DataFrame(
            {
                "requirements": ["; ".join(ids[row]) for row in self._mapped(proba)],
                "status": np.asarray(self.agent.config.statuses)[status.argmax(1)],
                "confidence": status.max(1),
            }
        )

    def gap_report(
        self, evidence: Texts, *, frameworks: tuple[str, ...] | None = None
    ) -> pd.DataFrame:
        """Unmet requirements per framework, from a client's evidence.

        A requirement is a ``"gap"`` when some evidence mapped to it shows a shortfall, and
        ``"missing"`` when no evidence maps to it at all; requirements whose evidence all
        shows them met are left out.

        Parameters
        ----------
        evidence : str, iterable of str, Series or DataFrame
            The client's evidence texts (a DataFrame's ``text`` column).
        frameworks : tuple of str, optional
            Frameworks to report on (default: every framework of the catalogue).

        Returns
        -------
        pandas.DataFrame
            One row per unmet requirement, ordered by framework and catalogue: ``framework``,
            ``requirement``, ``title``, ``status`` (``"gap"`` / ``"missing"``), ``evidence``
            (how many texts show the gap) and ``example`` (the first of them, or "").
            ``report.groupby("framework")["requirement"].apply(list)`` gives the
            framework -> requirement ids mapping.
        """
        if not isinstance(evidence, (str, pd.DataFrame)):
            evidence = [str(t) for t in evidence]  # an iterator is read twice below
        proba, status = self._scores(evidence)
        raw = _texts(evidence, self.agent.text_column)
        mapped = self._mapped(proba)
        is_gap = np.asarray(self.agent.config.statuses)[status.argmax(1)] == "gap"
        ids = self.requirements_
        wanted = tuple(dict.fromkeys(map(framework_of, ids))) if frameworks is None else frameworks
        unknown = sorted(set(wanted) - set(map(framework_of, ids)))
        if unknown:
            raise DataSchemaError(
                f"The 'frameworks' parameter of gap_report must name frameworks of the "
                f"catalogue ({', '.join(dict.fromkeys(map(framework_of, ids)))}). "
                f"Got {', '.join(unknown)} instead."
            )
        rows = []
        for j, rid in enumerate(ids):
            if framework_of(rid) not in wanted:
                continue
            gaps = np.flatnonzero(mapped[:, j] & is_gap)
            if len(gaps) == 0 and mapped[:, j].any():
                continue  # covered, and met
            rows.append(
                {
                    "framework": framework_of(rid),
                    "requirement": rid,
                    "title": REQUIREMENTS.get(rid, ""),
                    "status": "gap" if len(gaps) else "missing",
                    "evidence": len(gaps),
                    "example": raw[gaps[0]] if len(gaps) else "",
                }
            )
        order = {f: i for i, f in enumerate((*FRAMEWORKS, *wanted))}
        report = pd.DataFrame(
            rows, columns=["framework", "requirement", "title", "status", "evidence", "example"]
        )
        report = report.sort_values("framework", key=lambda s: s.map(order), kind="stable")
        return report.reset_index(drop=True)


def _texts(evidence: Texts, column: str) -> list[str]:
    if isinstance(evidence, str):
        return [evidence]
    if isinstance(evidence, pd.DataFrame):
        return [str(t) for t in evidence[column]]
    return [str(t) for t in evidence]
