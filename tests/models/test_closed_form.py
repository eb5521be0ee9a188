"""The closed-form head's statistics: sensitivity bound, calibrated noise, utility at ε=0.1."""

from __future__ import annotations

import numpy as np
import pytest

from meshfl.models import closed_form
from meshfl.privacy.accountant import calibrate_noise, epsilon_spent
from meshfl.privacy.events import PrivacyEvent
from meshfl.privacy.mechanisms import add_gaussian_noise


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("second_moment", [True, False])
@pytest.mark.parametrize(("tasks", "cap"), [((5, 3), 2.0), ((2,) * 12 + (2,), 4.0)])
def test_one_record_changes_the_statistics_by_at_most_the_sensitivity(
    tasks: tuple[int, ...], cap: float, second_moment: bool
) -> None:
    # add/remove adjacency: removing record i subtracts exactly its own statistics
    rng = np.random.default_rng(0)
    layout = closed_form.StatisticsLayout(8, tasks, second_moment=second_moment)
    n = 300
    x = _unit(rng, n, 8)
    x[:5] *= 3.0  # rows above unit norm are scaled down, not trusted
    targets = np.stack([rng.integers(0, k, n) for k in tasks], axis=1)
    targets[:5] = 1  # records in every label: clipped to the cap
    z = closed_form.memberships(targets, layout, cap)
    whole = closed_form.statistics(x, z, layout)
    bound = closed_form.sensitivity(layout, cap)
    changes = [
        np.linalg.norm(
            whole - closed_form.statistics(np.delete(x, i, 0), np.delete(z, i, 0), layout)
        )
        for i in range(20)
    ]
    assert max(changes) <= bound + 1e-9
    assert max(changes) > 0.5 * bound  # the bound is not loose by orders of magnitude


def test_statistics_sum_across_msps() -> None:
    rng = np.random.default_rng(1)
    layout = closed_form.StatisticsLayout(6, (4, 2))
    x = _unit(rng, 100, 6)
    y = np.stack([rng.integers(0, 4, 100), rng.integers(0, 2, 100)], axis=1)
    z = closed_form.memberships(y, layout, 2.0)
    parts = closed_form.statistics(x[:40], z[:40], layout) + closed_form.statistics(
        x[40:], z[40:], layout
    )
    np.testing.assert_allclose(parts, closed_form.statistics(x, z, layout), atol=1e-9)


def _clusters(
    rng: np.random.Generator, centres: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    k, d = centres.shape
    y = rng.choice(k, size=n, p=np.array([0.4, 0.3, 0.2, 0.1])[:k])
    x = centres[y] + 0.6 * rng.normal(size=(n, d)) / np.sqrt(d)
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


@pytest.mark.parametrize("second_moment", [True, False])
def test_private_release_at_epsilon_0_1_beats_the_majority_class(second_moment: bool) -> None:
    # 3 MSPs x 2,000 easy rows, each releasing once at ε = 0.1, δ = 1e-5 (sigma from the accountant)
    rng = np.random.default_rng(2)
    d, k = 16, 4
    layout = closed_form.StatisticsLayout(d, (k,), second_moment=second_moment)
    sigma = calibrate_noise(epsilon=0.1, delta=1e-5, sample_rate=1.0, steps=1)
    event = PrivacyEvent(mechanism="gaussian", noise_multiplier=sigma, sample_rate=1.0, steps=1)
    assert epsilon_spent([event], delta=1e-5) <= 0.1
    sens = closed_form.sensitivity(layout, 1.0)
    total = np.zeros(layout.size)
    centres = _unit(rng, k, d)
    for _ in range(3):
        x, y = _clusters(rng, centres, 2000)
        packed = closed_form.statistics(x, closed_form.memberships(y[:, None], layout, 1.0), layout)
        packed[layout.private] = add_gaussian_noise(
            packed[layout.private], sensitivity=sens, noise_multiplier=sigma
        )
        packed[-1] = (sigma * sens) ** 2
        total += packed
    head = closed_form.DiscriminantHead(total, layout)
    x_test, y_test = _clusters(rng, centres, 3000)
    accuracy = np.mean(head.predict_proba(x_test)[0].argmax(1) == y_test)
    majority = np.mean(y_test == np.bincount(y_test).argmax())
    assert accuracy > majority + 0.3, (accuracy, majority)


def test_noiseless_lda_separates_what_nearest_mean_confuses() -> None:
    # correlated noise along one axis: LDA uses the covariance, nearest mean cannot
    rng = np.random.default_rng(3)
    n, d = 4000, 4
    y = rng.integers(0, 2, n)
    x = np.zeros((n, d))
    x[:, 0] = 0.3 * (2 * y - 1) + 0.05 * rng.normal(size=n)
    x[:, 1] = 0.6 * rng.normal(size=n)
    x[:, 0] += 0.5 * x[:, 1]
    x[:, 2] = 1.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = {}
    for second_moment in (True, False):
        layout = closed_form.StatisticsLayout(d, (2,), second_moment=second_moment)
        stats = closed_form.statistics(x, closed_form.memberships(y[:, None], layout, 1.0), layout)
        head = closed_form.DiscriminantHead(stats, layout, shrinkage=0.0)
        scores[second_moment] = np.mean(head.predict_proba(x)[0].argmax(1) == y)
    assert scores[True] > 0.97
    assert scores[True] > scores[False] + 0.05
