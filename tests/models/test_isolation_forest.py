"""Tests of the federated isolation forest (meshfl.models.isolation_forest)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

from meshfl.config.errors import ConfigError
from meshfl.models.isolation_forest import (
    ForestStructure,
    average_path_length,
    concat_structures,
    decision_function,
    grow_structure,
    leaf_counts,
    leaf_index,
    predict,
    score_samples,
)

LOW = np.array([-10.0, -10.0, -10.0, -10.0, -10.0])
HIGH = np.array([10.0, 10.0, 10.0, 10.0, 10.0])


def _naive_leaf(structure: ForestStructure, x: np.ndarray, tree: int) -> int:
    """Walk one sample down one tree, one node at a time."""
    n_internal = 2**structure.depth - 1
    node = 0
    while node < n_internal:
        go_right = x[structure.feature[tree, node]] >= structure.threshold[tree, node]
        node = 2 * node + 1 + int(go_right)
    return node - n_internal


def _planted_outliers(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2000 standard Gaussian points in 5-D and 50 far points, all inside LOW..HIGH."""
    rng = np.random.default_rng(seed)
    inliers = rng.normal(size=(2000, 5))
    candidates = rng.uniform(-8.0, 8.0, size=(2000, 5))
    outliers = candidates[np.linalg.norm(candidates, axis=1) > 5.0][:50]
    X = np.vstack([inliers, outliers])
    y = np.r_[np.zeros(2000), np.ones(50)]
    return X, y


@st.composite
def forests_and_samples(draw: st.DrawFn) -> tuple[ForestStructure, np.ndarray]:
    n_features = draw(st.integers(1, 4))
    depth = draw(st.integers(1, 5))
    n_trees = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    n_samples = draw(st.integers(0, 40))
    rng = np.random.default_rng(seed)
    low = rng.uniform(-5.0, 0.0, size=n_features)
    high = low + rng.uniform(0.1, 5.0, size=n_features)
    structure = grow_structure(low, high, n_trees=n_trees, depth=depth, seed=seed)
    # Samples reach a little beyond the bounds, and some sit exactly on thresholds.
    X = rng.uniform(low - 1.0, high + 1.0, size=(n_samples, n_features))
    if n_samples:
        on_split = rng.integers(0, n_samples, size=min(5, n_samples))
        t = rng.integers(0, n_trees, size=on_split.size)
        i = rng.integers(0, 2**depth - 1, size=on_split.size)
        X[on_split, structure.feature[t, i]] = structure.threshold[t, i]
    return structure, X


