"""Failures are loud (issue 15 §4): a federation that trained nothing raises, and says why.

``simulate`` used to return an untrained model with NaN metrics when every MSP failed, the
only sign a log line per MSP. Each case below used to fail that silently; each now raises
:class:`meshfl.FederationFailedError`, listing every MSP's error, whose sentence names the
argument to fix.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import meshfl
from meshfl.agents import registry
from meshfl.config.errors import DataSchemaError, FederationFailedError, MeshflError
from meshfl.data.compliance_text import compliance_evidence
from meshfl.data.market_text import market_text
from meshfl.data.security_events_data import security_events
from meshfl.federation.client_app import NodeData

TINY = {"encoder": "tiny", "local_epochs": 1}


def _simulate(agent, data, **kw):
    args = dict(
        agent=agent,
        num_msps=len(data),
        rounds=1,
        seed=0,
        data=data,
        progress=False,
        secure_aggregation="plaintext",
    )
    args.update(kw)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*plaintext.*")
        return meshfl.simulate(**args)


def _quarterly(seed: int) -> pd.DataFrame:
    dates = pd.date_range("2012-01-01", periods=40, freq="QS")
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"date": dates, "revenue": 1e4 * (1 + 0.1 * rng.random(40))})


# -- simulate raises when no round produced a valid update ---------------------------------


def test_revenue_given_quarterly_dates_raises_naming_the_date_column_and_frequency():
    with pytest.raises(FederationFailedError) as caught:
        _simulate("revenue", [_quarterly(i) for i in range(3)], secure_aggregation="ckks")
    err = caught.value
    assert isinstance(err, MeshflError) and isinstance(err, RuntimeError)
    assert meshfl.FederationFailedError is FederationFailedError
    assert sorted(err.failures) == [0, 1, 2]  # every MSP's own error, by its index in data
    text = str(err)
    for msp in range(3):
        assert f"MSP {msp}" in text
    assert "no round of agent 'revenue' produced a valid update" in text.lower()
    # the sentence names the argument, what it must be and what it got
    assert "'date'" in text and "weekly or monthly" in text
    assert "91 days apart" in text and "quarterly" in text
    assert err.agent == "revenue"


def test_the_revenue_sentence_is_the_agents_own():
    agent = registry.get("revenue")()
    with pytest.raises(DataSchemaError, match=r"'date'.*weekly or monthly.*quarterly"):
        agent.prepare(_quarterly(0))


def _threat(seed):
    frame = security_events(24, seed=seed)
    frame["threat_class"] = np.where(np.arange(24) % 2, "phish", "cryptojacking")
    return frame


def _market(seed):
    frame = market_text(24, seed=seed)
    frame["signal"] = np.where(np.arange(24) % 2, "phish", "cryptojacking")
    return frame


def _compliance(seed):
    frame = compliance_evidence(24, seed=seed)
    frame["status"] = np.where(np.arange(24) % 2, "phish", "cryptojacking")
    return frame


TEXT_CASES = [
    ("threat_intel", _threat, "classes", "ThreatIntelConfig"),
    ("market_intel", _market, "signals", "MarketIntelConfig"),
    ("compliance", _compliance, "statuses", "ComplianceConfig"),
]


@pytest.mark.parametrize(("agent", "make", "field", "config"), TEXT_CASES)
def test_text_agent_given_labels_outside_its_label_set_raises_naming_the_config_field(
    agent, make, field, config
):
    with pytest.raises(FederationFailedError) as caught:
        _simulate(agent, [make(i) for i in range(3)], agent_config=TINY)
    text = str(caught.value)
    assert sorted(caught.value.failures) == [0, 1, 2]
    for msp in range(3):
        assert f"MSP {msp}" in text
    assert f"'{field}'" in text and config in text  # the argument that fixes it
    assert "'cryptojacking'" in text and "'phish'" in text  # every unknown label, by name


@pytest.mark.parametrize(("agent", "make", "field", "config"), TEXT_CASES)
def test_text_agent_label_sentence_names_the_field_and_every_unknown_label(
    agent, make, field, config
):
    the_agent = registry.get(agent)(TINY)
    with pytest.raises(DataSchemaError) as caught:
        the_agent.prepare(make(0))
    text = str(caught.value)
    assert f"agent_config={{'{field}': " in text and config in text
    assert "'cryptojacking', 'phish'" in text  # sorted, all of them, not only the first row


def test_labels_fixed_with_the_named_field_train():
    frames = [_threat(i) for i in range(3)]
    config = {**TINY, "classes": ("cryptojacking", "phish")}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = _simulate("threat_intel", frames, agent_config=config)
    assert result.history["msps"].iloc[-1] == 3
    assert not result.history["skipped"].any()
    assert "accuracy" in result.history  # evaluated, so no warning about evaluation
    assert not [w for w in record if "evaluate" in str(w.message)]


def test_resource_allocation_skill_outside_the_config_raises_naming_skills():
    agent = registry.get("resource_allocation")()
    parts = agent.synthetic_partitions(3, samples_per_msp=40, seed=0, alpha=0.5, size_skew=0.5)
    parts = [p.assign(skill="quantum") for p in parts]
    with pytest.raises(FederationFailedError, match=r"(?s)MSP 0.*'skills'.*'quantum'"):
        _simulate("resource_allocation", parts)


# -- what does not raise ------------------------------------------------------------------


def test_one_failing_msp_does_not_fail_the_federation():
    frames = [security_events(24, seed=i) for i in range(3)]
    frames[1] = _threat(1)
    result = _simulate("threat_intel", frames, agent_config=TINY)
    assert result.history["msps"].iloc[-1] == 2  # the two good MSPs trained the model
    assert result.history["dropped"].iloc[-1] == 1


def test_an_untrained_model_is_never_returned_when_only_evaluation_fails():
    """Training rows fit, held-out rows do not: the model trains, and the missing metrics
    come with a warning naming each MSP's error instead of NaN alone."""
    parts = [
        NodeData(security_events(24, seed=i), _threat(i + 10).iloc[:8].reset_index(drop=True))
        for i in range(3)
    ]
    with pytest.warns(UserWarning, match=r"(?s)evaluat.*MSP 0.*'classes'") as record:
        result = _simulate("threat_intel", parts, agent_config=TINY)
    assert result.history["msps"].iloc[-1] == 3
    assert "accuracy" not in result.history
    assert any("MSP 2" in str(w.message) for w in record)


