"""``meshfl-server``: the coordinator operator's command.

    meshfl-server run           --config mesh.toml
    meshfl-server register-node --config mesh.toml [--name acme-it] msp-0.pub
    meshfl-server status   --state-dir state/
    meshfl-server versions --state-dir state/ [--agent anomaly]
    meshfl-server export   --state-dir state/ --agent anomaly [--round 5] --out model.mfl

``run`` is the coordinator service (:mod:`meshfl.service.coordinator`): a SuperLink, the
run of mesh.toml's agents, ``/metrics``; ``register-node`` allows an MSP's SuperNode key
(the SuperLink must be running). ``status``, ``versions`` and ``export`` open the store
read-only: they are safe while the coordinator runs. An exported model stays sealed (CKKS
ciphertext); only a key holder can open it.

meshfl's three console scripts sit side by side: :mod:`meshfl.cli` (``meshfl``), this module
(``meshfl-server``, the coordinator's operator) and :mod:`meshfl.node_cli` (``meshfl-node``,
an MSP's operator).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from meshfl.config.errors import ConfigError, MeshflError
from meshfl.store.model_store import ModelStore

__all__ = ["main"]


def _store(args: argparse.Namespace) -> ModelStore:

    state = Path(args.state_dir)
    if not (state / "coordinator.sqlite").exists():
        raise MeshflError(f"{state} holds no coordinator state (no coordinator.sqlite).")
    return ModelStore(state, read_only=True)


def _cmd_status(args: argparse.Namespace) -> int:
    with _store(args) as store:
        status = store.status()
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(f"state {status['state_dir']} (schema {status['schema_version']})")
    if not status["runs"]:
        print("no runs yet")
        return 0
    print(f"{'run':24s} {'agent':14s} {'status':10s} {'round':>5s} {'of':>4s}")
    for r in status["runs"]:
        planned = "-" if r["planned_rounds"] is None else str(r["planned_rounds"])
        print(
            f"{r['run_id']:24s} {r['agent']:14s} {r['status']:10s} "
            f"{r['last_round']:5d} {planned:>4s}"
        )
    return 0


def _cmd_versions(args: argparse.Namespace) -> int:
    with _store(args) as store:
        versions = store.versions(args.agent)
    if args.json:
        print(json.dumps([dataclasses.asdict(v) for v in versions], indent=2, default=str))
        return 0
    if not versions:
        print("no model versions yet")
        return 0
    head = f"{'agent':14s} {'round':>5s} {'msps':>4s} {'ε max':>8s}  {'key id':16s}  "
    print(head + f"{'digest':16s}  run")
    for v in versions:
        eps = "-" if v.epsilon_max is None else f"{v.epsilon_max:.4g}"
        digest = v.digest[:16] if v.digest else "(skipped)"
        print(
            f"{v.agent:14s} {v.round:5d} {v.n_msps:4d} {eps:>8s}  {v.key_id:16s}  "
            f"{digest:16s}  {v.run_id}"
        )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    with _store(args) as store:
        versions = [v for v in store.versions(args.agent) if v.digest]
        if args.round is not None:
            versions = [v for v in versions if v.round == args.round]
        if not versions:
            raise MeshflError(
                f"No stored model version of {args.agent!r}"
                + (f" at round {args.round}" if args.round is not None else "")
                + "; `meshfl-server versions` lists them."
            )
        path = store.export(versions[-1], args.out)
    print(f"wrote the sealed model of {args.agent} (round {versions[-1].round}) to {path}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from meshfl.service.config import load_mesh_config
    from meshfl.service.coordinator import serve

    config = load_mesh_config(args.config)
    if args.run_name:
        coordinator = config.coordinator.model_copy(update={"run_name": args.run_name})
        config = config.model_copy(update={"coordinator": coordinator})
    return serve(config)


def _cmd_register_node(args: argparse.Namespace) -> int:
    from meshfl.service.config import load_mesh_config
    from meshfl.service.coordinator import register_node
    from meshfl.service.msp_names import check_name, default_name, remember_name

    config = load_mesh_config(args.config)
    if args.name is not None and len(args.public_keys) != 1:
        raise ConfigError(
            f"--name labels one MSP; register the {len(args.public_keys)} keys one at a time "
            "with a --name each (without --name, each is named after its key file)."
        )
    wanted = [args.name or default_name(key) for key in args.public_keys]
    if args.name is not None:
        check_name(args.name)  # before Flower registers anything
    for key, name in zip(args.public_keys, wanted, strict=True):
        answer = register_node(config, key)
        node_id = answer.get("node-id")
        try:
            remember_name(config.coordinator.state_dir, int(str(node_id)), name)
            print(f"registered {key} as {name!r}: node id {node_id}")
        except (ConfigError, ValueError) as err:
            print(f"registered {key}: node id {node_id} (labelled by its node id: {err})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``meshfl-server``."""
    from meshfl.cli import CommandParser

    parser = CommandParser(
        prog="meshfl-server", description=__doc__.splitlines()[0].replace("``", "")
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (
        ("status", _cmd_status, "runs and the latest round of every agent"),
        ("versions", _cmd_versions, "list stored model versions"),
        ("export", _cmd_export, "write one sealed model version to a file"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--state-dir", required=True, help="the coordinator's state directory")
        if name != "export":
            cmd.add_argument("--json", action="store_true", help="print JSON, not a table")
        if name != "status":
            cmd.add_argument(
                "--agent",
                required=name == "export",
                help="the agent whose model to export"
                if name == "export"
                else "only this agent's versions (default: every agent)",
            )
        if name == "export":
            cmd.add_argument("--round", type=int, help="default: the latest")
            cmd.add_argument("--out", required=True, help="file to write")
        cmd.set_defaults(func=func)
    run = sub.add_parser("run", help="start the SuperLink, run mesh.toml's agents, serve metrics")
    run.add_argument("--config", required=True, help="mesh.toml")
    run.add_argument("--run-name", help="override [coordinator] run_name")
    run.set_defaults(func=_cmd_run)
    reg = sub.add_parser(
        "register-node", help="allow an MSP's SuperNode key (flwr supernode register)"
    )
    reg.add_argument("--config", required=True, help="mesh.toml")
    reg.add_argument("public_keys", nargs="+", metavar="KEY.pub", help="SuperNode public key(s)")
    reg.add_argument(
        "--name",
        help="the MSP's name in logs and /metrics (default: the key's comment, as `meshfl "
        "node-keys init --name` sets it, else the key file's name)",
    )
    reg.set_defaults(func=_cmd_register_node)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshfl-server`` console script."""
    from meshfl.cli import dispatch

    return dispatch("meshfl-server", build_parser().parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
