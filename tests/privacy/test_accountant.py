import math
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp

from meshfl.config.errors import ConfigError, MeshflError
from meshfl.privacy import accountant as acc
from meshfl.privacy.accountant import PrivacyBudgetExhausted, calibrate_noise, epsilon_spent
from meshfl.privacy.events import PrivacyEvent

DELTA = 1e-5


def sgd(sigma: float, q: float = 0.08, steps: int = 200) -> PrivacyEvent:
    return PrivacyEvent("dp-sgd", noise_multiplier=sigma, sample_rate=q, steps=steps)


def gaussian(sigma: float, steps: int = 1) -> PrivacyEvent:
    return PrivacyEvent("gaussian", noise_multiplier=sigma, sample_rate=1.0, steps=steps)


# -- epsilon_spent -----------------------------------------------------------------------------


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_no_private_event_spends_nothing(accountant):
    assert epsilon_spent([], delta=DELTA, accountant=accountant) == 0.0
    none = [PrivacyEvent.none(), PrivacyEvent("none", steps=10)]
    assert epsilon_spent(none, delta=DELTA, accountant=accountant) == 0.0
    # Nothing released: no steps, or a sample rate of 0.
    idle = [sgd(1.0, steps=0), sgd(1.0, q=0.0)]
    assert epsilon_spent(idle, delta=DELTA, accountant=accountant) == 0.0


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
@pytest.mark.parametrize("sigma", [0.0, -1.0, math.nan, math.inf])
def test_an_event_without_valid_noise_makes_epsilon_infinite(accountant, sigma):
    events = [sgd(1.0), sgd(sigma)]
    assert epsilon_spent(events, delta=DELTA, accountant=accountant) == math.inf


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_order_does_not_matter_and_equal_events_merge(accountant):
    a, b = sgd(1.0, steps=100), gaussian(5.0)
    one = epsilon_spent([a, b, a], delta=DELTA, accountant=accountant)
    assert epsilon_spent([b, a, a], delta=DELTA, accountant=accountant) == one
    assert epsilon_spent([sgd(1.0, steps=200), b], delta=DELTA, accountant=accountant) == one


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_more_events_and_less_noise_spend_more(accountant):
    def eps(events):
        return epsilon_spent(events, delta=DELTA, accountant=accountant)

    assert eps([sgd(2.0)]) < eps([sgd(2.0), sgd(4.0)]) < eps([sgd(2.0), sgd(4.0), gaussian(3.0)])
    assert eps([sgd(4.0)]) < eps([sgd(2.0)]) < eps([sgd(1.0)])
    # A larger delta buys a smaller epsilon.
    assert epsilon_spent([sgd(2.0)], delta=1e-3, accountant=accountant) < eps([sgd(2.0)])


def test_prv_is_tighter_than_rdp():
    for events in ([sgd(1.0)], [sgd(25.0)], [gaussian(60.0)]):
        prv = epsilon_spent(events, delta=DELTA, accountant="prv")
        rdp = epsilon_spent(events, delta=DELTA, accountant="rdp")
        assert prv < rdp < 1.3 * prv


@settings(max_examples=40, deadline=None)
@given(
    q=st.floats(1e-3, 1.0),
    steps=st.integers(1, 2000),
    sigma=st.floats(0.5, 200.0),
    ratio=st.floats(1.01, 3.0),
)
def test_rdp_epsilon_decreases_with_noise(q, steps, sigma, ratio):
    low = epsilon_spent([sgd(sigma, q, steps)], delta=DELTA, accountant="rdp")
    high = epsilon_spent([sgd(sigma * ratio, q, steps)], delta=DELTA, accountant="rdp")
    assert 0.0 <= high <= low < math.inf


@pytest.mark.parametrize(("q", "sigma"), [(0.01, 0.7), (0.08, 1.0), (0.3, 4.0), (1.0, 20.0)])
def test_vectorised_rdp_matches_opacus_where_opacus_is_exact(q, sigma):
    orders = acc._ORDERS[acc._ORDERS < 64]
    reference = compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=list(orders))
    np.testing.assert_allclose(acc._rdp_one_step(sigma, q)[: len(orders)], reference, rtol=1e-9)


def test_rdp_stays_nonnegative_at_large_orders():
    # Opacus' fractional-order series returns negative RDP here; the log-sum-exp does not.
    rdp = acc._rdp_one_step(25.0, 0.08)
    assert np.all(rdp >= 0) and np.all(np.diff(rdp) >= 0)  # RDP grows with the order


