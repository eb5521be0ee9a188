"""``meshfl-node``: an MSP's SuperNode, as Flower's ``flower-supernode`` with meshfl's node config.

    meshfl-node --superlink coordinator.example:9092 --data-dir data/ \\
        --secret-key keys/msp.secret.ckks --state-dir state/ \\
        --root-certificates certs/ca.crt --auth-key keys/msp-0

checks the MSP's files, starts the warm SuperExec that forks this node's ClientApps, then
*replaces itself* (``exec``) with Flower's SuperNode: the pid an init system or a test holds
is the SuperNode's, and a signal to it reaches Flower directly (the SuperExec ends with it).
See :mod:`meshfl.deploy.node_runtime` for why (seconds per round) and ``--poll-interval``.
The node config it passes is what :mod:`meshfl.deploy.apps` reads (``data-dir``,
``secret-key``, ``state-dir``, and ``require-masking`` with ``--require-masking``); Flower's
home is ``<state-dir>/flwr-supernode``.

meshfl's three console scripts sit side by side: :mod:`meshfl.cli` (``meshfl``),
:mod:`meshfl.server_cli` (``meshfl-server``, the coordinator's operator) and this module
(``meshfl-node``, an MSP's operator).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import click
import typer

from meshfl.cli import build, new_app, run, version_option
from meshfl.config.errors import ConfigError, MeshflError
from meshfl.deploy.processes import flower_env

__all__ = ["main", "superexec_command", "supernode_command"]

DEFAULT_PORT = 9094
DEFAULT_POLL_INTERVAL = 0.5
"""Seconds between an idle SuperNode's requests for messages (Flower's own: 3 s)."""
RUNTIME = [sys.executable, "-m", "meshfl.deploy.node_runtime"]


def _quoted(key: str, path: Path) -> str:
    text = str(path.resolve())
    if "'" in text or '"' in text:
        raise ConfigError(f"The {key} path must not contain quotes. Got {text!r} instead.")
    return f"{key}='{text}'"


def _data_entry(data_dir: str | os.PathLike[str] | None, data_loader: str | None) -> str:
    """The node config entry that says where the MSP's rows come from (checked)."""
    if (data_dir is None) == (data_loader is None):
        raise ConfigError("Give either --data-dir or --data-loader (one of them).")
    if data_loader is not None:
        module, sep, attr = data_loader.partition(":")
        if not sep or not module or not attr.isidentifier() or "'" in data_loader:
            raise ConfigError(
                f"--data-loader must be 'package.module:function'. Got {data_loader!r}."
            )
        return f"data-loader='{data_loader}'"
    data = Path(str(data_dir))
    if not data.is_dir() or not any(data.glob("*.csv")):
        raise ConfigError(f"--data-dir {data} must be a folder with one <agent>.csv per agent.")
    return _quoted("data-dir", data)


