"""Signal-to-noise estimates: the formulas, their coarsening, what travels, what a run reports."""

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import meshfl
from meshfl import agents
from meshfl.agents import Update
from meshfl.federation.records import decode_update, encode_update
from meshfl.privacy import DPConfig, PrivacyEvent
from meshfl.privacy.budget import DPStep, msp_level_noise_report
from meshfl.privacy.snr import (
    coarse,
    dpsgd_snr,
    gaussian_snr,
    median_snr,
    msp_level_snr,
    update_snr,
)
from meshfl.secure.backend import Sealed

FAST = {name: dict(agents.get(name).fast_config) for name in agents.built()}
"""Each agent's fast test config (``Agent.fast_config``)."""


def is_power_of_two(value: float) -> bool:
    return value > 0 and math.isfinite(value) and math.log2(value).is_integer()


# -- the formulas ----------------------------------------------------------------------------
@given(st.floats(min_value=1e-30, max_value=1e30, allow_nan=False))
def test_coarse_is_a_power_of_two_within_a_factor_sqrt2(snr):
    out = coarse(snr)
    assert is_power_of_two(out)
    assert 2**-0.5 - 1e-12 <= out / snr <= 2**0.5 + 1e-12


def test_coarse_keeps_zero_and_infinity_and_refuses_nonsense():
    assert coarse(0.0) == 0.0 and coarse(math.inf) == math.inf
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="signal-to-noise"):
            coarse(bad)


def test_dpsgd_snr_is_batch_over_noise_norm():
    # 64 clipped gradients of norm C at most against noise of norm sigma·C·sqrt(d)
    assert dpsgd_snr(64, 2.0, 256) == pytest.approx(64 / (2.0 * 16))
    assert dpsgd_snr(64, 4.0, 256) == pytest.approx(dpsgd_snr(64, 2.0, 256) / 2)
    assert dpsgd_snr(64, 0.0, 256) == math.inf


def test_gaussian_snr_estimates_signal_norm_over_noise_norm_from_the_noisy_vector():
    rng = np.random.default_rng(0)
    d, std = 20_000, 3.0
    for true in (0.5, 2.0, 8.0):
        signal = rng.normal(size=d)
        signal *= true * std * math.sqrt(d) / np.linalg.norm(signal)
        released = signal + rng.normal(0.0, std, d)
        assert gaussian_snr(released, std) == pytest.approx(true, rel=0.05)
    assert gaussian_snr(rng.normal(0.0, std, d), std) < 0.05  # pure noise
    # a per-coordinate std weighs each coordinate by its own noise
    stds = np.where(np.arange(d) % 2 == 0, 1.0, 10.0)
    released = stds * 2.0 + rng.normal(0.0, stds)
    assert gaussian_snr(released, stds) == pytest.approx(2.0, rel=0.05)


def test_msp_level_snr_is_the_inverse_of_the_drowning_ratio_it_warns_about():
    dp = DPConfig(epsilon=0.1, noise_multiplier=3.0, unit="msp")
    report = msp_level_noise_report(dp, dim=400, msps_per_round=5, sample_rate=1.0, rounds=2)
    assert report is not None and "update is 12x the largest" in report
    assert msp_level_snr(5, 3.0, 400, shares=5) == pytest.approx(1 / 12)
    # more contributors than noise shares: each adds 1/m of the variance
    assert msp_level_snr(20, 3.0, 400, shares=5) == pytest.approx(math.sqrt(100) / 60)
    assert msp_level_snr(0, 3.0, 400, shares=5) == 0.0


def test_median_keeps_a_power_of_two():
    assert median_snr([8.0, 1.0, None, 4.0, 2.0]) == 2.0
    assert median_snr([0.5, 0.5, 4.0]) == 0.5
    assert median_snr([None, None]) is None and median_snr([]) is None