def test_extended_orders_certify_what_opacus_default_orders_cannot():
    event = gaussian(1000.0)  # almost no privacy loss
    opacus_rdp = RDPAccountant()
    opacus_rdp.history = [(1000.0, 1.0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        floor = opacus_rdp.get_epsilon(DELTA)
    assert floor > 0.1  # the ≈ 0.103 floor of the default orders
    assert epsilon_spent([event], delta=DELTA, accountant="rdp") < 0.01
    assert epsilon_spent([event], delta=DELTA, accountant="prv") < 0.01


@pytest.mark.parametrize(
    "history",
    [[(1.0, 0.08, 200)], [(20.0, 1.0, 1), (30.0, 0.05, 100), (10.0, 0.01, 50)]],
    ids=["dp-sgd", "mixed"],
)
def test_prv_agrees_with_opacus_prv_accountant(history):
    """The fast composition reproduces Opacus' PRVAccountant run with the same error bound."""
    steps = acc._merge(history)
    eps_rdp = acc._rdp_epsilon(steps, DELTA)
    ours = acc._prv_epsilon(steps, DELTA, eps_rdp)
    eps_error = 2.0 ** math.floor(math.log2(min(max(0.01 * eps_rdp, 2.0**-11), 2.0**-7)))
    opacus = PRVAccountant()
    opacus.history = list(history)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = opacus.get_epsilon(DELTA, eps_error=eps_error)
    assert ours == pytest.approx(reference, rel=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"delta": "1e-5"}, "delta"),
        ({"delta": DELTA, "accountant": "gdp"}, "accountant"),
    ],
)
def test_epsilon_spent_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ConfigError, match=f"'{name}' parameter of epsilon_spent"):
        epsilon_spent([sgd(1.0)], **kwargs)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (PrivacyEvent("laplace", 1.0, 0.1, 10), "mechanism"),  # type: ignore[arg-type]
        (PrivacyEvent("dp-sgd", 1.0, 1.5, 10), "sample_rate"),
        (PrivacyEvent("dp-sgd", 1.0, 0.1, -1), "steps"),
    ],
)
def test_epsilon_spent_rejects_malformed_events(event, field):
    with pytest.raises(ConfigError, match=f"Event 0 of 'events'.*{field}="):
        epsilon_spent([event], delta=DELTA)
    with pytest.raises(ConfigError, match="must hold PrivacyEvent objects"):
        epsilon_spent([{"mechanism": "dp-sgd"}], delta=DELTA)  # type: ignore[list-item]


# -- calibrate_noise ---------------------------------------------------------------------------


def calibrated_event(sigma: float, q: float, steps: int) -> PrivacyEvent:
    return sgd(sigma, q, steps)


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
@pytest.mark.parametrize(
    ("epsilon", "q", "steps"),
    [(1.0, 0.02, 500), (0.1, 0.02, 500), (0.1, 1.0, 10), (8.0, 0.1, 300)],
)
def test_calibrated_noise_fits_and_is_tight(accountant, epsilon, q, steps):
    tolerance = 0.01
    sigma = calibrate_noise(
        epsilon=epsilon, delta=DELTA, sample_rate=q, steps=steps, accountant=accountant
    )

    def eps(s):
        return epsilon_spent([calibrated_event(s, q, steps)], delta=DELTA, accountant=accountant)

    assert eps(sigma) <= epsilon
    assert eps(sigma * (1 - 2 * tolerance)) > epsilon


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_epsilon_0_1_is_certifiable(accountant):
    sigma = calibrate_noise(
        epsilon=0.1, delta=1e-5, sample_rate=0.01, steps=1000, accountant=accountant
    )
    event = calibrated_event(sigma, 0.01, 1000)
    assert epsilon_spent([event], delta=1e-5, accountant=accountant) <= 0.1
    assert math.isfinite(sigma)


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_history_leaves_less_budget_so_more_noise_is_needed(accountant):
    kwargs: dict[str, Any] = {"epsilon": 1.0, "delta": DELTA, "sample_rate": 0.02, "steps": 200}
    fresh = calibrate_noise(**kwargs, accountant=accountant)
    history = [sgd(3.0, 0.02, 200), gaussian(20.0)]
    spent = epsilon_spent(history, delta=DELTA, accountant=accountant)
    assert 0 < spent < 1.0
    later = calibrate_noise(**kwargs, history=history, accountant=accountant)
    assert later > fresh * 1.05
    total = epsilon_spent([*history, sgd(later, 0.02, 200)], delta=DELTA, accountant=accountant)
    assert spent < total <= 1.0


