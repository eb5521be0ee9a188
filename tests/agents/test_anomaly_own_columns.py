"""anomaly on an MSP's own columns: numeric, categorical (public lists) and missing values."""

import logging

import numpy as np
import pandas as pd
import pytest

import meshfl
from meshfl.agents.anomaly import Anomaly
from meshfl.config.errors import ConfigError, DataSchemaError

KINDS = ("web", "db", "cache", "batch")
CONFIG = {
    "features": ("kind", "cpu", "queue_depth"),
    "categorical": {"kind": KINDS},
    "bounds": {"cpu": (0.0, 100.0), "queue_depth": (0.0, 1000.0)},
    "allow_missing": True,
    "trees_per_round": 20,
    "depth": 6,
}


def own_frame(n: int, seed: int) -> pd.DataFrame:
    """Normal rows: a common kind, a cpu in its usual band, the queue reported. Anomalies
    differ only in the category (a kind that is almost never seen) or in missingness (the
    queue gauge stops reporting)."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(KINDS[:3], size=n).astype(object)
    cpu = np.clip(rng.normal(40, 10, n), 0, 100)
    queue = np.clip(rng.normal(200, 50, n), 0, 1000)
    anomaly = rng.uniform(size=n) < 0.05
    odd_kind = anomaly & (rng.uniform(size=n) < 0.5)
    kind[odd_kind] = rng.choice(["batch", "quantum"], size=odd_kind.sum())  # rare or unlisted
    queue[anomaly & ~odd_kind] = np.nan
    queue[~anomaly & (rng.uniform(size=n) < 0.002)] = np.nan  # a gauge hiccup now and then
    return pd.DataFrame({"kind": kind, "cpu": cpu, "queue_depth": queue, "is_anomaly": anomaly})


def _federate(agent, locals_, rounds):
    vector = agent.init_vector(seed=0)
    for r in range(1, rounds + 1):
        updates = [agent.local_update(vector, loc, server_round=r, seed=r) for loc in locals_]
        vector = agent.combine(vector, sum(u.vector for u in updates), 3, server_round=r)
    return vector


def test_own_categorical_and_missing_columns_find_the_anomalies():
    agent = Anomaly(CONFIG)
    locals_ = [agent.prepare(own_frame(1500, seed=s)) for s in range(3)]
    vector = _federate(agent, locals_, rounds=3)
    metrics = agent.evaluate(vector, agent.prepare(own_frame(3000, seed=42)))
    assert metrics["auc"] > 0.85  # every anomaly is a rare category or a missing gauge


def test_export_load_and_score_a_raw_frame_with_nan_and_strings(tmp_path):
    agent = Anomaly(CONFIG)
    locals_ = [agent.prepare(own_frame(800, seed=s)) for s in range(3)]
    model = agent.model(_federate(agent, locals_, rounds=2))
    raw = pd.DataFrame(
        {
            "kind": ["web", "quantum", None, "db"],
            "cpu": [40.0, 40.0, 40.0, 41.0],
            "queue_depth": [200.0, 200.0, 200.0, None],
        }
    )
    before = model.score_samples(raw)
    loaded = meshfl.load(model.save(tmp_path / "ops"))
    np.testing.assert_array_equal(loaded.score_samples(raw), before)
    assert loaded.agent.config.categorical == {"kind": KINDS}
    # the usual row is the most normal; an unlisted kind and a missing gauge stand out
    assert before[0] > max(before[1], before[3])
    np.testing.assert_array_equal(loaded.predict(raw), model.predict(raw))


def test_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="bounds lack cpu"):
        Anomaly({**CONFIG, "bounds": {"queue_depth": (0, 1)}})
    with pytest.raises(ConfigError, match="'categorical' must name features; host"):
        Anomaly({**CONFIG, "categorical": {"host": ("a",)}})
    with pytest.raises(ConfigError, match="kind is categorical"):
        Anomaly({**CONFIG, "bounds": {**CONFIG["bounds"], "kind": (0, 4)}})
    with pytest.raises(DataSchemaError, match="allow_missing=True"):
        Anomaly({**CONFIG, "allow_missing": False}).prepare(own_frame(1000, seed=0))


def test_values_outside_the_bounds_are_counted_and_logged(caplog):
    agent = Anomaly(CONFIG)
    frame = own_frame(500, seed=3)
    frame.loc[:24, "cpu"] = 250.0  # 25 above 100
    with caplog.at_level(logging.WARNING, logger="meshfl.agents.anomaly"):
        local = agent.prepare(frame)
    assert local.clipping["cpu"].above == 25 and local.clipping["cpu"].share == 25 / 500
    assert local.clipping["queue_depth"].clipped == 0
    assert "'cpu'" in caplog.text and "[0, 100]" in caplog.text and "5.0%" in caplog.text
    assert agent.clip_report(frame)["cpu"].above == 25
