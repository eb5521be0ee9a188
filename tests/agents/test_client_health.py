"""The client_health agent: config, the level-per-round exchange, DP noise, LightGBM export."""

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from meshfl.agents.client_health import HESSIAN_SCALE, ClientHealth, ClientHealthModel
from meshfl.agents.update import Update
from meshfl.config.errors import ConfigError, DataSchemaError
from meshfl.data.client_health_data import (
    CLIENT_HEALTH_BOUNDS,
    CLIENT_HEALTH_FEATURES,
    client_health,
    client_health_partitions,
)
from meshfl.federation import AgentPlan
from meshfl.models import hist_gbdt as g
from meshfl.privacy.budget import DPStep
from meshfl.privacy.config import DPConfig

FAST = {"n_bins": 16, "max_depth": 2}


def _federate(agent, locals_, rounds):
    vector = agent.init_vector(seed=0)
    sizes = []
    for r in range(1, rounds + 1):
        updates = [agent.local_update(vector, loc, server_round=r, seed=r) for loc in locals_]
        sizes.append({u.vector.size for u in updates})
        summed = sum(u.weight * u.vector for u in updates)
        vector = agent.combine(vector, summed, len(updates), server_round=r)
    return vector, sizes


def test_config_is_checked_with_readable_messages():
    with pytest.raises(ConfigError, match="bounds lack seats"):
        ClientHealth(bounds={k: v for k, v in CLIENT_HEALTH_BOUNDS.items() if k != "seats"})
    with pytest.raises(ConfigError, match="low < high"):
        ClientHealth(bounds={**CLIENT_HEALTH_BOUNDS, "csat": (5.0, 1.0)})
    with pytest.raises(ConfigError, match="log_bins"):
        ClientHealth(log_bins=("no_such_feature",))
    with pytest.raises(ConfigError, match="n_bins"):
        ClientHealth(n_bins=1)


def test_custom_features_with_their_own_bounds():
    agent = ClientHealth(features=("a", "b"), bounds={"a": (0, 1), "b": (0, 100)}, **FAST)
    assert agent.log_features == ()
    frame = pd.DataFrame({"a": [0.1, 0.9] * 30, "b": [5, 70] * 30, "churned": [0, 1] * 30})
    local = agent.prepare(frame)
    vector, _ = _federate(agent, [local] * 3, rounds=2)
    assert agent.evaluate(vector, local)["auc"] == 1.0
    with pytest.raises(DataSchemaError, match="b"):
        agent.prepare(frame.drop(columns="b"))


def test_refuses_fewer_than_three_msps_and_bounds_each_msp_under_msp_level_privacy():
    assert ClientHealth.min_msps == 3
    with pytest.raises(ConfigError, match="min_msps to at least 3"):
        AgentPlan(agent="client_health", min_msps=2)
    # unit="msp": each MSP's histograms are scaled to norm max_grad_norm before its noise
    # share (tests/federation/test_msp_level_statistics.py), so the plan is accepted
    plan = AgentPlan(agent="client_health", min_msps=3, privacy=DPConfig(epsilon=1.0, unit="msp"))
    assert plan.build_agent().msp_contribution == "statistics"


def test_update_length_is_the_same_every_round_and_rounds_grow_levels():
    agent = ClientHealth(n_bins=16, max_depth=3)
    expected = 4 * len(CLIENT_HEALTH_FEATURES) * 16 * 2  # widest level x features x bins x 2
    assert agent.update_size(agent.init_vector(seed=0)) == expected
    locals_ = [agent.prepare(p) for p in client_health_partitions(3, samples_per_msp=150, seed=0)]
    vector, sizes = _federate(agent, locals_, rounds=7)
    assert all(s == {expected} for s in sizes)
    assert agent.update_size(vector) == expected
    forest = agent.forest(vector)
    assert forest.n_trees == 3  # 7 rounds: two trees of depth 3, and the root of a third
    assert list(forest.levels) == [3, 3, 1]


def test_federated_sums_grow_the_model_one_party_would_grow_on_the_pooled_rows():
    agent = ClientHealth(**FAST)
    parts = client_health_partitions(3, samples_per_msp=120, seed=1)
    federated, _ = _federate(agent, [agent.prepare(p) for p in parts], rounds=6)
    pooled, _ = _federate(agent, [agent.prepare(pd.concat(parts, ignore_index=True))], rounds=6)
    a, b = agent.forest(federated), agent.forest(pooled)
    np.testing.assert_array_equal(a.kind, b.kind)
    np.testing.assert_array_equal(a.feature, b.feature)
    np.testing.assert_allclose(a.value, b.value, atol=1e-9)


def test_auc_rises_over_rounds_on_held_out_clients():
    agent = ClientHealth(n_bins=16, max_depth=3, learning_rate=0.3)
    locals_ = [agent.prepare(p) for p in client_health_partitions(3, samples_per_msp=300, seed=2)]
    test = agent.prepare(client_health(1500, seed=99))
    vector = agent.init_vector(seed=0)
    aucs = []
    for r in range(1, 13):
        updates = [agent.local_update(vector, loc, server_round=r, seed=r) for loc in locals_]
        vector = agent.combine(vector, sum(u.vector for u in updates), 3.0, server_round=r)
        aucs.append(agent.evaluate(vector, test)["auc"])
    assert aucs[-1] > aucs[0] + 0.05
    assert aucs[-1] > 0.72


