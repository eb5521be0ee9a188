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

import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import click
import pandas as pd
import typer

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


# -- What meshfl's three console scripts share (meshfl-server and meshfl-node use these) --

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_CODE = re.compile(r"``?([^`]+?)``?")


def plain(text: str) -> str:
    """``text`` without reStructuredText markup: inline literals, backquotes and roles such
    as ``:func:`` keep only the text they mark up (help texts are read in a terminal)."""
    return _CODE.sub(r"\1", _ROLE.sub(r"\1", text))


def new_app(help: str, **kwargs: Any) -> typer.Typer:
    """A typer app as meshfl's scripts have them: ``-h``/``--help``, no shell completion,
    Python's own tracebacks (for bugs only: a meshfl error is one line, see :func:`run`)."""
    return typer.Typer(
        help=plain(help),
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain click help; run() turns rich on in a terminal
        context_settings={"help_option_names": ["-h", "--help"]},
        **kwargs,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meshfl")
    except PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


def version_option(prog: str) -> Any:
    """The ``--version`` option of the script ``prog`` (an eager flag: prints, exits 0)."""

    def show(value: bool) -> None:
        if value:
            typer.echo(f"{prog} {_version()}")
            raise typer.Exit()

    return typer.Option(
        "--version", callback=show, is_eager=True, help="print the version and exit"
    )


def walk(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """``command`` and every subcommand below it, as ``(path, command)`` pairs."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, (*path, name))


def build(app: typer.Typer) -> click.Command:
    """The click command of ``app``, its help texts plain (no RST)."""
    command = typer.main.get_command(app)
    for _, cmd in walk(command):
        cmd.help = plain(cmd.help) if cmd.help else cmd.help
        arguments = _argument_help(cmd)
        # typer lists the arguments itself; click 8.5 would list them a second time
        cmd.format_arguments = lambda ctx, formatter: None  # type: ignore[method-assign]
        for param in cmd.params:
            if isinstance(param, click.Argument) and not param.help:
                param.help = arguments.get(param.name or "")
            if param.help:
                param.help = plain(param.help)
            _unescape_plain_help(param)
    return command


def _argument_help(cmd: click.Command) -> dict[str, str | None]:
    """The help of ``cmd``'s arguments, as its function declares them: click resets
    the help typer (0.20) gives an argument before ``click.Argument.__init__`` (click 8.5)."""
    from typer.models import ArgumentInfo
    from typer.utils import get_params_from_function

    function = getattr(cmd.callback, "__wrapped__", None)
    if function is None:
        return {}
    params = get_params_from_function(function)
    return {
        name: meta.default.help
        for name, meta in params.items()
        if isinstance(meta.default, ArgumentInfo)
    }


def _unescape_plain_help(param: click.Parameter) -> None:
    """typer escapes ``[default: ...]`` for rich even where it prints plain text
    (``\\[default: 5]``); plain help shows ``[default: 5]``."""
    record = param.get_help_record

    def get_help_record(ctx: click.Context) -> tuple[str, str] | None:
        found = record(ctx)
        if found is None or getattr(ctx.command, "rich_markup_mode", None) is not None:
            return found
        return found[0], found[1].replace("\\[", "[")

    param.get_help_record = get_help_record  # type: ignore[method-assign]


def _rich_in_a_terminal(command: click.Command) -> None:
    """typer's rich help where a person reads it; plain, stable text in pipes, tests and CI."""
    if not sys.stdout.isatty() or os.environ.get("TERM") == "dumb":
        return
    from rich.markup import escape  # help texts say [coordinator]: not rich markup

    for _, cmd in walk(command):
        cmd.rich_markup_mode = "rich"  # type: ignore[attr-defined]
        cmd.help = escape(cmd.help) if cmd.help else cmd.help
        for param in cmd.params:
            if param.help:
                param.help = escape(param.help)


def run(command: click.Command, prog: str, argv: Sequence[str] | None) -> int:
    """Run a console script; what its command returns is the exit code.

    A meshfl error (:class:`~meshfl.config.errors.MeshflError`) becomes one line on stderr
    and exit code 2, as a usage error does (click's message); never a traceback.
    """
    _rich_in_a_terminal(command)
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.Abort:
        print("Aborted!", file=sys.stderr)
        return 1
    except MeshflError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return int(code or 0)


def choice(*values: str) -> click.Choice:
    """An option's allowed values, listed in its help."""
    return click.Choice(values)


# -- meshfl ------------------------------------------------------------------------------


def format_history(history: pd.DataFrame) -> str:
    """The per-round table printed by ``meshfl simulate``."""
    columns = [c for c in TABLE_COLUMNS if c in history.columns]
    return history[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}")


app = new_app(__doc__.splitlines()[0], no_args_is_help=True)
agents_app = new_app(
    "list the mesh's agents (show one, write a sample)", invoke_without_command=True
)
bench_app = new_app("research benchmarks", no_args_is_help=True)
keys_app = new_app("CKKS key sets", no_args_is_help=True)
certs_app = new_app("TLS certificates of the coordinator", no_args_is_help=True)
node_keys_app = new_app("SuperNode authentication keys", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
app.add_typer(bench_app, name="bench")
app.add_typer(keys_app, name="keys")
app.add_typer(certs_app, name="certs")
app.add_typer(node_keys_app, name="node-keys")


@app.callback()
def _meshfl(
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="log Flower and meshfl")] = False,
    version: Annotated[bool, version_option("meshfl")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.ERROR)


AgentName = Annotated[str, typer.Argument(metavar="NAME", help="the agent (see `meshfl agents`)")]


@agents_app.callback()
def _cmd_agents(ctx: typer.Context) -> int:
    if ctx.invoked_subcommand is not None:
        return 0
    from meshfl.agents import KNOWN_AGENTS, built, names
    from meshfl.agents.registry import COORDINATOR

    done = set(built())
    for name in names():
        summary = KNOWN_AGENTS.get(name) or _summary(name)
        status = "server " if name == COORDINATOR else "built  " if name in done else "planned"
        print(f"{name:20s} {status}  {summary}")
    return 0


@agents_app.command("show", help="an agent's data schema, metric and what it sends")
def _cmd_agents_show(name: AgentName) -> int:
    from meshfl.agents import get

    agent = get(name)({})
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


@agents_app.command("sample", help="write a valid sample CSV of an agent's data")
def _cmd_agents_sample(
    name: AgentName,
    out: Annotated[str, typer.Option("--out", help="the CSV file to write")],
    rows: Annotated[int, typer.Option("--rows", help="rows to write")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="seed of the rows")] = 0,
) -> int:
    from meshfl.agents import get

    if rows < 1:
        raise ConfigError(f"--rows must be at least 1. Got {rows}.")
    agent = get(name)({})
    frame = agent.load_data(agent.synthetic_data(rows, seed=seed))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    print(f"wrote {len(frame)} rows of {agent.schema.name} to {out}")
    return 0


def _summary(name: str) -> str:
    from meshfl.agents import get

    return str(getattr(get(name), "summary", ""))


def agent_config(raw: str | None, encoder: str | None, name: str) -> dict[str, Any]:
    """The agent config the options give: ``--agent-config`` JSON, then ``--encoder``.

    ``--encoder`` applies to the agents that have a text encoder and is ignored by the rest,
    so one option serves a run of every agent.
    """
    from meshfl.agents import get

    config: dict[str, Any] = {}
    if raw:
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ConfigError(
                "The --agent-config option must be a JSON object of the agent's config "
                f"fields, e.g. '{{\"local_epochs\": 2}}'. Got {raw!r} instead."
            )
        config = parsed
    if encoder and "encoder" in get(name).config_class.model_fields:
        config["encoder"] = encoder
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


def privacy_config(epsilon: float | None, delta: float, unit: str) -> Any:
    """The DPConfig that ``--epsilon``, ``--delta`` and ``--unit`` give (None: no privacy)."""
    if epsilon is None:
        return None
    from meshfl.privacy import DPConfig

    return DPConfig(epsilon=epsilon, delta=delta, unit=unit)


# Options `simulate` and `bench privacy` share, named as in meshfl.simulate.
NumMsps = Annotated[int, typer.Option("--num-msps", "--msps", help="MSPs in the federation")]
Rounds = Annotated[
    int | None,
    typer.Option("--rounds", help="federated rounds (default: the agent's suggestion, often 3)"),
]
Seed = Annotated[int, typer.Option("--seed", help="seed of data, partitions and models")]
SamplesPerMsp = Annotated[
    int,
    typer.Option("--samples-per-msp", "--samples", help="synthetic rows per MSP, on average"),
]
AgentConfig = Annotated[
    str | None,
    typer.Option(
        "--agent-config",
        help="the agent's config fields as a JSON object, e.g. '{\"depth\": 6}'",
    ),
]
Encoder = Annotated[
    str | None,
    typer.Option(
        "--encoder",
        help="text encoder of the text agents ('minilm', 'tiny' or a path); "
        "short for --agent-config '{\"encoder\": ...}'",
    ),
]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")]
Delta = Annotated[float, typer.Option("--delta", help="δ of differential privacy")]
Unit = Annotated[
    str,
    typer.Option(
        "--unit",
        click_type=choice("sample", "msp"),
        help="what differential privacy protects: one record (sample) or a whole MSP (msp)",
    ),
]
SecureAggregation = Annotated[
    str,
    typer.Option(
        "--secure-aggregation",
        click_type=choice("ckks", "plaintext"),
        help="ckks: the coordinator adds ciphertexts; plaintext: protection off",
    ),
]


@app.command("simulate", help="simulate a federation of MSPs in one process")
def _cmd_simulate(
    agent: Annotated[
        list[str] | None,
        typer.Option("--agent", help="agent to train (repeatable; default: every built one)"),
    ] = None,
    num_msps: NumMsps = 5,
    rounds: Rounds = None,
    seed: Seed = 0,
    samples_per_msp: SamplesPerMsp = 400,
    agent_config_json: AgentConfig = None,
    encoder: Encoder = None,
    progress: Progress = True,
    epsilon: Annotated[
        float | None,
        typer.Option(
            "--epsilon",
            help="train with differential privacy under this budget ε per MSP (default: off)",
        ),
    ] = None,
    delta: Delta = 1e-5,
    unit: Unit = "sample",
    secure_aggregation: SecureAggregation = "ckks",
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            metavar="DIR",
            help="your own data: one directory per MSP in DIR, each with <agent>.csv "
            "(as meshfl-node --data-dir); the MSPs are counted from it "
            "(default: synthetic data)",
        ),
    ] = None,
    alpha: Annotated[
        float, typer.Option("--alpha", help="Dirichlet label skew of synthetic data")
    ] = 0.5,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            click_type=choice("in-process", "ray"),
            help="ray: Flower's Simulation Engine (pip install 'meshfl[ray]')",
        ),
    ] = "in-process",
    out: Annotated[
        str | None, typer.Option("--out", help="directory to save models and histories to")
    ] = None,
) -> int:
    from meshfl.agents import built, get
    from meshfl.simulation import simulate

    names = agent or built()
    privacy = privacy_config(epsilon, delta, unit)
    for name in names:
        config = agent_config(agent_config_json, encoder, name)
        msp_data = msp_csvs(data, name) if data else None
        msps = len(msp_data) if msp_data else num_msps
        n_rounds = rounds or get(name)(config).suggested_rounds()
        dp = f", ε = {epsilon:g}" if privacy else ""
        print(f"\n== {name}: {msps} MSPs, {n_rounds} rounds, seed {seed}{dp} ==", flush=True)
        result = simulate(
            agent=name,
            num_msps=msps,
            rounds=n_rounds,
            seed=seed,
            data=msp_data,
            agent_config=config,
            samples_per_msp=samples_per_msp,
            alpha=alpha,
            privacy=privacy,
            secure_aggregation=secure_aggregation,  # type: ignore[arg-type]  # its choices
            backend=backend,  # type: ignore[arg-type]
            progress=progress,
        )
        print(format_history(result.history))
        pooled = result.evaluate()
        metric = result.model.agent.metric
        print(
            f"final global model on the pooled held-out data of all MSPs: "
            f"{metric} = {pooled[metric]:.4f} ({int(pooled['examples'])} examples)"
        )
        if out:
            path = result.model.save(Path(out) / f"{name}.npz")
            result.history.to_csv(Path(out) / f"{name}_history.csv", index=False)
            print(f"model saved to {path}")
    return 0


