"""Histogram GBDT math: bins, histograms, split finding, LightGBM equivalence and export."""

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshfl.config.errors import ConfigError
from meshfl.models import hist_gbdt as g


def _train(X, y, edges, params, rounds, n_bins):
    """Grow a forest on one party's rows, one level per exchange."""
    bins = g.bin_rows(X, edges)
    forest = g.Forest.empty(params.max_depth)
    for _ in range(rounds):
        tree, _ = forest.growing()
        grad, hess = g.logloss_gradients(g.predict_margin(forest, X, edges, trees=tree), y)
        hist = g.histograms(
            bins, g.level_slots(forest, bins), grad, hess, n_slots=forest.slots, n_bins=n_bins
        )
        forest = g.grow_level(forest, hist, params)
    return forest


def _binned_problem(n=2000, n_features=4, n_bins=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, n_bins, size=(n, n_features)).astype(float)
    logit = -1 + 0.5 * X[:, 0] - 0.4 * X[:, 1] + 1.5 * (X[:, 2] > 4) * (X[:, 0] < 3)
    y = (rng.uniform(size=n) < g.sigmoid(logit)).astype(float)
    edges = [np.arange(n_bins - 1) + 0.5 for _ in range(n_features)]
    return X, y, edges


def test_bin_edges_linear_and_log():
    np.testing.assert_allclose(g.bin_edges(0.0, 4.0, 4), [1.0, 2.0, 3.0])
    log = g.bin_edges(0.0, 1000.0, 8, log=True)
    assert log.shape == (7,) and np.all(np.diff(log) > 0)
    assert log[0] < 2.0 < 300.0 < log[-1]  # dense near 0, sparse in the tail
    with pytest.raises(ConfigError, match="low < high"):
        g.bin_edges(1.0, 1.0, 4)
    with pytest.raises(ConfigError, match="n_bins"):
        g.bin_edges(0.0, 1.0, 1)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=30))
def test_bin_index_agrees_with_lightgbm_go_left_rule(values):
    edges = g.bin_edges(-5.0, 5.0, 10)
    x = np.array(values + list(edges))  # values exactly on the edges included
    bins = g.bin_rows(x[:, None], [edges])[:, 0]
    for k, edge in enumerate(edges):
        np.testing.assert_array_equal(bins <= k, x <= edge)


def test_logloss_gradients_are_bounded_so_one_row_has_sensitivity_below_one():
    margin = np.linspace(-40, 40, 2001)
    for y in (0.0, 1.0):
        grad, hess = g.logloss_gradients(margin, np.full_like(margin, y))
        assert np.all(grad**2 + hess**2 <= 1.0)
        assert np.all((hess >= 0) & (hess <= 0.25))


def test_histograms_match_a_naive_loop():
    rng = np.random.default_rng(1)
    bins = rng.integers(0, 5, size=(200, 3))
    slot = rng.integers(-1, 4, size=200)
    grad, hess = rng.normal(size=200), rng.uniform(size=200)
    hist = g.histograms(bins, slot, grad, hess, n_slots=4, n_bins=5)
    naive = np.zeros((4, 3, 5, 2))
    for i in range(200):
        if slot[i] < 0:
            continue
        for f in range(3):
            naive[slot[i], f, bins[i, f]] += (grad[i], hess[i])
    np.testing.assert_allclose(hist, naive, atol=1e-12)


def test_first_exchange_sets_the_base_margin_to_the_log_odds_of_the_label_mean():
    X, y, edges = _binned_problem()
    forest = _train(X, y, edges, g.GBDTParams(max_depth=2), rounds=1, n_bins=8)
    rate = y.mean()
    assert forest.base_margin == pytest.approx(np.log(rate / (1 - rate)), abs=1e-12)
    assert forest.n_trees == 1 and forest.kind[0, 0] == g.SPLIT