def test_gaussian_noise_has_the_sensitivity_of_one_client():
    agent = ClientHealth(**FAST)
    local = agent.prepare(client_health(200, seed=0))
    vector = agent.init_vector(seed=0)
    clean = agent.local_update(vector, local, server_round=1, seed=5)
    step = DPStep("gaussian", 2.0, 1.0, 1, 1.0, "sample")
    noisy = agent.local_update(vector, local, server_round=1, seed=5, dp=step)
    assert isinstance(noisy, Update) and noisy.privacy_event == step.event()
    assert set(noisy.metrics) == {"examples"}  # no loss computed on raw rows leaves
    # fresh noise from OS entropy at every release: the public seed does not repeat it
    again = agent.local_update(vector, local, server_round=1, seed=5, dp=step).vector
    assert not np.array_equal(again, noisy.vector)
    noise = np.concatenate([noisy.vector - clean.vector, again - clean.vector])  # 2 x 640
    expected_std = 2.0 * np.sqrt(len(CLIENT_HEALTH_FEATURES))
    assert np.std(noise) == pytest.approx(expected_std, rel=0.1)
    assert abs(np.corrcoef(noisy.vector - clean.vector, again - clean.vector)[0, 1]) < 0.2
    assert agent.privacy_shape(local) == ("gaussian", 1.0, 1)


def test_one_client_moves_the_update_by_less_than_the_sensitivity():
    agent = ClientHealth(**FAST)
    frame = client_health(80, seed=3)
    parts = [agent.prepare(p) for p in client_health_partitions(3, samples_per_msp=60, seed=3)]
    vector, _ = _federate(agent, parts, rounds=3)  # mid-tree: several open nodes
    full = agent.local_update(vector, agent.prepare(frame), server_round=4, seed=0).vector
    for i in range(0, 80, 7):
        without = agent.prepare(frame.drop(index=i))
        less = agent.local_update(vector, without, server_round=4, seed=0).vector
        assert np.linalg.norm(full - less) < agent.sensitivity


def test_training_needs_labels_and_scoring_does_not():
    agent = ClientHealth(**FAST)
    frame = client_health(60, seed=0)
    unlabelled = agent.prepare(frame.drop(columns="churned"))
    with pytest.raises(DataSchemaError, match="churned"):
        agent.local_update(agent.init_vector(seed=0), unlabelled, server_round=1, seed=0)
    metrics = agent.evaluate(agent.init_vector(seed=0), unlabelled)
    assert metrics["examples"] == 60 and "auc" not in metrics


def test_model_exports_to_a_lightgbm_booster_that_predicts_the_same(tmp_path):
    agent = ClientHealth(n_bins=16, max_depth=3)
    locals_ = [agent.prepare(p) for p in client_health_partitions(3, samples_per_msp=150, seed=4)]
    vector, _ = _federate(agent, locals_, rounds=8)
    model = agent.model(vector)
    assert isinstance(model, ClientHealthModel) and model.n_trees == 3
    frame = client_health(500, seed=5)
    # clients exactly on split thresholds and beyond the public bounds
    forest = model.forest
    for t, node in zip(*np.nonzero(forest.kind == g.SPLIT), strict=True):
        f = forest.feature[t, node]
        row = frame.iloc[[0]].copy()
        row[CLIENT_HEALTH_FEATURES[f]] = agent.edges[f][forest.bin[t, node]]
        frame = pd.concat([frame, row], ignore_index=True)
    frame.loc[0, "seats"] = 90_000.0
    X = frame[list(CLIENT_HEALTH_FEATURES)].to_numpy()
    booster = lgb.Booster(model_str=model.to_lightgbm())
    np.testing.assert_allclose(booster.predict(X), model.predict_proba(frame), rtol=0, atol=1e-9)
    np.testing.assert_allclose(booster.predict(X, raw_score=True), model.predict_margin(X))
    path = model.save_lightgbm(tmp_path / "churn.txt")
    from_file = lgb.Booster(model_file=path)
    np.testing.assert_allclose(from_file.predict(X), model.predict_proba(X), rtol=0, atol=1e-9)
    assert from_file.feature_name() == list(CLIENT_HEALTH_FEATURES)
    np.testing.assert_array_equal(model.predict(frame), model.predict_proba(frame) > 0.5)


def test_model_refuses_missing_values_and_wrong_shapes():
    agent = ClientHealth(**FAST)
    model = agent.model(agent.init_vector(seed=0))
    frame = client_health(5, seed=0)
    frame.loc[2, "csat"] = np.nan
    with pytest.raises(DataSchemaError, match="finite"):
        model.predict_proba(frame)
    with pytest.raises(DataSchemaError, match="shape"):
        model.predict_proba(np.zeros((3, 2)))
    with pytest.raises(DataSchemaError, match="lacks csat"):
        model.predict_proba(frame.drop(columns="csat"))