class TestStructure:
    def test_same_seed_gives_same_forest_and_other_seeds_differ(self) -> None:
        a = grow_structure(LOW, HIGH, n_trees=20, depth=6, seed=7)
        b = grow_structure(list(LOW), list(HIGH), n_trees=20, depth=6, seed=7)
        c = grow_structure(LOW, HIGH, n_trees=20, depth=6, seed=8)
        assert np.array_equal(a.feature, b.feature)
        assert np.array_equal(a.threshold, b.threshold)
        assert not np.array_equal(a.threshold, c.threshold)

    def test_generator_seed_matches_int_seed(self) -> None:
        a = grow_structure(LOW, HIGH, n_trees=4, depth=3, seed=3)
        b = grow_structure(LOW, HIGH, n_trees=4, depth=3, seed=np.random.default_rng(3))
        assert np.array_equal(a.threshold, b.threshold)

    def test_first_trees_do_not_depend_on_n_trees(self) -> None:
        small = grow_structure(LOW, HIGH, n_trees=5, depth=4, seed=11)
        large = grow_structure(LOW, HIGH, n_trees=12, depth=4, seed=11)
        assert np.array_equal(small.feature, large.feature[:5])
        assert np.array_equal(small.threshold, large.threshold[:5])

    def test_structure_is_untouched_by_data(self) -> None:
        s = grow_structure(LOW, HIGH, n_trees=10, depth=5, seed=1)
        before = (s.feature.copy(), s.threshold.copy())
        X, _ = _planted_outliers()
        counts = leaf_counts(s, X)
        score_samples(s, counts, X)
        fresh = grow_structure(LOW, HIGH, n_trees=10, depth=5, seed=1)
        for arr, ref in zip((s.feature, s.threshold), before, strict=True):
            assert np.array_equal(arr, ref)
        assert np.array_equal(s.threshold, fresh.threshold)
        with pytest.raises(ValueError, match="read-only"):
            s.threshold[0, 0] = 0.0

    def test_shapes_and_properties(self) -> None:
        s = grow_structure(LOW, HIGH, n_trees=7, depth=3, seed=0)
        assert s.feature.shape == s.threshold.shape == (7, 7)
        assert np.issubdtype(s.feature.dtype, np.integer)
        assert (s.n_trees, s.n_leaves, s.n_features, s.depth) == (7, 8, 5, 3)
        assert s.feature.min() >= 0
        assert s.feature.max() < 5

    @settings(max_examples=30, deadline=None)
    @given(forests_and_samples())
    def test_thresholds_lie_inside_each_nodes_box(
        self, case: tuple[ForestStructure, np.ndarray]
    ) -> None:
        s, _ = case
        for t in range(s.n_trees):
            boxes = {0: (s.low.copy(), s.high.copy())}
            for node in range(2**s.depth - 1):
                lo, hi = boxes.pop(node)
                q, thr = s.feature[t, node], s.threshold[t, node]
                assert lo[q] <= thr < hi[q]
                assert s.low[q] <= thr < s.high[q]
                left_hi, right_lo = hi.copy(), lo.copy()
                left_hi[q], right_lo[q] = thr, thr
                boxes[2 * node + 1] = (lo, left_hi)
                boxes[2 * node + 2] = (right_lo, hi)

    def test_all_features_get_used(self) -> None:
        s = grow_structure(LOW, HIGH, n_trees=20, depth=5, seed=0)
        assert set(np.unique(s.feature)) == set(range(5))

    def test_concat_appends_trees_and_counts(self) -> None:
        a = grow_structure(LOW, HIGH, n_trees=3, depth=4, seed=0)
        b = grow_structure(LOW, HIGH, n_trees=2, depth=4, seed=1)
        ab = concat_structures(a, b)
        X, _ = _planted_outliers()
        assert ab.n_trees == 5
        assert np.array_equal(ab.threshold[3:], b.threshold)
        np.testing.assert_array_equal(
            leaf_counts(ab, X), np.concatenate([leaf_counts(a, X), leaf_counts(b, X)])
        )

    def test_concat_rejects_mismatched_forests(self) -> None:
        a = grow_structure(LOW, HIGH, n_trees=3, depth=4, seed=0)
        with pytest.raises(ConfigError, match="same depth"):
            concat_structures(a, grow_structure(LOW, HIGH, n_trees=3, depth=5, seed=0))
        with pytest.raises(ConfigError, match="same feature bounds"):
            concat_structures(a, grow_structure(LOW, HIGH + 1, n_trees=3, depth=4, seed=0))


