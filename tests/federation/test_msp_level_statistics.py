"""MSP-level DP for the counting agents (anomaly's leaf counts, client_health's histograms).

Adjacency: adding or removing one whole MSP (all its rows); a swap is two such steps.

First the attack that kept ``unit="msp"`` refused for these agents: their sample-level
release (noise calibrated to one row) moves with a whole MSP's data by tens of times its
noise, so an observer who knows the two candidate MSPs tells them apart every time, where
ε = 1 at the MSP level allows at most e²/(1 + e²) ≈ 0.88 for a swap. Then the fix: each
MSP's release is scaled to norm C = max_grad_norm (``bounded_contribution``), whatever its
size, and the sum of the MSPs' releases carries noise of the planned sigma·C.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from meshfl.agents import registry
from meshfl.federation import AgentPlan
from meshfl.federation.msp_privacy import bounded_contribution, train_round
from meshfl.federation.records import RoundContext, RoundInstructions
from meshfl.federation.server_app import planned_noise
from meshfl.privacy import DPConfig
from meshfl.privacy.budget import DPStep
from meshfl.privacy.ledger import PrivacyLedger

AGENTS = ["anomaly", "client_health"]
EPSILON, DELTA, C = 1.0, 1e-5, 1.0


def _agent(name: str):
    return registry.get(name)()


def _rows(agent, n: int, seed: int):
    return agent.prepare(agent.synthetic_data(n, seed=seed))


def _sigma(name: str, *, rounds: int = 1, min_msps: int = 3) -> float:
    plan = AgentPlan(
        agent=name,
        rounds=rounds,
        min_msps=min_msps,
        privacy=DPConfig(epsilon=EPSILON, delta=DELTA, unit="msp", max_grad_norm=C),
    )
    return planned_noise(plan)


def _msp_release(agent, local, tmp: Path, *, sigma: float, shares: int, rounds: int, tag: str):
    """One MSP's unit='msp' release through the real path (plan, ledger, clip, noise)."""
    dp = DPConfig(epsilon=EPSILON, delta=DELTA, unit="msp", max_grad_norm=C)
    ins = RoundInstructions(
        agent=agent.name,
        agent_config={},
        sealed=(),
        server_round=1,
        seed=0,
        context=RoundContext(
            run_id="run",
            session="s",
            total_rounds=rounds,
            privacy=dp,
            noise_shares=shares,
            noise_multiplier=sigma,
        ),
    )
    vector = agent.init_vector(seed=0)
    ledger = PrivacyLedger(tmp / tag)
    out = train_round(agent, ins, vector, local, seed=0, ledger=ledger, msp=0)
    assert isinstance(out, tuple), out  # not a Decline
    return out[0], ledger


def _clean(agent, local) -> np.ndarray:
    return agent.local_update(agent.init_vector(seed=0), local, server_round=1, seed=0).vector


def _swap_bound(epsilon: float, delta: float) -> float:
    """Best accuracy of any test between two datasets two add/remove steps apart under
    (ε, δ)-DP: group privacy gives (2ε, (1 + e^ε)δ), and P(correct) <= (e^ε' + δ')/(1 + e^ε')."""
    eps2, delta2 = 2 * epsilon, (1 + math.exp(epsilon)) * delta
    return (math.exp(eps2) + delta2) / (1 + math.exp(eps2))


@pytest.mark.parametrize("name", AGENTS)
def test_sample_level_release_gives_a_whole_msp_away(name):
    # What unit="msp" would release if it simply allowed the sample-level mechanism: one MSP's
    # statistics plus noise calibrated to ONE ROW (sigma for ε = 1 in one round).
    agent = _agent(name)
    sigma = _sigma(name)
    step = DPStep("gaussian", sigma, 1.0, 1, C, "sample")
    a, b = _rows(agent, 2_000, seed=1), _rows(agent, 2_000, seed=2)  # two MSPs' whole data
    shift = _clean(agent, a) - _clean(agent, b)
    direction = shift / np.linalg.norm(shift)
    releases = {
        which: [
            agent.local_update(agent.init_vector(seed=0), local, server_round=1, seed=0, dp=step)
            for _ in range(40)
        ]
        for which, local in (("a", a), ("b", b))
    }
    noise_std = float(np.std(releases["a"][0].vector - _clean(agent, a)))
    # the whole MSP moves the release by over ten times its noise (ε = 1 allows 2/sigma ≈ 0.5
    # for a swap: two MSPs of 2,000 rows drawn from the same distribution, 13x to 17x)
    assert np.linalg.norm(shift) / noise_std > 10
    assert np.linalg.norm(shift) / noise_std > 10 * (2 / sigma)
    # and the optimal (Neyman-Pearson) test, which knows both candidates, never errs
    middle = float(direction @ (_clean(agent, a) + _clean(agent, b)) / 2)
    right = sum(float(direction @ r.vector) > middle for r in releases["a"])
    right += sum(float(direction @ r.vector) <= middle for r in releases["b"])
    accuracy = right / 80
    assert accuracy > 0.97 > _swap_bound(EPSILON, DELTA)


