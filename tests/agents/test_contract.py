"""The contract every registered agent passes (as scikit-learn's parametrize_with_checks)."""

from collections.abc import Mapping

import numpy as np
import pytest

from meshfl import agents
from meshfl.agents import GlobalModel, Update
from meshfl.config.errors import ConfigError


@pytest.fixture(params=agents.built())
def agent(request):
    cls = agents.get(request.param)
    return cls(cls.fast_config)  # the agent's own quick configuration (Agent.fast_config)


def test_the_fast_config_is_a_valid_config(agent):
    assert isinstance(type(agent).fast_config, Mapping)
    assert set(type(agent).fast_config) <= set(type(agent).config_class.model_fields)


def test_class_attributes(agent):
    assert agent.name in agents.names()
    assert agent.summary and agent.metric and agent.label_column
    assert agent.label_column in agent.synthetic_data(20, seed=0).columns


def test_unknown_config_key_is_rejected(agent):
    with pytest.raises(ConfigError, match="not a parameter"):
        type(agent)({"no_such_option": 1})


def test_synthetic_data_is_seeded_and_valid(agent):
    a, b = agent.synthetic_data(60, seed=3), agent.synthetic_data(60, seed=3)
    assert len(a) == 60
    assert a.equals(b)
    assert not a.equals(agent.synthetic_data(60, seed=4))
    agent.load_data(a)  # validates against the agent's schema


def test_one_round_honours_the_update_contract(agent, tmp_path):
    frame = agent.synthetic_data(120, seed=0)
    local = agent.prepare(frame)
    vector = agent.init_vector(seed=0)
    assert vector.ndim == 1 and np.all(np.isfinite(vector))
    np.testing.assert_array_equal(vector, agent.init_vector(seed=0))

    update = agent.local_update(vector, local, server_round=1, seed=7)
    assert isinstance(update, Update)
    assert update.vector.shape == (agent.update_size(vector),)
    again = agent.local_update(vector, local, server_round=1, seed=7)
    np.testing.assert_array_equal(update.vector, again.vector)  # deterministic under a seed

    new = agent.combine(vector, update.weight * update.vector, update.weight, server_round=1)
    assert new.ndim == 1 and np.all(np.isfinite(new))
    metrics = agent.evaluate(new, local)
    assert agent.metric in metrics and metrics["examples"] == len(frame)

    model = agent.model(new)
    path = model.save(tmp_path / "model")
    loaded = GlobalModel.load(path)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.vector, model.vector)
    assert loaded.agent.config == agent.config
    assert loaded.evaluate(frame) == pytest.approx(model.evaluate(frame))


def test_combining_two_updates_equals_their_weighted_sum(agent):
    frame = agent.synthetic_data(100, seed=1)
    half_a, half_b = agent.prepare(frame.iloc[:50]), agent.prepare(frame.iloc[50:])
    vector = agent.init_vector(seed=0)
    ua = agent.local_update(vector, half_a, server_round=1, seed=1)
    ub = agent.local_update(vector, half_b, server_round=1, seed=2)
    summed = ua.weight * ua.vector + ub.weight * ub.vector
    combined = agent.combine(vector, summed, ua.weight + ub.weight, server_round=1)
    assert (
        combined.shape
        == agent.combine(vector, ua.weight * ua.vector, ua.weight, server_round=1).shape
    )


def test_a_csv_written_from_synthetic_data_loads_and_prepares(agent, tmp_path):
    """What a deployed node reads (``<data-dir>/<agent>.csv``) round-trips through CSV."""
    frame = agent.synthetic_data(80, seed=2)
    path = tmp_path / f"{agent.name}.csv"
    frame.to_csv(path, index=False)
    loaded = agent.load_data(path)
    assert len(loaded) == len(frame)
    train, test = agent.split(loaded, test_fraction=0.25, seed=0)
    assert len(train) > 0 and len(test) > 0
    local = agent.prepare(loaded)
    vector = agent.init_vector(seed=0)
    direct = agent.evaluate(vector, agent.prepare(frame))
    assert agent.evaluate(vector, local) == pytest.approx(direct, nan_ok=True)