class TestLeaves:
    @settings(max_examples=40, deadline=None)
    @given(forests_and_samples())
    def test_leaf_index_matches_naive_traversal(
        self, case: tuple[ForestStructure, np.ndarray]
    ) -> None:
        s, X = case
        expected = np.array(
            [[_naive_leaf(s, x, t) for t in range(s.n_trees)] for x in X], dtype=np.intp
        ).reshape(len(X), s.n_trees)
        np.testing.assert_array_equal(leaf_index(s, X), expected)

    def test_leaf_index_matches_naive_traversal_across_chunks(self) -> None:
        # Enough rows that leaf_index works in several chunks.
        s = grow_structure(LOW, HIGH, n_trees=50, depth=6, seed=5)
        X = np.random.default_rng(0).uniform(-12, 12, size=(1500, 5))
        leaves = leaf_index(s, X)
        rows = [0, 654, 655, 656, 1499]
        for r in rows:
            assert [_naive_leaf(s, X[r], t) for t in range(50)] == leaves[r].tolist()

    @settings(max_examples=40, deadline=None)
    @given(forests_and_samples(), st.data())
    def test_counts_are_additive_over_any_split_of_the_data(
        self, case: tuple[ForestStructure, np.ndarray], data: st.DataObject
    ) -> None:
        s, X = case
        mask = np.array(data.draw(st.lists(st.booleans(), min_size=len(X), max_size=len(X))))
        mask = mask.astype(bool).reshape(len(X))
        total = leaf_counts(s, X)
        parts = leaf_counts(s, X[mask]) + leaf_counts(s, X[~mask])
        np.testing.assert_array_equal(total, parts)

    @settings(max_examples=30, deadline=None)
    @given(forests_and_samples())
    def test_counts_sum_to_n_samples_per_tree(
        self, case: tuple[ForestStructure, np.ndarray]
    ) -> None:
        s, X = case
        counts = leaf_counts(s, X)
        assert counts.dtype == np.float64
        assert counts.shape == (s.n_trees * s.n_leaves,)
        np.testing.assert_array_equal(counts.reshape(s.n_trees, s.n_leaves).sum(axis=1), len(X))

    def test_counts_are_tree_major(self) -> None:
        s = grow_structure(LOW, HIGH, n_trees=3, depth=2, seed=0)
        x = np.zeros((1, 5))
        counts = leaf_counts(s, x)
        leaves = leaf_index(s, x)[0]
        assert np.flatnonzero(counts).tolist() == [t * 4 + leaves[t] for t in range(3)]