def supernode_command(
    *,
    superlink: str,
    data_dir: str | os.PathLike[str] | None = None,
    data_loader: str | None = None,
    secret_key: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    root_certificates: str | os.PathLike[str] | None = None,
    auth_key: str | os.PathLike[str] | None = None,
    port: int = DEFAULT_PORT,
    insecure: bool = False,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    fresh_processes: bool = False,
    require_masking: bool = False,
) -> list[str]:
    """The SuperNode command line of one MSP; checks its files first.

    Parameters
    ----------
    superlink : str
        The coordinator's ``host:port`` (``[coordinator] address`` of its mesh.toml).
    data_dir : path, optional
        One ``<agent>.csv`` per agent the MSP trains.
    data_loader : str, optional
        Instead of ``data_dir``: ``"package.module:function"`` of the MSP's own code,
        returning each agent's rows (see docs/deployment.md, "Your own data loading").
    secret_key : path
        The MSPs' ``msp.secret.ckks`` (``meshfl keys init``).
    state_dir : path
        The MSP's state: its privacy ledger, Flower's home.
    root_certificates : path, optional
        The coordinator's CA certificate (``ca.crt``); needed unless ``insecure``.
    auth_key : path, optional
        The SuperNode's private key (``meshfl node-keys init``); its ``.pub`` must be
        registered with the coordinator (``meshfl-server register-node``).
    port : int
        The SuperNode's local Runtime API port (its ClientApps dial it); one per node.
    insecure : bool
        Plain HTTP to the SuperLink (loopback tests only).
    poll_interval : float
        The longest wait of the SuperNode's loops (for messages, for replies). Each idle
        node asks the SuperLink once per interval: on a mesh of thousands, keep Flower's 3 s.
    fresh_processes : bool
        Flower's default: a fresh ``flwr-clientapp`` process per message (its own SuperExec).
        Otherwise ClientApps are forked from the warm SuperExec of :func:`superexec_command`,
        which must run next to the node.
    require_masking : bool
        Decline every round whose plan does not mask updates (node config
        ``require-masking = true``): without masking, any MSP colluding with the coordinator
        reads this MSP's update (docs/threat-model.md).
    """
    data_entry = _data_entry(data_dir, data_loader)
    for flag, value in (("--secret-key", secret_key), ("--auth-key", auth_key)):
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"{flag} {value} does not exist.")
    if insecure and root_certificates is not None:
        raise ConfigError("Give --root-certificates or --insecure, not both.")
    if not insecure and root_certificates is None:
        raise ConfigError(
            "Give --root-certificates ca.crt (the coordinator's CA), or --insecure for a "
            "loopback test without TLS."
        )
    if root_certificates is not None and not Path(root_certificates).is_file():
        raise ConfigError(f"--root-certificates {root_certificates} does not exist.")
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    node_config = " ".join(
        [
            data_entry,
            _quoted("secret-key", Path(secret_key)),
            _quoted("state-dir", Path(state_dir)),
            *(["require-masking=true"] if require_masking else []),
        ]
    )
    if not 0.01 <= poll_interval <= 60:
        raise ConfigError(f"--poll-interval must be 0.01 to 60 seconds. Got {poll_interval}.")
    args = [*RUNTIME, "supernode", "--poll-interval", str(poll_interval)]
    args += ["--superlink", superlink]
    args += ["--isolation", "subprocess" if fresh_processes else "process"]
    if insecure:
        args.append("--insecure")
    else:
        args += ["--root-certificates", str(Path(str(root_certificates)).resolve())]
    if auth_key is not None:
        args += ["--auth-supernode-private-key", str(Path(auth_key).resolve())]
    args += ["--port", str(port), "--node-config", node_config]
    return args


def superexec_command(*, port: int = DEFAULT_PORT, parent_pid: int) -> list[str]:
    """The warm SuperExec next to a SuperNode whose Runtime API is on loopback ``port``."""
    return [
        *RUNTIME,
        "superexec",
        "--runtime-api-address",
        f"127.0.0.1:{port}",
        "--parent-pid",
        str(parent_pid),
    ]


def check_node(
    *, data_dir: str | None, secret_key: str, auth_key: str | None
) -> list[tuple[str, bool, str]]:
    """What ``meshfl-node --check`` verifies, as ``(what, ok, detail)`` rows.

    Each ``<agent>.csv`` of ``data_dir`` is read by its agent (default config: a run whose
    plan changes the agent's columns checks them again), the secret key must open as the
    MSPs' secret CKKS context, and the node key must be the EC private key Flower reads.
    Nothing is started and nothing is sent.
    """
    from meshfl.agents import registry

    rows: list[tuple[str, bool, str]] = []
    if data_dir is not None:
        built = set(registry.built())
        for path in sorted(Path(data_dir).glob("*.csv")):
            if path.stem not in built:
                rows.append((path.name, False, f"no agent is named {path.stem!r} (meshfl agents)"))
                continue
            try:
                frame = registry.get(path.stem)({}).load_data(path)
                rows.append((path.name, True, f"{len(frame)} rows of {path.stem} data"))
            except MeshflError as err:
                rows.append((path.name, False, str(err)))
    try:
        from meshfl.secure.ckks import CKKSSealer

        rows.append(("--secret-key", True, f"key id {CKKSSealer.from_file(secret_key).key_id}"))
    except MeshflError as err:
        rows.append(("--secret-key", False, str(err)))
    if auth_key is not None:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_ssh_private_key

        try:
            key = load_ssh_private_key(Path(auth_key).read_bytes(), password=None)
            ok = isinstance(key, ec.EllipticCurvePrivateKey)
            rows.append(("--auth-key", ok, "EC private key" if ok else "not an EC key"))
        except (OSError, ValueError, TypeError) as err:
            rows.append(("--auth-key", False, f"not an OpenSSH private key ({err})"))
    return rows


