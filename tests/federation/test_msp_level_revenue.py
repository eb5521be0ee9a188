"""MSP-level DP for revenue: a whole MSP (all its series and dates) added or removed.

Adjacency: adding or removing one whole MSP; a swap is two such steps. Under it the MSP's
calendar and history length are private too, so ``XᵀX`` and the counts must be noised like
``Xᵀy`` and ``yᵀy``.

First the attack that kept ``unit="msp"`` refused for revenue: its sample-level release
(noise calibrated to one period's value, on ``Xᵀy`` and ``yᵀy`` only) moves with a whole MSP
by many times its noise, and its ``XᵀX`` and counts are released exactly. Then the fix: the
MSP's whole statistics vector (publicly scaled) is scaled to norm C = max_grad_norm and
every entry gets its share of the planned noise; the noise-variance slot carries its known
value.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

# The same release path and bounds as the counting agents' attack tests.
from test_msp_level_statistics import DELTA, EPSILON, C, _clean, _msp_release, _swap_bound

import meshfl
from meshfl.agents import registry
from meshfl.agents.revenue import MSP_SCALES
from meshfl.federation import AgentPlan
from meshfl.federation.msp_privacy import bounded_contribution, msp_statistics
from meshfl.federation.server_app import planned_noise
from meshfl.privacy import DPConfig
from meshfl.privacy.budget import DPStep
from meshfl.privacy.ledger import PrivacyLedger


def _agent():
    return registry.get("revenue")()


def _msp(agent, periods: int, seed: int, *, series: int = 1):
    """One MSP's prepared data: ``series`` synthetic series of ``periods`` periods each."""
    frames = []
    for k in range(series):
        frame = agent.synthetic_data(periods, seed=seed * 100 + k)
        frames.append(frame.assign(series=f"s{k}"))
    return agent.prepare(pd.concat(frames, ignore_index=True))


def _sigma(*, rounds: int = 1, min_msps: int = 3) -> float:
    plan = AgentPlan(
        agent="revenue",
        rounds=rounds,
        min_msps=min_msps,
        privacy=DPConfig(epsilon=EPSILON, delta=DELTA, unit="msp", max_grad_norm=C),
    )
    return planned_noise(plan)


def _bounded(agent, local) -> np.ndarray:
    vector = agent.init_vector(seed=0)
    raw = agent.local_update(vector, local, server_round=1, seed=0)
    return bounded_contribution(agent, raw, vector, C)


def test_sample_level_release_gives_a_whole_msp_away():
    # What unit="msp" would release if it simply allowed the sample-level mechanism: one MSP's
    # statistics with noise calibrated to ONE PERIOD's value (sigma for ε = 1 in one round).
    agent = _agent()
    sigma = _sigma()
    step = DPStep("gaussian", sigma, 1.0, 1, C, "sample")
    # two candidate MSPs: 30 weekly series of 10 years, or one
    a, b = _msp(agent, 520, seed=1, series=30), _msp(agent, 520, seed=2, series=1)
    p = agent.spec.n_features
    m = p * (p + 1) // 2
    noised = slice(m, m + p + 1)  # Xᵀy and yᵀy: the only noisy entries
    releases = {
        which: [
            agent.local_update(agent.init_vector(seed=0), local, server_round=1, seed=0, dp=step)
            for _ in range(40)
        ]
        for which, local in (("a", a), ("b", b))
    }
    clean_a, clean_b = _clean(agent, a), _clean(agent, b)
    noise_std = float(np.sqrt(releases["a"][0].vector[-1]))
    measured = np.std(np.concatenate([r.vector[noised] - clean_a[noised] for r in releases["a"]]))
    assert measured == pytest.approx(noise_std, rel=0.1)
    # the whole MSP moves the noisy statistics alone by many times their noise (ε = 1 allows
    # 2/sigma ≈ 0.5 of it for a swap; here about 18 times the noise) ...
    shift = clean_a[noised] - clean_b[noised]
    assert np.linalg.norm(shift) / noise_std > 10
    assert np.linalg.norm(shift) / noise_std > 3 * (10 * 2 / sigma)
    # ... the optimal (Neyman-Pearson) test on them, which knows both candidates, never errs
    direction = shift / np.linalg.norm(shift)
    middle = float(direction @ (clean_a[noised] + clean_b[noised]) / 2)
    right = sum(float(direction @ r.vector[noised]) > middle for r in releases["a"])
    right += sum(float(direction @ r.vector[noised]) <= middle for r in releases["b"])
    assert right / 80 > 0.97 > _swap_bound(EPSILON, DELTA)
    # ... and XᵀX and the counts travel without noise: the calendar of a whole MSP (how many
    # series, how long) is released exactly
    exact = np.r_[0:m, m + p + 1, m + p + 2]
    for r in releases["a"]:
        np.testing.assert_array_equal(r.vector[exact], clean_a[exact])
    assert clean_a[m + p + 1] == 30 * clean_b[m + p + 1]  # n: 30 series' periods, or one's
    # and on two MSPs alike but for one year of history, the counts alone tell them apart
    shorter = _msp(agent, 468, seed=1, series=30)
    assert _clean(agent, shorter)[m + p + 1] != clean_a[m + p + 1]


