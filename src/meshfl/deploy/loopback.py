"""A whole deployed mesh on one machine: ``meshfl-server`` and N ``meshfl-node`` over loopback.

What docs/deployment.md tells an operator and each MSP to do, done in one directory: CKKS
keys (``meshfl keys init``), TLS certificates (``meshfl certs init``), one SuperNode key per
MSP, ``mesh.toml``, each MSP's CSV files of synthetic rows. The processes are meshfl's own
console scripts, started in their own sessions and ended by pid
(:class:`~meshfl.deploy.processes.Processes`). The integration tests and
``benchmarks/deploy_overhead.py`` run on it; it is also a way to try a deployment before
there are machines::

    mesh = LoopbackMesh(tmp, {"anomaly": AgentSetup({"trees_per_round": 5}, rows=300)})
    try:
        server = mesh.server()
        mesh.register_nodes()
        mesh.start_nodes()
        server.wait()
    finally:
        mesh.processes.stop()
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshfl.deploy.certs import generate_supernode_keys, generate_tls
from meshfl.deploy.processes import Processes, flower_env, free_ports
from meshfl.secure.keys import COORDINATOR_FILE, MSP_FILE, generate_keys

__all__ = ["AgentSetup", "LoopbackMesh"]

BIN = Path(sys.executable).parent

MESH_TOML = """
[coordinator]
state_dir = "state"
public_key = "keys/{coordinator_file}"
address = "127.0.0.1:{link_port}"
metrics_address = "127.0.0.1:{metrics_port}"
run_name = "{run_name}"
node_auth = true

[coordinator.tls]
ca_cert = "certs/ca.crt"
cert = "certs/server.crt"
key = "certs/server.key"
"""


@dataclass(frozen=True)
class AgentSetup:
    """One agent of the mesh: its config, rows per MSP and ``[agents.<name>]`` settings."""

    config: Mapping[str, Any] = field(default_factory=dict)
    rows: int = 300
    settings: Mapping[str, Any] = field(default_factory=dict)
    """``rounds``, ``min_msps``, ``privacy``, ``round_timeout``... (mesh.toml's keys)."""


def _toml(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # bools, numbers and strings are the same in TOML


class LoopbackMesh:
    """Keys, certificates, mesh.toml and ``num_msps`` MSPs' files under ``root``.

    Parameters
    ----------
    root : path
        An empty directory; every process has its ``FLWR_HOME`` below it.
    agents : mapping
        Agent name to :class:`AgentSetup`.
    num_msps : int
        MSPs (SuperNodes), ``msp-0`` ... under ``root``.
    run_name : str
        The coordinator's run name (a second ``server()`` on the same root resumes it).
    node_args : sequence of str
        Extra ``meshfl-node`` arguments (e.g. ``--poll-interval 0.2``).
    """

    def __init__(
        self,
        root: str | Path,
        agents: Mapping[str, AgentSetup],
        *,
        num_msps: int = 3,
        run_name: str = "itest",
        node_args: Sequence[str] = (),
    ) -> None:
        from meshfl.agents import registry

        self.root = Path(root)
        self.node_args = list(node_args)
        self.link_port, self.metrics_port, *self.node_ports = free_ports(2 + num_msps)
        keys = generate_keys(self.root / "keyset")  # what `meshfl keys init` writes
        (self.root / "keys").mkdir()
        shutil.copy2(keys.public, self.root / "keys" / COORDINATOR_FILE)
        generate_tls(self.root / "certs")  # `meshfl certs init`
        self.msps = []
        for i in range(num_msps):
            msp = self.root / f"msp-{i}"
            (msp / "data").mkdir(parents=True)
            for name, setup in agents.items():
                agent = registry.get(name)(dict(setup.config))
                rows = agent.synthetic_data(setup.rows, seed=i)
                rows.to_csv(msp / "data" / f"{name}.csv", index=False)
            shutil.copy2(keys.secret, msp / MSP_FILE)
            node_keys = generate_supernode_keys(msp / "node.key", comment=f"msp-{i}")
            self.msps.append((msp, node_keys))
        self.mesh = self.root / "mesh.toml"
        text = MESH_TOML.format(
            coordinator_file=COORDINATOR_FILE,
            link_port=self.link_port,
            metrics_port=self.metrics_port,
            run_name=run_name,
        )
        for name, setup in agents.items():
            text += f"\n[agents.{name}]\n"
            text += "".join(f"{k} = {_toml(v)}\n" for k, v in setup.settings.items())
            text += f"config = {_toml(dict(setup.config))}\n"
        self.mesh.write_text(text)
        self.state = self.root / "state"
        self.processes = Processes(self.root, self.root / "logs")
        self.env = flower_env(self.root / "flwr-test")

    def server(self, name: str = "meshfl-server") -> subprocess.Popen[bytes]:
        """Start ``meshfl-server run`` (it starts the SuperLink and submits the run)."""
        args = [str(BIN / "meshfl-server"), "run", "--config", str(self.mesh)]
        return self.processes.start(name, args, self.env)

    def register_nodes(self, server: str = "meshfl-server", timeout: float = 60) -> None:
        """``meshfl-server register-node`` for every MSP, retried until the SuperLink answers."""
        for _, node_keys in self.msps:
            deadline = time.monotonic() + timeout
            while True:
                reg = subprocess.run(
                    [
                        str(BIN / "meshfl-server"), "register-node",
                        "--config", str(self.mesh), str(node_keys.public),
                    ],
                    env=self.env, capture_output=True, text=True, timeout=60, check=False,
                )  # fmt: skip
                if reg.returncode == 0:
                    break
                self.processes.check_running(server)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not register {node_keys.public}: {reg.stderr}")
                time.sleep(1)

    def start_nodes(self) -> None:
        """Start ``meshfl-node`` for every MSP (as ``msp-<i>``)."""
        for i, (msp, node_keys) in enumerate(self.msps):
            self.processes.start(
                f"msp-{i}",
                [
                    str(BIN / "meshfl-node"),
                    "--superlink", f"127.0.0.1:{self.link_port}",
                    "--data-dir", str(msp / "data"),
                    "--secret-key", str(msp / MSP_FILE),
                    "--state-dir", str(msp / "state"),
                    "--root-certificates", str(self.root / "certs" / "ca.crt"),
                    "--auth-key", str(node_keys.private),
                    "--port", str(self.node_ports[i]),
                    *self.node_args,
                ],
                self.env,
            )  # fmt: skip

    def rounds(self) -> list[dict[str, Any]]:
        """Every round record the coordinator wrote (``runs/*/rounds.jsonl``), in order."""
        records = []
        for path in sorted((self.state / "runs").glob("*/rounds.jsonl")):
            records += [json.loads(line) for line in path.read_text().splitlines() if line]
        return records
