"""meshfl's apps on Flower's deployment runtime, over loopback, with TLS and SuperNode auth.

One SuperLink (the coordinator) and three SuperNodes (MSPs) run as separate processes,
started with Flower's own CLIs; the run is submitted with ``flwr run``. A fourth SuperNode,
whose key was never registered, must be refused. An audit hook in the coordinator's
processes records every ``*.ckks`` file they open: the public context, never the secret.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import meshfl.agents
from meshfl.deploy import write_app_project, write_flower_config
from meshfl.deploy.apps import load_sealed
from meshfl.deploy.certs import generate_supernode_keys, generate_tls
from meshfl.deploy.processes import ProcessError, Processes, flwr_cli, free_ports
from meshfl.federation.sealed_model import open_global
from meshfl.secure.keys import COORDINATOR_FILE, MSP_FILE, generate_keys

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
NUM_MSPS = 3
ROUNDS = 2
AGENT_CONFIG = {"trees_per_round": 5, "depth": 6}
RUN_TIMEOUT = 150.0  # seconds for the whole federation once submitted

AUDIT_HOOK = """
import os, sys

_LOG = os.environ.get("MESHFL_TEST_CKKS_OPENS")

def _hook(event, args):
    if event == "open" and _LOG and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if path.endswith(".ckks"):
            with open(_LOG, "a") as log:
                log.write(f"{os.getpid()} {path}\\n")

