"""An operator's mistakes, with real processes on loopback (issue 16, operator).

Each test runs meshfl's own console scripts, as docs/deployment.md tells an operator to:
a port another coordinator holds, a typo in an agent's config table, and MSPs whose data
cannot train. Each must fail in sight: before anything starts where the mistake is the
operator's, with the coordinator naming why and exiting non-zero where it is the MSPs'.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from meshfl.deploy.loopback import AgentSetup, LoopbackMesh

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
ANOMALY = {"anomaly": AgentSetup({"trees_per_round": 3, "depth": 4}, rows=120)}


def _needs_flower() -> None:
    if not (BIN / "flower-superlink").exists():
        pytest.skip("needs Flower's CLIs next to this Python")


def _server_run(mesh: LoopbackMesh, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "meshfl-server"), "run", "--config", str(mesh.mesh)],
        env=mesh.env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _nothing_started(mesh: LoopbackMesh) -> bool:
    return not (mesh.state / "superlink.db").exists() and not list(
        (mesh.root / "logs").glob("superlink*")
    )


def test_a_taken_port_stops_the_coordinator_before_it_reaches_the_other(tmp_path):
    _needs_flower()
    mesh = LoopbackMesh(tmp_path, ANOMALY, num_msps=1)
    with socket.socket() as other:  # another coordinator's SuperLink holds the port
        other.bind(("127.0.0.1", mesh.link_port))
        other.listen()
        other.setblocking(False)
        done = _server_run(mesh)
        with pytest.raises(BlockingIOError):  # nothing of ours ever reached it
            other.accept()
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert f"address = '127.0.0.1:{mesh.link_port}': the port is in use" in out, out
    assert _nothing_started(mesh)


def test_a_typo_in_an_agents_config_fails_before_anything_starts(tmp_path):
    _needs_flower()
    mesh = LoopbackMesh(tmp_path, ANOMALY, num_msps=1)
    text = mesh.mesh.read_text()
    mesh.mesh.write_text(text.replace("trees_per_round", "trees_per_rnd"))
    done = _server_run(mesh)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "[agents.anomaly] config: 'trees_per_rnd'" in out, out
    assert _nothing_started(mesh)


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            return str(reply.read().decode())
    except OSError:
        return ""


def test_msps_whose_data_cannot_train_are_named_and_the_run_fails(tmp_path):
    _needs_flower()
    settings = {"rounds": 1, "min_msps": 2, "min_available_msps": 2, "round_timeout": 120}
    mesh = LoopbackMesh(
        tmp_path,
        {"anomaly": AgentSetup({"trees_per_round": 3, "depth": 4}, 120, settings)},
        num_msps=2,
    )
    text = mesh.mesh.read_text()  # the run ends within seconds: watch the MSPs closely
    mesh.mesh.write_text(text.replace("[coordinator]\n", "[coordinator]\nnode_poll_seconds = 1\n"))
    for msp, _ in mesh.msps:  # a column lost in each MSP's export
        csv = msp / "data" / "anomaly.csv"
        frame = pd.read_csv(csv)
        frame.drop(columns="cpu_pct").to_csv(csv, index=False)
    metrics = ""
    try:
        server = mesh.server()
        mesh.register_nodes()
        mesh.start_nodes()
        deadline = time.monotonic() + 300
        while server.poll() is None:
            assert time.monotonic() < deadline, mesh.processes.log("meshfl-server")
            metrics = _scrape(mesh.metrics_port) or metrics
            time.sleep(1)
        log = mesh.processes.log("meshfl-server", tail=20000)
    finally:
        mesh.processes.stop()
    assert server.returncode != 0, log
    # Each MSP's reason reaches the operator's terminal, its round record and /metrics.
    assert re.search(r"anomaly round 1: msps=0 dropped=2 \(E_DATA=2\)", log), log
    assert mesh.rounds()[0]["dropped_by_kind"] == {"E_DATA": 2}
    assert 'meshfl_updates_dropped_total{agent="anomaly",reason="E_DATA"} 2.0' in metrics
    # ... the MSPs had readable names, and the gauge saw them connected
    assert "MSP msp-0 connected" in log and "MSP msp-1 connected" in log, log
