import numpy as np
import pandas as pd
import pytest

import meshfl
from meshfl.config.errors import ConfigError, DataSchemaError

FAST = {"anomaly": {"trees_per_round": 5, "depth": 6}, "threat_intel": {"encoder": "tiny"}}


def _run(**kw):
    args = dict(
        agent="anomaly",
        num_msps=3,
        rounds=2,
        seed=0,
        progress=False,
        agent_config=FAST["anomaly"],
        samples_per_msp=100,
    )
    args.update(kw)
    return meshfl.simulate(**args)


def test_simulate_is_deterministic_under_a_seed():
    a, b = _run(secure_aggregation="plaintext"), _run(secure_aggregation="plaintext")
    cols = [c for c in a.history.columns if c != "seconds"]
    pd.testing.assert_frame_equal(a.history[cols], b.history[cols])
    np.testing.assert_array_equal(a.model.vector, b.model.vector)
    c = _run(seed=1, secure_aggregation="plaintext")
    assert not np.array_equal(a.model.vector, c.model.vector)
    # CKKS adds fresh encryption noise, far below the 1e-6 the aggregation promises
    d = _run()
    np.testing.assert_allclose(d.model.vector, a.model.vector, rtol=1e-6, atol=1e-6)


def test_history_and_model(tmp_path):
    result = _run()
    assert list(result.history["round"]) == [1, 2]
    assert set(result.history.columns) >= {"msps", "auc", "seconds"}
    assert "train_examples" not in result.history  # MSPs do not send their size in the clear
    path = result.model.save(tmp_path / "anomaly.npz")
    loaded = meshfl.load(path)
    test = result.test_data
    np.testing.assert_array_equal(loaded.score_samples(test), result.model.score_samples(test))


def test_users_own_data_per_msp(tmp_path):
    agent = meshfl.agents.get("anomaly")()
    frames = [agent.synthetic_data(80, seed=i) for i in range(3)]
    frames[1].to_csv(tmp_path / "msp1.csv", index=False)
    result = _run(data=[frames[0], tmp_path / "msp1.csv", frames[2]])
    assert [len(p.train) + len(p.test) for p in result.partitions] == [80, 80, 80]


def test_users_data_with_a_missing_column_names_it():
    frame = meshfl.agents.get("anomaly")().synthetic_data(50, seed=0).drop(columns=["cpu_pct"])
    with pytest.raises(DataSchemaError, match="cpu_pct"):
        _run(data=[frame, frame, frame])


def test_wrong_number_of_partitions_is_explained():
    frame = meshfl.agents.get("anomaly")().synthetic_data(50, seed=0)
    with pytest.raises(ConfigError, match="list of 3 per-MSP partitions"):
        _run(data=[frame])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"rounds": 0}, "'rounds'"),
        ({"num_msps": 0}, "'num_msps'"),
        ({"agent": "federated_learning"}, "meshfl-server"),
        ({"agent": "client_health", "num_msps": 2}, "'num_msps'.*at least 3"),
        ({"min_msps": 4}, "'num_msps'.*at least 4"),
        ({"agent_config": {"depth": 99}}, "'depth'"),
    ],
)
def test_bad_arguments_are_explained(kw, match):
    with pytest.raises(meshfl.MeshflError, match=match):
        _run(**kw)


def test_compare_scores_the_federation_and_both_references_on_pooled_rows():
    from meshfl.baselines import compare

    result = _run()
    scores = compare(result)
    assert scores.metric == "auc" and len(scores.local) == 3
    assert scores.federated == pytest.approx(result.evaluate()["auc"])
    assert scores.local_best >= scores.local_mean
    assert 0.0 <= scores.centralized <= 1.0
    assert str(scores).startswith("auc: federated ")
    assert compare(result, with_centralized=False).centralized is None


def test_masking_is_on_by_default_and_turning_it_off_warns():
    kwargs = dict(agent="anomaly", num_msps=4, rounds=1, samples_per_msp=60, progress=False)
    assert meshfl.simulate(**kwargs).history["masked"].tolist() == [True]
    with pytest.warns(UserWarning, match="masking is off"):
        off = meshfl.simulate(masking=False, **kwargs)
    assert off.history["masked"].tolist() == [False]
