"""market_intel and compliance end to end: federation beats local-only; DP and CKKS together."""

import numpy as np
import pytest

import meshfl
from meshfl.baselines import compare
from meshfl.data.compliance_text import REQUIREMENTS
from meshfl.privacy import DPConfig

pytestmark = pytest.mark.integration

AGENTS = ["compliance", "market_intel"]
# The random-init "tiny" encoder carries too little signal for a 3-round comparison of
# federated and local models, so that comparison runs the bundled, pretrained MiniLM
# (its embeddings are cached per text, so the baselines do not encode again).
SAMPLES = 120


@pytest.mark.parametrize("agent", AGENTS)
def test_federation_improves_over_rounds_and_beats_average_local_only(agent):
    result = meshfl.simulate(
        agent=agent, num_msps=5, rounds=3, seed=0, samples_per_msp=SAMPLES, progress=False
    )
    metric = result.model.agent.metric
    assert metric == "macro_f1"
    rounds = result.history[metric].to_numpy()
    assert rounds[-1] > rounds[0]  # pooled over the MSPs' held-out data, round by round

    test = result.test_data
    scores = compare(result, personalize=False)
    print(f"\n{agent} {scores}; rounds {np.round(rounds, 3)}")
    federated = scores.federated
    assert federated > scores.local_on_pooled_mean + 0.05
    assert federated >= scores.centralized - 0.15  # 3 rounds of FedAvg on skewed MSPs
    assert federated > 0.7

    if agent == "compliance":
        report = result.model.gap_report(test)
        assert set(report["status"]) <= {"gap", "missing"}
        assert set(report["requirement"]) <= set(REQUIREMENTS)
        assert (report.loc[report["status"] == "gap", "evidence"] > 0).all()
    else:
        pred = result.model.predict(["Datto raises backup prices by 15% from next quarter"])
        assert pred[0] == "price_increase"


@pytest.mark.parametrize("agent", AGENTS)
def test_dp_sgd_under_ckks_stays_within_epsilon(agent):
    result = meshfl.simulate(
        agent=agent,
        num_msps=5,
        rounds=3,
        seed=0,
        samples_per_msp=100,
        agent_config={"encoder": "tiny"},
        privacy=DPConfig(epsilon=1.0, delta=1e-5),
        secure_aggregation="ckks",
        progress=False,
    )
    spent = result.privacy["epsilon_spent"]
    assert len(spent) == 5 and (spent <= 1.0).all() and (spent > 0.9).all()
    assert list(result.history["msps"]) == [5, 5, 5]
    assert all(v.backend == "ckks" for v in result.versions)
    assert np.all(np.isfinite(result.model.vector))
    assert 0.0 <= result.evaluate()["macro_f1"] <= 1.0
