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
@pytest.mark.parametrize(
    ("tasks", "cap", "total"),
    [((5, 3), 2.0, True), ((2,) * 12 + (2,), 4.0, True), ((5, 3), 2.0, False)],
)
def test_one_record_changes_the_statistics_by_at_most_the_sensitivity(
    tasks: tuple[int, ...], cap: float, total: bool, second_moment: bool
) -> None:
    # add/remove adjacency: removing record i subtracts exactly its own statistics
    rng = np.random.default_rng(0)
    layout = closed_form.StatisticsLayout(8, tasks, second_moment=second_moment, total=total)
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


@pytest.mark.parametrize("total", [True, False])
@pytest.mark.parametrize("second_moment", [True, False])
def test_private_release_at_epsilon_0_1_beats_the_majority_class(
    second_moment: bool, total: bool
) -> None:
    # 3 MSPs x 2,000 easy rows, each releasing once at ε = 0.1, δ = 1e-5 (sigma from the accountant)
    rng = np.random.default_rng(2)
    d, k = 16, 4
    layout = closed_form.StatisticsLayout(d, (k,), second_moment=second_moment, total=total)
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


def test_without_total_the_first_task_is_explicit_and_the_bound_is_smaller() -> None:
    # every record in one class of the first task: its classes add up to n and Σx, so the
    # layout drops them, and one record moves one column fewer
    rng = np.random.default_rng(3)
    with_total = closed_form.StatisticsLayout(6, (4, 3), second_moment=False, count_scale=0.3)
    explicit = closed_form.StatisticsLayout(
        6, (4, 3), second_moment=False, count_scale=0.3, total=False
    )
    assert explicit.members == with_total.members + 1
    assert explicit.size == with_total.size  # no n and Σx, one more class count and sum
    assert closed_form.sensitivity(explicit, 2.0) == pytest.approx(
        np.sqrt(2 / 3) * closed_form.sensitivity(with_total, 2.0)
    )
    x = _unit(rng, 200, 6)
    y = np.stack([rng.integers(0, 4, 200), rng.integers(0, 3, 200)], axis=1)
    z = closed_form.memberships(y, explicit, 2.0)
    assert np.all(z[:, :4].sum(1) == 1)  # one column of the first task per record
    assert np.linalg.norm(z, axis=1).max() <= np.sqrt(2.0) + 1e-12
    # noiseless, both layouts solve the same classifier
    a = closed_form.DiscriminantHead(
        closed_form.statistics(x, closed_form.memberships(y, with_total, 2.0), with_total),
        with_total,
    )
    b = closed_form.DiscriminantHead(closed_form.statistics(x, z, explicit), explicit)
    for left, right in zip(a.logits(x), b.logits(x), strict=True):
        np.testing.assert_allclose(left, right, atol=1e-8)
