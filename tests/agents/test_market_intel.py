"""The market_intel agent and its synthetic market text."""

import warnings

import numpy as np
import pandas as pd
import pytest

from meshfl import agents
from meshfl.agents import GlobalModel
from meshfl.agents.market_intel import MarketIntel, MarketIntelModel
from meshfl.config.errors import ConfigError, DataSchemaError
from meshfl.data.market_text import MARKET_SIGNALS, SENTIMENTS, market_text
from meshfl.privacy.budget import DPStep

FAST = {"encoder": "tiny", "hidden": 32, "learning_rate": 0.03}


@pytest.fixture(scope="module")
def agent():
    return MarketIntel(FAST)


@pytest.fixture(scope="module")
def frame():
    return market_text(300, seed=0)


def test_registered_under_its_name():
    assert agents.get("market_intel") is MarketIntel


def test_generator_covers_every_label_with_noise_and_variety():
    frame = market_text(2000, seed=5)
    assert set(frame["signal"]) == set(MARKET_SIGNALS)
    assert set(frame["sentiment"]) == set(SENTIMENTS)
    assert frame["text"].nunique() > 1900  # templates filled with varied fields
    clean = market_text(2000, seed=5, label_noise=0.0)
    assert clean["text"].equals(frame["text"])
    assert (clean["signal"] != frame["signal"]).mean() == pytest.approx(0.03, abs=0.001)
    # sentiment depends on the signal (outages are bad news) without being fixed by it
    by_signal = pd.crosstab(clean["signal"], clean["sentiment"], normalize="index")
    assert by_signal.loc["outage", "negative"] > 0.6
    assert by_signal.loc["price_decrease", "positive"] > 0.5
    assert (by_signal.max(axis=1) < 0.95).all()


def test_generator_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="'label_noise' parameter of market_text"):
        market_text(10, label_noise=2.0)
    with pytest.raises(ConfigError, match="'n' parameter of market_text"):
        market_text(0)


def test_unknown_label_names_the_row(agent, frame):
    bad = frame.copy()
    bad.loc[bad.index[4], "signal"] = "price_hike"
    with pytest.raises(DataSchemaError, match=r"Column 'signal' .* row 4 holds 'price_hike'"):
        agent.prepare(bad)


def test_missing_text_column_is_explained(agent, frame):
    with pytest.raises(DataSchemaError, match="text"):
        agent.prepare(frame.drop(columns="text"))
    model = agent.model(agent.init_vector(seed=0))
    with pytest.raises(DataSchemaError, match="predicts from a 'text' column"):
        model.predict(frame.drop(columns="text"))


def test_config_rejects_repeated_labels():
    with pytest.raises(ConfigError, match=r"'sentiments' parameter .* distinct"):
        MarketIntel(sentiments=("good", "good"))


def test_training_improves_macro_f1_and_model_predicts(agent, frame, tmp_path):
    train, test = agent.prepare(frame.iloc[:220]), agent.prepare(frame.iloc[220:])
    vector = agent.init_vector(seed=0)
    before = agent.evaluate(vector, test)
    for r in range(3):
        vector = agent.local_update(vector, train, server_round=r + 1, seed=r).vector
    after = agent.evaluate(vector, test)
    assert after["macro_f1"] > before["macro_f1"] + 0.1
    assert after["loss"] < before["loss"]
    assert {"accuracy", "sentiment_accuracy", "sentiment_macro_f1", "examples"} <= set(after)

    model = agent.model(vector)
    assert isinstance(model, MarketIntelModel)
    texts = frame["text"].iloc[:5]
    proba = model.predict_proba(texts)
    assert proba.shape == (5, len(MARKET_SIGNALS))
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    details = model.predict_details(frame.iloc[:5])
    assert list(details.columns) == ["signal", "confidence", "sentiment"]
    assert set(details["sentiment"]) <= set(SENTIMENTS)
    assert (model.predict(texts) == details["signal"].to_numpy()).all()
    loaded = GlobalModel.load(model.save(tmp_path / "market"))
    assert (
        loaded.predict("Kaseya raises RMM prices by 12%")
        == model.predict(["Kaseya raises RMM prices by 12%"])
    ).all()


def test_dp_sgd_runs_the_planned_steps_and_reports_the_event(agent, frame):
    local = agent.prepare(frame.iloc[:200])
    mechanism, rate, steps = agent.privacy_shape(local)
    dp = DPStep(
        mechanism=mechanism,
        noise_multiplier=1.0,
        sample_rate=rate,
        steps=steps,
        max_grad_norm=1.0,
        unit="sample",
    )
    with warnings.catch_warnings():  # noise from OS entropy: no weak-RNG warning any more
        warnings.filterwarnings("error", message=".*cryptographically secure.*")
        update = agent.local_update(agent.init_vector(seed=0), local, server_round=1, seed=0, dp=dp)
    assert update.privacy_event == dp.event()
    assert "train_loss" not in update.metrics  # computed on raw data: not released under DP
