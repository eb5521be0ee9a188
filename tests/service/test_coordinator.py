"""The coordinator service's pieces that need no running SuperLink."""

from __future__ import annotations

import json

import pytest

from meshfl.config.errors import MeshflError
from meshfl.service.config import load_mesh_config
from meshfl.service.coordinator import (
    CoordinatorLayout,
    RunFollower,
    format_round,
    prepare,
    superlink_command,
)

MESH = """
[coordinator]
public_key = "coordinator.public.ckks"
address = "0.0.0.0:9200"
run_name = "q3"
{extra}

[agents.anomaly]
rounds = 2
"""
TLS = """
[coordinator.tls]
ca_cert = "ca.crt"
cert = "server.crt"
key = "server.key"
"""


def _config(tmp_path, extra="", tls=True):
    (tmp_path / "coordinator.public.ckks").write_bytes(b"public")
    (tmp_path / "mesh.toml").write_text(MESH.format(extra=extra) + (TLS if tls else ""))
    return load_mesh_config(tmp_path / "mesh.toml")


def test_the_superlink_gets_tls_node_auth_and_a_database_in_the_state_dir(tmp_path):
    args = superlink_command(_config(tmp_path))
    assert args[0].endswith("flower-superlink")
    assert args[args.index("--host") + 1 : args.index("--host") + 4] == [
        "0.0.0.0",
        "--port",
        "9200",
    ]
    assert args[args.index("--ssl-certfile") + 1] == str(tmp_path / "server.crt")
    assert "--enable-supernode-auth" in args and "--insecure" not in args
    assert "--disable-runtime-dependency-installation" in args
    assert args[args.index("--database") + 1] == str(tmp_path / "state" / "superlink.db")

    args = superlink_command(_config(tmp_path, "node_auth = false", tls=False))
    assert "--insecure" in args and "--enable-supernode-auth" not in args


def test_prepare_writes_the_app_and_the_cli_connection(tmp_path):
    from flwr.cli.config_utils import load_and_validate

    layout = prepare(_config(tmp_path))
    config, _ = load_and_validate(layout.app_dir / "pyproject.toml", check_module=False)
    run_config = config["tool"]["flwr"]["app"]["config"]
    assert run_config["run-name"] == "q3"
    assert run_config["state-dir"] == str(tmp_path / "state")
    assert json.loads(run_config["plans"])[0]["agent"] == "anomaly"
    connection = (layout.cli_home / "config.toml").read_text()
    assert 'address = "127.0.0.1:9200"' in connection  # dials loopback for 0.0.0.0
    assert "root-certificates" in connection


def test_prepare_refuses_node_auth_without_tls_and_a_missing_key(tmp_path):
    with pytest.raises(MeshflError, match="node_auth = true needs"):
        prepare(_config(tmp_path, tls=False))
    config = _config(tmp_path)
    (tmp_path / "coordinator.public.ckks").unlink()
    with pytest.raises(MeshflError, match="meshfl keys init"):
        prepare(config)


def test_the_follower_reads_whole_appended_lines_once(tmp_path):
    layout = CoordinatorLayout(tmp_path)
    run_dir = layout.run_dir(7)
    follower = RunFollower(run_dir, tmp_path)
    assert list(follower.new_rounds()) == [] and follower.summary() is None
    run_dir.mkdir(parents=True)
    record = {"agent": "anomaly", "round": 1, "msps": 3, "auc": 0.9, "seconds": 2.0}
    with (run_dir / "rounds.jsonl").open("w") as f:
        f.write(json.dumps(record) + "\n" + '{"agent": "anom')  # a line half written
    assert list(follower.new_rounds()) == [record]
    with (run_dir / "rounds.jsonl").open("a") as f:
        f.write('aly", "round": 2}\n')
    assert list(follower.new_rounds()) == [{"agent": "anomaly", "round": 2}]
    assert list(follower.new_rounds()) == []
    assert follower.epsilon_by_msp("anomaly") == {}  # no store yet
    (run_dir / "summary.json").write_text('{"status": "completed"}')
    assert follower.summary() == {"status": "completed"}


def test_a_round_line_says_what_happened():
    line = format_round(
        {"agent": "anomaly", "round": 3, "msps": 2, "dropped": 1, "auc": 0.91, "seconds": 4}
    )
    assert line == "anomaly round 3: msps=2 dropped=1 auc=0.9100 4.0s"
    record = {"agent": "anomaly", "round": 4, "msps": 2, "dropped": 2, "no_reply": 1}
    record |= {"dropped_by_kind": {"E_DATA": 2}, "declined": 1, "seconds": 4}
    assert format_round(record) == (
        "anomaly round 4: msps=2 dropped=3 (E_DATA=2, no_reply=1) "
        "declined=1 (privacy budget spent) 4.0s"
    )