@pytest.mark.parametrize("name", AGENTS)
def test_msp_level_release_bounds_the_same_attack(name, tmp_path):
    agent = _agent(name)
    sigma = _sigma(name)
    a, b = _rows(agent, 2_000, seed=1), _rows(agent, 2_000, seed=2)
    release_a, _ = _msp_release(agent, a, tmp_path, sigma=sigma, shares=1, rounds=1, tag="a")
    release_b, _ = _msp_release(agent, b, tmp_path, sigma=sigma, shares=1, rounds=1, tag="b")
    vector = agent.init_vector(seed=0)
    bounded = {
        which: bounded_contribution(
            agent, agent.local_update(vector, local, server_round=1, seed=0), vector, C
        )
        for which, local in (("a", a), ("b", b))
    }
    # the noise actually added (all shares: what the sum carries) is sigma·C ...
    for which, release in (("a", release_a), ("b", release_b)):
        measured = float(np.std(release.vector - bounded[which]))
        assert measured == pytest.approx(sigma * C, rel=0.06)
    # ... and the swap moves the mean by at most 2C, so the optimal test's accuracy
    # Phi(shift / (2 sigma C)) stays within what ε = 1 allows
    shift = float(np.linalg.norm(bounded["a"] - bounded["b"]))
    assert shift <= 2 * C + 1e-9
    assert norm.cdf(shift / (2 * sigma * C)) < _swap_bound(EPSILON, DELTA)


@pytest.mark.parametrize("name", AGENTS)
@pytest.mark.parametrize("rows", [1, 100_000])
def test_an_msps_contribution_is_at_most_c_whatever_its_size(name, rows):
    agent = _agent(name)
    local = _rows(agent, rows, seed=3)
    vector = agent.init_vector(seed=0)
    raw = agent.local_update(vector, local, server_round=1, seed=0)
    if rows > 1:  # unbounded, the statistics grow with the MSP
        assert np.linalg.norm(raw.vector) > 1_000 * C
    for clip in (C, 0.25):
        contribution = bounded_contribution(agent, raw, vector, clip)
        # scaled, not cut: every non-empty MSP's statistics are longer than C here, so all
        # of the bound carries signal, in the MSP's own proportions
        assert np.linalg.norm(contribution) == pytest.approx(clip, rel=1e-12)
        assert np.linalg.norm(contribution) <= clip * (1 + 1e-12)
        assert np.allclose(contribution * np.linalg.norm(raw.vector) / clip, raw.vector)


def test_client_health_contribution_is_bounded_in_later_rounds_too():
    # After a few trees the gradients shrink; the bound holds for every round's histograms.
    agent = registry.get("client_health")(split_mode="random")
    local = _rows(agent, 5_000, seed=4)
    vector = agent.fit_alone(local, rounds=3, seed=0)
    raw = agent.local_update(vector, local, server_round=4, seed=0)
    contribution = bounded_contribution(agent, raw, vector, C)
    assert np.linalg.norm(contribution) <= C * (1 + 1e-12)
    assert np.linalg.norm(raw.vector) > 10 * C


@pytest.mark.parametrize("name", AGENTS)
def test_the_sum_of_msp_releases_carries_the_planned_noise(name, tmp_path):
    agent = _agent(name)
    m, rounds = 12, 3
    sigma = _sigma(name, rounds=rounds, min_msps=m)
    sizes = [1, 2, 7, 40, 40, 90, 300, 1_000, 3_000, 10_000, 25, 60]
    total_release = np.zeros(agent.update_size(agent.init_vector(seed=0)))
    total_clean = np.zeros_like(total_release)
    vector = agent.init_vector(seed=0)
    for i, n in enumerate(sizes):
        local = _rows(agent, n, seed=10 + i)
        release, ledger = _msp_release(
            agent, local, tmp_path, sigma=sigma, shares=m, rounds=rounds, tag=str(i)
        )
        total_release += release.vector
        raw = agent.local_update(vector, local, server_round=1, seed=0)
        total_clean += bounded_contribution(agent, raw, vector, C)
        # the same ledger event as every unit="msp" round: the planned sigma, charged in full
        [event] = ledger.events(agent.name)
        assert (event.mechanism, event.unit) == ("gaussian", "msp")
        assert (event.noise_multiplier, event.sample_rate, event.steps) == (sigma, 1.0, 1)
    noise = total_release - total_clean
    d = noise.size
    # the sample std of d normal draws is within 4/sqrt(2d) of the truth (relative) at 4 sd
    assert float(np.std(noise)) == pytest.approx(sigma * C, rel=4 / math.sqrt(2 * d))
    assert abs(float(np.mean(noise))) < 4 * sigma * C / math.sqrt(d)