class TestScores:
    def test_average_path_length_matches_sklearn(self) -> None:
        iforest = pytest.importorskip("sklearn.ensemble._iforest")
        n = np.array([0, 1, 2, 3, 4, 5, 10, 255, 256, 1000, 1e6])
        np.testing.assert_allclose(
            average_path_length(n), iforest._average_path_length(n), rtol=0, atol=1e-12
        )
        assert average_path_length(np.array([[2, 3], [0, 9]])).shape == (2, 2)
        assert average_path_length(1).shape == ()

    def test_path_length_by_hand(self) -> None:
        # One feature on [0, 4], depth 2; splits at 2, then 1 (left) and 3 (right).
        s = ForestStructure(
            feature=np.zeros((1, 3), dtype=int),
            threshold=np.array([[2.0, 1.0, 3.0]]),
            depth=2,
            low=np.array([0.0]),
            high=np.array([4.0]),
        )
        x = np.array([[0.5], [1.5], [2.5], [3.5]])
        assert leaf_index(s, x)[:, 0].tolist() == [0, 1, 2, 3]
        c = average_path_length
        # psi = 8: leaf masses rescale to 6, 1.5, 0.5, 0 virtual points; halves to 7.5, 0.5.
        # Left half: the split into it has only 0.5 virtual points on the other side, so it
        # adds 0.5; then both left leaves add 1 (siblings hold 1.5 and 6) and c(leaf mass),
        # with c(1.5) = (c(1) + c(2)) / 2 = 0.5. Right half: 0.5 <= 1 point, the path stops
        # there after one full step.
        counts = np.array([60.0, 15.0, 5.0, 0.0])
        h = np.array([0.5 + 1 + float(c(6)), 0.5 + 1 + 0.5, 1.0, 1.0])
        np.testing.assert_allclose(
            score_samples(s, counts, x, subsample_size=8), -(2.0 ** (-h / float(c(8))))
        )
        # psi = 256: masses 192, 48, 16, 0, nothing light before the leaves. The split at 3
        # leaves leaf 3 empty, so it does not lengthen the path into leaf 2; leaf 3 itself is
        # reached by a full step and adds c(0) = 0.
        h = np.array([2 + float(c(192)), 2 + float(c(48)), 1 + float(c(16)), 2.0])
        np.testing.assert_allclose(score_samples(s, counts, x), -(2.0 ** (-h / float(c(256)))))

    def test_noisy_counts_are_summed_before_clipping(self) -> None:
        s = ForestStructure(
            feature=np.zeros((1, 3), dtype=int),
            threshold=np.array([[2.0, 1.0, 3.0]]),
            depth=2,
            low=np.array([0.0]),
            high=np.array([4.0]),
        )
        x = np.array([[0.5], [1.5], [2.5], [3.5]])
        c = average_path_length

        def c_frac(m: float) -> float:
            lo = np.floor(m)
            return float((1 - (m - lo)) * c(lo) + (m - lo) * c(lo + 1))

        # Noise of +5 and -5 on the empty right half cancels: the half holds 0 points, so the
        # split at 2 does not lengthen the left paths, and the right paths stop after it.
        # (Clipping leaves first would give the right half 5 counts, 16 virtual points.)
        counts = np.array([60.0, 15.0, 5.0, -5.0])
        m0, m1 = 60 / 75 * 256, 15 / 75 * 256
        h = np.array([1 + c_frac(m0), 1 + c_frac(m1), 1.0, 1.0])
        np.testing.assert_allclose(score_samples(s, counts, x), -(2.0 ** (-h / float(c(256)))))

    def test_scores_lie_in_minus_one_to_zero(self) -> None:
        s = grow_structure(LOW, HIGH, n_trees=30, depth=8, seed=0)
        X, _ = _planted_outliers()
        counts = leaf_counts(s, X)
        probe = np.vstack([X, np.full((1, 5), 1e6), np.full((1, 5), -1e6), np.zeros((1, 5))])
        for psi in (2, 16, 256, 4096):
            scores = score_samples(s, counts, probe, subsample_size=psi)
            assert scores.shape == (len(probe),)
            assert np.all(scores >= -1.0)
            assert np.all(scores < 0.0)

    def test_planted_outliers_score_lower_and_match_sklearn(self) -> None:
        X, y = _planted_outliers()
        s = grow_structure(LOW, HIGH, n_trees=100, depth=8, seed=0)
        scores = score_samples(s, leaf_counts(s, X), X)
        assert scores[y == 1].mean() < scores[y == 0].mean()
        ours = roc_auc_score(y, -scores)
        reference = IsolationForest(n_estimators=100, random_state=0).fit(X)
        theirs = roc_auc_score(y, -reference.score_samples(X))
        print(f"planted outliers: AUC meshfl={ours:.4f} sklearn={theirs:.4f}")
        assert ours > 0.9
        assert ours >= theirs - 0.05

    def test_near_outliers_comparable_to_sklearn(self) -> None:
        # Harder: outliers uniform in [-4, 4]^5, some of them inside the Gaussian cloud.
        rng = np.random.default_rng(1)
        X = np.vstack([rng.normal(size=(2000, 5)), rng.uniform(-4, 4, size=(50, 5))])
        y = np.r_[np.zeros(2000), np.ones(50)]
        s = grow_structure(LOW, HIGH, n_trees=100, depth=8, seed=0)
        ours = roc_auc_score(y, -score_samples(s, leaf_counts(s, X), X))
        reference = IsolationForest(n_estimators=100, random_state=0).fit(X)
        theirs = roc_auc_score(y, -reference.score_samples(X))
        print(f"near outliers: AUC meshfl={ours:.4f} sklearn={theirs:.4f}")
        assert ours >= theirs - 0.05

    def test_federated_counts_score_like_pooled_data(self) -> None:
        X, _ = _planted_outliers()
        s = grow_structure(LOW, HIGH, n_trees=20, depth=6, seed=0)
        msp_counts = [leaf_counts(s, part) for part in np.array_split(X, 3)]
        np.testing.assert_array_equal(
            score_samples(s, sum(msp_counts), X), score_samples(s, leaf_counts(s, X), X)
        )

    def test_noisy_negative_counts_give_finite_scores(self) -> None:
        X, y = _planted_outliers()
        s = grow_structure(LOW, HIGH, n_trees=100, depth=8, seed=0)
        counts = leaf_counts(s, X)
        noisy = counts + np.random.default_rng(0).normal(0.0, 20.0, size=counts.shape)
        assert (noisy < 0).any()
        scores = score_samples(s, noisy, X)
        assert np.all(np.isfinite(scores))
        assert np.all((scores >= -1.0) & (scores < 0.0))
        assert roc_auc_score(y, -scores) > 0.9

    def test_empty_trees_are_left_out(self) -> None:
        X, _ = _planted_outliers()
        a = grow_structure(LOW, HIGH, n_trees=10, depth=6, seed=0)
        b = grow_structure(LOW, HIGH, n_trees=5, depth=6, seed=1)
        ab = concat_structures(a, b)
        counts = np.concatenate([leaf_counts(a, X), -np.ones(b.n_trees * b.n_leaves)])
        np.testing.assert_allclose(
            score_samples(ab, counts, X), score_samples(a, leaf_counts(a, X), X)
        )

    def test_decision_function_and_predict_follow_sklearn_conventions(self) -> None:
        X, y = _planted_outliers()
        s = grow_structure(LOW, HIGH, n_trees=50, depth=8, seed=0)
        counts = leaf_counts(s, X)
        scores = score_samples(s, counts, X)
        np.testing.assert_allclose(decision_function(s, counts, X), scores + 0.5)
        labels = predict(s, counts, X)
        assert set(np.unique(labels)) <= {-1, 1}
        np.testing.assert_array_equal(labels == -1, scores < -0.5)
        # sklearn's threshold keeps its meaning: it flags nearly every planted outlier and
        # few inliers (sklearn's own predict: all outliers, 1.6 % of inliers).
        assert (labels[y == 1] == -1).mean() > 0.9
        assert (labels[y == 0] == -1).mean() < 0.05
        strict = predict(s, counts, X, threshold=-0.9)
        assert (strict == 1).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"low": [0.0, 5.0], "high": [1.0, 5.0]}, r"'high' bound of feature 1 .* \(5\.0\)"),
        ({"low": [0.0, 0.0], "high": [1.0]}, "'high' parameter must have the same length"),
        ({"low": [0.0, np.nan], "high": [1.0, 1.0]}, "'low' bound of feature 1 must be finite"),
        ({"low": [0.0], "high": [np.inf]}, "'high' bound of feature 0 must be finite"),
        ({"low": [[0.0]], "high": [[1.0]]}, "'low' parameter must be a non-empty 1-D"),
        ({"low": [], "high": []}, "'low' parameter must be a non-empty 1-D"),
        ({"low": ["a"], "high": [1.0]}, "'low' parameter must be a 1-D array of floats"),
        ({"n_trees": 0}, "'n_trees' parameter of grow_structure must be an integer >= 1"),
        ({"n_trees": 2.0}, "'n_trees'"),
        ({"n_trees": True}, "'n_trees'"),
        ({"depth": 0}, r"'depth' parameter of grow_structure must be an integer in \[1, 16\]"),
        ({"depth": 17}, "'depth'"),
        ({"seed": -1}, "'seed' parameter must be a non-negative int"),
        ({"seed": "public"}, "'seed'"),
    ],
)
def test_grow_structure_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"low": [0.0, 0.0], "high": [1.0, 1.0], "n_trees": 2}
    args |= {"depth": 3, "seed": 0}
    args |= kwargs
    with pytest.raises(ConfigError, match=match):
        grow_structure(**args)  # type: ignore[arg-type]


