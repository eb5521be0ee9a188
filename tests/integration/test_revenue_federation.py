"""Revenue forecasting federated across 5 MSPs: beats local fits, runs under DP and CKKS."""

import numpy as np
import pytest

import meshfl
from meshfl.baselines import centralized, local_only
from meshfl.federation import AgentPlan
from meshfl.privacy import DPConfig

pytestmark = pytest.mark.integration

MSPS, PERIODS = 5, 80  # weekly; some MSPs have half a year of history, some two years


@pytest.fixture(scope="module")
def federated():
    return meshfl.simulate(
        agent="revenue", num_msps=MSPS, rounds=2, seed=0, samples_per_msp=PERIODS, progress=False
    )


def test_federated_beats_local_only_and_matches_centralized(federated):
    test = federated.test_data
    fed = federated.evaluate()
    plan = AgentPlan(agent="revenue", rounds=1, seed=0)
    local_models, _ = local_only(plan, federated.partitions)
    local = [m.evaluate(test)["smape"] for m in local_models]
    own = [
        m.evaluate(p.test)["smape"] for m, p in zip(local_models, federated.partitions, strict=True)
    ]
    fed_own = [federated.model.evaluate(p.test)["smape"] for p in federated.partitions]
    central, _ = centralized(plan, federated.partitions)
    pooled = central.evaluate(test)["smape"]
    print(
        f"\nrevenue sMAPE %: federated {fed['smape']:.2f}, local-only mean {np.mean(local):.2f} "
        f"(own series {np.mean(own):.2f}), centralized {pooled:.2f}; MASE {fed['mase']:.3f}"
    )
    assert fed["smape"] < np.mean(local) - 1.0  # pooled held-out horizons of every MSP
    assert np.mean(fed_own) < np.mean(own) - 1.0  # and each MSP on its own series
    # without DP the summed statistics are exactly the pooled ones (up to CKKS noise)
    assert fed["smape"] == pytest.approx(pooled, abs=0.05)
    assert 0.6 <= fed["coverage"] <= 1.0  # 80% intervals
    assert fed["examples"] == MSPS * 13


def test_rounds_re_exchange_the_same_statistics_without_dp(federated):
    history = federated.history
    assert list(history["msps"]) == [MSPS, MSPS]
    # one exchange is the closed-form fit; a second averages identical statistics
    assert history["smape"].iloc[1] == pytest.approx(history["smape"].iloc[0], abs=0.02)
    assert federated.model.vector[-1] == 2  # two exchanges averaged


def test_dp_with_ckks_stays_within_epsilon():
    result = meshfl.simulate(
        agent="revenue",
        num_msps=MSPS,
        rounds=2,
        seed=0,
        samples_per_msp=PERIODS,
        progress=False,
        privacy=DPConfig(epsilon=1.0, delta=1e-5),
    )
    spent = result.privacy["epsilon_spent"]
    assert (spent > 0.5).all() and (spent <= 1.0).all()
    assert list(result.history["msps"]) == [MSPS, MSPS]
    metrics = result.evaluate()
    assert np.isfinite(metrics["smape"]) and metrics["smape"] < 25
    # with the shape drowned in noise the model falls back towards a per-series trend
    agent = result.model.agent
    no_shape = agent.model(agent.init_vector(seed=0)).evaluate(result.test_data)["smape"]
    assert metrics["smape"] < no_shape + 2.5


@pytest.mark.xfail(
    reason=(
        "issue 15: revenue's DP noise is set by clip_radius, not by ε. At ε=200 the "
        "statistics still carry noise of std ≈ 0.7 (median sMAPE 8.67 over 10 draws, noise-free "
        "7.12, ε=0.5 about 8.6); this passed on 2081f48 only through one seeded draw, which "
        "privacy noise from OS entropy no longer repeats"
    ),
    strict=False,
)
def test_dp_with_a_large_budget_approaches_the_noise_free_model(federated):
    kwargs = dict(
        agent="revenue",
        num_msps=MSPS,
        rounds=1,
        seed=0,
        samples_per_msp=PERIODS,
        progress=False,
        secure_aggregation="plaintext",
    )
    loose = meshfl.simulate(privacy=DPConfig(epsilon=200.0, delta=1e-5), **kwargs)
    tight = meshfl.simulate(privacy=DPConfig(epsilon=0.5, delta=1e-5), **kwargs)
    noise_free = federated.evaluate()["smape"]
    assert loose.evaluate()["smape"] < noise_free + 0.5
    assert loose.evaluate()["smape"] < tight.evaluate()["smape"]
