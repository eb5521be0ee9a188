"""The text agents' closed-form head (trainer="closed_form") under sample-level DP."""

from __future__ import annotations

import numpy as np
import pytest

import meshfl
from meshfl.agents import get
from meshfl.models import closed_form
from meshfl.privacy import DPConfig, PrivacyLedger
from meshfl.privacy.accountant import PrivacyBudgetExhausted
from meshfl.privacy.budget import DPStep, plan_round
from meshfl.privacy.noise import record_releases_for_tests

CLOSED = {"encoder": "tiny", "trainer": "closed_form"}


def _prepared(name: str, n: int, **config: object):
    agent = get(name)({**CLOSED, **config})
    return agent, agent.prepare(agent.synthetic_data(n, seed=0))


@pytest.mark.parametrize("name", ["threat_intel", "compliance"])
def test_release_carries_the_calibrated_noise_and_never_the_same(name: str) -> None:
    agent, local = _prepared(name, 200)
    sigma = 3.0
    step = DPStep("gaussian", sigma, 1.0, 1, 1.0, "sample")
    vector = agent.init_vector(seed=0)
    clean = agent.local_update(vector, local, server_round=1, seed=0).vector
    with record_releases_for_tests() as records:
        first = agent.local_update(vector, local, server_round=1, seed=0, dp=step)
        second = agent.local_update(vector, local, server_round=1, seed=0, dp=step)
    layout = agent.layout
    std = sigma * closed_form.sensitivity(layout, agent.membership_cap())
    assert [r.std for r in records] == pytest.approx([std, std])
    noise = first.vector[layout.private] - clean[layout.private]
    assert np.std(noise) == pytest.approx(std, rel=0.1)
    assert abs(np.mean(noise)) < 5 * std / np.sqrt(noise.size)
    # the same seed, data and step: the noise comes from OS entropy, not from the seed
    assert not np.allclose(first.vector, second.vector)
    assert np.std(first.vector[layout.private] - second.vector[layout.private]) == pytest.approx(
        np.sqrt(2) * std, rel=0.1
    )
    assert first.vector[-1] == pytest.approx(std**2)  # the public noise variance travels
    assert first.privacy_event.mechanism == "gaussian"
    released, noise_std = agent.noised_release(first)
    assert noise_std == pytest.approx(std) and released.size == layout.size - 1


def test_compliance_sensitivity_is_bounded_by_max_labels() -> None:
    agent = get("compliance")({**CLOSED, "max_labels": 2})
    assert agent.membership_cap() == 3.0
    assert closed_form.sensitivity(agent.layout, 3.0) < closed_form.sensitivity(
        agent.layout, float(len(agent.task_sizes()))
    )


def test_epsilon_is_charged_to_the_ledger_and_stays_in_budget(tmp_path) -> None:
    budget = DPConfig(epsilon=0.1, delta=1e-5)
    result = meshfl.simulate(
        agent="threat_intel", num_msps=3, rounds=2, seed=0, progress=False,
        agent_config=CLOSED, samples_per_msp=100, privacy=budget, state_dir=tmp_path,
        secure_aggregation="plaintext",
    )  # fmt: skip
    spent = result.privacy["epsilon_spent"]
    assert (spent <= 0.1).all() and (spent > 0.09).all()
    for msp in range(3):
        ledger = PrivacyLedger(tmp_path / f"msp-{msp}" / "privacy")
        events = ledger.events("threat_intel")
        assert [e.mechanism for e in events] == ["gaussian", "gaussian"]
        assert all(e.sample_rate == 1.0 and e.steps == 1 for e in events)
        assert ledger.epsilon("threat_intel", delta=1e-5) <= 0.1
        with pytest.raises(PrivacyBudgetExhausted):  # nothing more fits
            plan_round(
                budget, events, mechanism="gaussian", sample_rate=1.0, steps=1, rounds_left=1
            )