sys.addaudithook(_hook)
"""


def wait_for(predicate, timeout: float, what: str, processes: Processes, *names: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        processes.check_running(*names)
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def test_federation_over_tls_with_supernode_auth(tmp_path: Path) -> None:
    if not (BIN / "flower-superlink").exists() or not Path("/proc/self/stat").exists():
        pytest.skip("needs Flower's CLIs next to this Python, and Linux /proc")
    t0 = time.monotonic()
    logs = tmp_path / "logs"
    logs.mkdir()
    link_port, *node_ports = free_ports(2 + NUM_MSPS)

    # Key material: CKKS (the coordinator gets the public context only), TLS, node keys.
    keys = generate_keys(tmp_path / "keyset")
    coordinator = tmp_path / "coordinator"
    coordinator.mkdir()
    shutil.copy2(keys.public, coordinator / COORDINATOR_FILE)
    tls = generate_tls(tmp_path / "tls")
    agent = meshfl.agents.get("anomaly")(AGENT_CONFIG)
    msps = []
    for i in range(NUM_MSPS):
        msp = tmp_path / f"msp-{i}"
        (msp / "data").mkdir(parents=True)
        agent.synthetic_data(300, seed=i).to_csv(msp / "data" / "anomaly.csv", index=False)
        shutil.copy2(keys.secret, msp / MSP_FILE)
        msps.append((msp, generate_supernode_keys(msp / "node.key", comment=f"msp-{i}")))
    intruder = generate_supernode_keys(tmp_path / "intruder" / "node.key")

    plans = [
        {
            "agent": "anomaly",
            "rounds": ROUNDS,
            "agent_config": AGENT_CONFIG,
            "min_available_msps": NUM_MSPS,
            "connect_timeout": 60,
            "round_timeout": 60,
        }
    ]
    app = write_app_project(
        tmp_path / "app",
        run_config={
            "plans": json.dumps(plans),
            "public-key": str(coordinator / COORDINATOR_FILE),
            "state-dir": str(coordinator / "state"),
        },
    )
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "sitecustomize.py").write_text(textwrap.dedent(AUDIT_HOOK))
    opens = tmp_path / "coordinator-ckks-opens.txt"

    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
    }
    env.pop("PYTHONPATH", None)
    cli_env = {**env, "FLWR_HOME": str(tmp_path / "flwr-cli")}
    write_flower_config(
        tmp_path / "flwr-cli", f"127.0.0.1:{link_port}", root_certificates=tls.ca_cert
    )

    processes = Processes(tmp_path, logs)
    try:
        processes.start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--host", "127.0.0.1",
                "--port", str(link_port),
                "--ssl-ca-certfile", str(tls.ca_cert),
                "--ssl-certfile", str(tls.server_cert),
                "--ssl-keyfile", str(tls.server_key),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
            ],
            {
                **env,
                "FLWR_HOME": str(tmp_path / "flwr-superlink"),
                "PYTHONPATH": str(audit),
                "MESHFL_TEST_CKKS_OPENS": str(opens),
            },
        )  # fmt: skip

        # Register the MSPs' public keys through the Control API (once it answers).
        def register(public: Path) -> dict | None:
            try:
                return flwr_cli(["supernode", "register", str(public), "meshfl"], cli_env)
            except ProcessError:
                return None

        for _, node_keys in msps:
            wait_for(
                lambda k=node_keys: register(k.public),
                30,
                f"registering {node_keys.public}",
                processes,
                "superlink",
            )

        def supernode(name: str, port: int, key: Path, node_config: str) -> None:
            processes.start(
                name,
                [
                    str(BIN / "flower-supernode"),
                    "--superlink", f"127.0.0.1:{link_port}",
                    "--root-certificates", str(tls.ca_cert),
                    "--auth-supernode-private-key", str(key),
                    "--port", str(port),
                    "--node-config", node_config,
                ],
                {**env, "FLWR_HOME": str(tmp_path / f"flwr-{name}")},
            )  # fmt: skip

        for i, (msp, node_keys) in enumerate(msps):
            supernode(
                f"msp-{i}",
                node_ports[i],
                node_keys.private,
                f"data-dir='{msp / 'data'}' secret-key='{msp / MSP_FILE}' "
                f"state-dir='{msp / 'state'}'",
            )
        intruder_dir = msps[0][0]
        supernode(
            "intruder",
            node_ports[NUM_MSPS],
            intruder.private,
            f"data-dir='{intruder_dir / 'data'}' secret-key='{intruder_dir / MSP_FILE}'",
        )

        run = flwr_cli(["run", str(app), "meshfl"], cli_env)
        assert run["success"], run
        run_dir = coordinator / "state" / "runs" / run["run-id"]
        t_submitted = time.monotonic()
        names = ["superlink", *(f"msp-{i}" for i in range(NUM_MSPS))]
        wait_for(
            (run_dir / "summary.json").exists,
            RUN_TIMEOUT,
            f"the run to finish (SuperLink log:\n{processes.log('superlink')})",
            processes,
            *names,
        )
        t_done = time.monotonic()
        summary = json.loads((run_dir / "summary.json").read_text())
        rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]

        # The node with an unregistered key was refused and gave up.
        wait_for(
            lambda: processes.started["intruder"].poll() is not None,
            30,
            "the unregistered SuperNode to exit",
            processes,
        )
        refused = processes.started["intruder"].returncode
        intruder_log = processes.log("intruder")
        link_log = processes.log("superlink", tail=10**7)
    finally:
        survivors = processes.stop()

    print(
        f"setup+startup {t_submitted - t0:.1f}s, run {t_done - t_submitted:.1f}s, "
        f"rounds {[round(r['seconds'], 1) for r in rounds]}"
    )
    assert not survivors, f"processes left running: {survivors}"

    assert summary["status"] == "completed", summary
    assert summary["agents"]["anomaly"]["rounds"] == ROUNDS
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    for record in rounds:
        assert record["sampled"] == NUM_MSPS  # the intruder never joined
        assert record["msps"] == NUM_MSPS
        assert record["dropped"] == 0
        assert 0.5 < record["auc"] <= 1.0

    # Refused: Flower's exit code 305, "Failed to activate SuperNode".
    assert refused != 0, intruder_log
    assert "Failed to activate SuperNode" in intruder_log
    assert "No SuperNode found with the given public key" in link_log

    # The coordinator held only the public context, and never opened the secret one.
    assert summary["coordinator_key"]["backend"] == "ckks"
    assert summary["coordinator_key"]["has_secret_key"] is False
    assert summary["coordinator_key"]["key_id"] == keys.key_id
    opened = opens.read_text().split("\n") if opens.exists() else []
    assert any(line.endswith(COORDINATOR_FILE) for line in opened), opened
    assert not any(MSP_FILE in line for line in opened), opened

    # Any MSP opens the stored sealed model with its key, and it detects anomalies.
    from meshfl.secure.ckks import CKKSSealer

    sealed = load_sealed(run_dir / "anomaly.sealed.json")
    assert len(sealed) == ROUNDS and all(s.backend == "ckks" for s in sealed)
    seed = summary["agents"]["anomaly"]["seed"]
    vector = open_global(agent, sealed, CKKSSealer.from_file(keys.secret), seed=seed)
    assert np.isfinite(vector).all()
    local = agent.prepare(agent.load_data(msps[0][0] / "data" / "anomaly.csv"))
    assert agent.evaluate(vector, local)["auc"] > 0.5
