"""Is the private model any good? Trivial baselines, and the warnings when a model is worse.

The audit (issue 11 §5): at ε=0.1 models came out worse than a constant, with no warning.
Every agent's evaluation now carries ``baseline_<metric>`` on the same held-out rows; the
round record says ``worse_than_baseline``; ``simulate``, ``meshfl bench privacy`` and the
server's log warn when a private model is worse.
"""

import logging
import math
import warnings

import numpy as np
import pandas as pd
import pytest

import meshfl
from meshfl import agents
from meshfl.agents.revenue import seasonal_naive
from meshfl.bench.privacy import _markdown, privacy_sweep
from meshfl.privacy import DPConfig

FAST = {name: dict(agents.get(name).fast_config) for name in agents.built()}
"""Each agent's fast test config (``Agent.fast_config``)."""

BASELINE_WARNING = "worse than a trivial baseline"

# threat_intel with the bundled MiniLM encoder learns well without privacy (accuracy ~0.8
# against a majority class of ~0.45 here) and is drowned at ε = 0.01.
RUN = dict(
    agent="threat_intel",
    num_msps=3,
    rounds=2,
    seed=0,
    progress=False,
    samples_per_msp=100,
    alpha=5.0,
    secure_aggregation="plaintext",
)


def _simulate(privacy):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = meshfl.simulate(privacy=privacy, **RUN)
    return result, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


@pytest.fixture(scope="module")
def public():
    return _simulate(None)


@pytest.fixture(scope="module")
def private():
    return _simulate(DPConfig(epsilon=0.01, delta=1e-5))


# -- simulate ------------------------------------------------------------------------------
def test_a_drowned_private_model_warns_and_its_history_says_so(private):
    result, messages = private
    last = result.history.iloc[-1]
    assert bool(last["worse_than_baseline"]) is True
    assert last["accuracy"] < last["baseline_accuracy"]
    warned = [m for m in messages if BASELINE_WARNING in m]
    assert len(warned) == 1
    text = warned[0]
    assert f"accuracy={last['accuracy']:.4g}" in text
    assert f"against {last['baseline_accuracy']:.4g}" in text
    assert "the majority class" in text and "ε=0.01" in text


def test_the_same_run_without_privacy_beats_the_baseline_and_does_not_warn(public, private):
    result, messages = public
    assert not any(BASELINE_WARNING in m for m in messages)
    assert not result.history["worse_than_baseline"].any()
    assert (result.history["accuracy"] > result.history["baseline_accuracy"]).all()
    assert "snr" not in result.history  # no noise, nothing to estimate
    # same data, same held-out rows: the same baseline with and without privacy
    assert list(result.history["baseline_accuracy"]) == list(
        private[0].history["baseline_accuracy"]
    )


def test_the_baseline_is_each_msps_majority_class_weighted_by_held_out_rows(public):
    result, _ = public
    shares, sizes = [], []
    for part in result.partitions:
        counts = part.test["threat_class"].value_counts()
        shares.append(counts.iloc[0] / counts.sum())
        sizes.append(counts.sum())
    expected = float(np.average(shares, weights=sizes))
    assert result.history["baseline_accuracy"].iloc[-1] == pytest.approx(expected)


def test_the_server_logs_a_warning_each_round_the_private_model_is_worse(caplog):
    caplog.set_level(logging.INFO, logger="meshfl.federation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = meshfl.simulate(privacy=DPConfig(epsilon=0.01, delta=1e-5), **RUN)
    worse = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "worse than the trivial baseline" in r.getMessage()
    ]
    assert len(worse) == int(result.history["worse_than_baseline"].sum()) == RUN["rounds"]
    assert all("ε=0.01" in r.getMessage() and "signal-to-noise" in r.getMessage() for r in worse)
    infos = [r.getMessage() for r in caplog.records if "signal-to-noise ≈" in r.getMessage()]
    assert len(infos) >= RUN["rounds"]


# -- meshfl bench privacy ------------------------------------------------------------------
def test_bench_privacy_marks_the_row_and_warns():
    with pytest.warns(UserWarning, match="worse than the trivial baseline.*ε=0.01"):
        frame = privacy_sweep(
            agent="threat_intel",
            epsilons=[0.01, math.inf],
            num_msps=3,
            rounds=2,
            samples_per_msp=100,
            progress=False,
        )
    assert {"baseline_accuracy", "worse_than_baseline", "snr"} <= set(frame.columns)
    by_setting = frame.set_index("setting")
    private, public = by_setting.loc["federated + DP"], by_setting.loc["federated"]
    assert bool(private["worse_than_baseline"]) and not bool(public["worse_than_baseline"])
    assert private["accuracy"] < private["baseline_accuracy"] < public["accuracy"]
    assert 0 <= private["snr"] < 1 and public["snr"] == math.inf
    table = _markdown(frame)
    assert table.count("**yes** ⚠") == 1


# -- every agent's baseline ----------------------------------------------------------------
@pytest.fixture(params=agents.built())
def agent(request):
    return agents.get(request.param)(FAST.get(request.param, {}))


