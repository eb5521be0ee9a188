"""client_health on an MSP's own columns: numeric, categorical (public lists) and missing."""

import logging

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

import meshfl
from meshfl.agents.client_health import ClientHealth
from meshfl.config.errors import ConfigError, DataSchemaError

PLANS = ("basic", "pro", "enterprise", "legacy")
CONFIG = {
    "features": ("plan", "monthly_fee", "tickets"),
    "categorical": {"plan": PLANS},
    "bounds": {"monthly_fee": (0.0, 500.0), "tickets": (0.0, 50.0)},
    "allow_missing": True,
    "n_bins": 8,
    "max_depth": 2,
    "learning_rate": 0.5,
}


def own_frame(n: int, seed: int) -> pd.DataFrame:
    """Churn lives in the plan and in whether the fee is missing; tickets are noise."""
    rng = np.random.default_rng(seed)
    plan = rng.choice([*PLANS, "trial"], size=n, p=[0.3, 0.25, 0.2, 0.15, 0.1]).astype(object)
    plan[rng.uniform(size=n) < 0.05] = None
    fee = rng.uniform(20, 400, n)
    no_fee = rng.uniform(size=n) < 0.25
    fee[no_fee] = np.nan
    logit = -2.0 + 2.5 * np.isin(plan, ["legacy", "trial"]) + 2.0 * no_fee
    churned = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {"plan": plan, "monthly_fee": fee, "tickets": rng.poisson(3, n), "churned": churned}
    )


def _federate(agent, locals_, rounds):
    vector = agent.init_vector(seed=0)
    for r in range(1, rounds + 1):
        updates = [agent.local_update(vector, loc, server_round=r, seed=r) for loc in locals_]
        summed = sum(u.vector for u in updates)
        vector = agent.combine(vector, summed, len(updates), server_round=r)
    return vector


def test_own_numeric_categorical_and_missing_columns_train_and_beat_chance():
    agent = ClientHealth(CONFIG)
    locals_ = [agent.prepare(own_frame(600, seed=s)) for s in range(3)]
    vector = _federate(agent, locals_, rounds=6)
    held_out = own_frame(2000, seed=99)
    metrics = agent.evaluate(vector, agent.prepare(held_out))
    # the true logit ranks held-out clients at about 0.80
    assert metrics["auc"] > 0.72
    used = agent.model(vector).describe()["features_used"]
    assert "plan" in used and "monthly_fee" in used


def test_export_load_and_predict_on_a_raw_frame_with_nan_and_strings(tmp_path):
    agent = ClientHealth(CONFIG)
    locals_ = [agent.prepare(own_frame(400, seed=s)) for s in range(3)]
    model = agent.model(_federate(agent, locals_, rounds=4))
    raw = own_frame(300, seed=7).drop(columns="churned")
    raw.loc[0, "plan"] = "unheard-of plan"  # not on the public list: 'other'
    raw.loc[1, "monthly_fee"] = None
    before = model.predict_proba(raw)
    loaded = meshfl.load(model.save(tmp_path / "churn"))
    assert loaded.agent.config.categorical == {"plan": PLANS}
    assert loaded.agent.config.allow_missing
    np.testing.assert_array_equal(loaded.predict_proba(raw), before)
    # unlisted categories score as 'other', the same as 'trial'
    other = raw.iloc[[0]].assign(plan="trial")
    assert loaded.predict_proba(other)[0] == before[0]
    booster = lgb.Booster(model_str=loaded.to_lightgbm())
    np.testing.assert_allclose(booster.predict(loaded.encode(raw)), before, rtol=0, atol=1e-12)


def test_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="'categorical' must name features; plan"):
        ClientHealth(features=("x",), bounds={"x": (0, 1)}, categorical={"plan": PLANS})
    with pytest.raises(ConfigError, match="bounds lack monthly_fee"):
        ClientHealth({**CONFIG, "bounds": {"tickets": (0, 1)}})
    with pytest.raises(ConfigError, match="plan is categorical"):
        ClientHealth({**CONFIG, "bounds": {**CONFIG["bounds"], "plan": (0, 1)}})
    with pytest.raises(ConfigError, match="lists 12 categories in 'categorical'; at most 7"):
        ClientHealth({**CONFIG, "categorical": {"plan": tuple(f"p{i}" for i in range(12))}})
    with pytest.raises(ConfigError, match="distinct"):
        ClientHealth({**CONFIG, "categorical": {"plan": ("a", "a")}})