def test_scoring_rejects_bad_arguments() -> None:
    s = grow_structure([0.0, 0.0], [1.0, 1.0], n_trees=2, depth=3, seed=0)
    X = np.full((4, 2), 0.5)
    counts = leaf_counts(s, X)
    with pytest.raises(ConfigError, match=r"'X' parameter must have shape \(n_samples, 2\)"):
        leaf_counts(s, np.zeros((4, 3)))
    with pytest.raises(ConfigError, match="reshape"):
        leaf_index(s, np.zeros(2))
    with pytest.raises(ConfigError, match="'X' parameter must not contain NaN"):
        leaf_index(s, np.array([[np.nan, 0.0]]))
    with pytest.raises(ConfigError, match=r"'counts' vector must have shape .*\(16,\)"):
        score_samples(s, counts[:-1], X)
    with pytest.raises(ConfigError, match="'counts' vector must be finite"):
        score_samples(s, np.full(16, np.nan), X)
    with pytest.raises(ConfigError, match="'counts' vector must hold some positive mass"):
        score_samples(s, -np.ones(16), X)
    with pytest.raises(
        ConfigError, match="'subsample_size' parameter of score_samples must be an integer >= 2"
    ):
        score_samples(s, counts, X, subsample_size=1)
    with pytest.raises(ConfigError, match="'feature' array of ForestStructure"):
        ForestStructure(
            feature=np.full((1, 7), 2), threshold=np.zeros((1, 7)), depth=3, low=s.low, high=s.high
        )
    with pytest.raises(ConfigError, match="'threshold' array of ForestStructure"):
        ForestStructure(
            feature=s.feature, threshold=np.zeros((2, 6)), depth=3, low=s.low, high=s.high
        )


