"""A 5-MSP non-IID federation beats the average single-MSP model on everyone's held-out data."""

import pytest

import meshfl
from meshfl.baselines import compare

pytestmark = pytest.mark.integration

CASES = {
    # threat_intel runs the real, bundled, pretrained MiniLM encoder here.
    "threat_intel": {"rounds": 5, "config": {}},
    "anomaly": {"rounds": 3, "config": {}},
}


@pytest.mark.parametrize("agent", sorted(CASES))
def test_federated_beats_average_local_only(agent):
    case = CASES[agent]
    result = meshfl.simulate(
        agent=agent,
        num_msps=5,
        rounds=case["rounds"],
        seed=0,
        alpha=0.3,
        agent_config=case["config"],
        progress=False,
    )
    scores = compare(result, personalize=False)
    print(f"\n{agent} {scores}")
    federated = scores.federated

    assert federated > scores.local_on_pooled_mean + 0.02
    assert federated >= scores.local_on_pooled_best - 0.01
    assert federated >= scores.centralized - 0.1  # close to what pooling all data would give
    if agent == "threat_intel":
        assert federated > 0.75
        acc = result.history["accuracy"].to_numpy()
        assert acc[-1] > acc[0] + 0.1  # accuracy rises over the rounds
        preds = result.model.predict(
            ["Failed password for invalid user admin from 1.2.3.4 port 22"]
        )
        assert preds[0] in result.model.classes_
    else:
        assert federated > 0.85