def test_an_msps_data_refused_up_front_is_named_by_its_index():
    frames = [security_events(24, seed=i) for i in range(3)]
    frames[2] = frames[2].drop(columns=["severity"])
    with pytest.raises(
        DataSchemaError, match=r"MSP 2's data \(data\[2\]\): .*no column 'severity'"
    ):
        _simulate("threat_intel", frames, agent_config=TINY)


# -- the coordinator's account, where the MSPs ran elsewhere (Ray, a deployed mesh) ---------


def _outcome(*results, msp_of_node=None):
    from meshfl.federation.strategy import AgentRun
    from meshfl.simulation import FederationOutcome

    run = AgentRun(agent=registry.get("anomaly")(), seed=0)
    run.history = [{"round": r} for r in range(1, len(results) + 1)]
    run.results = list(results)
    return FederationOutcome(run, np.zeros(1), msp_of_node=dict(msp_of_node or {}))


E_DATA_REPLY = "the MSP replied with an error: E_DATA: the MSP's data does not fit this agent"


def test_without_the_msps_own_errors_the_coordinators_reasons_are_listed():
    from meshfl.federation.strategy import RoundResult
    from meshfl.simulation import raise_if_untrained

    dropped = ((111, E_DATA_REPLY), (222, E_DATA_REPLY), (987654321987, E_DATA_REPLY))
    skipped = "only 0 valid update(s), fewer than min_msps=1; the global model is unchanged"
    rounds = [RoundResult(sampled=4, dropped=dropped, no_reply=1, skipped_reason=skipped)] * 2
    with pytest.raises(FederationFailedError) as caught:
        raise_if_untrained(_outcome(*rounds, msp_of_node={111: 0, 222: 1}))
    text = str(caught.value)
    assert f"MSP 0: dropped in rounds 1, 2: {E_DATA_REPLY}" in text
    assert f"MSP 1: dropped in rounds 1, 2: {E_DATA_REPLY}" in text
    assert f"node 987654321987: dropped in rounds 1, 2: {E_DATA_REPLY}" in text
    assert "1 sampled MSP(s) sent no reply" in text
    assert caught.value.rounds == {r: f"{skipped}; 1 sampled MSP(s) sent no reply" for r in (1, 2)}


