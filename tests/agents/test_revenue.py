"""The revenue agent: data handling, exact statistics, DP noise, rounds, forecasts."""

import numpy as np
import pandas as pd
import pytest

from meshfl.agents import get
from meshfl.agents.revenue import Revenue, RevenueModel
from meshfl.config.errors import ConfigError, DataSchemaError
from meshfl.privacy.budget import DPStep


@pytest.fixture
def agent():
    return Revenue({"yearly_order": 4})


def test_registered_under_its_name():
    assert get("revenue") is Revenue
    assert Revenue.metric == "neg_smape" and Revenue.combine_uses_previous


def test_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="holidays"):
        Revenue({"holidays": ["easter"]})
    with pytest.raises(ConfigError, match="revenue_bounds"):
        Revenue({"revenue_bounds": (10.0, 1.0)})
    with pytest.raises(ConfigError, match="'ridge' parameter of RevenueConfig"):
        Revenue({"ridge": 0})


def test_bad_revenue_data_gets_an_actionable_message(agent):
    frame = agent.synthetic_data(30, seed=0)
    bad = frame.copy()
    bad.loc[4, "revenue"] = 0.0
    with pytest.raises(DataSchemaError, match=r"positive numbers.*Row 4"):
        agent.load_data(bad)
    dup = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
    with pytest.raises(DataSchemaError, match="more than once"):
        agent.load_data(dup)
    daily = frame.assign(date=pd.date_range("2025-01-01", periods=30, freq="D"))
    with pytest.raises(DataSchemaError, match="weekly or monthly"):
        agent.prepare(daily)


def test_synthetic_partitions_give_each_msp_its_own_series(agent):
    parts = agent.synthetic_partitions(5, samples_per_msp=100, seed=0)
    assert [p["series"].iloc[0] for p in parts] == [f"msp-{i}" for i in range(5)]
    lengths = [len(p) for p in parts]
    assert min(lengths) >= agent.config.horizon + 26 and len(set(lengths)) > 1
    assert all(p["date"].iloc[-1] == parts[0]["date"].iloc[-1] for p in parts)  # same end
    scales = [p["revenue"].mean() for p in parts]
    assert max(scales) / min(scales) > 2  # MSPs of different size
    again = agent.synthetic_partitions(5, samples_per_msp=100, seed=0)
    assert all(a.equals(b) for a, b in zip(parts, again, strict=True))


def test_split_holds_out_the_last_horizon_periods(agent):
    frame = pd.concat(
        [agent.synthetic_data(40, seed=1).assign(series="a"), agent.synthetic_data(60, seed=2)],
        ignore_index=True,
    ).assign(series=lambda f: np.where(np.arange(len(f)) < 40, "a", "b"))
    train, test = agent.split(frame, test_fraction=0.25, seed=0)
    h = agent.config.horizon
    assert len(train) == 100 - 2 * h and "is_holdout" not in train
    assert len(test) == 100 and test["is_holdout"].sum() == 2 * h
    for _, group in test.groupby("series"):
        assert group["is_holdout"].tolist() == [False] * (len(group) - h) + [True] * h
        assert (
            group.loc[group["is_holdout"], "date"].min()
            > train["date"][train["series"] == group["series"].iloc[0]].max()
        )
    with pytest.raises(DataSchemaError, match="horizon=13 leaves 7"):
        agent.split(agent.synthetic_data(20, seed=0), test_fraction=0.25, seed=0)


def test_msps_statistics_sum_to_the_pooled_statistics(agent):
    parts = agent.synthetic_partitions(3, samples_per_msp=70, seed=4)
    vector = agent.init_vector(seed=0)
    summed = sum(
        agent.local_update(vector, agent.prepare(p), server_round=1, seed=i).vector
        for i, p in enumerate(parts)
    )
    pooled = agent.local_update(
        vector, agent.prepare(pd.concat(parts, ignore_index=True)), server_round=1, seed=9
    ).vector
    np.testing.assert_allclose(summed, pooled, rtol=1e-9, atol=1e-9)
    model = agent.combine(vector, summed, 3.0, server_round=1)
    assert model.size == agent.stats_size + 1 and model[-1] == 1


def test_rounds_average_their_statistics(agent):
    local = agent.prepare(agent.synthetic_data(80, seed=3))
    vector = agent.init_vector(seed=0)
    u = agent.local_update(vector, local, server_round=1, seed=0).vector
    once = agent.combine(vector, u, 1.0, server_round=1)
    twice = agent.combine(once, 3 * u, 1.0, server_round=2)
    np.testing.assert_allclose(twice[:-1], 2 * u)  # mean of u and 3u
    assert twice[-1] == 2
    with pytest.raises(DataSchemaError, match="yearly_order"):
        Revenue({"yearly_order": 2}).evaluate(twice, local)