def test_finds_the_informative_split():
    rng = np.random.default_rng(2)
    X = rng.uniform(0, 10, size=(3000, 3))
    y = (X[:, 1] > 6.0).astype(float)  # only feature 1 matters, at 6
    edges = [g.bin_edges(0.0, 10.0, 20) for _ in range(3)]
    forest = _train(X, y, edges, g.GBDTParams(max_depth=1), rounds=1, n_bins=20)
    assert forest.feature[0, 0] == 1
    assert edges[1][forest.bin[0, 0]] == pytest.approx(6.0)
    assert forest.value[0, 1] < 0 < forest.value[0, 2]


def test_summed_histograms_of_parties_grow_the_same_forest_as_pooled_rows():
    X, y, edges = _binned_problem()
    params = g.GBDTParams(max_depth=3, learning_rate=0.3)
    pooled = _train(X, y, edges, params, rounds=6, n_bins=8)
    parts = np.array_split(np.arange(len(X)), 3)
    forest = g.Forest.empty(3)
    for _ in range(6):
        total = 0
        for idx in parts:
            bins = g.bin_rows(X[idx], edges)
            tree, _ = forest.growing()
            margin = g.predict_margin(forest, X[idx], edges, trees=tree)
            grad, hess = g.logloss_gradients(margin, y[idx])
            slots = g.level_slots(forest, bins)
            total = total + g.histograms(bins, slots, grad, hess, n_slots=4, n_bins=8)
        forest = g.grow_level(forest, total, params)
    np.testing.assert_array_equal(forest.kind, pooled.kind)
    np.testing.assert_array_equal(forest.feature, pooled.feature)
    np.testing.assert_array_equal(forest.bin, pooled.bin)
    np.testing.assert_allclose(forest.value, pooled.value, atol=1e-9)


def test_grows_the_same_trees_as_lightgbm_on_the_same_bins():
    X, y, edges = _binned_problem()
    depth, trees, lr = 3, 5, 0.3
    params = g.GBDTParams(max_depth=depth, learning_rate=lr, lambda_l2=1.0, min_child_hessian=1.0)
    forest = _train(X, y, edges, params, rounds=trees * depth, n_bins=8)
    assert forest.n_trees == trees
    booster = lgb.train(
        {
            "objective": "binary",
            "num_leaves": 2**depth,
            "max_depth": depth,
            "learning_rate": lr,
            "lambda_l2": 1.0,
            "min_sum_hessian_in_leaf": 1.0,
            "min_data_in_leaf": 0,
            "min_data_in_bin": 1,
            "max_bin": 9,
            "verbose": -1,
            "num_threads": 1,
            "deterministic": True,
        },
        lgb.Dataset(X, y),
        num_boost_round=trees,
    )
    # LightGBM keeps its histograms in float32-friendly form; same splits, same leaves.
    np.testing.assert_allclose(
        g.predict_margin(forest, X, edges), booster.predict(X, raw_score=True), atol=1e-6
    )


def test_a_level_without_a_worthwhile_split_closes_the_tree():
    X = np.random.default_rng(3).uniform(size=(100, 2))
    y = np.zeros(100)
    y[:50] = 1  # labels independent of the features
    edges = [g.bin_edges(0.0, 1.0, 4)] * 2
    params = g.GBDTParams(max_depth=3, min_split_gain=1e6)
    forest = _train(X, y, edges, params, rounds=2, n_bins=4)
    assert forest.n_trees == 2  # tree 0 stopped at its root; round 2 began tree 1
    assert forest.kind[0, 0] == g.LEAF and forest.levels[0] == 1
    assert forest.is_finished(0)


def test_forest_vector_round_trip_and_bad_length():
    X, y, edges = _binned_problem(n=300)
    forest = _train(X, y, edges, g.GBDTParams(max_depth=2), rounds=3, n_bins=8)
    again = g.Forest.from_vector(forest.to_vector(), 2)
    for name in ("levels", "kind", "feature", "bin", "value", "hessian", "gain"):
        np.testing.assert_array_equal(getattr(again, name), getattr(forest, name))
    assert again.base_margin == forest.base_margin
    assert forest.growing() == (1, 1)  # round 3 grew level 0 of tree 1
    with pytest.raises(ConfigError, match="max_depth"):
        g.Forest.from_vector(forest.to_vector(), 3)


