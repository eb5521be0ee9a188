"""An export of the coordinator's store opens, with the MSPs' key, into the model the MSPs
hold; without the key, or with another key set's, it does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from meshfl.config.errors import ConfigError, MeshflError
from meshfl.federation import AgentPlan, InProcessGrid, make_client_app
from meshfl.federation.exported_model import open_export
from meshfl.federation.sealed_model import open_global
from meshfl.federation.server_app import run_plan
from meshfl.secure.ckks import CKKSAggregator, CKKSSealer
from meshfl.secure.keys import generate_keys
from meshfl.simulation import make_partitions
from meshfl.store.model_store import ModelStore

CONFIG = {"trees_per_round": 4, "depth": 5}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    keys = generate_keys(root / "keys")
    plan = AgentPlan(agent="anomaly", agent_config=CONFIG, rounds=2, seed=3)
    parts = make_partitions(plan.build_agent(), num_msps=3, seed=0, samples_per_msp=60)
    sealer = CKKSSealer.from_file(keys.secret)
    app = make_client_app(
        lambda a, ctx: parts[ctx.node_config["partition-id"]], sealer=lambda ctx: sealer
    )
    with ModelStore(root / "state") as store:
        run_plan(InProcessGrid(app, 3), plan, CKKSAggregator.from_file(keys.public), store=store)
        version = store.versions("anomaly")[-1]
        history = store.load_history(version)
        path = store.export(version, root / "anomaly.mfl")
    expected = open_global(plan.build_agent(), history, sealer, seed=3)
    return path, keys, expected, parts


def test_export_opens_into_the_msps_model(exported):
    path, keys, expected, parts = exported
    model = open_export(path, secret_key=keys.secret, agent_config=CONFIG, seed=3)
    np.testing.assert_array_equal(model.vector, expected)
    held_out = pd.concat([p.test for p in parts], ignore_index=True)
    assert model.evaluate(held_out)["auc"] > 0.6


def test_export_needs_the_key_sets_secret(exported, tmp_path):
    path, keys, _, _ = exported
    with pytest.raises(ConfigError, match=r"msp\.secret\.ckks"):
        open_export(path, secret_key=None, agent_config=CONFIG, seed=3)
    with pytest.raises(MeshflError):
        open_export(path, secret_key=keys.public, agent_config=CONFIG, seed=3)
    other = generate_keys(tmp_path / "other")
    with pytest.raises(ConfigError, match="key set"):
        open_export(path, secret_key=other.secret, agent_config=CONFIG, seed=3)


def test_meshfl_open_writes_a_model_meshfl_load_opens(exported, tmp_path, capsys):
    import meshfl
    from meshfl.cli import main

    path, keys, expected, _ = exported
    out = tmp_path / "anomaly.npz"
    args = ["open", str(path), "--secret-key", str(keys.secret), "--seed", "3"]
    assert (
        main([*args, "--agent-config", '{"trees_per_round": 4, "depth": 5}', "--out", str(out)])
        == 0
    )
    assert "round 2" in capsys.readouterr().out
    np.testing.assert_array_equal(meshfl.load(out).vector, expected)
    assert meshfl.open_export is open_export


def test_meshfl_open_takes_config_and_seed_from_mesh_toml(exported, tmp_path, capsys):
    from meshfl.cli import main

    path, keys, expected, _ = exported
    mesh = tmp_path / "mesh.toml"
    mesh.write_text(
        f'[coordinator]\npublic_key = "{keys.public}"\n\n'
        "[agents.anomaly]\nseed = 3\nconfig = { trees_per_round = 4, depth = 5 }\n"
    )
    out = tmp_path / "anomaly.npz"
    args = ["open", str(path), "--secret-key", str(keys.secret), "--config", str(mesh)]
    assert main([*args, "--out", str(out)]) == 0
    from meshfl import load

    np.testing.assert_array_equal(load(out).vector, expected)
    mesh.write_text(f'[coordinator]\npublic_key = "{keys.public}"\n\n[agents.revenue]\n')
    assert main(args) == 2
    assert "no [agents.anomaly] table" in capsys.readouterr().err