@bench_app.command("privacy", help="accuracy against the privacy budget epsilon")
def _cmd_bench_privacy(
    agent: Annotated[str, typer.Option("--agent", help="agent to sweep")],
    epsilons: Annotated[
        str, typer.Option("--epsilons", help="comma-separated ε ('inf': no privacy)")
    ] = "0.1,0.5,1,2,8,inf",
    delta: Delta = 1e-5,
    unit: Unit = "sample",
    secure_aggregation: SecureAggregation = "ckks",
    num_msps: NumMsps = 5,
    rounds: Rounds = None,
    seed: Seed = 0,
    samples_per_msp: SamplesPerMsp = 400,
    agent_config_json: AgentConfig = None,
    encoder: Encoder = None,
    progress: Progress = True,
    out: Annotated[str, typer.Option("--out", help="output directory")] = "results/privacy",
    embedding_cache: Annotated[
        str | None,
        typer.Option(
            "--embedding-cache",
            metavar="DIR",
            help="text agents: keep the encoder's embeddings on disk in DIR and reuse those "
            "found there, so every ε and every later run encodes each text once "
            "(e.g. results/cache/embeddings; default: in memory, this run only)",
        ),
    ] = None,
    reference_config_json: Annotated[
        str | None,
        typer.Option(
            "--reference-config",
            help="also run one non-private federation with this agent config (JSON), e.g. "
            '\'{"trainer": "sgd"}\' beside a closed-form sweep: row \'federated, reference '
            "config'",
        ),
    ] = None,
    local_only: Annotated[
        bool,
        typer.Option(
            "--local-only/--no-local-only",
            help="add the local-only reference row (each MSP trained alone, no DP)",
        ),
    ] = True,
) -> int:
    from meshfl.bench.privacy import parse_epsilons, privacy_sweep, write_privacy_report

    frame = privacy_sweep(
        agent=agent,
        epsilons=parse_epsilons(epsilons),
        num_msps=num_msps,
        rounds=rounds,
        seed=seed,
        delta=delta,
        unit=unit,  # type: ignore[arg-type]  # the option's choices
        agent_config=agent_config(agent_config_json, encoder, agent),
        samples_per_msp=samples_per_msp,
        secure_aggregation=secure_aggregation,  # type: ignore[arg-type]
        progress=progress,
        embedding_cache=embedding_cache,
        reference_config=(
            None
            if reference_config_json is None
            else agent_config(reference_config_json, encoder, agent)
        ),
        with_local_only=local_only,
    )
    shown = frame.drop(columns=["delta"])
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for path in write_privacy_report(frame, out):
        print(f"wrote {path}")
    return 0