def test_missing_values_without_allow_missing_say_how_to_allow_them():
    agent = ClientHealth({**CONFIG, "allow_missing": False})
    with pytest.raises(DataSchemaError, match=r"monthly_fee.*allow_missing=True"):
        agent.prepare(own_frame(50, seed=0))


def test_values_outside_the_bounds_are_counted_per_column_and_logged(caplog):
    agent = ClientHealth(CONFIG)
    frame = own_frame(200, seed=1)
    frame.loc[:9, "monthly_fee"] = 900.0  # 10 above the bound of 500
    frame.loc[10:12, "tickets"] = -1  # 3 below 0
    with caplog.at_level(logging.WARNING, logger="meshfl.agents.client_health"):
        local = agent.prepare(frame)
    report = local.clipping
    assert (report["monthly_fee"].above, report["monthly_fee"].below) == (10, 0)
    assert report["monthly_fee"].values == int(frame["monthly_fee"].notna().sum())
    assert (report["tickets"].below, report["tickets"].above) == (3, 0)
    assert report.clipped == 13
    assert [c.column for c in report.columns] == ["monthly_fee", "tickets"]  # not the category
    text = caplog.text
    assert "'monthly_fee'" in text and "[0, 500]" in text and "10 above" in text
    assert "'tickets'" in text and "3 below" in text
    assert agent.clip_report(frame).to_frame().set_index("column")["clipped"].to_dict() == {
        "monthly_fee": 10,
        "tickets": 3,
    }
    # nothing of it travels: the update is the histograms alone
    update = agent.local_update(agent.init_vector(seed=0), local, server_round=1, seed=0)
    assert set(update.metrics) == {"examples", "train_logloss"}


def test_one_client_still_moves_the_update_by_less_than_the_sensitivity():
    """A client sits in one bin per feature, the missing and category bins included."""
    agent = ClientHealth(CONFIG)
    parts = [agent.prepare(own_frame(200, seed=s)) for s in range(3)]
    vector = _federate(agent, parts, rounds=3)  # mid-tree: several open nodes
    frame = own_frame(60, seed=5)
    full = agent.local_update(vector, agent.prepare(frame), server_round=4, seed=0).vector
    for i in range(0, 60, 6):
        less = agent.local_update(
            vector, agent.prepare(frame.drop(index=i)), server_round=4, seed=0
        ).vector
        assert np.linalg.norm(full - less) < agent.sensitivity


@pytest.mark.parametrize("split_mode", ["best", "random"])
def test_noisy_dp_rounds_on_own_columns_stay_finite_and_warning_free(split_mode):
    import warnings

    from meshfl.privacy.budget import DPStep

    agent = ClientHealth({**CONFIG, "split_mode": split_mode, "max_depth": 3})
    parts = [agent.prepare(own_frame(300, seed=s)) for s in range(3)]
    step = DPStep("gaussian", 5.0, 1.0, 1, 1.0, "sample")
    vector = agent.init_vector(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for r in range(1, 7):
            updates = [
                agent.local_update(vector, p, server_round=r, seed=r, dp=step) for p in parts
            ]
            vector = agent.combine(vector, sum(u.vector for u in updates), 3, server_round=r)
        model = agent.model(vector)
        p = model.predict_proba(own_frame(200, seed=11))
    assert np.all(np.isfinite(vector)) and np.all((p > 0) & (p < 1))
    booster = lgb.Booster(model_str=model.to_lightgbm())
    raw = own_frame(200, seed=12)
    np.testing.assert_allclose(
        booster.predict(model.encode(raw)), model.predict_proba(raw), rtol=0, atol=1e-12
    )
