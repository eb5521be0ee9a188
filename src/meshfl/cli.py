"""The ``meshfl`` command line: simulate a federation, list agents.

meshfl simulate                       # every built agent, 5 MSPs, 3 rounds
meshfl simulate --agent anomaly --num-msps 10 --rounds 5
meshfl simulate --agent anomaly --epsilon 1 --data data/   # data/<msp>/anomaly.csv
meshfl agents
meshfl bench privacy --agent threat_intel --epsilons 0.1,0.5,1,2,8,inf
meshfl open anomaly.mfl --secret-key keys/msp.secret.ckks --config mesh.toml --out anomaly.npz
meshfl keys init --out keys/
meshfl certs init --out certs/ --host coordinator.example
meshfl node-keys init --out keys/msp-0
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from meshfl.config.errors import ConfigError, MeshflError

__all__ = ["main"]

# Columns of the per-round table, in this order when present.
TABLE_COLUMNS = [
    "round",
    "msps",
    "dropped",
    "train_loss",
    "accuracy",
    "macro_f1",
    "severity_accuracy",
    "auc",
    "average_precision",
    "loss",
    "seconds",
]


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, where it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and not any(default is v for v in (None, False, argparse.SUPPRESS))
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose subcommands (argparse makes them of this class) show
    defaults too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def format_history(history: pd.DataFrame) -> str:
    """The per-round table printed by ``meshfl simulate``."""
    columns = [c for c in TABLE_COLUMNS if c in history.columns]
    return history[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}")


def _cmd_agents(args: argparse.Namespace) -> int:
    from meshfl.agents import KNOWN_AGENTS, built, names
    from meshfl.agents.registry import COORDINATOR

    done = set(built())
    for name in names():
        summary = KNOWN_AGENTS.get(name) or _summary(name)
        status = "server " if name == COORDINATOR else "built  " if name in done else "planned"
        print(f"{name:20s} {status}  {summary}")
    return 0


def _cmd_agents_show(args: argparse.Namespace) -> int:
    from meshfl.agents import get

    agent = get(args.name)({})
    print(f"{agent.name}: {_summary(agent.name)}")
    better = "higher" if agent.higher_is_better else "lower"
    print(f"metric: {agent.metric} ({better} is better)")
    size = agent.update_size(agent.init_vector(seed=0))
    print(f"sends: {size} numbers per round, sealed (CKKS) with its weight and tag")
    print(f"data ({agent.schema.name}), one row per record:")
    for col in agent.schema.columns:
        need = "required" if col.required else "optional"
        print(f"  {col.name:22s} {col.kind:9s} {need:9s} {col.description}")
    return 0


def _cmd_agents_sample(args: argparse.Namespace) -> int:
    from meshfl.agents import get

    if args.rows < 1:
        raise ConfigError(f"--rows must be at least 1. Got {args.rows}.")
    agent = get(args.name)({})
    rows = agent.load_data(agent.synthetic_data(args.rows, seed=args.seed))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(args.out, index=False)
    print(f"wrote {len(rows)} rows of {agent.schema.name} to {args.out}")
    return 0


def _summary(name: str) -> str:
    from meshfl.agents import get

    return str(getattr(get(name), "summary", ""))


def agent_config(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The agent config the options give: ``--agent-config`` JSON, then ``--encoder``.

    ``--encoder`` applies to the agents that have a text encoder and is ignored by the rest,
    so one option serves a run of every agent.
    """
    from meshfl.agents import get

    config: dict[str, Any] = {}
    if args.agent_config:
        try:
            parsed = json.loads(args.agent_config)
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ConfigError(
                "The --agent-config option must be a JSON object of the agent's config "
                f"fields, e.g. '{{\"local_epochs\": 2}}'. Got {args.agent_config!r} instead."
            )
        config = parsed
    if args.encoder and "encoder" in get(name).config_class.model_fields:
        config["encoder"] = args.encoder
    return config