def test_msps_that_only_declined_for_their_budget_do_not_raise_but_errors_beside_them_do():
    from meshfl.federation.client_app import DECLINED
    from meshfl.federation.strategy import RoundResult
    from meshfl.simulation import raise_if_untrained

    declined = RoundResult(sampled=2, declined=((0, DECLINED), (1, DECLINED)))
    assert raise_if_untrained(_outcome(declined)) is None  # stopped_reason says it
    mixed = RoundResult(sampled=2, declined=((0, DECLINED),), dropped=((77, E_DATA_REPLY),))
    with pytest.raises(
        FederationFailedError, match=r"(?s)MSP 0: declined in round 1: this MSP's privacy.*MSP 1: "
    ):
        raise_if_untrained(_outcome(mixed, msp_of_node={77: 1}))
    # a decline for another reason than the budget is a failure to fix
    other = "declined: this MSP takes part only in masked rounds"
    refused = RoundResult(sampled=2, declined=((0, other), (1, other)))
    with pytest.raises(FederationFailedError, match=r"MSP 1: declined in round 1: this MSP takes"):
        raise_if_untrained(_outcome(refused))


def test_a_run_that_changed_the_model_never_raises():
    from meshfl.federation.strategy import RoundResult
    from meshfl.simulation import raise_if_untrained

    outcome = _outcome(RoundResult(sampled=2, dropped=((1, E_DATA_REPLY),)), RoundResult())
    outcome.run.versions = [object()]  # round 2 added a sum
    assert raise_if_untrained(outcome) is None


def test_values_outside_the_public_bounds_are_counted_per_msp_and_column():
    import meshfl
    from meshfl.agents import get

    agent = get("anomaly")({"trees_per_round": 3, "depth": 4})
    parts = [agent.synthetic_data(80, seed=i) for i in range(3)]
    parts[1]["latency_ms"] = parts[1]["latency_ms"] * 1e6  # reported in nanoseconds
    result = meshfl.simulate(
        agent="anomaly", data=parts, rounds=1, seed=0, secure_aggregation="plaintext",
        agent_config={"trees_per_round": 3, "depth": 4}, progress=False,
    )  # fmt: skip
    table = result.clipping()
    latency = table[table["column"] == "latency_ms"].set_index("msp")
    assert latency.loc[1, "above"] > 0.9 * latency.loc[1, "values"]
    assert latency.loc[0, "clipped"] == 0 and latency.loc[2, "clipped"] == 0
    assert set(table["msp"]) == {0, 1, 2}
    others = table[(table["column"] != "latency_ms") | (table["msp"] != 1)]
    assert (others["share"] < 0.05).all(), others


def test_agents_without_column_bounds_have_an_empty_clipping_table():
    import meshfl

    result = meshfl.simulate(
        agent="revenue", num_msps=3, rounds=1, seed=0, secure_aggregation="plaintext",
        progress=False,
    )  # fmt: skip
    assert result.clipping().empty


def test_the_progress_bar_says_the_first_round_encodes_texts():
    from meshfl.federation.server_app import AgentPlan
    from meshfl.simulation import _progress

    bar = _progress(AgentPlan(agent="threat_intel", agent_config={"encoder": "tiny"}), enabled=True)
    assert "encodes each MSP's texts" in str(bar)
    bar.close()
    quiet = _progress(AgentPlan(agent="anomaly"), enabled=True)
    assert "encodes" not in str(quiet)
    quiet.close()
