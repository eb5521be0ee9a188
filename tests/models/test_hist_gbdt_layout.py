"""Missing-value bins, categorical splits and the exp overflow of the histogram GBDT."""

import warnings

import lightgbm as lgb
import numpy as np
import pytest

from meshfl.config.errors import ConfigError
from meshfl.models import hist_gbdt as g
from meshfl.models.ranking import roc_auc


def _problem(n=3000, seed=0):
    """Signal only in a category and in whether a value is missing."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, n)
    missing = rng.uniform(size=n) < 0.3
    x[missing] = np.nan
    code = rng.integers(0, 6, n).astype(float)  # 4 categories, 'other' (4), missing (5)
    logit = -1.0 + 2.0 * np.isin(code, [1, 3]) + 1.5 * missing
    y = (rng.uniform(size=n) < g.sigmoid(logit)).astype(float)
    X = np.column_stack([x, code])
    layout = g.BinLayout(8, missing=True, categorical={1: 6})
    edges = [g.bin_edges(0.0, 10.0, 8), np.arange(5) + 0.5]
    return X, y, edges, layout


def _train(X, y, edges, layout, params, rounds):
    bins = g.bin_rows(X, edges, missing_bin=layout.missing_bin)
    forest = g.Forest.empty(params.max_depth)
    for _ in range(rounds):
        tree, _ = forest.growing()
        margin = g.predict_margin(forest, X, edges, trees=tree, layout=layout)
        grad, hess = g.logloss_gradients(margin, y)
        slot = g.level_slots(forest, bins, layout=layout)
        hist = g.histograms(bins, slot, grad, hess, n_slots=forest.slots, n_bins=layout.width)
        forest = g.grow_level(forest, hist, params, layout=layout)
    return forest


def test_missing_bin_and_categorical_splits_learn_the_signal_and_export_to_lightgbm():
    X, y, edges, layout = _problem()
    params = g.GBDTParams(max_depth=2, learning_rate=0.5)
    forest = _train(X, y, edges, layout, params, rounds=6)
    split = forest.kind == g.SPLIT
    assert 1 in forest.feature[split]  # the categorical feature is used
    margin = g.predict_margin(forest, X, edges, layout=layout)
    # the true logit ranks at ~0.76; the model must come close without seeing it
    assert roc_auc(y.astype(bool), margin) > 0.72
    # a categorical split's left set groups the two churny categories together
    root_mask = int(forest.rule[0, 0])
    assert forest.feature[0, 0] == 1
    assert {(root_mask >> 1) & 1, (root_mask >> 3) & 1} in ({1}, {0})
    assert ((root_mask >> 1) & 1) != ((root_mask >> 0) & 1)
    text = g.to_lightgbm(
        forest,
        edges,
        feature_names=["x", "plan"],
        bounds=[(0, 10), (0, 5)],
        learning_rate=0.5,
        layout=layout,
    )
    booster = lgb.Booster(model_str=text)
    np.testing.assert_allclose(booster.predict(X, raw_score=True), margin, rtol=0, atol=1e-12)


def test_missing_values_go_the_learned_way():
    rng = np.random.default_rng(1)
    n = 2000
    x = rng.uniform(0, 10, n)
    y = (x > 5).astype(float)
    x[rng.uniform(size=n) < 0.2] = np.nan
    y[np.isnan(x)] = 1.0  # missing behaves like a large value: it must go right with x > 5
    layout = g.BinLayout(8, missing=True)
    edges = [g.bin_edges(0.0, 10.0, 8)]
    forest = _train(x[:, None], y, edges, layout, g.GBDTParams(max_depth=1), rounds=1)
    assert forest.kind[0, 0] == g.SPLIT and forest.rule[0, 0] == 0.0  # missing goes right
    m = g.predict_margin(forest, np.array([[np.nan], [1.0], [9.0]]), edges, layout=layout)
    assert m[0] == m[2] > m[1]
    y2 = y.copy()
    y2[np.isnan(x)] = 0.0  # now missing behaves like a small value
    forest = _train(x[:, None], y2, edges, layout, g.GBDTParams(max_depth=1), rounds=1)
    assert forest.rule[0, 0] == 1.0


def test_missingness_alone_is_a_split():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 10, 1000)
    gone = rng.uniform(size=1000) < 0.5
    x[gone] = np.nan
    y = gone.astype(float)
    layout = g.BinLayout(4, missing=True)
    edges = [g.bin_edges(0.0, 10.0, 4)]
    forest = _train(x[:, None], y, edges, layout, g.GBDTParams(max_depth=1), rounds=1)
    assert forest.bin[0, 0] == 3 and forest.rule[0, 0] == 0.0  # all values left, NaN right
    text = g.to_lightgbm(
        forest, edges, feature_names=["x"], bounds=[(0, 10)], learning_rate=0.2, layout=layout
    )
    probe = np.array([[np.nan], [3.0], [1e9]])
    np.testing.assert_allclose(
        lgb.Booster(model_str=text).predict(probe, raw_score=True),
        g.predict_margin(forest, probe, edges, layout=layout),
        atol=1e-12,
    )


def test_layout_is_checked():
    with pytest.raises(ConfigError, match="'categorical' parameter of BinLayout"):
        g.BinLayout(8, categorical={0: 60})
    with pytest.raises(ConfigError, match="bins per feature for a layout"):
        g.grow_level(
            g.Forest.empty(1),
            np.zeros((1, 1, 8, 2)),
            g.GBDTParams(max_depth=1),
            layout=g.BinLayout(8, missing=True),
        )


def test_old_six_field_forest_vectors_still_load():
    forest = g.Forest.empty(1)._with_tree()
    legacy = np.concatenate([[0.3], [1.0], np.zeros(6 * forest.n_nodes)])
    again = g.Forest.from_vector(legacy, 1)
    assert again.n_trees == 1 and again.base_margin == 0.3 and not again.rule.any()


def test_sigmoid_of_huge_margins_does_not_overflow():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = g.sigmoid(np.array([-1000.0, -750.0, 0.0, 750.0]))
    assert p[0] == 0.0 and p[2] == 0.5 and p[3] == 1.0


def test_a_noisy_hessian_near_minus_lambda_gives_no_runaway_leaf():
    """Under DP a node's hessian sum can come out near -lambda; its leaf was -G/(H+lambda),
    margins of thousands, and exp overflowed when they were scored."""
    params = g.GBDTParams(max_depth=1, lambda_l2=1.0, min_child_hessian=0.0)
    forest = g.Forest.empty(1)
    hist = np.zeros((1, 1, 4, 2))
    hist[0, 0, :, 1] = 100.0  # first exchange: counts
    forest = g.grow_level(forest, hist, params)
    hist = np.zeros((1, 1, 4, 2))
    hist[0, 0, 0] = [5.0, -0.999]  # noisy: G = 5, H = -0.999
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forest = g.grow_level(forest, hist, params)
        margin = g.predict_margin(forest, np.zeros((3, 1)), [g.bin_edges(0, 1, 4)])
        g.sigmoid(margin * 1e3)
    assert np.all(np.abs(forest.value) <= 5.0 * 0.2 + 1e-9)
