"""meshfl.bench.real_data: packaged real data sets, valid for their agents, split as promised.

Every test runs with the network cut (sockets refuse to connect or resolve): a loader that
downloads fails here.
"""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest

from meshfl.agents import registry
from meshfl.bench import real_data
from meshfl.config.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError("network access in a real-data loader: the data must ship in a package")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_the_network_is_really_cut() -> None:
    with pytest.raises(OSError, match="network access"):
        socket.create_connection(("127.0.0.1", 9))


@pytest.mark.parametrize("name", real_data.names())
def test_every_partition_passes_its_agents_schema(name: str) -> None:
    data = real_data.load(name, seed=0)
    agent = registry.get(data.agent)(data.agent_config)
    assert len(data.partitions) == len(data.msp_names) >= 3
    for frame in data.partitions:
        loaded = agent.load_data(frame)
        assert len(loaded) == len(frame) > 0
        prepared = agent.prepare(loaded)  # the agent can train on it
        assert prepared is not None
    label = {"anomaly": "is_anomaly", "client_health": "churned"}.get(data.agent)
    if label is not None:
        pooled = pd.concat(data.partitions)
        assert pooled[label].dtype == bool and 0 < pooled[label].mean() < 0.5
        categories = data.agent_config.get("categorical", {})
        for f in data.agent_config["features"]:
            if f in categories:
                assert set(pooled[f]) <= set(categories[f]), f"{f}: a value off the public list"
                continue
            low, high = data.agent_config["bounds"][f]
            values = pooled[f].to_numpy(dtype=float)
            present = values[~np.isnan(values)]
            assert len(present) == len(values) or data.agent_config.get("allow_missing")
            assert ((present >= low) & (present <= high)).all(), f"{f} outside its bounds"


@pytest.mark.parametrize("name", real_data.names())
def test_loaders_are_deterministic_in_the_seed(name: str) -> None:
    first, again = real_data.load(name, seed=3), real_data.load(name, seed=3)
    assert first.msp_names == again.msp_names
    for a, b in zip(first.partitions, again.partitions, strict=True):
        pd.testing.assert_frame_equal(a, b)
    other = real_data.load(name, seed=4)
    assert [len(p) for p in other.partitions] != [len(p) for p in first.partitions] or any(
        not a.equals(b) for a, b in zip(other.partitions, first.partitions, strict=True)
    )


def test_hpc_jobs_keeps_each_protocol_on_one_msp() -> None:
    data = real_data.hpc_jobs(num_msps=5, seed=0)
    assert data.rows == 4331
    owners = [set(p["protocol"]) for p in data.partitions]
    assert sum(len(o) for o in owners) == len(set().union(*owners)) == 14
    rates = [p["is_anomaly"].mean() for p in data.partitions]
    assert max(rates) - min(rates) > 0.05  # protocols differ: a heterogeneous split


def test_telco_churn_deals_out_whole_segments() -> None:
    data = real_data.telco_churn(num_msps=5, seed=0)
    assert data.rows == 7043
    segments = [name.split("; ") for name in data.msp_names]
    flat = [s for group in segments for s in group]
    assert len(flat) == len(set(flat)) == 12
    churn = [p["churned"].mean() for p in data.partitions]
    assert max(churn) - min(churn) > 0.2
    assert data.agent_config["features"][:3] == (
        "contract_age_months",
        "monthly_spend_usd",
        "services_count",
    )


def test_telco_churn_raw_keeps_the_columns_as_they_are() -> None:
    raw, mapped = real_data.telco_churn_raw(seed=2), real_data.telco_churn(seed=2)
    assert raw.msp_names == mapped.msp_names  # the same MSPs
    assert [len(p) for p in raw.partitions] == [len(p) for p in mapped.partitions]
    pooled = pd.concat(raw.partitions)
    assert pd.api.types.is_string_dtype(pooled["contract"])
    assert pooled["total_charges"].isna().sum() == 11
    assert raw.agent_config["allow_missing"] is True


@pytest.mark.parametrize("name", ["texas_housing", "retail_sales"])
def test_revenue_sets_hold_one_monthly_series_per_msp(name: str) -> None:
    data = real_data.load(name, num_msps=4, seed=1)
    agent = registry.get("revenue")(data.agent_config)
    series = [p["series"].unique().tolist() for p in data.partitions]
    assert all(len(s) == 1 for s in series)
    assert len({s[0] for s in series}) == 4
    for frame in data.partitions:
        assert (frame["revenue"] > 0).all()
        steps = frame["date"].diff().dropna().dt.days
        assert steps.between(28, 31).all()  # monthly, no gap
        train, test = agent.split(agent.load_data(frame), test_fraction=0.25, seed=0)
        assert int(test["is_holdout"].sum()) == real_data.MONTHLY_HORIZON
        assert train["date"].max() < test.loc[test["is_holdout"], "date"].min()


def test_split_by_group_is_a_partition_keeping_groups_whole() -> None:
    rng = np.random.default_rng(0)
    groups = rng.choice(list("abcdefghij"), size=500)
    parts = real_data.split_by_group(groups, 4, seed=7)
    rows = np.concatenate(parts)
    assert sorted(rows.tolist()) == list(range(500))
    owners = [set(groups[p]) for p in parts]
    assert sum(len(o) for o in owners) == 10
    assert all(len(p) > 0 for p in parts)
    with pytest.raises(ConfigError, match="at most 10"):
        real_data.split_by_group(groups, 11, seed=0)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="hpc_jobs"):
        real_data.load("kddcup99")
