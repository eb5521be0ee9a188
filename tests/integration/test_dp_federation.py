"""Differential privacy end to end: budgets are met, never exceeded, across restarts."""

import numpy as np
import pytest

import meshfl
from meshfl.privacy import DPConfig
from meshfl.privacy.accountant import epsilon_spent
from meshfl.privacy.events import PrivacyEvent
from meshfl.privacy.ledger import PrivacyLedger

pytestmark = pytest.mark.integration

FAST_ANOMALY = {"trees_per_round": 5, "depth": 6}


def test_threat_intel_at_the_mission_target_stays_within_epsilon():
    result = meshfl.simulate(
        agent="threat_intel",
        num_msps=5,
        rounds=5,
        seed=0,
        progress=False,
        privacy=DPConfig(epsilon=0.1, delta=1e-5),
    )
    spent = result.privacy["epsilon_spent"]
    assert len(spent) == 5 and (spent > 0.05).all() and (spent <= 0.1).all()
    assert list(result.history["msps"]) == [5] * 5
    assert result.history["epsilon_max"].is_monotonic_increasing
    # every MSP's own ledger says the same as the coordinator's mirror
    for msp, eps in enumerate(spent):
        ledger = PrivacyLedger(result.state_dir / f"msp-{msp}" / "privacy")
        assert ledger.epsilon("threat_intel", delta=1e-5) == pytest.approx(eps)
        assert len(ledger.events("threat_intel")) == 5


def test_rounds_beyond_the_budget_are_declined_and_epsilon_never_exceeds(tmp_path):
    sigma, budget = 4.0, 2.0
    event = PrivacyEvent(mechanism="gaussian", noise_multiplier=sigma, steps=1)
    affordable = max(k for k in range(1, 20) if epsilon_spent([event] * k, delta=1e-5) <= budget)
    assert 1 <= affordable < 6
    dp = DPConfig(epsilon=budget, noise_multiplier=sigma)
    kwargs = dict(
        agent="anomaly",
        num_msps=3,
        seed=0,
        progress=False,
        samples_per_msp=100,
        agent_config=FAST_ANOMALY,
        privacy=dp,
        state_dir=tmp_path,
    )
    first = meshfl.simulate(rounds=6, **kwargs)
    trained = first.history[~first.history["skipped"]]
    assert len(trained) == affordable
    assert first.stopped_reason and "privacy budget is spent" in first.stopped_reason
    assert (first.privacy["epsilon_spent"] <= budget).all()
    assert (first.privacy["declined_rounds"] == 1).all()

    # "restart" every MSP: a second run on the same state directories trains nothing more
    second = meshfl.simulate(rounds=2, **kwargs)
    assert second.history["skipped"].all() and second.history["declined"].iloc[0] == 3
    for msp in range(3):
        ledger = PrivacyLedger(tmp_path / f"msp-{msp}" / "privacy")
        assert len(ledger.events("anomaly")) == affordable
        assert ledger.epsilon("anomaly", delta=1e-5) <= budget


def test_calibrated_budget_is_spread_over_runs_and_exhausted_cleanly(tmp_path):
    dp = DPConfig(epsilon=0.5)
    kwargs = dict(
        agent="anomaly",
        num_msps=3,
        seed=0,
        progress=False,
        samples_per_msp=100,
        agent_config=FAST_ANOMALY,
        privacy=dp,
        state_dir=tmp_path,
    )
    first = meshfl.simulate(rounds=3, **kwargs)
    assert (first.privacy["epsilon_spent"] <= 0.5).all()
    assert (first.privacy["epsilon_spent"] > 0.45).all()  # the plan spends what it may
    again = meshfl.simulate(rounds=3, **kwargs)
    assert again.history["skipped"].all() and again.stopped_reason
    assert (again.privacy["epsilon_spent"] <= 0.5).all()


def test_anomaly_with_gaussian_counts_still_detects():
    result = meshfl.simulate(
        agent="anomaly", num_msps=5, rounds=3, seed=0, progress=False, privacy=DPConfig(epsilon=1.0)
    )
    assert result.evaluate()["auc"] > 0.8
    assert (result.privacy["epsilon_spent"] <= 1.0).all()


def test_msp_level_dp_runs_and_warns_when_noise_swamps_signal():
    kwargs = dict(
        agent="threat_intel",
        num_msps=5,
        rounds=2,
        seed=0,
        progress=False,
        agent_config={"encoder": "tiny"},
        samples_per_msp=80,
    )
    with pytest.warns(UserWarning, match="needs about .* MSPs per round"):
        result = meshfl.simulate(privacy=DPConfig(epsilon=0.1, unit="msp"), **kwargs)
    assert (result.privacy["epsilon_spent"] <= 0.1).all()
    assert list(result.history["msps"]) == [5, 5]
    assert np.all(np.isfinite(result.model.vector))


def test_msp_level_dp_is_accepted_for_revenue():
    # revenue bounds its whole statistics vector per MSP now (XᵀX and the counts included:
    # tests/federation/test_msp_level_revenue.py); the plan is no longer refused
    from meshfl.federation import AgentPlan

    plan = AgentPlan(
        agent="revenue", rounds=1, min_msps=3, privacy=DPConfig(epsilon=1.0, unit="msp")
    )
    assert plan.privacy is not None and plan.privacy.unit == "msp"


MSP_LEVEL = [
    ("anomaly", FAST_ANOMALY),
    ("client_health", {"split_mode": "random", "max_depth": 2}),
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # masking off; 20 MSPs are few for ε = 1
@pytest.mark.parametrize(("agent", "config"), MSP_LEVEL)
def test_msp_level_dp_for_counting_agents_charges_every_msp_the_planned_sigma(agent, config):
    from meshfl.federation.server_app import planned_noise

    result = meshfl.simulate(
        agent=agent, num_msps=20, rounds=2, seed=0, progress=False, agent_config=config,
        samples_per_msp=30, privacy=DPConfig(epsilon=1.0, unit="msp"), masking=False,
    )  # fmt: skip
    sigma = planned_noise(result.plan)
    assert (result.privacy["epsilon_spent"] <= 1.0).all()
    assert not result.history["skipped"].any()
    for msp in range(20):
        events = PrivacyLedger(result.state_dir / f"msp-{msp}" / "privacy").events(agent)
        assert [(e.noise_multiplier, e.sample_rate, e.unit) for e in events] == [
            (sigma, 1.0, "msp")
        ] * 2
    assert np.all(np.isfinite(result.model.vector))


@pytest.mark.filterwarnings("ignore:masking is off")
@pytest.mark.parametrize(("agent", "config", "floor"), [(*MSP_LEVEL[0], 0.8), (*MSP_LEVEL[1], 0.6)])
def test_msp_level_scaling_keeps_the_signal(agent, config, floor):
    # With little noise (a large ε), models built from every MSP's statistics scaled to norm
    # C still detect: the scaling weights MSPs, it does not scramble what each one counts.
    result = meshfl.simulate(
        agent=agent, num_msps=20, rounds=2, seed=0, progress=False, agent_config=config,
        samples_per_msp=60, privacy=DPConfig(epsilon=200.0, unit="msp"), masking=False,
    )  # fmt: skip
    assert result.history["auc"].iloc[-1] > floor
