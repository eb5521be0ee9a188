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

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import click
import typer

from meshfl.cli import build, new_app, run, version_option
from meshfl.config.errors import ConfigError, MeshflError
from meshfl.store.model_store import ModelStore

__all__ = ["main"]

app = new_app(__doc__.splitlines()[0], no_args_is_help=True)


@app.callback()
def _meshfl_server(version: Annotated[bool, version_option("meshfl-server")] = False) -> None:
    pass


StateDir = Annotated[str, typer.Option("--state-dir", help="the coordinator's state directory")]
Json = Annotated[bool, typer.Option("--json", help="print JSON, not a table")]
Config = Annotated[str, typer.Option("--config", help="the mesh's config file (mesh.toml)")]


def _store(state_dir: str) -> ModelStore:
    state = Path(state_dir)
    if not (state / "coordinator.sqlite").exists():
        raise MeshflError(f"{state} holds no coordinator state (no coordinator.sqlite).")
    return ModelStore(state, read_only=True)


@app.command("status", help="runs and the latest round of every agent")
def _cmd_status(state_dir: StateDir, json_: Json = False) -> int:
    with _store(state_dir) as store:
        status = store.status()
    if json_:
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


@app.command("versions", help="list stored model versions")
def _cmd_versions(
    state_dir: StateDir,
    json_: Json = False,
    agent: Annotated[
        str | None,
        typer.Option("--agent", help="only this agent's versions (default: every agent)"),
    ] = None,
) -> int:
    with _store(state_dir) as store:
        versions = store.versions(agent)
    if json_:
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


@app.command("export", help="write one sealed model version to a file")
def _cmd_export(
    state_dir: StateDir,
    agent: Annotated[str, typer.Option("--agent", help="the agent whose model to export")],
    out: Annotated[str, typer.Option("--out", help="file to write")],
    round_: Annotated[
        int | None, typer.Option("--round", help="the round to export (default: the latest)")
    ] = None,
) -> int:
    with _store(state_dir) as store:
        versions = [v for v in store.versions(agent) if v.digest]
        if round_ is not None:
            versions = [v for v in versions if v.round == round_]
        if not versions:
            raise MeshflError(
                f"No stored model version of {agent!r}"
                + (f" at round {round_}" if round_ is not None else "")
                + "; `meshfl-server versions` lists them."
            )
        path = store.export(versions[-1], out)
    print(f"wrote the sealed model of {agent} (round {versions[-1].round}) to {path}")
    return 0


@app.command("run", help="start the SuperLink, run mesh.toml's agents, serve metrics")
def _cmd_run(
    config_path: Config,
    run_name: Annotated[
        str | None, typer.Option("--run-name", help="override [coordinator] run_name")
    ] = None,
) -> int:
    from meshfl.service.config import load_mesh_config
    from meshfl.service.coordinator import serve

    config = load_mesh_config(config_path)
    if run_name:
        coordinator = config.coordinator.model_copy(update={"run_name": run_name})
        config = config.model_copy(update={"coordinator": coordinator})
    return serve(config)


@app.command("register-node", help="allow an MSP's SuperNode key (flwr supernode register)")
def _cmd_register_node(
    config_path: Config,
    public_keys: Annotated[
        list[str], typer.Argument(metavar="KEY.pub...", help="SuperNode public key(s)")
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="the MSP's name in logs and /metrics (default: the key's comment, as `meshfl "
            "node-keys init --name` sets it, else the key file's name)",
        ),
    ] = None,
) -> int:
    from meshfl.service.config import load_mesh_config
    from meshfl.service.coordinator import register_node
    from meshfl.service.msp_names import check_name, default_name, remember_name

    config = load_mesh_config(config_path)
    if name is not None and len(public_keys) != 1:
        raise ConfigError(
            f"--name labels one MSP; register the {len(public_keys)} keys one at a time "
            "with a --name each (without --name, each is named after its key file)."
        )
    wanted = [name or default_name(key) for key in public_keys]
    if name is not None:
        check_name(name)  # before Flower registers anything
    for key, label in zip(public_keys, wanted, strict=True):
        answer = register_node(config, key)
        node_id = answer.get("node-id")
        try:
            remember_name(config.coordinator.state_dir, int(str(node_id)), label)
            print(f"registered {key} as {label!r}: node id {node_id}")
        except (ConfigError, ValueError) as err:
            print(f"registered {key}: node id {node_id} (labelled by its node id: {err})")
    return 0


def build_command() -> click.Command:
    """The click command of ``meshfl-server`` (its subcommands below it)."""
    return build(app)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshfl-server`` console script."""
    return run(build_command(), "meshfl-server", argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
