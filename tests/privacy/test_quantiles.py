"""DP quantiles and bounds: accurate on known distributions, charged, never seeded."""

import random

import numpy as np
import pandas as pd
import pytest

from meshfl.config.errors import ConfigError
from meshfl.privacy.accountant import epsilon_spent
from meshfl.privacy.ledger import PrivacyLedger
from meshfl.privacy.noise import fixed_noise_for_tests, record_releases_for_tests
from meshfl.privacy.quantiles import default_grid, dp_bounds, dp_quantiles, search_steps


def _rank_error(x, grid, estimate, q):
    """How far, in share of rows, the estimate is from being the first grid value whose
    empirical CDF reaches q (0 when it is exactly that value)."""
    x = np.sort(x)
    i = int(np.searchsorted(grid, estimate))
    cdf = np.searchsorted(x, estimate, side="right") / x.size
    prev = np.searchsorted(x, grid[i - 1], side="right") / x.size if i else 0.0
    return max(0.0, q - cdf, prev - q)


@pytest.mark.parametrize(
    ("name", "draw", "grid"),
    [
        ("normal", lambda r, n: r.normal(50, 10, n), np.linspace(0, 100, 1001)),
        ("lognormal revenue", lambda r, n: r.lognormal(np.log(3e9), 1.0, n), default_grid()),
        ("exponential", lambda r, n: r.exponential(2.0, n), np.linspace(0, 30, 3001)),
    ],
)
def test_quantiles_are_accurate_on_known_distributions(name, draw, grid):
    rng = np.random.default_rng(0)
    x = draw(rng, 20_000)
    # sigma of one release at eps = 1, delta = 1e-5 for 2 quantiles on this grid
    sigma = 15.1 * np.sqrt(2 * search_steps(grid.size) / 16)
    for _ in range(5):
        low, high = dp_quantiles(x, (0.01, 0.99), noise_multiplier=sigma, grid=grid)
        # a few sigma of rank (about 0.3 % of 20,000 rows), not more
        assert _rank_error(x, grid, low, 0.01) < 0.005, name
        assert _rank_error(x, grid, high, 0.99) < 0.005, name


def test_bounds_of_a_revenue_series_in_billions_cover_it():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {"revenue": rng.lognormal(np.log(3e9), 0.4, 20_000), "seats": rng.poisson(40, 20_000)}
    )
    for _ in range(3):
        est = dp_bounds(frame, epsilon=1.0, delta=1e-5, accountant="rdp")  # rdp: quick
        low, high = est.bounds["revenue"]
        x = frame["revenue"]
        # the rank error is a fraction of a percent, plus one step of the grid (1.5x)
        assert x.quantile(0.001) / 1.5 <= low <= x.quantile(0.02)
        assert x.quantile(0.98) <= high <= x.quantile(0.999) * 1.5
        assert (x < low).mean() < 0.02 and (x > high).mean() < 0.02  # rounded outwards
        s_low, s_high = est.bounds["seats"]
        assert 20 <= s_low <= 30 and 50 <= s_high <= 70
    assert est.epsilon <= 1.0 and est.event.steps == 2 * 2 * search_steps(default_grid().size)


def test_too_few_rows_for_the_epsilon_warn_at_the_msp():
    frame = pd.DataFrame({"seats": np.random.default_rng(4).poisson(40, 2_000)})
    with pytest.warns(UserWarning, match="'seats' has 2000 values.*quantiles=\\(0.05, 0.95\\)"):
        dp_bounds(frame, epsilon=0.1, delta=1e-5, accountant="rdp")


def test_the_estimate_is_charged_to_the_ledger(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    x = pd.DataFrame({"fee": np.random.default_rng(2).uniform(0, 500, 5000)})
    est = dp_bounds(
        x,
        epsilon=0.5,
        delta=1e-5,
        quantiles=(0.05, 0.95),
        ledger=ledger,
        agent="client_health",
        grid=np.arange(0, 1001),
    )
    assert ledger.events("client_health") == [est.event]
    spent = ledger.epsilon("client_health", delta=1e-5)
    assert 0.45 <= spent <= 0.5 and spent == pytest.approx(est.epsilon)
    assert epsilon_spent([est.event], delta=1e-5) <= 0.5
    with pytest.raises(ConfigError, match="'agent' parameter of dp_bounds"):
        dp_bounds(x, epsilon=0.5, delta=1e-5, ledger=ledger)


def test_noise_comes_from_os_entropy_not_from_a_seed():
    x = np.random.default_rng(3).normal(size=200)
    grid = np.linspace(-5, 5, 1025)
    results = set()
    for _ in range(6):
        np.random.seed(0)  # noqa: NPY002 - the legacy global seed must not reach the noise
        random.seed(0)
        results.add(tuple(dp_quantiles(x, (0.5,), noise_multiplier=1000.0, grid=grid)))
    assert len(results) > 1  # the same seeds, different noise
    with fixed_noise_for_tests(7):
        a = dp_quantiles(x, (0.5,), noise_multiplier=1000.0, grid=grid)
    with fixed_noise_for_tests(7):
        b = dp_quantiles(x, (0.5,), noise_multiplier=1000.0, grid=grid)
    assert a == b  # it is meshfl.privacy.noise's generator that draws it
    with record_releases_for_tests() as draws:
        dp_quantiles(x, (0.1, 0.9), noise_multiplier=3.0, grid=grid)
    assert [(d.mechanism, d.std, d.sensitivity, d.size) for d in draws] == [
        ("gaussian", 3.0, 1.0, 2 * search_steps(grid.size))
    ]


def test_bad_input_names_the_parameter():
    with pytest.raises(ConfigError, match="'noise_multiplier' parameter of dp_quantiles"):
        dp_quantiles([1.0], (0.5,), noise_multiplier=0.0)
    with pytest.raises(ConfigError, match="'quantiles' parameter"):
        dp_quantiles([1.0], (1.5,), noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="strictly increasing"):
        dp_quantiles([1.0], (0.5,), noise_multiplier=1.0, grid=[2.0, 1.0])
    with pytest.raises(ConfigError, match="the data lacks fee"):
        dp_bounds(pd.DataFrame({"x": [1.0]}), ["fee"], epsilon=1.0, delta=1e-5)
    with pytest.raises(ConfigError, match="low < high"):
        dp_bounds(pd.DataFrame({"x": [1.0]}), epsilon=1.0, delta=1e-5, quantiles=(0.9, 0.1))