app = new_app(__doc__.splitlines()[0])


def _option(name: str, help: str) -> typer.models.OptionInfo:
    return typer.Option(name, help=help)


@app.command(help=__doc__.splitlines()[0])
def _meshfl_node(
    superlink: Annotated[str, _option("--superlink", "the coordinator's host:port")],
    secret_key: Annotated[str, _option("--secret-key", "the MSPs' msp.secret.ckks")],
    state_dir: Annotated[str, _option("--state-dir", "this MSP's state (privacy ledger)")],
    data_dir: Annotated[
        str | None, _option("--data-dir", "folder of <agent>.csv files (or --data-loader)")
    ] = None,
    data_loader: Annotated[
        str | None,
        _option("--data-loader", "'package.module:function' returning the rows (or --data-dir)"),
    ] = None,
    root_certificates: Annotated[
        str | None, _option("--root-certificates", "the coordinator's CA certificate")
    ] = None,
    auth_key: Annotated[
        str | None, _option("--auth-key", "this SuperNode's private key (node auth)")
    ] = None,
    port: Annotated[int, _option("--port", "local Runtime API port")] = DEFAULT_PORT,
    insecure: Annotated[bool, _option("--insecure", "no TLS (loopback tests only)")] = False,
    poll_interval: Annotated[
        float,
        _option(
            "--poll-interval",
            "seconds between an idle node's requests for messages (Flower's 3.0 suits a mesh "
            "of thousands)",
        ),
    ] = DEFAULT_POLL_INTERVAL,
    check: Annotated[
        bool,
        _option(
            "--check",
            "check the data, the secret key and the node key, then exit (0: all good)",
        ),
    ] = False,
    require_masking: Annotated[
        bool,
        _option(
            "--require-masking",
            "decline every round whose plan does not mask updates (without masking, any MSP "
            "colluding with the coordinator reads this MSP's update)",
        ),
    ] = False,
    fresh_processes: Annotated[
        bool,
        _option(
            "--fresh-processes",
            "start a fresh ClientApp process per message, as Flower does (slower) instead of "
            "forking it from a warm one",
        ),
    ] = False,
    version: Annotated[bool, version_option("meshfl-node")] = False,
) -> int:
    command = supernode_command(
        superlink=superlink,
        data_dir=data_dir,
        data_loader=data_loader,
        secret_key=secret_key,
        state_dir=state_dir,
        root_certificates=root_certificates,
        auth_key=auth_key,
        port=port,
        insecure=insecure,
        poll_interval=poll_interval,
        fresh_processes=fresh_processes,
        require_masking=require_masking,
    )
    if check:
        rows = check_node(data_dir=data_dir, secret_key=secret_key, auth_key=auth_key)
        for what, ok, detail in rows:
            print(f"{'ok  ' if ok else 'FAIL'}  {what}: {detail}")
        return 0 if all(ok for _, ok, _ in rows) else 1
    if insecure:
        print(
            "WARNING: --insecure: this MSP talks to the coordinator without TLS. Use it only "
            "on loopback for tests.",
            file=sys.stderr,
        )
    if auth_key is None:
        print(
            "WARNING: no --auth-key: a coordinator with node authentication refuses this node.",
            file=sys.stderr,
        )
    env = flower_env(Path(state_dir) / "flwr-supernode")
    sys.stdout.flush()
    sys.stderr.flush()
    if not fresh_processes:  # it outlives this exec: the SuperNode keeps this pid
        warm = superexec_command(port=port, parent_pid=os.getpid())
        subprocess.Popen(warm, env=env)
    os.execve(command[0], command, env)
    return 0  # pragma: no cover - execve does not return


def build_command() -> click.Command:
    """The click command of ``meshfl-node``."""
    return build(app)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshfl-node`` console script (does not return on success)."""
    return run(build_command(), "meshfl-node", argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