def msp_csvs(data_dir: str | Path, agent: str) -> list[Path]:
    """``<data_dir>/<msp>/<agent>.csv`` for every MSP directory that has one, sorted: the
    layout of ``meshfl-node --data-dir``, one directory per MSP."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ConfigError(f"--data {root} is not a directory.")
    found = sorted(p for p in root.glob(f"*/{agent}.csv") if p.is_file())
    if not found:
        raise ConfigError(
            f"--data {root} holds no {agent} data: it needs one directory per MSP, each with "
            f"{agent}.csv (e.g. {root}/msp-0/{agent}.csv; `meshfl agents sample {agent} "
            f"--out {root}/msp-0/{agent}.csv` writes one)."
        )
    return found


def privacy_config(args: argparse.Namespace) -> Any:
    """The DPConfig that ``--epsilon``, ``--delta`` and ``--unit`` give (None: no privacy)."""
    if args.epsilon is None:
        return None
    from meshfl.privacy import DPConfig

    return DPConfig(epsilon=args.epsilon, delta=args.delta, unit=args.unit)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from meshfl.agents import built, get
    from meshfl.simulation import simulate

    names = args.agent or built()
    privacy = privacy_config(args)
    for name in names:
        config = agent_config(args, name)
        data = msp_csvs(args.data, name) if args.data else None
        msps = len(data) if data else args.num_msps
        rounds = args.rounds or get(name)(config).suggested_rounds()
        dp = f", ε = {args.epsilon:g}" if privacy else ""
        print(f"\n== {name}: {msps} MSPs, {rounds} rounds, seed {args.seed}{dp} ==", flush=True)
        result = simulate(
            agent=name,
            num_msps=msps,
            rounds=rounds,
            seed=args.seed,
            data=data,
            agent_config=config,
            samples_per_msp=args.samples_per_msp,
            alpha=args.alpha,
            privacy=privacy,
            secure_aggregation=args.secure_aggregation,
            backend=args.backend,
            progress=not args.no_progress,
        )
        print(format_history(result.history))
        pooled = result.evaluate()
        metric = result.model.agent.metric
        print(
            f"final global model on the pooled held-out data of all MSPs: "
            f"{metric} = {pooled[metric]:.4f} ({int(pooled['examples'])} examples)"
        )
        if args.out:
            path = result.model.save(Path(args.out) / f"{name}.npz")
            result.history.to_csv(Path(args.out) / f"{name}_history.csv", index=False)
            print(f"model saved to {path}")
    return 0


def _cmd_bench_privacy(args: argparse.Namespace) -> int:
    from meshfl.bench.privacy import parse_epsilons, privacy_sweep, write_privacy_report

    config = agent_config(args, args.agent)
    frame = privacy_sweep(
        agent=args.agent,
        epsilons=parse_epsilons(args.epsilons),
        num_msps=args.num_msps,
        rounds=args.rounds,
        seed=args.seed,
        delta=args.delta,
        unit=args.unit,
        agent_config=config,
        samples_per_msp=args.samples_per_msp,
        secure_aggregation=args.secure_aggregation,
        progress=not args.no_progress,
    )
    shown = frame.drop(columns=["delta"])
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for path in write_privacy_report(frame, args.out):
        print(f"wrote {path}")
    return 0


def _cmd_open(args: argparse.Namespace) -> int:
    from meshfl.federation.exported_model import open_export
    from meshfl.store.model_store import read_export

    header, _ = read_export(args.export)
    name = header["agent"]
    config, seed = agent_config(args, name), args.seed
    if args.config:
        from meshfl.service.config import load_mesh_config

        section = load_mesh_config(args.config).agents.get(name)
        if section is None:
            raise ConfigError(f"{args.config} has no [agents.{name}] table for this {name} export.")
        config, seed = {**section.config, **config}, section.seed
    model = open_export(args.export, secret_key=args.secret_key, agent_config=config, seed=seed)
    print(f"{name}, run {header['run_id']}, round {header['round']}: {model!r}")
    for metric, value in sorted((header.get("metrics") or {}).items()):
        print(f"  {metric}: {value}")
    if args.out:
        print(f"saved to {model.save(args.out)} (meshfl.load opens it)")
    return 0


def _cmd_keys_init(args: argparse.Namespace) -> int:
    from meshfl.secure.keys import generate_keys

    files = generate_keys(args.out, overwrite=args.overwrite)
    print(f"key set {files.key_id} written to {Path(args.out).resolve()}:")
    print(f"  {files.secret.name:24s} secret context: give it to every MSP, and to no one else")
    print(f"  {files.public.name:24s} public context: give it to the coordinator")
    print(f"  {files.keyset.name:24s} key id and parameters")
    return 0


def _refuse_overwrite(paths: Sequence[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"Refusing to replace {', '.join(existing)}: pass --overwrite.")


def _cmd_certs_init(args: argparse.Namespace) -> int:
    from meshfl.deploy.certs import generate_tls

    out = Path(args.out)
    names = ("ca.crt", "ca.key", "server.crt", "server.key")
    _refuse_overwrite([out / n for n in names], args.overwrite)
    files = generate_tls(out, hosts=args.host or ("127.0.0.1", "localhost", "::1"))
    print(f"TLS files written to {out.resolve()}:")
    print(f"  {files.ca_cert.name:12s} CA certificate: give it to every MSP (--root-certificates)")
    print(f"  {files.ca_key.name:12s} CA private key: keep it offline")
    print(f"  {files.server_cert.name:12s} SuperLink certificate ([coordinator.tls] cert)")
    print(f"  {files.server_key.name:12s} SuperLink private key ([coordinator.tls] key)")
    return 0


def _cmd_node_keys_init(args: argparse.Namespace) -> int:
    from meshfl.deploy.certs import generate_supernode_keys

    private = Path(args.out)
    _refuse_overwrite([private, private.with_name(private.name + ".pub")], args.overwrite)
    keys = generate_supernode_keys(private, comment=args.name or private.name)
    print(f"  {keys.private}  private: stays on the MSP (meshfl-node --auth-key)")
    print(f"  {keys.public}  public: meshfl-server register-node --config mesh.toml {keys.public}")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meshfl")
    except PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``meshfl`` command."""
    parser = CommandParser(prog="meshfl", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("-v", "--verbose", action="store_true", help="log Flower and meshfl")
    parser.add_argument("--version", action="version", version=f"meshfl {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    agents = sub.add_parser("agents", help="list the mesh's agents (show one, write a sample)")
    agents.set_defaults(func=_cmd_agents)
    about = agents.add_subparsers(dest="agents_command")
    show = about.add_parser("show", help="an agent's data schema, metric and what it sends")
    show.add_argument("name", help="the agent (see `meshfl agents`)")
    show.set_defaults(func=_cmd_agents_show)
    sample = about.add_parser("sample", help="write a valid sample CSV of an agent's data")
    sample.add_argument("name", help="the agent (see `meshfl agents`)")
    sample.add_argument("--out", required=True, help="the CSV file to write")
    sample.add_argument("--rows", type=int, default=100, help="rows to write")
    sample.add_argument("--seed", type=int, default=0, help="seed of the rows")
    sample.set_defaults(func=_cmd_agents_sample)
    _add_simulate(sub)
    _add_open(sub)
    _add_bench(sub)
    _add_key_commands(sub)
    return parser


def _add_federation_options(cmd: argparse.ArgumentParser) -> None:
    """Options ``simulate`` and ``bench privacy`` share, named as in ``meshfl.simulate``."""
    cmd.add_argument("--num-msps", "--msps", type=int, default=5, help="MSPs in the federation")
    cmd.add_argument(
        "--rounds", type=int, help="federated rounds (default: the agent's suggestion, often 3)"
    )
    cmd.add_argument("--seed", type=int, default=0, help="seed of data, partitions and models")
    cmd.add_argument(
        "--samples-per-msp",
        "--samples",
        type=int,
        default=400,
        help="synthetic rows per MSP, on average",
    )
    cmd.add_argument(
        "--agent-config", help="the agent's config fields as a JSON object, e.g. '{\"depth\": 6}'"
    )
    cmd.add_argument(
        "--encoder",
        help="text encoder of the text agents ('minilm', 'tiny' or a path); "
        "short for --agent-config '{\"encoder\": ...}'",
    )
    cmd.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_privacy_options(cmd: argparse.ArgumentParser) -> None:
    """δ and the unit of differential privacy (ε is the command's own option)."""
    cmd.add_argument("--delta", type=float, default=1e-5, help="δ of differential privacy")
    cmd.add_argument(
        "--unit",
        choices=["sample", "msp"],
        default="sample",
        help="what differential privacy protects: one record (sample) or a whole MSP (msp)",
    )
    cmd.add_argument(
        "--secure-aggregation",
        choices=["ckks", "plaintext"],
        default="ckks",
        help="ckks: the coordinator adds ciphertexts; plaintext: protection off",
    )


def _add_simulate(sub: Any) -> None:
    sim = sub.add_parser("simulate", help="simulate a federation of MSPs in one process")
    sim.add_argument(
        "--agent", action="append", help="agent to train (repeatable; default: every built one)"
    )
    _add_federation_options(sim)
    sim.add_argument(
        "--epsilon",
        type=float,
        help="train with differential privacy under this budget ε per MSP (default: off)",
    )
    _add_privacy_options(sim)
    sim.add_argument(
        "--data",
        metavar="DIR",
        help="your own data: one directory per MSP in DIR, each with <agent>.csv "
        "(as meshfl-node --data-dir); the MSPs are counted from it (default: synthetic data)",
    )
    sim.add_argument(
        "--alpha", type=float, default=0.5, help="Dirichlet label skew of synthetic data"
    )
    sim.add_argument(
        "--backend",
        choices=["in-process", "ray"],
        default="in-process",
        help="ray: Flower's Simulation Engine (pip install 'meshfl[ray]')",
    )
    sim.add_argument("--out", help="directory to save models and histories to")
    sim.set_defaults(func=_cmd_simulate)


def _add_open(sub: Any) -> None:
    cmd = sub.add_parser(
        "open", help="open a model `meshfl-server export` wrote, with the MSPs' secret key"
    )
    cmd.add_argument("export", help="the exported model (.mfl)")
    cmd.add_argument(
        "--secret-key", help="the MSPs' msp.secret.ckks (none for an unencrypted mesh)"
    )
    cmd.add_argument(
        "--config", help="the mesh's mesh.toml: the agent's config and seed come from it"
    )
    cmd.add_argument("--agent-config", help="the agent's config as a JSON object (no --config)")
    cmd.add_argument("--encoder", help="text encoder of a text agent, as in its mesh.toml")
    cmd.add_argument("--seed", type=int, default=0, help="the run's seed (no --config)")
    cmd.add_argument("--out", help="save the opened model to this .npz (plaintext)")
    cmd.set_defaults(func=_cmd_open)


def _add_bench(sub: Any) -> None:
    bench = sub.add_parser("bench", help="research benchmarks").add_subparsers(
        dest="bench", required=True
    )
    priv = bench.add_parser("privacy", help="accuracy against the privacy budget epsilon")
    priv.add_argument("--agent", required=True, help="agent to sweep")
    priv.add_argument(
        "--epsilons", default="0.1,0.5,1,2,8,inf", help="comma-separated ε ('inf': no privacy)"
    )
    _add_privacy_options(priv)
    _add_federation_options(priv)
    priv.add_argument("--out", default="results/privacy", help="output directory")
    priv.set_defaults(func=_cmd_bench_privacy)


def _add_key_commands(sub: Any) -> None:
    """``keys init``, ``certs init`` and ``node-keys init``: the files a deployment needs."""
    keys = sub.add_parser("keys", help="CKKS key sets").add_subparsers(dest="keys", required=True)
    init = keys.add_parser(
        "init", help="write the MSPs' secret and the coordinator's public context"
    )
    init.add_argument("--out", required=True, help="directory to write the key set to")
    init.add_argument("--overwrite", action="store_true", help="replace an existing key set")
    init.set_defaults(func=_cmd_keys_init)

    certs = sub.add_parser("certs", help="TLS certificates of the coordinator").add_subparsers(
        dest="certs", required=True
    )
    cinit = certs.add_parser("init", help="write a CA and a SuperLink certificate it signs")
    cinit.add_argument("--out", required=True, help="directory to write them to")
    cinit.add_argument(
        "--host",
        action="append",
        help="a name or IP MSPs dial (repeatable; default 127.0.0.1, localhost, ::1)",
    )
    cinit.add_argument("--overwrite", action="store_true", help="replace existing files")
    cinit.set_defaults(func=_cmd_certs_init)

    nkeys = sub.add_parser("node-keys", help="SuperNode authentication keys").add_subparsers(
        dest="node_keys", required=True
    )
    ninit = nkeys.add_parser("init", help="write an MSP's SuperNode key pair (OUT and OUT.pub)")
    ninit.add_argument("--out", required=True, help="private key path, e.g. keys/msp-0")
    ninit.add_argument("--name", help="comment in the public key (default: the file name)")
    ninit.add_argument("--overwrite", action="store_true", help="replace an existing key pair")
    ninit.set_defaults(func=_cmd_node_keys_init)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshfl`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("flwr").setLevel(logging.ERROR)
    return dispatch("meshfl", args)


def dispatch(prog: str, args: argparse.Namespace) -> int:
    """Run the parsed subcommand; a meshfl error becomes one line on stderr and exit code 2."""
    try:
        return int(args.func(args))
    except MeshflError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
