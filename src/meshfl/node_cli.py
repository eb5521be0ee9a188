"""``meshfl-node``: an MSP's SuperNode, as Flower's ``flower-supernode`` with meshfl's node config.

    meshfl-node --superlink coordinator.example:9092 --data-dir data/ \\
        --secret-key keys/msp.secret.ckks --state-dir state/ \\
        --root-certificates certs/ca.crt --auth-key keys/msp-0

checks the MSP's files, then *replaces itself* (``exec``) with ``flower-supernode``: the
pid an init system or a test holds is the SuperNode's, and a signal to it reaches Flower
directly. The node config it passes is what :mod:`meshfl.deploy.apps` reads
(``data-dir``, ``secret-key``, ``state-dir``); Flower's home is ``<state-dir>/flwr-supernode``.

meshfl's three console scripts sit side by side: :mod:`meshfl.cli` (``meshfl``),
:mod:`meshfl.server_cli` (``meshfl-server``, the coordinator's operator) and this module
(``meshfl-node``, an MSP's operator).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from meshfl.config.errors import ConfigError, MeshflError
from meshfl.deploy.processes import BIN, flower_env

__all__ = ["main", "supernode_command"]

DEFAULT_PORT = 9094


def _quoted(key: str, path: Path) -> str:
    text = str(path.resolve())
    if "'" in text or '"' in text:
        raise ConfigError(f"The {key} path must not contain quotes. Got {text!r} instead.")
    return f"{key}='{text}'"


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
) -> list[str]:
    """The ``flower-supernode`` command line of one MSP; checks its files first.

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
    """
    if (data_dir is None) == (data_loader is None):
        raise ConfigError("Give either --data-dir or --data-loader (one of them).")
    if data_loader is not None:
        module, sep, attr = data_loader.partition(":")
        if not sep or not module or not attr.isidentifier() or "'" in data_loader:
            raise ConfigError(
                f"--data-loader must be 'package.module:function'. Got {data_loader!r}."
            )
        data_entry = f"data-loader='{data_loader}'"
    else:
        data = Path(str(data_dir))
        if not data.is_dir() or not any(data.glob("*.csv")):
            raise ConfigError(f"--data-dir {data} must be a folder with one <agent>.csv per agent.")
        data_entry = _quoted("data-dir", data)
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
        ]
    )
    args = [str(BIN / "flower-supernode"), "--superlink", superlink]
    if insecure:
        args.append("--insecure")
    else:
        args += ["--root-certificates", str(Path(str(root_certificates)).resolve())]
    if auth_key is not None:
        args += ["--auth-supernode-private-key", str(Path(auth_key).resolve())]
    args += ["--port", str(port), "--node-config", node_config]
    return args


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``meshfl-node``."""
    parser = argparse.ArgumentParser(prog="meshfl-node", description=__doc__.splitlines()[0])
    parser.add_argument("--superlink", required=True, help="the coordinator's host:port")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data-dir", help="folder of <agent>.csv files")
    data.add_argument("--data-loader", help="'package.module:function' returning the rows")
    parser.add_argument("--secret-key", required=True, help="msp.secret.ckks")
    parser.add_argument("--state-dir", required=True, help="this MSP's state (privacy ledger)")
    parser.add_argument("--root-certificates", help="the coordinator's CA certificate")
    parser.add_argument("--auth-key", help="this SuperNode's private key (node auth)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="local Runtime API port (default 9094)"
    )
    parser.add_argument("--insecure", action="store_true", help="no TLS (loopback tests only)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshfl-node`` console script (does not return on success)."""
    args = build_parser().parse_args(argv)
    try:
        command = supernode_command(
            superlink=args.superlink,
            data_dir=args.data_dir,
            data_loader=args.data_loader,
            secret_key=args.secret_key,
            state_dir=args.state_dir,
            root_certificates=args.root_certificates,
            auth_key=args.auth_key,
            port=args.port,
            insecure=args.insecure,
        )
    except MeshflError as err:
        print(f"meshfl-node: error: {err}", file=sys.stderr)
        return 2
    if args.insecure:
        print(
            "WARNING: --insecure: this MSP talks to the coordinator without TLS. Use it only "
            "on loopback for tests.",
            file=sys.stderr,
        )
    if args.auth_key is None:
        print(
            "WARNING: no --auth-key: a coordinator with node authentication refuses this node.",
            file=sys.stderr,
        )
    env = flower_env(Path(args.state_dir) / "flwr-supernode")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)
    return 0  # pragma: no cover - execve does not return


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
