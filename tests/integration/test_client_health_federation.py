"""client_health end to end: 5 non-IID MSPs, plaintext and CKKS, with and without DP."""

import warnings

import lightgbm as lgb
import numpy as np
import pytest

import meshfl
from meshfl.baselines import compare
from meshfl.data.client_health_data import CLIENT_HEALTH_FEATURES
from meshfl.privacy import DPConfig

pytestmark = pytest.mark.integration

CONFIG = {"n_bins": 16, "max_depth": 3, "learning_rate": 0.3}
ROUNDS = 12  # 4 trees x 3 levels


@pytest.fixture(scope="module")
def plaintext():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure aggregation is OFF.*")
        return meshfl.simulate(
            agent="client_health",
            num_msps=5,
            rounds=ROUNDS,
            seed=0,
            alpha=0.3,
            agent_config=CONFIG,
            secure_aggregation="plaintext",
            progress=False,
        )


def test_federated_beats_local_only_and_equals_centralized(plaintext):
    scores = compare(plaintext, personalize=False)
    print(f"\nclient_health {scores}")
    federated, local, pooled = scores.federated, scores.local_on_pooled, scores.centralized
    assert federated > np.mean(local) + 0.02
    # Summed histograms are the pooled histograms: the federation grows the central model.
    assert federated == pytest.approx(pooled, abs=1e-6)
    assert federated > 0.75
    assert list(plaintext.history["msps"]) == [5] * ROUNDS


def test_auc_rises_over_rounds_and_trees_follow_rounds(plaintext):
    auc = plaintext.history["auc"].to_numpy()
    assert auc[-1] > auc[0] + 0.05
    assert plaintext.model.n_trees == ROUNDS // CONFIG["max_depth"]


def test_exported_model_predicts_as_meshfl(plaintext):
    test = plaintext.test_data
    booster = lgb.Booster(model_str=plaintext.model.to_lightgbm())
    X = test[list(CLIENT_HEALTH_FEATURES)].to_numpy()
    np.testing.assert_allclose(
        booster.predict(X), plaintext.model.predict_proba(test), rtol=0, atol=1e-9
    )


def test_ckks_gives_the_plaintext_model_up_to_encryption_noise(plaintext):
    sealed = meshfl.simulate(
        agent="client_health",
        num_msps=5,
        rounds=6,
        seed=0,
        alpha=0.3,
        agent_config=CONFIG,
        progress=False,
    )
    assert sealed.versions[0].backend == "ckks"
    plain = plaintext.history["auc"].to_numpy()[:6]
    # ~1e-7 relative noise may flip a near-tie between two splits; the quality stays.
    np.testing.assert_allclose(sealed.history["auc"].to_numpy(), plain, atol=0.02)


def test_dp_over_ckks_stays_within_epsilon_and_still_learns():
    result = meshfl.simulate(
        agent="client_health",
        num_msps=5,
        rounds=6,
        seed=0,
        samples_per_msp=1000,
        agent_config={
            "split_mode": "random",
            "n_bins": 8,
            "max_depth": 3,
            "learning_rate": 0.5,
            "lambda_l2": 5.0,
        },
        privacy=DPConfig(epsilon=1.0, delta=1e-5),
        progress=False,
    )
    spent = result.privacy["epsilon_spent"]
    assert len(spent) == 5 and (spent <= 1.0).all() and (spent > 0.9).all()
    assert list(result.history["msps"]) == [5] * 6
    assert result.model.n_trees == 6  # one tree per round with random splits
    assert result.evaluate()["auc"] > 0.62