def test_msps_differ_in_segment_mix_and_churn_rate():
    parts = client_health_partitions(5, samples_per_msp=400, seed=0, alpha=0.3)
    assert len(parts) == 5 and all(len(p) >= 20 for p in parts)
    enterprise = [float((p["segment"] == "enterprise").mean()) for p in parts]
    churn = [float(p["churned"].mean()) for p in parts]
    assert max(enterprise) - min(enterprise) > 0.3
    assert max(churn) - min(churn) > 0.05
    pooled = client_health(5000, seed=0)
    assert 0.1 < pooled["churned"].mean() < 0.3
    for f, (lo, hi) in CLIENT_HEALTH_BOUNDS.items():
        assert pooled[f].between(lo, hi).all()


def test_feature_fraction_draws_public_feature_subsets_and_shrinks_updates():
    agent = ClientHealth(n_bins=8, max_depth=2, feature_fraction=0.3)
    assert agent.features_per_tree == 3 and agent.sensitivity == pytest.approx(np.sqrt(3))
    assert agent.update_size(agent.init_vector(seed=0)) == 2 * 3 * 8 * 2
    np.testing.assert_array_equal(
        agent.tree_features(4), ClientHealth(agent.config).tree_features(4)
    )
    locals_ = [agent.prepare(p) for p in client_health_partitions(3, samples_per_msp=150, seed=6)]
    vector, sizes = _federate(agent, locals_, rounds=8)
    assert all(s == {agent.update_size(vector)} for s in sizes)
    forest = agent.forest(vector)
    for t in range(forest.n_trees):
        used = set(forest.feature[t][forest.kind[t] == g.SPLIT])
        assert used <= set(agent.tree_features(t))
    assert len({tuple(agent.tree_features(t)) for t in range(forest.n_trees)}) > 1


def test_hessian_scaling_keeps_one_client_within_the_sensitivity():
    margin = np.linspace(-30, 30, 6001)
    for y in (0.0, 1.0):
        grad, hess = g.logloss_gradients(margin, np.full_like(margin, y))
        assert np.all(grad**2 + (HESSIAN_SCALE * hess) ** 2 <= 1.0)


def test_random_split_mode_grows_a_tree_per_round_from_leaf_sums():
    agent = ClientHealth(split_mode="random", n_bins=8, max_depth=3)
    assert agent.update_size(agent.init_vector(seed=0)) == 8 * 2
    assert agent.sensitivity == 1.0
    parts = client_health_partitions(3, samples_per_msp=150, seed=8)
    federated, sizes = _federate(agent, [agent.prepare(p) for p in parts], rounds=4)
    pooled, _ = _federate(agent, [agent.prepare(pd.concat(parts, ignore_index=True))], rounds=4)
    assert all(s == {16} for s in sizes)
    assert agent.forest(federated).n_trees == 4
    np.testing.assert_allclose(federated, pooled, atol=1e-9)
    frame = client_health(300, seed=9)
    model = agent.model(federated)
    assert model.evaluate(frame)["auc"] > 0.6
    booster = lgb.Booster(model_str=model.to_lightgbm())
    X = frame[list(CLIENT_HEALTH_FEATURES)].to_numpy()
    np.testing.assert_allclose(booster.predict(X), model.predict_proba(X), rtol=0, atol=1e-9)
    one = agent.prepare(frame)
    full = agent.local_update(federated, one, server_round=5, seed=0).vector
    less = agent.local_update(federated, agent.prepare(frame.iloc[1:]), server_round=5, seed=0)
    assert np.linalg.norm(full - less.vector) < agent.sensitivity


def test_a_round_computes_margins_only_of_trees_not_finished_before(monkeypatch):
    """Finished trees never change: each MSP keeps its rows' margin over them, so a round's
    work does not grow with the forest, and the margins are the same bits as computed anew."""
    agent = ClientHealth(FAST)
    local = agent.prepare(client_health(300, seed=0))
    computed = []
    real = g.predict_margin

    def counting(forest, X, edges, *, trees=None, layout=None, start=0, margin=None):
        computed.append((trees if trees is not None else forest.n_trees) - start)
        return real(forest, X, edges, trees=trees, layout=layout, start=start, margin=margin)

    monkeypatch.setattr(g, "predict_margin", counting)
    vector = agent.init_vector(seed=0)
    for server_round in range(1, 16):
        update = agent.local_update(vector, local, server_round=server_round, seed=0)
        vector = agent.combine(vector, update.vector, 1.0, server_round=server_round)
        computed.clear()
        agent.evaluate(vector, local)
        forest = agent.forest(vector)
        assert sum(computed) <= 2  # the newest finished tree and the growing one, at most
        np.testing.assert_array_equal(
            agent.margin_of(forest, local), real(forest, local.X, agent.edges, layout=agent.layout)
        )
    assert agent.forest(vector).n_trees >= 5