# -- what an MSP computes and sends ------------------------------------------------------------
@pytest.fixture(params=agents.built())
def agent(request):
    return agents.get(request.param)(FAST.get(request.param, {}))


def test_every_agents_private_update_has_a_coarse_snr(agent):
    local = agent.prepare(agent.synthetic_data(120, seed=0))
    mechanism, rate, steps = agent.privacy_shape(local)
    step = DPStep(mechanism, 1.0, rate, steps, 1.0, "sample")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resource_allocation's RNG note
        update = agent.local_update(
            agent.init_vector(seed=0), local, server_round=1, seed=0, dp=step
        )
    snr = update_snr(agent, update, records=len(local))
    assert snr is not None and (snr == 0.0 or is_power_of_two(snr)), (agent.name, snr)
    if mechanism == "dp-sgd":
        assert snr == coarse(dpsgd_snr(rate * len(local), 1.0, update.vector.size))
    else:
        assert agent.noised_release(update) is not None
    # without a mechanism there is nothing to estimate
    plain = Update(update.vector, update.weight)
    assert update_snr(agent, plain, records=len(local)) is None


def test_snr_travels_in_the_privacy_record_and_is_optional():
    sealed = Sealed(backend="plaintext", key_id="k", length=3, chunks=(b"x",))

    def reply(content):  # what decode_update reads of a reply
        return SimpleNamespace(content=content, has_error=lambda: False)

    with_snr = decode_update(reply(encode_update(sealed, metrics={}, msp=1, snr=0.25)))
    assert with_snr.snr == 0.25
    without = decode_update(reply(encode_update(sealed, metrics={}, msp=1)))
    assert without.snr is None


def test_the_dpsgd_estimate_does_not_read_the_rows():
    """A function of the plan (sigma, rate, steps), the record count and the update's length."""
    agent = agents.get("threat_intel")(FAST["threat_intel"])
    event = PrivacyEvent("dp-sgd", noise_multiplier=2.0, sample_rate=0.25, steps=4)
    a = Update(np.zeros(1024), 1.0, privacy_event=event)
    b = Update(np.ones(1024), 1.0, privacy_event=event)
    assert update_snr(agent, a, records=512) == update_snr(agent, b, records=512) == 2.0


# -- what a run reports ------------------------------------------------------------------------
def _snr_history(agent, epsilon, **kw):
    args = dict(
        agent=agent,
        num_msps=3,
        rounds=2,
        seed=0,
        progress=False,
        samples_per_msp=100,
        secure_aggregation="plaintext",
        agent_config=FAST[agent],
    )
    args.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = meshfl.simulate(privacy=DPConfig(epsilon=epsilon, delta=1e-5), **args)
    return result.history["snr"]


@pytest.mark.parametrize("agent", ["threat_intel", "anomaly"])
def test_the_round_snr_is_a_power_of_two_and_shrinks_with_epsilon(agent):
    by_epsilon = {eps: _snr_history(agent, eps) for eps in (0.01, 1.0, 16.0)}
    for values in by_epsilon.values():
        assert all(v == 0.0 or is_power_of_two(v) for v in values), values
    small, mid, large = (float(by_epsilon[e].iloc[-1]) for e in (0.01, 1.0, 16.0))
    assert small < mid < large, (small, mid, large)


def test_msp_level_snr_is_computed_by_the_coordinator():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = meshfl.simulate(
            agent="threat_intel",
            num_msps=3,
            rounds=1,
            seed=0,
            progress=False,
            samples_per_msp=60,
            agent_config=FAST["threat_intel"],
            privacy=DPConfig(epsilon=1.0, unit="msp"),
        )
    snr = float(result.history["snr"].iloc[0])
    assert is_power_of_two(snr)
    from meshfl.federation.server_app import planned_noise

    plan = result.plan
    assert plan is not None
    dim = result.model.vector.size
    expected = msp_level_snr(3, planned_noise(plan), dim, shares=plan.min_msps)
    assert snr == coarse(expected)
