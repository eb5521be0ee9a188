"""meshfl's accountants against Google's dp-accounting, composing the same event histories.

dp-accounting's PLD accountant is the reference for the tight ε (meshfl's PRV must agree
within 5 %). An RDP bound is by nature looser than PLD (here by 8-17 %), so meshfl's RDP is
checked against dp-accounting's RDP accountant with the same orders (equal to rounding), and
against PLD only for being an upper bound within 25 %.
"""

import functools

import pytest

from meshfl.privacy import accountant as acc
from meshfl.privacy.accountant import calibrate_noise, epsilon_spent
from meshfl.privacy.events import PrivacyEvent

dp_accounting = pytest.importorskip("dp_accounting")

DELTA = 1e-5

# (noise multiplier, sample rate, steps) per event; sample rate 1 is the Gaussian mechanism.
HISTORIES = {
    "dp-sgd": [(1.0, 0.08, 200)],  # ε ≈ 7.8
    "small-eps": [(36.0, 0.08, 200)],  # ε ≈ 0.1
    "gaussian": [(60.0, 1.0, 1)],  # ε ≈ 0.05
    "mixed": [(20.0, 1.0, 1), (30.0, 0.05, 100), (10.0, 0.01, 50)],  # ε ≈ 0.17
    "many-rounds": [(8.0 * (1 + 0.01 * i), 0.02, 20) for i in range(12)],  # ε ≈ 0.11
}


def dp_event(history):
    events = []
    for sigma, q, steps in history:
        gaussian = dp_accounting.GaussianDpEvent(sigma)
        event = gaussian if q == 1.0 else dp_accounting.PoissonSampledDpEvent(q, gaussian)
        events.append(dp_accounting.SelfComposedDpEvent(event, steps))
    return dp_accounting.ComposedDpEvent(events)


@functools.cache
def _pld_epsilon(history, delta):
    accountant = dp_accounting.pld.PLDAccountant()
    return accountant.compose(dp_event(history)).get_epsilon(delta)


def pld_epsilon(history, delta=DELTA):
    return _pld_epsilon(tuple(history), delta)


def rdp_epsilon(history, delta=DELTA):
    accountant = dp_accounting.rdp.RdpAccountant(orders=[float(a) for a in acc._ORDERS])
    return accountant.compose(dp_event(history)).get_epsilon(delta)


def meshfl_events(history):
    return [
        PrivacyEvent("gaussian" if q == 1.0 else "dp-sgd", sigma, q, steps)
        for sigma, q, steps in history
    ]


@pytest.mark.parametrize("name", HISTORIES)
def test_prv_agrees_with_dp_accounting_pld(name):
    history = HISTORIES[name]
    reference = pld_epsilon(history)
    ours = epsilon_spent(meshfl_events(history), delta=DELTA, accountant="prv")
    assert ours == pytest.approx(reference, rel=0.05)
    # In fact within 2 %, and never meaningfully below the reference (both are upper bounds).
    assert reference * 0.995 <= ours <= reference * 1.02


@pytest.mark.parametrize("name", HISTORIES)
def test_rdp_agrees_with_dp_accounting_rdp_and_bounds_pld(name):
    history = HISTORIES[name]
    ours = epsilon_spent(meshfl_events(history), delta=DELTA, accountant="rdp")
    assert ours == pytest.approx(rdp_epsilon(history), rel=1e-9)
    reference = pld_epsilon(history)
    assert reference <= ours <= 1.25 * reference


def test_small_eps_history_is_near_0_1():
    assert 0.08 < pld_epsilon(HISTORIES["small-eps"]) < 0.12


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_calibrated_noise_meets_the_budget_by_dp_accounting_too(accountant):
    history = HISTORIES["mixed"][:2]
    sigma = calibrate_noise(
        epsilon=0.3,
        delta=DELTA,
        sample_rate=0.02,
        steps=300,
        history=meshfl_events(history),
        accountant=accountant,
    )
    reference = pld_epsilon([*history, (sigma, 0.02, 300)])
    assert reference <= 0.3 * 1.005
    if accountant == "prv":  # tight: the budget is (nearly) all used
        assert reference >= 0.3 * 0.97