def test_a_round_by_round_plan_spends_the_budget_evenly_and_never_exceeds_it():
    rounds = 6
    history: list[PrivacyEvent] = []
    for done in range(rounds):
        sigma = calibrate_noise(
            epsilon=0.5,
            delta=DELTA,
            sample_rate=0.05,
            steps=20 * (rounds - done),  # this round and every round still planned
            history=history,
        )
        history.append(sgd(sigma, 0.05, 20))
        assert epsilon_spent(history, delta=DELTA) <= 0.5
    sigmas = [event.noise_multiplier for event in history]
    assert max(sigmas) / min(sigmas) < 1.05
    assert epsilon_spent(history, delta=DELTA) > 0.5 * 0.97


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_exhausted_budget_raises_and_says_the_msp_declines(accountant):
    history = [sgd(1.0, 0.08, 200)]  # ε ≈ 8
    spent = epsilon_spent(history, delta=DELTA, accountant=accountant)
    with pytest.raises(PrivacyBudgetExhausted, match="declines") as info:
        calibrate_noise(
            epsilon=1.0,
            delta=DELTA,
            sample_rate=0.01,
            steps=10,
            history=history,
            accountant=accountant,
        )
    assert isinstance(info.value, MeshflError)
    assert info.value.spent == pytest.approx(spent)
    assert info.value.budget == 1.0
    assert f"{spent:.4g}" in str(info.value)


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_a_budget_no_noise_can_meet_raises(accountant):
    with pytest.raises(PrivacyBudgetExhausted, match="even a noise multiplier of 10000"):
        calibrate_noise(
            epsilon=1e-6, delta=DELTA, sample_rate=1.0, steps=100, accountant=accountant
        )


def test_infinite_history_raises():
    with pytest.raises(PrivacyBudgetExhausted):
        calibrate_noise(epsilon=1.0, delta=DELTA, sample_rate=0.1, steps=1, history=[sgd(0.0)])


GOOD: dict[str, Any] = {"epsilon": 1.0, "delta": DELTA, "sample_rate": 0.1, "steps": 10}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("epsilon", 0.0),
        ("epsilon", -1.0),
        ("epsilon", math.inf),
        ("epsilon", math.nan),
        ("delta", 0.0),
        ("delta", 1.0),
        ("sample_rate", 0.0),
        ("sample_rate", 1.5),
        ("steps", 0),
        ("steps", 2.5),
        ("accountant", "gdp"),
        ("unit", "record"),
        ("mechanism", "none"),
        ("tolerance", 0.0),
        ("tolerance", 0.5),
    ],
)
def test_calibrate_noise_rejects_bad_arguments(name, value):
    with pytest.raises(ConfigError, match=f"'{name}' parameter of calibrate_noise") as info:
        calibrate_noise(**{**GOOD, name: value})
    assert isinstance(info.value, ValueError)
    assert repr(value) in str(info.value)


def test_calibrate_noise_rejects_a_bad_history():
    with pytest.raises(ConfigError, match="'history' parameter of calibrate_noise"):
        calibrate_noise(**GOOD, history=[0.5])  # type: ignore[list-item]


def test_a_sliver_left_only_under_prv_is_still_calibrated():
    # A real ledger: three rounds spent ε = 0.4998 of 0.5 by PRV (0.54 by RDP), then two more.
    sigmas = (12.323354797518288, 12.282878676488812, 12.23064256742732, 296.891, 297.056)
    history = [gaussian(s) for s in sigmas]
    assert epsilon_spent(history, delta=DELTA, accountant="rdp") > 0.5
    sigma = calibrate_noise(epsilon=0.5, delta=DELTA, sample_rate=1.0, steps=1, history=history)
    assert epsilon_spent([*history, gaussian(sigma)], delta=DELTA) <= 0.5
    with pytest.raises(PrivacyBudgetExhausted):
        calibrate_noise(
            epsilon=0.5, delta=DELTA, sample_rate=1.0, steps=1, history=history, accountant="rdp"
        )


@settings(max_examples=25, deadline=None)
@given(
    epsilon=st.floats(0.05, 10.0),
    q=st.floats(1e-3, 1.0),
    steps=st.integers(1, 1000),
    past=st.lists(st.tuples(st.floats(1.0, 50.0), st.floats(1e-3, 0.2)), max_size=3),
)
def test_rdp_calibration_fits_and_is_tight_or_declines(epsilon, q, steps, past):
    history = [sgd(sigma, rate, 100) for sigma, rate in past]

    def eps(sigma):
        events = [*history, sgd(sigma, q, steps)]
        return epsilon_spent(events, delta=DELTA, accountant="rdp")

    try:
        sigma = calibrate_noise(
            epsilon=epsilon,
            delta=DELTA,
            sample_rate=q,
            steps=steps,
            history=history,
            accountant="rdp",
        )
    except PrivacyBudgetExhausted:
        assert (
            epsilon_spent(history, delta=DELTA, accountant="rdp") >= epsilon or eps(1e4) > epsilon
        )
        return
    assert eps(sigma) <= epsilon < eps(sigma * 0.98)
