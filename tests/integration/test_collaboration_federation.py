"""collaboration end to end: 5 MSPs beat each MSP alone; DP and CKKS together stay in budget."""

import warnings

import numpy as np
import pytest

import meshfl
from meshfl.baselines import compare
from meshfl.privacy import DPConfig

pytestmark = pytest.mark.integration


def test_federated_partner_matching_beats_average_local_only():
    # The default config: the real, bundled, pretrained MiniLM encoder.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure aggregation is OFF.*")
        result = meshfl.simulate(
            agent="collaboration",
            num_msps=5,
            rounds=3,
            seed=0,
            secure_aggregation="plaintext",
            progress=False,
        )
    test = result.test_data
    scores = compare(result, with_centralized=False, personalize=False)
    recall = [m.evaluate(test)["recall_at_k"] for m in scores.local_models]
    print(
        f"\ncollaboration {scores}; recall@10 federated "
        f"{result.evaluate()['recall_at_k']:.3f}, local-only mean {np.mean(recall):.3f}"
    )
    assert scores.federated > scores.local_on_pooled_mean + 0.03
    assert scores.federated >= scores.local_on_pooled_best - 0.01
    assert scores.federated > 0.62  # chance is 0.5
    auc = result.history["auc"].to_numpy()
    assert auc[-1] > auc[0]  # the held-out metric rises over the rounds


def test_dp_with_ckks_runs_and_stays_within_epsilon():
    result = meshfl.simulate(
        agent="collaboration",
        num_msps=5,
        rounds=3,
        seed=0,
        samples_per_msp=150,
        agent_config={"encoder": "tiny", "local_epochs": 1},
        privacy=DPConfig(epsilon=1.0, delta=1e-5),
        secure_aggregation="ckks",
        progress=False,
    )
    spent = result.privacy["epsilon_spent"]
    assert len(spent) == 5 and (spent <= 1.0).all() and (spent > 0.5).all()
    assert list(result.history["msps"]) == [5, 5, 5]
    assert np.all(np.isfinite(result.model.vector))
    metrics = result.evaluate()
    assert 0.0 <= metrics["auc"] <= 1.0 and metrics["examples"] == len(result.test_data)
