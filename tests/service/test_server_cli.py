import json

from meshfl.federation import AgentPlan, InProcessGrid, make_client_app
from meshfl.federation.server_app import run_plan
from meshfl.server_cli import main
from meshfl.simulation import make_partitions, simulation_keys
from meshfl.store.model_store import ModelStore, read_export


def _coordinator_state(tmp_path):
    plan = AgentPlan(agent="anomaly", agent_config={"trees_per_round": 4, "depth": 5}, rounds=2)
    parts = make_partitions(plan.build_agent(), num_msps=3, seed=0, samples_per_msp=60)
    sealer_for, aggregator, _ = simulation_keys("ckks")
    app = make_client_app(lambda a, ctx: parts[ctx.node_config["partition-id"]], sealer=sealer_for)
    with ModelStore(tmp_path / "state") as store:
        run_plan(InProcessGrid(app, 3), plan, aggregator, store=store, run_id="r1")
    return tmp_path / "state"


def test_status_versions_and_export(tmp_path, capsys):
    state = _coordinator_state(tmp_path)
    assert main(["status", "--state-dir", str(state), "--json"]) == 0
    assert '"anomaly"' in capsys.readouterr().out
    assert main(["status", "--state-dir", str(state)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split() == [
        "r1",
        "anomaly",
        "completed",
        "2",
        "2",
    ]
    assert main(["versions", "--state-dir", str(state)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].split()[:3] == ["anomaly", "1", "3"]
    assert lines[1].split()[-1] == "r1"  # the run it belongs to
    assert main(["versions", "--state-dir", str(state), "--json"]) == 0
    assert [v["round"] for v in json.loads(capsys.readouterr().out)] == [1, 2]
    out = tmp_path / "model.mfl"
    assert main(["export", "--state-dir", str(state), "--agent", "anomaly", "--out", str(out)]) == 0
    header, sealed = read_export(out)
    assert header["round"] == 2 and all(s.backend == "ckks" for s in sealed)


def test_missing_state_and_version_are_explained(tmp_path, capsys):
    assert main(["status", "--state-dir", str(tmp_path / "nope")]) == 2
    assert "no coordinator state" in capsys.readouterr().err
    state = _coordinator_state(tmp_path)
    args = ["export", "--state-dir", str(state), "--agent", "anomaly", "--round", "9", "--out", "x"]
    assert main(args) == 2
    assert "at round 9" in capsys.readouterr().err


def test_the_console_script_says_a_meshfl_error_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    script = Path(sys.executable).parent / "meshfl-server"
    if not script.exists():
        pytest.skip("meshfl is not installed next to this Python")
    done = subprocess.run(
        [str(script), "status", "--state-dir", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"meshfl-server: error: {tmp_path / 'nope'} holds no coordinator state "
        "(no coordinator.sqlite)."
    ]
