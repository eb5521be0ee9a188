"""The additive forecaster's math: calendar features, exact summed statistics, DP bounds."""

import numpy as np
import pandas as pd
import pytest

from meshfl.models import additive

SPEC = additive.AdditiveSpec(yearly_order=4, n_changepoints=2)


def weekly(n, end="2025-12-29"):
    return pd.date_range(end=end, periods=n, freq="W-MON")


def monthly(n, end="2025-12-01"):
    return pd.date_range(end=end, periods=n, freq="MS")


def test_frequency_is_inferred_and_other_spacings_are_refused():
    assert additive.infer_frequency(weekly(10)) == "weekly"
    assert additive.infer_frequency(monthly(10)) == "monthly"
    with pytest.raises(ValueError, match="weekly or monthly"):
        additive.infer_frequency(pd.date_range("2025-01-01", periods=10, freq="D"))
    with pytest.raises(ValueError, match="at least two"):
        additive.infer_frequency(weekly(1))


def test_fourier_terms_are_bounded_and_yearly_periodic():
    dates = weekly(104)
    F = additive.fourier_features(dates, "weekly", 3)
    assert F.shape == (104, 6)
    np.testing.assert_allclose((F**2).sum(axis=1), 3.0)  # sin² + cos² per pair
    # the same week of consecutive years gets (nearly) the same features
    assert np.abs(F[:52] - F[52:]).max() < 0.2


def test_holiday_indicators_mark_the_period_that_contains_the_day():
    dates = weekly(60)
    names = ("new_year", "thanksgiving", "christmas", "quarter_end")
    H = pd.DataFrame(additive.holiday_features(dates, "weekly", names), index=dates, columns=names)
    assert H.loc["2025-12-22", "christmas"] == 1 and H["christmas"].sum() == 2  # 2024, 2025
    assert H.loc["2025-11-24", "thanksgiving"] == 1  # Thanksgiving 2025 is Nov 27
    assert H.loc["2025-12-29", "new_year"] == 1  # the week holding Jan 1, 2026
    assert H.loc["2025-09-29", "quarter_end"] == 1  # Sep 30
    assert H["quarter_end"].sum() == 5
    M = pd.DataFrame(
        additive.holiday_features(monthly(12), "monthly", names), index=monthly(12), columns=names
    )
    assert list(M.index[M["quarter_end"] == 1].month) == [3, 6, 9, 12]
    assert list(M.index[M["christmas"] == 1].month) == [12]
    with pytest.raises(ValueError, match="unknown holidays"):
        additive.holiday_features(dates, "weekly", ["easter"])


def test_statistics_pack_and_unpack_round_trip():
    rng = np.random.default_rng(0)
    p = 5
    M = rng.normal(size=(p, p))
    stats = additive.Statistics(M @ M.T, rng.normal(size=p), 3.5, 40.0, 36.0, 0.25)
    packed = stats.pack(c_scale=7.0)
    assert packed.shape == (additive.Statistics.size(p),)
    back = additive.Statistics.unpack(packed, p, c_scale=7.0)
    np.testing.assert_allclose(back.A, stats.A)
    np.testing.assert_allclose(back.b, stats.b)
    assert (back.c, back.n, back.dof, back.noise_var) == pytest.approx((3.5, 40.0, 36.0, 0.25))
    twice = back + back
    np.testing.assert_allclose(twice.pack(7.0), 2 * packed)  # statistics add as vectors do
    with pytest.raises(ValueError, match="hold"):
        additive.Statistics.unpack(packed[:-1], p)


def _simulated(n, *, seed, beta, dates=None):
    rng = np.random.default_rng(seed)
    dates = weekly(n) if dates is None else dates
    design = additive.series_design(dates, SPEC)
    trend = rng.normal(10, 2) + rng.normal(0.1, 0.1) * design.years(dates)
    z = trend + design.X @ beta + rng.normal(0, 0.03, n)
    return design, z


def test_summed_statistics_give_the_joint_fixed_effects_fit():
    """Σ per-series statistics = least squares on all series with a trend per series."""
    rng = np.random.default_rng(1)
    beta = rng.normal(0, 0.1, SPEC.n_features)
    series = [_simulated(n, seed=s, beta=beta) for s, n in enumerate([40, 90, 150])]
    total = additive.Statistics.zeros(SPEC.n_features)
    for design, z in series:
        total = total + additive.series_statistics(design, z - np.median(z))
    spec = additive.AdditiveSpec(yearly_order=4, n_changepoints=2, ridge=1e-10)
    fitted = additive.solve_shared(total, spec).beta

    # naive reference: one big least-squares problem, block-diagonal trend columns
    blocks = [d.Z for d, _ in series]
    rows = sum(len(b) for b in blocks)
    Zall = np.zeros((rows, sum(b.shape[1] for b in blocks)))
    r = c = 0
    for b in blocks:
        Zall[r : r + len(b), c : c + b.shape[1]] = b
        r, c = r + len(b), c + b.shape[1]
    design = np.hstack([np.vstack([d.X for d, _ in series]), Zall])
    coef, *_ = np.linalg.lstsq(design, np.concatenate([z for _, z in series]), rcond=None)
    np.testing.assert_allclose(fitted, coef[: SPEC.n_features], atol=1e-6)
    assert np.abs(fitted - beta).max() < 0.05  # and it recovers the true shape