def test_dp_noise_touches_only_revenue_dependent_statistics(agent):
    local = agent.prepare(agent.synthetic_data(104, seed=5))
    vector = agent.init_vector(seed=0)
    plain = agent.local_update(vector, local, server_round=1, seed=0)
    dp = DPStep("gaussian", 2.0, 1.0, 1, 1.0, "sample")
    noisy = agent.local_update(vector, local, server_round=1, seed=0, dp=dp)
    again = agent.local_update(vector, local, server_round=1, seed=0, dp=dp)
    assert not np.array_equal(noisy.vector, again.vector)  # fresh noise, whatever the seed
    assert noisy.privacy_event == dp.event() and plain.privacy_event.mechanism == "none"
    # nothing computed from revenue leaves the MSP outside the mechanism
    assert "clipped_periods" in plain.metrics and "clipped_periods" not in noisy.metrics
    p = agent.spec.n_features
    m = p * (p + 1) // 2
    np.testing.assert_array_equal(noisy.vector[:m], plain.vector[:m])  # XᵀX: dates only
    np.testing.assert_array_equal(noisy.vector[-3:-1], plain.vector[-3:-1])  # n, dof
    diff = noisy.vector[m : m + p + 1] - plain.vector[m : m + p + 1]
    assert np.all(diff != 0)
    # the recorded noise variance is what was added (sigma·√2 times the sensitivity, squared):
    # pooled over four independent releases (the noise is fresh each time), 4 x 17 values
    assert noisy.vector[-1] > 0 and plain.vector[-1] == 0
    more = [agent.local_update(vector, local, server_round=1, seed=0, dp=dp) for _ in range(2)]
    assert all(u.vector[-1] == noisy.vector[-1] for u in [again, *more])  # public: dates, sigma
    diffs = [u.vector[m : m + p + 1] - plain.vector[m : m + p + 1] for u in [noisy, again, *more]]
    assert np.std(np.concatenate(diffs)) == pytest.approx(np.sqrt(noisy.vector[-1]), rel=0.4)


def test_evaluate_scores_held_out_periods_from_the_history(agent):
    frame = agent.synthetic_data(120, seed=6)
    train, test = agent.split(frame, test_fraction=0.25, seed=0)
    vector = agent.init_vector(seed=0)
    u = agent.local_update(vector, agent.prepare(train), server_round=1, seed=0)
    model = agent.combine(vector, u.vector, 1.0, server_round=1)
    held_out = agent.evaluate(model, agent.prepare(test))
    assert held_out["examples"] == agent.config.horizon
    assert held_out["neg_smape"] == -held_out["smape"] and 0 < held_out["smape"] < 30
    assert held_out["mase"] > 0 and 0 <= held_out["coverage"] <= 1
    in_sample = agent.evaluate(model, agent.prepare(train))
    assert in_sample["examples"] == len(train)


def test_forecast_returns_intervals_for_each_series(agent):
    frame = agent.synthetic_data(150, seed=7)
    local = agent.prepare(frame)
    vector = agent.init_vector(seed=0)
    u = agent.local_update(vector, local, server_round=1, seed=0)
    model = agent.model(agent.combine(vector, u.vector, 1.0, server_round=1))
    assert isinstance(model, RevenueModel)
    assert model.coefficients.index[-1] == "holiday_quarter_end"
    two = pd.concat([frame, agent.synthetic_data(60, seed=8)], ignore_index=True)
    fc = model.forecast(two, horizon=6)
    assert list(fc.columns) == ["series", "date", "yhat", "yhat_lower", "yhat_upper"]
    assert fc.groupby("series").size().tolist() == [6, 6]
    first = fc[fc["series"] == "msp-7"]
    assert (first["date"].diff().dropna() == pd.Timedelta(days=7)).all()
    assert first["date"].iloc[0] == frame["date"].max() + pd.Timedelta(days=7)
    assert ((fc["yhat_lower"] < fc["yhat"]) & (fc["yhat"] < fc["yhat_upper"])).all()
    # the forecast stays on the series' own scale
    assert fc["yhat"].iloc[0] == pytest.approx(frame["revenue"].tail(8).mean(), rel=0.5)
    assert len(model.forecast(frame)) == agent.config.horizon
    with pytest.raises(
        ConfigError, match=r"'horizon' parameter of .*forecast must be an integer >= 1"
    ):
        model.forecast(frame, horizon=0)


def test_monthly_series_work_end_to_end():
    agent = Revenue({"frequency": "monthly", "horizon": 6, "yearly_order": 3})
    frame = agent.synthetic_data(48, seed=1)
    assert (frame["date"].dt.day == 1).all()
    train, test = agent.split(frame, test_fraction=0.25, seed=0)
    vector = agent.init_vector(seed=0)
    u = agent.local_update(vector, agent.prepare(train), server_round=1, seed=0)
    model = agent.model(agent.combine(vector, u.vector, 1.0, server_round=1))
    assert model.evaluate(test)["examples"] == 6
    fc = model.forecast(train, horizon=3)
    assert [d.month for d in fc["date"]] == [7, 8, 9]  # the series ends in December 2025
