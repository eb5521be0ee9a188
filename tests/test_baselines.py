"""meshfl.baselines.compare: honest per-MSP references (each MSP on its own held-out rows)."""

import numpy as np
import pytest

import meshfl
from meshfl.agents import get
from meshfl.baselines import compare


def _anomaly_run():
    return meshfl.simulate(
        agent="anomaly",
        num_msps=3,
        rounds=1,
        samples_per_msp=120,
        agent_config={"trees_per_round": 4, "depth": 5},
        secure_aggregation="plaintext",
        progress=False,
    )


@pytest.mark.filterwarnings("ignore:.*[Ss]ecure aggregation is OFF")
def test_local_only_scores_each_msps_model_on_that_msps_own_rows():
    result = _anomaly_run()
    scores = compare(result, with_centralized=False)
    own = [
        m.evaluate(p.test)["auc"]
        for m, p in zip(scores.local_models, result.partitions, strict=True)
    ]
    assert scores.local == pytest.approx(own)
    # not what the same models score on everyone's rows (the old, flattering reference)
    pooled = [m.evaluate(result.test_data)["auc"] for m in scores.local_models]
    assert scores.local != pytest.approx(pooled)
    assert scores.local_on_pooled == pytest.approx(pooled)  # kept, under its own name
    table = scores.per_msp
    assert list(table.columns) == [
        "msp",
        "examples",
        "federated",
        "personalized",
        "choice",
        "local_only",
        "baseline",
    ]
    assert table["federated"].tolist() == pytest.approx(
        [result.model.evaluate(p.test)["auc"] for p in result.partitions]
    )
    assert set(table["choice"]) <= {"personalized", "global", "local"}
    assert scores.federated == pytest.approx(result.evaluate()["auc"])
    assert "personalized" in str(scores) and "local-only" in str(scores)


@pytest.mark.filterwarnings("ignore:.*[Ss]ecure aggregation is OFF")
def test_revenue_compare_works_when_each_msp_holds_one_series_without_a_series_column():
    revenue = get("revenue")(get("revenue").fast_config)
    parts = revenue.synthetic_partitions(3, samples_per_msp=80, seed=0)
    parts = [p.drop(columns="series") for p in parts]
    result = meshfl.simulate(
        agent="revenue",
        num_msps=3,
        data=parts,
        agent_config=dict(get("revenue").fast_config),
        secure_aggregation="plaintext",
        progress=False,
    )
    scores = compare(result)  # raised "date ... more than once" on the pooled rows
    assert len(scores.per_msp) == 3
    assert np.isfinite(scores.federated) and np.isfinite(scores.centralized)
    assert result.evaluate()["examples"] == sum(
        int(p.test["is_holdout"].sum()) for p in result.partitions
    )