def test_statistics_do_not_depend_on_a_series_scale():
    design, z = _simulated(80, seed=3, beta=np.full(SPEC.n_features, 0.05))
    small = additive.series_statistics(design, z - 10.0)
    large = additive.series_statistics(design, z - 10.0 + np.log(1000.0))
    np.testing.assert_allclose(small.b, large.b, atol=1e-9)
    assert small.c == pytest.approx(large.c)


@pytest.mark.parametrize("n", [12, 40, 120])
def test_sensitivity_bounds_hold_for_any_one_period_change(n):
    radius = 1.5
    design = additive.series_design(weekly(n), SPEC)
    sens_b, sens_c = additive.statistics_sensitivity(design, radius)
    rng = np.random.default_rng(n)
    worst_b = worst_c = 0.0
    for _ in range(400):
        w = rng.uniform(-radius, radius, n) * rng.choice([0.2, 1.0])
        t = rng.integers(n)
        w2 = w.copy()
        w2[t] = rng.choice([-radius, radius, rng.uniform(-radius, radius)])
        a, b = additive.series_statistics(design, w), additive.series_statistics(design, w2)
        worst_b = max(worst_b, float(np.linalg.norm(a.b - b.b)))
        worst_c = max(worst_c, abs(a.c - b.c))
    assert worst_b <= sens_b + 1e-9 and worst_c <= sens_c + 1e-9
    assert worst_b > 0.3 * sens_b  # the bound is not vacuous


def test_local_fit_forecasts_known_series_with_calibrated_intervals():
    beta = np.zeros(SPEC.n_features)
    beta[1], beta[-1] = 0.15, 0.3  # a yearly cosine and quarter-end spikes
    dates, train, horizon = weekly(169), 156, 13
    errors, inside, sigmas = [], [], []
    for seed in range(20):
        _, z_all = _simulated(169, seed=seed, beta=beta, dates=dates)
        design = additive.series_design(dates[:train], SPEC)
        stats = additive.series_statistics(design, z_all[:train] - np.median(z_all[:train]))
        shared = additive.solve_shared(stats, SPEC)
        frame = additive.fit_local(design, z_all[:train], shared, SPEC, dates[train:]).frame()
        assert len(frame) == horizon
        assert (frame["yhat_lower"] < frame["yhat"]).all()
        assert (frame["yhat"] < frame["yhat_upper"]).all()
        actual = np.exp(z_all[train:])
        errors.append(additive.smape(actual, frame["yhat"].to_numpy()).mean())
        inside.append(((actual >= frame["yhat_lower"]) & (actual <= frame["yhat_upper"])).mean())
        sigmas.append(np.sqrt(shared.sigma2))
    assert np.mean(errors) < 4.0  # noise alone is 3% (log sd 0.03)
    assert 0.65 <= np.mean(inside) <= 0.92  # 80% intervals
    assert np.mean(sigmas) == pytest.approx(0.03, rel=0.15)


def test_dp_noise_on_the_statistics_shrinks_the_shared_shape():
    beta = np.full(SPEC.n_features, 0.1)
    design, z = _simulated(104, seed=7, beta=beta)
    stats = additive.series_statistics(design, z - np.median(z))
    plain = additive.solve_shared(stats, SPEC)
    noisy = additive.solve_shared(
        additive.Statistics(stats.A, stats.b, stats.c, stats.n, stats.dof, noise_var=1e4),
        SPEC,
        c_noise_std=100.0,
        prior_scale=additive.prior_scales(SPEC, 0.05),
    )
    assert np.linalg.norm(noisy.beta) < 0.5 * np.linalg.norm(plain.beta)
    assert np.all(np.diag(noisy.noise_cov) > 0)
    assert np.isfinite(plain.sigma2) and np.isnan(noisy.sigma2)  # drowned pooled variance


def test_an_empty_model_has_no_shape():
    shared = additive.solve_shared(additive.Statistics.zeros(SPEC.n_features), SPEC)
    assert not shared.beta.any() and np.isnan(shared.sigma2)


def test_noisy_mode_center_finds_the_bulk_of_the_values():
    rng = np.random.default_rng(0)
    z = rng.normal(11.3, 0.2, 60)
    exact = additive.noisy_mode_center(z, low=2.0, high=21.0, noise_std=0.0, rng=rng)
    assert abs(exact - 11.3) < 0.6
    noisy = [
        additive.noisy_mode_center(z, low=2.0, high=21.0, noise_std=8.0, rng=rng) for _ in range(50)
    ]
    assert np.mean(np.abs(np.array(noisy) - 11.3) < 1.5) > 0.9


def test_clip_log_bounds_centred_values():
    w = additive.clip_log(np.array([0.0, 10.0, 20.0]), 10.0, 1.5)
    np.testing.assert_array_equal(w, [-1.5, 0.0, 1.5])


def test_smape_and_mase():
    np.testing.assert_allclose(additive.smape([100, 100], [100, 50]), [0.0, 200 * 50 / 150])
    assert additive.smape([0.0], [0.0])[0] == 0.0
    # history's one-step naive MAE is 10
    np.testing.assert_allclose(additive.mase([120.0], [100.0], [100, 110, 100, 110]), [2.0])
