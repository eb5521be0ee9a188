"""Tests of the security-event and ops-metrics generators (meshfl.data.security_events_data,
meshfl.data.ops_metrics_data) and their schemas: shape, determinism, learnability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import IsolationForest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from meshfl.config.errors import ConfigError
from meshfl.data.ops_metrics_data import WORKLOAD_PROFILES, operational_metrics
from meshfl.data.schemas import (
    OPS_METRIC_BOUNDS,
    OPS_METRIC_FEATURES,
    OPS_METRICS_SCHEMA,
    SECURITY_EVENTS_SCHEMA,
    SEVERITIES,
    THREAT_CLASSES,
)
from meshfl.data.security_event_templates import CLASS_TEMPLATES
from meshfl.data.security_events_data import security_events


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return security_events(3000, seed=7)


@pytest.fixture(scope="module")
def metrics() -> pd.DataFrame:
    return operational_metrics(5000, seed=11)


# -- security events ---------------------------------------------------------------------


def test_security_events_columns_and_dtypes(events: pd.DataFrame) -> None:
    assert list(events.columns) == [
        "timestamp", "host", "source", "message", "threat_class", "severity",
    ]  # fmt: skip
    assert len(events) == 3000
    assert pd.api.types.is_datetime64_any_dtype(events["timestamp"].dtype)
    assert events["timestamp"].is_monotonic_increasing
    assert set(events["threat_class"]) == set(THREAT_CLASSES)
    assert set(events["severity"]) <= set(SEVERITIES)
    assert events["message"].map(len).min() > 40
    pd.testing.assert_frame_equal(SECURITY_EVENTS_SCHEMA.validate(events), events)


def test_security_events_same_seed_same_frame_other_seed_other_frame() -> None:
    pd.testing.assert_frame_equal(security_events(300, seed=3), security_events(300, seed=3))
    assert not security_events(300, seed=3)["message"].equals(
        security_events(300, seed=4)["message"]
    )


def test_classes_are_imbalanced_with_benign_most_common(events: pd.DataFrame) -> None:
    shares = events["threat_class"].value_counts(normalize=True)
    assert shares.index[0] == "benign"
    assert 0.35 < shares["benign"] < 0.55
    assert shares.min() > 0.02
    assert shares.max() / shares.min() > 5


def test_sources_are_varied_and_templates_many_per_class(events: pd.DataFrame) -> None:
    expected = {"sshd", "firewall", "edr", "mail-gateway", "windows-security", "proxy"}
    assert expected <= set(events["source"])
    assert all(len(t) >= 6 for t in CLASS_TEMPLATES.values())
    for label in THREAT_CLASSES:
        rows = events[events["threat_class"] == label]
        assert rows["source"].nunique() >= 3, label
        assert rows["message"].nunique() == len(rows), f"{label} repeats whole lines"


def test_syslog_lines_carry_the_row_timestamp_and_host(events: pd.DataFrame) -> None:
    rows = events[events["source"] == "sshd"]
    assert len(rows) > 50
    for ts, host, message in zip(rows["timestamp"], rows["host"], rows["message"], strict=True):
        assert message.startswith(f"{ts:%b} {ts.day:2d} {ts:%H:%M:%S} {host} sshd[")


def test_severity_correlates_with_class_without_being_determined(events: pd.DataFrame) -> None:
    rank = events["severity"].map({s: i for i, s in enumerate(SEVERITIES)})
    mean_rank = rank.groupby(events["threat_class"]).mean()
    assert mean_rank["ransomware"] > mean_rank["brute_force"] > mean_rank["benign"] + 0.5
    per_class = events.groupby("threat_class")["severity"].nunique()
    assert (per_class >= 2).all()


def test_label_noise_replaces_exactly_that_fraction_of_labels() -> None:
    clean = security_events(1000, seed=5, label_noise=0.0)
    noisy = security_events(1000, seed=5, label_noise=0.2)
    assert clean["message"].equals(noisy["message"])
    assert (clean["threat_class"] != noisy["threat_class"]).sum() == 200


def test_text_is_learnable_but_not_trivially(events: pd.DataFrame) -> None:
    train, test = events.iloc[:2250], events.iloc[2250:]
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2)
    model = LogisticRegression(C=10.0, solver="saga", max_iter=1000)  # lbfgs is 10x slower
    model.fit(vectorizer.fit_transform(train["message"]), train["threat_class"])
    accuracy = (model.predict(vectorizer.transform(test["message"])) == test["threat_class"]).mean()
    assert 0.7 < accuracy < 0.99


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "The 'n' parameter of security_events must be an integer >= 1. Got 0 instead."),
        ({"n": 2.5}, "The 'n' parameter of security_events must be an integer >= 1. Got 2.5"),
        ({"n": True}, "The 'n' parameter of security_events must be an integer >= 1. Got True"),
        ({"n": 5, "seed": -1}, "The 'seed' parameter of security_events must be an integer >= 0"),
        (
            {"n": 5, "label_noise": 1.5},
            "The 'label_noise' parameter of security_events must be a float in [0, 1]. "
            "Got 1.5 instead.",
        ),
    ],
)
def test_security_events_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        security_events(**kwargs)
    assert str(err.value).startswith(message)


# -- operational metrics -----------------------------------------------------------------


def test_operational_metrics_columns_and_dtypes(metrics: pd.DataFrame) -> None:
    assert list(metrics.columns) == [
        "timestamp", "host", "profile", *OPS_METRIC_FEATURES, "is_anomaly",
    ]  # fmt: skip
    assert all(metrics[f].dtype == np.float64 for f in OPS_METRIC_FEATURES)
    assert metrics["is_anomaly"].dtype == bool
    assert metrics["timestamp"].is_monotonic_increasing
    assert set(metrics["profile"]) == set(WORKLOAD_PROFILES)
    assert (metrics["open_connections"] == metrics["open_connections"].round()).all()
    pd.testing.assert_frame_equal(OPS_METRICS_SCHEMA.validate(metrics), metrics)
    unlabelled = metrics[list(OPS_METRIC_FEATURES)]
    OPS_METRICS_SCHEMA.validate(unlabelled)  # unlabelled data is valid for training


def test_each_host_runs_one_profile(metrics: pd.DataFrame) -> None:
    assert (metrics.groupby("host")["profile"].nunique() == 1).all()


def test_bounds_cover_the_features_and_are_physical() -> None:
    assert set(OPS_METRIC_BOUNDS) == set(OPS_METRIC_FEATURES)
    for feature, (low, high) in OPS_METRIC_BOUNDS.items():
        assert 0 <= low < high < 1e5, feature
        if feature.endswith("_pct"):
            assert (low, high) == (0.0, 100.0)


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 400),
    seed=st.integers(0, 2**31),
    fraction=st.sampled_from([0.0, 0.05, 0.5]),
)
def test_every_value_lies_inside_the_bounds(n: int, seed: int, fraction: float) -> None:
    frame = operational_metrics(n, seed=seed, anomaly_fraction=fraction)
    assert len(frame) == n
    assert frame["is_anomaly"].sum() == round(fraction * n)
    for feature, (low, high) in OPS_METRIC_BOUNDS.items():
        assert frame[feature].between(low, high).all(), feature


def test_operational_metrics_is_deterministic() -> None:
    pd.testing.assert_frame_equal(
        operational_metrics(500, seed=2), operational_metrics(500, seed=2)
    )
    assert not operational_metrics(500, seed=2).equals(operational_metrics(500, seed=3))


def test_profiles_have_their_own_regimes(metrics: pd.DataFrame) -> None:
    normal = metrics[~metrics["is_anomaly"]]
    median = normal.groupby("profile")[list(OPS_METRIC_FEATURES)].median()
    assert median.loc["database", "mem_pct"] > median.loc["web", "mem_pct"] + 20
    assert median.loc["database", "disk_io_mbps"] > 5 * median.loc["web", "disk_io_mbps"]
    assert median.loc["web", "open_connections"] > 3 * median.loc["database", "open_connections"]
    assert median.loc["batch", "cpu_pct"] == median["cpu_pct"].max()

    def corr(profile: str, a: str, b: str) -> float:
        rows = normal[normal["profile"] == profile]
        return float(np.corrcoef(np.log1p(rows[a]), np.log1p(rows[b]))[0, 1])

    assert corr("web", "net_out_mbps", "open_connections") > 0.5
    assert corr("batch", "net_out_mbps", "open_connections") < 0.4
    assert corr("database", "disk_io_mbps", "latency_ms") > 0.3


def test_anomalies_are_outliers_for_an_isolation_forest(metrics: pd.DataFrame) -> None:
    x = metrics[list(OPS_METRIC_FEATURES)].to_numpy()
    scores = IsolationForest(random_state=0).fit(x).score_samples(x)
    labels = metrics["is_anomaly"].to_numpy()
    assert scores[labels].mean() < scores[~labels].mean()
    assert roc_auc_score(labels, -scores) > 0.8


def test_no_anomalies_when_fraction_is_zero() -> None:
    assert not operational_metrics(300, seed=1, anomaly_fraction=0.0)["is_anomaly"].any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "The 'n' parameter of operational_metrics must be an integer >= 1. Got 0"),
        (
            {"n": 10, "anomaly_fraction": 0.9},
            "The 'anomaly_fraction' parameter of operational_metrics must be a float in "
            "[0, 0.5]. Got 0.9 instead.",
        ),
        ({"n": 10, "seed": "a"}, "The 'seed' parameter of operational_metrics must be an"),
    ],
)
def test_operational_metrics_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        operational_metrics(**kwargs)
    assert str(err.value).startswith(message)