def test_empty_input_gives_empty_outputs() -> None:
    s = grow_structure([0.0], [1.0], n_trees=2, depth=2, seed=0)
    empty = np.zeros((0, 1))
    assert leaf_index(s, empty).shape == (0, 2)
    np.testing.assert_array_equal(leaf_counts(s, empty), np.zeros(8))
    assert score_samples(s, leaf_counts(s, np.full((3, 1), 0.5)), empty).shape == (0,)


def test_a_forest_scored_in_parts_scores_as_a_whole():
    """path_sums adds up over a forest's parts (one per round in the anomaly agent), a part
    without mass adds nothing, and score_from_path_sums refuses a forest without any."""
    from meshfl.config.errors import ConfigError
    from meshfl.models import isolation_forest as iforest

    rng = np.random.default_rng(0)
    X = rng.normal(0.5, 0.1, size=(300, 2)).clip(0, 1)
    parts = [
        iforest.grow_structure([0.0, 0.0], [1.0, 1.0], n_trees=3, depth=4, seed=s)
        for s in (1, 2, 3)
    ]
    counts = [iforest.leaf_counts(p, X) for p in parts]
    counts[1] = -np.ones_like(counts[1])  # noise left this part without mass
    whole = iforest.score_samples(
        functools.reduce(iforest.concat_structures, parts), np.concatenate(counts), X[:50]
    )
    sums = [iforest.path_sums(p, c, X[:50]) for p, c in zip(parts, counts, strict=True)]
    assert sums[1][1] == 0 and not sums[1][0].any()
    total, trees = sum(s[0] for s in sums), sum(s[1] for s in sums)
    np.testing.assert_allclose(iforest.score_from_path_sums(total, trees), whole, atol=1e-12)
    with pytest.raises(ConfigError, match="positive mass"):
        iforest.score_from_path_sums(sums[1][0], 0)


def test_anomaly_evaluates_a_round_by_scoring_only_its_new_trees(monkeypatch):
    from meshfl.agents import registry
    from meshfl.models import isolation_forest as iforest
    from meshfl.simulation import make_partitions

    agent = registry.get("anomaly")({"trees_per_round": 4, "depth": 5})
    local = agent.prepare(make_partitions(agent, num_msps=2, seed=0, samples_per_msp=120)[0].train)
    calls = []
    real = iforest.path_sums
    monkeypatch.setattr(iforest, "path_sums", lambda *a, **k: calls.append(1) or real(*a, **k))
    vector = np.zeros(0)
    for server_round in range(1, 6):
        update = agent.local_update(vector, local, seed=0, server_round=server_round)
        vector = agent.combine(vector, update.vector, 1.0, server_round=server_round)
        calls.clear()
        scored = agent.evaluate(vector, local)
        assert len(calls) == 1  # the earlier rounds' trees are not scored again
        full = agent.score_samples(vector, local.X)
        assert scored["mean_score"] == pytest.approx(float(full.mean()), abs=1e-12)