def test_msp_level_release_bounds_the_same_attack(tmp_path):
    agent = _agent()
    sigma = _sigma()
    a, b = _msp(agent, 260, seed=1, series=3), _msp(agent, 60, seed=2, series=1)
    release_a, _ = _msp_release(agent, a, tmp_path, sigma=sigma, shares=1, rounds=1, tag="a")
    release_b, _ = _msp_release(agent, b, tmp_path, sigma=sigma, shares=1, rounds=1, tag="b")
    bounded = {"a": _bounded(agent, a), "b": _bounded(agent, b)}
    for which, release in (("a", release_a), ("b", release_b)):
        # the released vector is the noisy bounded one, scales undone: re-scaled, the noise
        # actually added (all shares: what the sum carries) is sigma·C on every entry
        assert release.vector.size == agent.stats_size
        scaled = msp_statistics(agent, release.vector)
        assert float(np.std(scaled - bounded[which])) == pytest.approx(sigma * C, rel=0.15)
        # the noise-variance slot carries its known, public value: not noise
        known = (sigma * C / MSP_SCALES["Xty"]) ** 2 * agent.msp_noise_factor()
        assert release.vector[-1] == pytest.approx(known)
        assert release.vector[-1] > 0
        # only the example count leaves the MSP besides the vector
        assert set(release.metrics) == {"examples"}
    # the swap moves the mean by at most 2C, so the optimal test's accuracy
    # Phi(shift / (2 sigma C)) stays within what ε = 1 allows
    shift = float(np.linalg.norm(bounded["a"] - bounded["b"]))
    assert shift <= 2 * C + 1e-9
    assert norm.cdf(shift / (2 * sigma * C)) < _swap_bound(EPSILON, DELTA)


@pytest.mark.parametrize(("periods", "series"), [(20, 1), (60, 1), (520, 1), (260, 20)])
def test_an_msps_contribution_is_at_most_c_whatever_its_size(periods, series):
    agent = _agent()
    local = _msp(agent, periods, seed=3, series=series)
    vector = agent.init_vector(seed=0)
    raw = agent.local_update(vector, local, server_round=1, seed=0)
    scaled = msp_statistics(agent, raw.vector)
    assert scaled.size == agent.stats_size - 1  # the noise slot is not a statistic
    if periods * series >= 500:  # unbounded, the statistics grow with the MSP
        assert np.linalg.norm(scaled) > 4 * C
    for clip in (C, 0.05):
        contribution = bounded_contribution(agent, raw, vector, clip)
        assert np.linalg.norm(contribution) <= clip * (1 + 1e-12)
        if np.linalg.norm(scaled) > clip:
            # scaled, not cut: all of the bound carries signal, in the MSP's own proportions
            assert np.linalg.norm(contribution) == pytest.approx(clip, rel=1e-12)
            assert np.allclose(contribution * np.linalg.norm(scaled) / clip, scaled)
        else:  # a small MSP's statistics fit the bound: kept as they are
            np.testing.assert_array_equal(contribution, scaled)