def test_every_agent_reports_its_baseline_beside_its_metric(agent):
    frame = agent.synthetic_data(120, seed=0)
    local = agent.prepare(frame)
    metrics = agent.evaluate(agent.init_vector(seed=0), local)
    assert agent.metric in metrics
    baseline = metrics[f"baseline_{agent.metric}"]
    assert math.isfinite(baseline)
    assert agent.worse_than_baseline(metrics) == (metrics[agent.metric] < baseline)
    assert agent.higher_is_better


def test_the_trivial_baselines_are_what_they_say():
    threat = agents.get("threat_intel")(FAST["threat_intel"])
    frame = threat.synthetic_data(200, seed=1)
    metrics = threat.evaluate(threat.init_vector(seed=0), threat.prepare(frame))
    share = frame["threat_class"].value_counts(normalize=True).iloc[0]
    assert metrics["baseline_accuracy"] == pytest.approx(share)

    market = agents.get("market_intel")(FAST["market_intel"])
    frame = market.synthetic_data(200, seed=1)
    metrics = market.evaluate(market.init_vector(seed=0), market.prepare(frame))
    p = frame["signal"].value_counts(normalize=True).iloc[0]
    k = len(market.config.signals)
    assert metrics["baseline_macro_f1"] == pytest.approx(2 * p / (1 + p) / k)

    for name in ("anomaly", "client_health", "collaboration"):
        agent = agents.get(name)(FAST[name])
        local = agent.prepare(agent.synthetic_data(300, seed=2))
        assert agent.evaluate(agent.init_vector(seed=0), local)["baseline_auc"] == 0.5

    dispatch = agents.get("resource_allocation")(FAST["resource_allocation"])
    local = dispatch.prepare(dispatch.synthetic_data(120, seed=0))
    metrics = dispatch.evaluate(dispatch.init_vector(seed=0), local)
    assert metrics["baseline_sla_hit_rate"] == metrics["greedy_sla_hit_rate"]


def test_compliance_baseline_is_the_best_constant_label_set():
    from meshfl.agents.compliance import multilabel_f1

    agent = agents.get("compliance")(FAST["compliance"])
    frame = agent.synthetic_data(200, seed=3)
    local = agent.prepare(frame)
    baseline = agent.evaluate(agent.init_vector(seed=0), local)["baseline_macro_f1"]
    truth = local.targets[:, :-1].astype(bool)
    rng = np.random.default_rng(0)
    for _ in range(20):  # no other constant set of requirements does better
        subset = rng.random(truth.shape[1]) < 0.5
        macro, _ = multilabel_f1(truth, np.broadcast_to(subset, truth.shape))
        assert macro <= baseline + 1e-12


def test_revenue_baseline_is_the_seasonal_naive_forecast():
    agent = agents.get("revenue")(FAST["revenue"])
    frame = agent.synthetic_partitions(1, samples_per_msp=130, seed=0)[0]
    _, test = agent.split(frame, test_fraction=0.25, seed=0)
    local = agent.prepare(test)
    series = local.series[0]
    forecast = seasonal_naive(series, series.design.frequency)
    history, held_out = series.history, series.revenue[series.holdout]
    # weekly: each held-out week is the same week a year (52 weeks) before
    start = len(history)
    np.testing.assert_array_equal(forecast, series.revenue[start - 52 : start - 52 + len(held_out)])
    metrics = agent.evaluate(agent.init_vector(seed=0), local)
    smape = 200 * np.abs(held_out - forecast) / (np.abs(held_out) + np.abs(forecast))
    assert metrics["baseline_neg_smape"] == pytest.approx(-smape.mean())


def test_revenue_seasonal_naive_falls_back_to_the_last_value_on_a_short_history():
    agent = agents.get("revenue")(FAST["revenue"])
    frame = agent.synthetic_partitions(1, samples_per_msp=40, seed=0)[0].iloc[:40]
    _, test = agent.split(frame, test_fraction=0.25, seed=0)
    series = agent.prepare(test).series[0]
    forecast = seasonal_naive(series, series.design.frequency)
    assert (forecast == series.history[-1]).all()


def test_worse_than_baseline_follows_the_direction_of_the_metric():
    class LowerIsBetter(type(agents.get("anomaly")())):  # type: ignore[misc]
        higher_is_better = False

    agent = LowerIsBetter()
    assert agent.worse_than_baseline({"auc": 0.6, "baseline_auc": 0.5}) is True
    assert agent.worse_than_baseline({"auc": 0.4, "baseline_auc": 0.5}) is False
    assert agent.worse_than_baseline({"auc": 0.4}) is None
    assert agent.worse_than_baseline({"auc": math.nan, "baseline_auc": 0.5}) is None


def test_history_columns_are_plain_data(public):
    result, _ = public
    assert result.history["worse_than_baseline"].map(type).eq(bool).all()
    assert isinstance(result.history, pd.DataFrame)
