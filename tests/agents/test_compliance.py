"""The compliance agent, its synthetic evidence and its gap report."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from meshfl import agents
from meshfl.agents import GlobalModel
from meshfl.agents.compliance import Compliance, ComplianceModel, multilabel_f1
from meshfl.config.errors import ConfigError, DataSchemaError
from meshfl.data.compliance_text import (
    FRAMEWORKS,
    REQUIREMENTS,
    compliance_evidence,
    framework_of,
)

FAST = {"encoder": "tiny", "learning_rate": 0.05}


@pytest.fixture(scope="module")
def agent():
    return Compliance(FAST)


@pytest.fixture(scope="module")
def frame():
    return compliance_evidence(300, seed=0)


def test_registered_under_its_name():
    assert agents.get("compliance") is Compliance


def test_catalogue_spans_the_four_frameworks():
    per = {f: [r for r in REQUIREMENTS if framework_of(r) == f] for f in FRAMEWORKS}
    assert all(len(ids) >= 8 for ids in per.values())
    assert {"SOC2 CC6.1", "ISO27001 A.8.5", "HIPAA 164.312(a)(1)", "GDPR Art.32"} <= set(
        REQUIREMENTS
    )


def test_generator_maps_evidence_across_frameworks_and_skews_by_engagement():
    frame = compliance_evidence(2000, seed=2, label_noise=0.0)
    matrix = Compliance().requirement_matrix(frame["requirements"])
    assert matrix.any(1).all()  # every item covers something
    assert matrix.any(0).mean() > 0.95  # nearly every requirement occurs
    crosswalked = {framework_of(r) for r in frame["requirements"].iloc[0].split("; ")}
    assert len(crosswalked) >= 1
    assert (matrix.sum(1) > 1).mean() > 0.8  # one control answers several frameworks
    assert 0.25 < (frame["status"] == "gap").mean() < 0.5
    hipaa, gdpr = frame["framework"] == "HIPAA", frame["framework"] == "GDPR"
    dpia = frame["requirements"].str.contains("GDPR Art.35", regex=False)
    assert dpia[gdpr].mean() > 5 * dpia[hipaa].mean()
    assert frame.loc[hipaa, "text"].str.contains("PHI|patient|health|EHR", regex=True).mean() > 0.2
    noisy = compliance_evidence(2000, seed=2)
    assert noisy["text"].equals(frame["text"])
    assert 0.01 < (noisy["requirements"] != frame["requirements"]).mean() < 0.06


def test_unknown_requirement_id_is_explained(agent, frame):
    bad = frame.copy()
    bad.loc[bad.index[3], "requirements"] = "SOC2 CC6.1; SOC2 CC99.9"
    with pytest.raises(DataSchemaError, match=r"row 3 holds 'SOC2 CC99.9'.*ComplianceConfig"):
        agent.prepare(bad)


def test_config_checks_requirement_ids():
    with pytest.raises(ConfigError, match="'<framework> <id>'"):
        Compliance(requirements=("CC6.1",))
    with pytest.raises(ConfigError, match="distinct"):
        Compliance(requirements=("SOC2 CC6.1", "SOC2 CC6.1"))
    custom = Compliance(requirements=("PCI 8.4.2", "SOC2 CC6.1"), encoder="tiny")
    assert custom.task_sizes() == (2, 2, 2)


def test_multilabel_f1_matches_sklearn_on_labels_that_occur():
    rng = np.random.default_rng(0)
    truth = rng.random((50, 6)) < 0.3
    pred = rng.random((50, 6)) < 0.3
    truth[:, 5] = pred[:, 5] = False  # a label nobody has nor predicts: left out
    macro, micro = multilabel_f1(truth, pred)
    assert macro == pytest.approx(f1_score(truth[:, :5], pred[:, :5], average="macro"))
    assert micro == pytest.approx(f1_score(truth, pred, average="micro"))


def test_training_improves_macro_f1_and_model_round_trips(agent, frame, tmp_path):
    train, test = agent.prepare(frame.iloc[:220]), agent.prepare(frame.iloc[220:])
    vector = agent.init_vector(seed=0)
    before = agent.evaluate(vector, test)
    for r in range(4):
        vector = agent.local_update(vector, train, server_round=r + 1, seed=r).vector
    after = agent.evaluate(vector, test)
    assert after["macro_f1"] > before["macro_f1"] + 0.05
    assert after["loss"] < before["loss"]
    assert {"micro_f1", "exact_match", "status_accuracy", "gap_f1", "examples"} <= set(after)

    model = agent.model(vector)
    assert isinstance(model, ComplianceModel)
    assert model.predict_proba(frame["text"].iloc[:4]).shape == (4, len(REQUIREMENTS))
    details = model.predict_details(frame.iloc[:4])
    assert list(details.columns) == ["requirements", "status", "confidence"]
    for cell in details["requirements"]:
        ids = cell.split("; ")
        assert ids and set(ids) <= set(REQUIREMENTS)
    loaded = GlobalModel.load(model.save(tmp_path / "compliance"))
    assert (loaded.predict(frame.iloc[:4]) == model.predict(frame.iloc[:4])).all()


class _Scored(ComplianceModel):
    """A model whose scores are given, to check the report's logic exactly."""

    def __init__(self, agent, proba, status):
        super().__init__(agent, agent.init_vector(seed=0))
        self._given = (proba, status)

    def _scores(self, texts):
        return self._given


def test_gap_report_lists_gaps_and_missing_coverage_per_framework():
    agent = Compliance(
        requirements=("SOC2 CC6.1", "SOC2 CC7.2", "GDPR Art.32", "HIPAA 164.312(b)"),
        encoder="tiny",
    )
    proba = np.array(
        [
            [0.9, 0.1, 0.8, 0.1],  # MFA evidence, met: SOC2 CC6.1 + GDPR Art.32
            [0.1, 0.7, 0.1, 0.2],  # logging evidence, a gap: SOC2 CC7.2
            [0.2, 0.3, 0.1, 0.4],  # below threshold: keeps its likeliest, HIPAA, a gap
        ]
    )
    status = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])  # met, gap, gap
    texts = ["MFA enforced", "SIEM ingestion stopped", "no log review"]
    report = _Scored(agent, proba, status).gap_report(texts)
    assert report[["framework", "requirement", "status", "evidence"]].values.tolist() == [
        ["SOC2", "SOC2 CC7.2", "gap", 1],
        ["HIPAA", "HIPAA 164.312(b)", "gap", 1],
    ]
    assert report["example"].tolist() == ["SIEM ingestion stopped", "no log review"]
    assert report["title"].iloc[0] == REQUIREMENTS["SOC2 CC7.2"]

    only_first = _Scored(agent, proba[:1], status[:1]).gap_report(texts[:1])
    assert only_first[["requirement", "status"]].values.tolist() == [
        ["SOC2 CC7.2", "missing"],
        ["HIPAA 164.312(b)", "missing"],
    ]
    gdpr = _Scored(agent, proba[1:], status[1:]).gap_report(texts[1:], frameworks=("GDPR",))
    assert gdpr["requirement"].tolist() == ["GDPR Art.32"]
    assert gdpr["status"].tolist() == ["missing"]
    with pytest.raises(DataSchemaError, match="'frameworks' parameter of gap_report"):
        _Scored(agent, proba, status).gap_report(texts, frameworks=("PCI",))