def test_the_sum_of_msp_releases_carries_the_planned_noise(tmp_path):
    agent = _agent()
    m, rounds = 12, 3
    sigma = _sigma(rounds=rounds, min_msps=m)
    shapes = [(20, 1), (30, 1), (60, 1), (104, 1), (260, 2), (520, 1)] * 2
    total_release = np.zeros(agent.stats_size)
    total_clean = np.zeros(agent.stats_size - 1)
    for i, (periods, series) in enumerate(shapes):
        local = _msp(agent, periods, seed=10 + i, series=series)
        release, ledger = _msp_release(
            agent, local, tmp_path, sigma=sigma, shares=m, rounds=rounds, tag=str(i)
        )
        total_release += release.vector
        total_clean += _bounded(agent, local)
        # the same ledger event as every unit="msp" round: the planned sigma, charged in full
        [event] = ledger.events(agent.name)
        assert (event.mechanism, event.unit) == ("gaussian", "msp")
        assert (event.noise_multiplier, event.sample_rate, event.steps) == (sigma, 1.0, 1)
    noise = msp_statistics(agent, total_release) - total_clean
    d = noise.size
    assert float(np.std(noise)) == pytest.approx(sigma * C, rel=4 / math.sqrt(2 * d))
    assert abs(float(np.mean(noise))) < 4 * sigma * C / math.sqrt(d)
    # the sum's noise slot is the variance of the noise it carries on Xᵀy (m shares of it),
    # in Xᵀy's own units (the public scale undone)
    # (times the public factor for the noise that XᵀX adds to the solve's observation)
    known = (sigma * C / MSP_SCALES["Xty"]) ** 2 * agent.msp_noise_factor()
    assert total_release[-1] == pytest.approx(known)
    assert 20 < agent.msp_noise_factor() < 30


def test_noisy_shared_fit_is_solved_and_used_by_every_msp(tmp_path):
    # A noisy XᵀX (not PSD) still gives a finite shared shape; each MSP's local fit uses it.
    agent = _agent()
    locals_ = [_msp(agent, 60 + 8 * i, seed=30 + i) for i in range(6)]
    summed = np.zeros(agent.stats_size)
    for i, local in enumerate(locals_):
        release, _ = _msp_release(
            agent, local, tmp_path, sigma=_sigma(min_msps=6), shares=6, rounds=1, tag=str(i)
        )
        summed += release.vector
    p = agent.spec.n_features
    vector = agent.combine(agent.init_vector(seed=0), summed, 6.0, server_round=1)
    fit = agent.shared_fit(vector)
    assert np.all(np.isfinite(fit.beta)) and np.all(np.isfinite(fit.noise_cov))
    assert fit.precision.shape == (p, p)
    assert np.linalg.eigvalsh(fit.precision).min() >= agent.spec.ridge * (1 - 1e-9)
    for local in locals_:
        metrics = agent.evaluate(vector, local)
        assert np.isfinite(metrics["smape"]) and 0 <= metrics["coverage"] <= 1


def test_msp_level_scaling_keeps_the_signal():
    # Without noise, the sum of bounded statistics gives about the shape of the plain sum:
    # the weights (min(1, C/‖S_i‖)) reweight the largest MSPs, they do not bias the shape. (The
    # ridge acts on the weighted sum, about C/‖S_i‖ times smaller per MSP: a tiny one here,
    # so that both solves are least squares; 30 MSPs weigh too little for ridge=1.)
    agent = registry.get("revenue")(ridge=1e-4)
    locals_ = [_msp(agent, 104, seed=50 + i) for i in range(30)]
    vector = agent.init_vector(seed=0)
    plain = sum(_clean(agent, x) for x in locals_)
    weighted = sum(
        np.concatenate([_bounded(agent, x) / agent._msp_scales(), [0.0]]) for x in locals_
    )
    fits = [
        agent.shared_fit(agent.combine(vector, s, 30.0, server_round=1)).beta
        for s in (plain, weighted)
    ]
    assert np.linalg.norm(fits[0] - fits[1]) < 0.25 * np.linalg.norm(fits[0])


@pytest.mark.filterwarnings("ignore::UserWarning")  # masking off; 20 MSPs are few for ε = 1
def test_simulate_revenue_under_msp_level_dp_charges_the_planned_sigma():
    result = meshfl.simulate(
        agent="revenue", num_msps=20, rounds=1, seed=0, progress=False, samples_per_msp=40,
        privacy=DPConfig(epsilon=1.0, unit="msp"), masking=False,
    )  # fmt: skip
    sigma = planned_noise(result.plan)
    assert (result.privacy["epsilon_spent"] <= 1.0).all()
    for msp in range(20):
        events = PrivacyLedger(result.state_dir / f"msp-{msp}" / "privacy").events("revenue")
        assert [(e.noise_multiplier, e.sample_rate, e.unit) for e in events] in (
            [],  # not drawn this round
            [(sigma, 1.0, "msp")],
        )
    assert np.all(np.isfinite(result.model.vector))
    assert np.isfinite(result.history["smape"].iloc[-1])


def test_msp_level_revenue_needs_secure_aggregation():
    with pytest.raises(meshfl.ConfigError, match="plaintext"):
        meshfl.simulate(
            agent="revenue", num_msps=5, rounds=1, progress=False,
            privacy=DPConfig(epsilon=1.0, unit="msp"), secure_aggregation="plaintext",
        )  # fmt: skip
