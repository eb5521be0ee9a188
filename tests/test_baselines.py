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


@pytest.mark.filterwarnings("ignore:.*[Ss]ecure aggregation is OFF")
def test_under_dp_the_local_only_reference_adds_no_noise():
    """An MSP that goes alone shares nothing, so it adds no noise: the local-only reference
    of a DP plan is the MSP's own model without DP. Trained with the plan's noise, it
    handicapped the reference and flattered the federation (and differed run to run)."""
    from meshfl.baselines import local_only
    from meshfl.federation import AgentPlan
    from meshfl.privacy import DPConfig
    from meshfl.simulation import make_partitions

    config = {"trees_per_round": 4, "depth": 5}
    plan = AgentPlan(agent="anomaly", agent_config=config, rounds=2, seed=3)
    parts = make_partitions(plan.build_agent(), num_msps=2, seed=3, samples_per_msp=120)
    private = plan.model_copy(update={"privacy": DPConfig(epsilon=1.0)})
    first, second = (local_only(private, parts)[0] for _ in range(2))
    alone = local_only(plan, parts)[0]
    for a, b, c in zip(first, second, alone, strict=True):
        np.testing.assert_array_equal(a.vector, c.vector)
        np.testing.assert_array_equal(b.vector, c.vector)