@pytest.mark.parametrize("rounds", [0, 1, 4, 7])
def test_lightgbm_export_predicts_exactly_the_same(rounds):
    rng = np.random.default_rng(4)
    X = rng.uniform(-1, 11, size=(600, 3))  # some values outside the public bounds
    y = (rng.uniform(size=600) < g.sigmoid(X[:, 0] - 5 + np.sin(X[:, 1]))).astype(float)
    edges = [g.bin_edges(0.0, 10.0, 16), g.bin_edges(0.0, 10.0, 16, log=True)] * 1 + [
        g.bin_edges(0.0, 10.0, 5)
    ]
    forest = _train(X, y, edges, g.GBDTParams(max_depth=3), rounds=rounds, n_bins=16)
    text = g.to_lightgbm(
        forest, edges, feature_names=["a", "b", "c"], bounds=[(0.0, 10.0)] * 3, learning_rate=0.2
    )
    booster = lgb.Booster(model_str=text)
    assert booster.num_trees() == max(forest.n_trees, 1)
    probe = np.vstack([X, np.column_stack([edges[0][:4], edges[1][:4], edges[2][:4]])])
    ours = g.sigmoid(g.predict_margin(forest, probe, edges))
    np.testing.assert_allclose(booster.predict(probe), ours, rtol=0, atol=1e-12)


def test_export_rejects_names_lightgbm_cannot_read():
    forest = g.Forest.empty(2)
    with pytest.raises(ConfigError, match="white space"):
        g.to_lightgbm(
            forest, [np.array([0.5])], feature_names=["a b"], bounds=[(0, 1)], learning_rate=0.1
        )


def test_params_are_checked():
    with pytest.raises(ConfigError, match="learning_rate"):
        g.GBDTParams(learning_rate=0.0)
    with pytest.raises(ConfigError, match="max_depth"):
        g.GBDTParams(max_depth=0)


def test_random_trees_need_one_exchange_each_and_sum_across_parties():
    X, y, edges = _binned_problem()
    params = g.GBDTParams(max_depth=3, learning_rate=0.5)
    rng = np.random.default_rng(7)
    structures = [g.random_structure(3, [0, 1, 2, 3], 8, rng) for _ in range(4)]
    bins = g.bin_rows(X, edges)
    pooled, split = g.Forest.empty(3), g.Forest.empty(3)
    for feature, split_bin in structures:
        grad, hess = g.logloss_gradients(g.predict_margin(pooled, X, edges), y)
        sums = g.leaf_sums(feature, split_bin, bins, grad, hess)
        assert sums.shape == (8, 2) and sums[:, 1].sum() == pytest.approx(hess.sum())
        pooled = g.grow_random_tree(pooled, feature, split_bin, sums, params)
        total = 0
        for idx in np.array_split(np.arange(len(X)), 3):
            grad, hess = g.logloss_gradients(g.predict_margin(split, X[idx], edges), y[idx])
            total = total + g.leaf_sums(feature, split_bin, bins[idx], grad, hess)
        split = g.grow_random_tree(split, feature, split_bin, total, params)
    assert pooled.n_trees == 4 and all(pooled.is_finished(t) for t in range(4))
    np.testing.assert_allclose(split.to_vector(), pooled.to_vector(), atol=1e-9)
    rate = y.mean()
    assert pooled.base_margin == pytest.approx(np.log(rate / (1 - rate)))
    # each row reaches the leaf the exported forest routes it to
    margin = g.predict_margin(pooled, X, edges)
    booster = lgb.Booster(
        model_str=g.to_lightgbm(
            pooled, edges, feature_names=list("abcd"), bounds=[(0, 7)] * 4, learning_rate=0.5
        )
    )
    np.testing.assert_allclose(booster.predict(X, raw_score=True), margin, atol=1e-12)