@app.command("open", help="open a model `meshfl-server export` wrote, with the MSPs' secret key")
def _cmd_open(
    export: Annotated[str, typer.Argument(help="the exported model (.mfl)")],
    secret_key: Annotated[
        str | None,
        typer.Option(
            "--secret-key", help="the MSPs' msp.secret.ckks (none for an unencrypted mesh)"
        ),
    ] = None,
    config_path: Annotated[
        str | None,
        typer.Option(
            "--config", help="the mesh's mesh.toml: the agent's config and seed come from it"
        ),
    ] = None,
    agent_config_json: Annotated[
        str | None,
        typer.Option("--agent-config", help="the agent's config as a JSON object (no --config)"),
    ] = None,
    encoder: Annotated[
        str | None,
        typer.Option("--encoder", help="text encoder of a text agent, as in its mesh.toml"),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="the run's seed (no --config)")] = 0,
    out: Annotated[
        str | None,
        typer.Option("--out", help="save the opened model to this .npz (plaintext)"),
    ] = None,
) -> int:
    from meshfl.federation.exported_model import open_export
    from meshfl.store.model_store import read_export

    header, _ = read_export(export)
    name = header["agent"]
    config = agent_config(agent_config_json, encoder, name)
    if config_path:
        from meshfl.service.config import load_mesh_config

        section = load_mesh_config(config_path).agents.get(name)
        if section is None:
            raise ConfigError(f"{config_path} has no [agents.{name}] table for this {name} export.")
        config, seed = {**section.config, **config}, section.seed
    model = open_export(export, secret_key=secret_key, agent_config=config, seed=seed)
    print(f"{name}, run {header['run_id']}, round {header['round']}: {model!r}")
    for metric, value in sorted((header.get("metrics") or {}).items()):
        print(f"  {metric}: {value}")
    if out:
        print(f"saved to {model.save(out)} (meshfl.load opens it)")
    return 0


