"""The collaboration agent: synthetic projects, schema, projection, training, ranking, model."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from meshfl.agents import GlobalModel, get
from meshfl.agents.collaboration import Collaboration, recall_at_k
from meshfl.config.errors import ConfigError, DataSchemaError
from meshfl.data.collaboration_data import (
    COLLABORATION_SCHEMA,
    PROFILE_FIELDS,
    joint_projects,
    msp_profiles,
)
from meshfl.models.flat import get_flat, set_flat
from meshfl.models.pair_projection import PairProjection, pair_loss, score_matrix, score_pairs
from meshfl.privacy.budget import DPStep
from meshfl.privacy.dpsgd import per_sample_gradients

FAST = {"encoder": "tiny", "local_epochs": 3, "learning_rate": 3e-3}


@pytest.fixture(scope="module")
def agent():
    return Collaboration(FAST)


@pytest.fixture(scope="module")
def data(agent):
    frame = joint_projects(900, seed=0, n_profiles=120)
    return agent.prepare(frame.iloc[:700]), agent.prepare(frame.iloc[700:]), frame


# -- data ----------------------------------------------------------------------------------


def test_joint_projects_are_seeded_and_noisy_but_balanced_enough():
    frame = joint_projects(600, seed=2)
    assert frame.equals(joint_projects(600, seed=2))
    assert not frame.equals(joint_projects(600, seed=3))
    assert set(frame["outcome"]) == {0, 1}
    assert 0.2 < frame["outcome"].mean() < 0.5  # most joint projects are not easy wins
    assert (frame["a_name"] != frame["b_name"]).all()  # nobody partners with itself
    assert frame["a_name"].nunique() > 50  # partners recur, as in a partner network
    COLLABORATION_SCHEMA.validate(frame)


def test_hidden_rule_is_visible_in_the_text():
    frame = joint_projects(3000, seed=0)

    def shared(a, b):
        return bool(set(a.split(", ")) & set(b.split(", ")))

    same_region = np.array(
        [shared(a, b) for a, b in zip(frame["a_regions"], frame["b_regions"], strict=True)]
    )
    rates = frame.groupby(same_region)["outcome"].mean()
    assert rates[True] > rates[False] + 0.25  # partners who share a region succeed more


def test_msp_profiles_have_every_field():
    profiles = msp_profiles(5, seed=0)
    assert set(PROFILE_FIELDS) <= set(profiles.columns) and len(profiles) == 5


def test_user_data_with_a_missing_column_says_what_is_expected(agent):
    frame = joint_projects(10, seed=0).drop(columns="b_regions")
    with pytest.raises(DataSchemaError, match="has no column 'b_regions'"):
        agent.load_data(frame)


def test_outcomes_must_be_booleans(agent):
    frame = joint_projects(10, seed=0)
    frame["outcome"] = frame["outcome"].astype(object)
    frame.loc[3, "outcome"] = "maybe"
    with pytest.raises(DataSchemaError, match=r"'outcome'.*booleans.*row 3 holds 'maybe'"):
        agent.load_data(frame)


def test_certifications_are_optional(agent, tmp_path):
    frame = joint_projects(30, seed=0).drop(columns=["a_certifications", "b_certifications"])
    frame["outcome"] = frame["outcome"].map({1: "yes", 0: "no"})
    path = tmp_path / "projects.csv"
    frame.to_csv(path, index=False)
    local = agent.prepare(agent.load_data(path))
    assert local.features.shape[:2] == (30, 2) and set(local.targets) <= {0, 1}


def test_config_is_checked():
    with pytest.raises(ConfigError, match=r"projection_dim.*even"):
        Collaboration(projection_dim=7)
    assert get("collaboration") is Collaboration


# -- model math ----------------------------------------------------------------------------


def test_score_is_symmetric_and_starts_at_one_half():
    torch.manual_seed(0)
    model = PairProjection(12, 6, input_scale=2.0)
    x = np.random.default_rng(0).normal(size=(5, 2, 12)).astype(np.float32)
    np.testing.assert_allclose(score_pairs(model, x), 0.0)  # the "v" half starts at zero
    set_flat(model, np.random.default_rng(1).normal(size=get_flat(model).size))
    swapped = x[:, ::-1].copy()
    np.testing.assert_allclose(score_pairs(model, x), score_pairs(model, swapped), atol=1e-5)
    matrix = score_matrix(model, x[:, 0], x[:, 1])
    np.testing.assert_allclose(np.diag(matrix), score_pairs(model, x), atol=1e-5)


def test_projection_can_express_complementarity():
    # s(a, b) = (u_a . v_b + v_a . u_b) / sqrt(h): unlike a cosine, "different" can score high.
    model = PairProjection(2, 2)
    with torch.no_grad():
        model.proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        model.proj.bias.zero_()
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    scores = score_pairs(model, np.array([[e1, e2], [e1, e1], [e2, e2]]))
    assert scores[0] > 0 and scores[1] == 0 and scores[2] == 0


def test_per_pair_gradients_are_exact():
    # DP-SGD's fast path (linear taps) must give each pair's own gradient.
    torch.manual_seed(0)
    model = PairProjection(6, 4)
    set_flat(model, np.random.default_rng(0).normal(size=get_flat(model).size))
    x = torch.randn(5, 2, 6)
    y = torch.tensor([1, 0, 1, 1, 0])
    fast = per_sample_gradients(model, x, y, loss_fn=pair_loss, method="taps")
    for i in range(5):
        model.zero_grad()
        pair_loss(model(x[i : i + 1]), y[i : i + 1]).backward()
        for name, param in model.named_parameters():
            torch.testing.assert_close(fast[name][i], param.grad, rtol=1e-4, atol=1e-5)


def test_recall_at_k():
    scores = np.array([[0.0, 3.0, 2.0, 1.0], [3.0, 0.0, 1.0, 2.0]])
    relevant = np.array([[False, False, True, True], [False, False, False, False]])
    assert recall_at_k(scores, relevant, 2) == 0.5  # only the query with partners counts
    assert recall_at_k(scores, relevant, 3) == 1.0
    assert np.isnan(recall_at_k(scores, np.zeros_like(relevant), 2))


# -- training ------------------------------------------------------------------------------


def test_training_learns_the_hidden_rule(agent, data):
    train, test, _ = data
    vector = agent.init_vector(seed=0)
    before = agent.evaluate(vector, test)
    after = agent.evaluate(agent.local_update(vector, train, server_round=1, seed=0).vector, test)
    assert before["auc"] == pytest.approx(0.5, abs=0.05)  # scores all start equal
    assert after["auc"] > 0.56 and after["loss"] < before["loss"]
    assert after["recall_at_k"] > before["recall_at_k"]


def test_dp_sgd_runs_the_planned_steps(agent, data):
    train, _, _ = data
    mechanism, rate, steps = agent.privacy_shape(train)
    dp = DPStep(mechanism, 1.0, rate, steps, 1.0, "sample")
    vector = agent.init_vector(seed=0)
    with warnings.catch_warnings():  # noise from OS entropy: no weak-RNG warning any more
        warnings.filterwarnings("error", message=".*cryptographically secure.*")
        update = agent.local_update(vector, train, server_round=1, seed=0, dp=dp)
    assert update.privacy_event == dp.event()
    assert "train_loss" not in update.metrics  # computed on raw data: never sent under DP
    assert np.all(np.isfinite(update.vector)) and not np.allclose(update.vector, vector)


# -- the model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(agent, data):
    train, _, _ = data
    vector = agent.init_vector(seed=0)
    for r in range(2):
        vector = agent.local_update(vector, train, server_round=r + 1, seed=r).vector
    return agent.model(vector)


def test_predict_scores_pairs_without_outcomes(trained, data):
    _, test, frame = data
    pairs = frame.iloc[700:].drop(columns=["outcome", "project"])
    proba = trained.predict(pairs)
    assert proba.shape == (len(pairs),) and ((proba > 0) & (proba < 1)).all()
    logits = score_pairs(trained._projection, test.features)
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-logits)), rtol=1e-6)


def test_recommend_ranks_candidates(trained, tmp_path):
    candidates = msp_profiles(30, seed=5)
    profile = candidates.iloc[0].to_dict()
    ranked = trained.recommend(profile, candidates, k=5)
    assert list(ranked["rank"]) == [1, 2, 3, 4, 5]
    assert ranked["score"].is_monotonic_decreasing
    assert profile["name"] not in set(ranked["name"])  # not recommended to itself
    assert {"name", "services", "score"} <= set(ranked.columns)
    # the best 5 are the top of the full ranking, which agrees with predict
    everything = trained.recommend(profile, candidates.to_dict("records"), k=100)
    assert len(everything) == 29
    pairs = pd.DataFrame(
        {
            **{f"a_{f}": [profile[f]] * 29 for f in PROFILE_FIELDS},
            **{f"b_{f}": everything[f].tolist() for f in PROFILE_FIELDS},
        }
    )
    np.testing.assert_allclose(trained.predict(pairs), everything["score"], rtol=1e-5)
    pd.testing.assert_frame_equal(ranked, everything.iloc[:5])
    loaded = GlobalModel.load(trained.save(tmp_path / "collab"))
    pd.testing.assert_frame_equal(loaded.recommend(profile, candidates, k=5), ranked)


def test_recommend_explains_bad_input(trained):
    candidates = msp_profiles(4, seed=1)
    with pytest.raises(DataSchemaError, match="one profile"):
        trained.recommend(candidates, candidates)
    with pytest.raises(DataSchemaError, match="has no column 'regions'"):
        trained.recommend(
            {"services": "managed SOC", "verticals": "legal", "size": "small"}, candidates
        )
    with pytest.raises(DataSchemaError, match="at least one candidate"):
        trained.recommend(candidates.iloc[0], [])


def test_a_named_encoder_that_is_not_here_says_how_to_get_it():
    from meshfl.config.errors import MeshflError

    agent = Collaboration(encoder="sentence-transformers/no-such-model-here")
    with pytest.raises(MeshflError, match=r"Could not load text encoder.*hf download"):
        agent.prepare(joint_projects(5, seed=0))