# `keys init`, `certs init` and `node-keys init`: the files a deployment needs.
def _overwrite_option(help: str) -> Any:
    return typer.Option("--overwrite", help=help)


@keys_app.command("init", help="write the MSPs' secret and the coordinator's public context")
def _cmd_keys_init(
    out: Annotated[str, typer.Option("--out", help="directory to write the key set to")],
    overwrite: Annotated[bool, _overwrite_option("replace an existing key set")] = False,
) -> int:
    from meshfl.secure.keys import generate_keys

    files = generate_keys(out, overwrite=overwrite)
    print(f"key set {files.key_id} written to {Path(out).resolve()}:")
    print(f"  {files.secret.name:24s} secret context: give it to every MSP, and to no one else")
    print(f"  {files.public.name:24s} public context: give it to the coordinator")
    print(f"  {files.keyset.name:24s} key id and parameters")
    return 0


def _refuse_overwrite(paths: Sequence[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"Refusing to replace {', '.join(existing)}: pass --overwrite.")


@certs_app.command("init", help="write a CA and a SuperLink certificate it signs")
def _cmd_certs_init(
    out: Annotated[str, typer.Option("--out", help="directory to write them to")],
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="a name or IP MSPs dial (repeatable; default 127.0.0.1, localhost, ::1)",
        ),
    ] = None,
    overwrite: Annotated[bool, _overwrite_option("replace existing files")] = False,
) -> int:
    from meshfl.deploy.certs import generate_tls

    root = Path(out)
    names = ("ca.crt", "ca.key", "server.crt", "server.key")
    _refuse_overwrite([root / n for n in names], overwrite)
    files = generate_tls(root, hosts=host or ("127.0.0.1", "localhost", "::1"))
    print(f"TLS files written to {root.resolve()}:")
    print(f"  {files.ca_cert.name:12s} CA certificate: give it to every MSP (--root-certificates)")
    print(f"  {files.ca_key.name:12s} CA private key: keep it offline")
    print(f"  {files.server_cert.name:12s} SuperLink certificate ([coordinator.tls] cert)")
    print(f"  {files.server_key.name:12s} SuperLink private key ([coordinator.tls] key)")
    return 0


@node_keys_app.command("init", help="write an MSP's SuperNode key pair (OUT and OUT.pub)")
def _cmd_node_keys_init(
    out: Annotated[str, typer.Option("--out", help="private key path, e.g. keys/msp-0")],
    name: Annotated[
        str | None,
        typer.Option("--name", help="comment in the public key (default: the file name)"),
    ] = None,
    overwrite: Annotated[bool, _overwrite_option("replace an existing key pair")] = False,
) -> int:
    from meshfl.deploy.certs import generate_supernode_keys

    private = Path(out)
    _refuse_overwrite([private, private.with_name(private.name + ".pub")], overwrite)
    keys = generate_supernode_keys(private, comment=name or private.name)
    print(f"  {keys.private}  private: stays on the MSP (meshfl-node --auth-key)")
    print(f"  {keys.public}  public: meshfl-server register-node --config mesh.toml {keys.public}")
    return 0


def build_command() -> click.Command:
    """The click command of ``meshfl`` (its subcommands below it)."""
    return build(app)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshfl`` console script."""
    return run(build_command(), "meshfl", argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
