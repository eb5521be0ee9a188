"""meshfl's ServerApp and ClientApp as Flower's deployment runtime loads them.

The project's ``pyproject.toml`` (:func:`meshfl.deploy.write_app_project`) names
``meshfl.deploy.apps:server_app`` and ``meshfl.deploy.apps:client_app``. Flower's
``flwr-serverapp`` process (started by the SuperLink for each run) and ``flwr-clientapp``
processes (started by each SuperNode) import this module and call them. Both objects are
built by meshfl's own factories; this module only turns Flower's configuration into their
arguments.

The coordinator (``server_app``) reads the **run config** (``flwr run --run-config``):

* ``plans``: JSON list of :class:`~meshfl.federation.AgentPlan` objects, or a ``.json`` /
  ``.toml`` file of them;
* ``public-key``: ``coordinator.public.ckks`` (a secret context is refused). Deployed
  meshfl always seals updates with CKKS: there is no plaintext switch in the run config,
  since the coordinator must not be able to turn the MSPs' encryption off;
* ``state-dir``: the coordinator's state: its model store (:class:`ModelStore` on the
  directory itself: ``coordinator.sqlite`` and ``blobs/``, which ``meshfl-server status``,
  ``versions`` and ``export`` read) and each Flower run's files,
  ``<state-dir>/runs/<flwr-run-id>/`` (see :class:`RunRecorder`);
* ``run-name``: the run's id in the store (default ``flwr-<flwr-run-id>``). A run of a name
  the store already holds *resumes* after its last committed round: resubmitting the same
  plans under the same name after the coordinator died loses and repeats no round (and
  a run that completed does nothing). Another name starts afresh.

An MSP (``client_app``) reads its SuperNode's **node config**
(``flower-supernode --node-config``):

* ``data-dir``: a folder with one CSV per agent, ``<agent>.csv``, validated by the agent's
  ``load_data`` (with the agent config of the run's plan) and split into training and
  held-out rows by the agent's ``split`` (random; the latest rows for forecasts)
  with ``test-fraction`` (default 0.25) and ``split-seed`` (default 0);
* ``secret-key``: the MSPs' ``msp.secret.ckks``;
* ``state-dir``: the MSP's state (its privacy ledger).
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import pandas as pd
from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from meshfl.agents import registry
from meshfl.config.errors import ConfigError
from meshfl.federation.client_app import NodeData, make_client_app
from meshfl.federation.server_app import AgentPlan, AgentRun, make_server_app
from meshfl.secure.backend import Aggregator, Sealed
from meshfl.store.model_store import ModelStore

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # flwr depends on tomli

__all__ = [
    "RunRecorder",
    "client_app",
    "exchange",
    "load_aggregator",
    "load_sealed",
    "node_data",
    "open_store",
    "parse_plans",
    "run_name",
    "server_app",
]

DEFAULT_TEST_FRACTION = 0.25


# -- configuration -------------------------------------------------------------------------
def _text(config: Mapping[str, Any], key: str, where: str) -> str:
    value = config.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"The {where} key {key!r} must be a string. Got {value!r} instead.")
    return value.strip()


def parse_plans(run_config: Mapping[str, Any]) -> list[AgentPlan]:
    """The coordinator's plans from the run config's ``plans`` (JSON text or a file path)."""
    text = _text(run_config, "plans", "run config")
    if not text:
        raise ConfigError(
            "The run config key 'plans' is empty: set it to a JSON list of agent plans, "
            'e.g. --run-config \'plans="[{\\"agent\\": \\"anomaly\\", \\"rounds\\": 3}]"\', '
            "or to the path of a .json or .toml file of them."
        )
    if text[0] in "[{":
        try:
            raw: Any = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"The run config key 'plans' is not valid JSON: {err}") from None
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"The run config key 'plans' names {str(path)!r}, which is not a file on the "
                "SuperLink host (give JSON text or the path of a .json or .toml file)."
            )
        if path.suffix == ".toml":
            raw = tomllib.loads(path.read_text(encoding="utf-8")).get("plans")
        else:
            raw = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(p, dict) for p in raw):
        raise ConfigError(
            "The run config key 'plans' must hold a non-empty list of plan objects "
            f"(each with at least 'agent'). Got {raw!r} instead."
        )
    plans = [AgentPlan.model_validate(p) for p in raw]
    agents = [p.agent for p in plans]
    if len(set(agents)) != len(agents):
        raise ConfigError(f"The run config's plans name an agent twice: {agents}.")
    return plans


def load_aggregator(run_config: Mapping[str, Any]) -> Aggregator:
    """The coordinator's CKKS aggregator from the run config's ``public-key``."""
    path = _text(run_config, "public-key", "run config")
    if not path:
        raise ConfigError(
            "The run config key 'public-key' is empty: set it to the coordinator's public "
            "context, coordinator.public.ckks (meshfl keys init), on the SuperLink host."
        )
    from meshfl.secure.ckks import CKKSAggregator

    return CKKSAggregator.from_file(Path(path).expanduser())  # refuses a secret context


def open_store(run_config: Mapping[str, Any]) -> ModelStore | None:
    """The coordinator's model store on the run config's ``state-dir`` (None without one)."""
    root = _text(run_config, "state-dir", "run config")
    return ModelStore(Path(root).expanduser()) if root else None


def run_name(run_config: Mapping[str, Any], flwr_run_id: int) -> str:
    """The run's stable id in the store: ``run-name``, else ``flwr-<flwr_run_id>``."""
    return _text(run_config, "run-name", "run config") or f"flwr-{flwr_run_id}"


# -- results -------------------------------------------------------------------------------
def _sealed_to_json(sealed: Sealed) -> dict[str, Any]:
    return {
        "backend": sealed.backend,
        "key_id": sealed.key_id,
        "length": sealed.length,
        "chunks": [base64.b64encode(c).decode("ascii") for c in sealed.chunks],
    }


def load_sealed(path: str | os.PathLike[str]) -> list[Sealed]:
    """The sealed round sums a :class:`RunRecorder` stored (open them with an MSP's key)."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    return [
        Sealed(
            backend=s["backend"],
            key_id=s["key_id"],
            length=int(s["length"]),
            chunks=tuple(base64.b64decode(c) for c in s["chunks"]),
        )
        for s in raw["sealed_history"]
    ]


class RunRecorder:
    """Writes a run's results where the ServerApp's caller can find them.

    The ServerApp runs in a ``flwr-serverapp`` subprocess of the SuperLink, so its Python
    objects never reach whoever started the run; its stdout goes to the SuperLink's log
    (``flwr log <run-id>``). With the run config's ``state-dir`` set, it also writes
    ``<state-dir>/runs/<run-id>/``:

    * ``rounds.jsonl``: one history record per round, appended as each round ends;
    * ``<agent>.sealed.json``: the sealed round sums that make the agent's global model
      (ciphertext; any MSP opens it with :func:`load_sealed` and
      :func:`meshfl.federation.sealed_model.open_global`);
    * ``summary.json``: per agent the rounds run and why it stopped, and what key the
      coordinator held; written last (``"status": "completed"`` or ``"failed"``).
    """

    def __init__(self, run_config: Mapping[str, Any], run_id: int) -> None:
        root = _text(run_config, "state-dir", "run config")
        self.directory = Path(root).expanduser() / "runs" / str(run_id) if root else None
        self.run_id = run_id
        self.run_name = run_name(run_config, run_id)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def round(self, record: dict[str, Any]) -> None:
        parts = [f"{record['agent']} round {record['round']}", f"msps={record['msps']}"]
        metric = registry.get(record["agent"]).metric
        if metric in record:
            parts.append(f"{metric}={record[metric]:.4f}")
        parts.append(f"{record['seconds']:.1f}s")
        print("[meshfl] " + " ".join(parts), flush=True)
        if self.directory is not None:
            with (self.directory / "rounds.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, default=str) + "\n")

    def finish(
        self,
        plans: list[AgentPlan],
        results: Mapping[str, AgentRun],
        aggregator: Aggregator | None,
        *,
        error: BaseException | None = None,
    ) -> None:
        untrained = None if error is not None else _untrained(plans, results)
        status = "failed" if error is not None else "untrained" if untrained else "completed"
        summary: dict[str, Any] = {
            "run_id": self.run_id,
            "run_name": self.run_name,
            "status": status,
            "error": f"{type(error).__name__}: {error}" if error is not None else untrained,
            "finished_at": time.time(),
            "coordinator_key": _key_facts(aggregator),
            "agents": {},
        }
        for plan in plans:
            run = results.get(plan.agent)
            if run is None:
                summary["agents"][plan.agent] = {"rounds_planned": plan.rounds, "rounds": 0}
                continue
            summary["agents"][plan.agent] = {
                "rounds_planned": plan.rounds,
                "rounds": len(run.history),
                "stopped_reason": run.stopped_reason,
                "seed": run.seed,
                "agent_config": plan.agent_config,
                "epsilon_by_msp": {str(k): v for k, v in run.epsilon_by_msp.items()},
                "last_round": run.history[-1] if run.history else None,
            }
            if self.directory is not None:
                sealed = {"sealed_history": [_sealed_to_json(s) for s in run.sealed_history]}
                (self.directory / f"{plan.agent}.sealed.json").write_text(
                    json.dumps(sealed), encoding="utf-8"
                )
        print(f"[meshfl] run {self.run_id} {summary['status']}", flush=True)
        if self.directory is not None:
            tmp = self.directory / "summary.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
            tmp.replace(self.directory / "summary.json")


def _untrained(plans: list[AgentPlan], results: Mapping[str, AgentRun]) -> str | None:
    """Why no round of any agent trained (no MSP's update was added), or None if one did."""
    if not plans:
        return None
    parts = []
    for plan in plans:
        history = results[plan.agent].history if plan.agent in results else []
        if any(record.get("msps", 0) > 0 for record in history):
            return None
        counts = {k: sum(int(r.get(k, 0)) for r in history) for k in ("dropped", "declined")}
        skipped = sum(bool(r.get("skipped")) for r in history)
        parts.append(
            f"{plan.agent}: {len(history)} round(s), {counts['dropped']} update(s) dropped, "
            f"{counts['declined']} declined (privacy budget spent), {skipped} round(s) skipped"
        )
    return (
        "no round trained: no MSP's update was added in any round ("
        + "; ".join(parts)
        + "). The MSPs' own logs say why they failed (missing columns, bad values, the wrong "
        "key file); see docs/deployment.md."
    )


def _key_facts(aggregator: Aggregator | None) -> dict[str, Any] | None:
    if aggregator is None:
        return None
    facts: dict[str, Any] = {"backend": getattr(aggregator, "backend", None)}
    context = getattr(aggregator, "context", None)
    if context is not None:
        facts["key_id"] = getattr(aggregator, "key_id", None)
        facts["has_secret_key"] = bool(context.has_secret_key())
    return facts


# -- the apps ------------------------------------------------------------------------------
POLL = (0.05, 0.25)
"""Shortest and longest wait between two pulls for replies (seconds)."""


def exchange(grid: Grid, messages: Iterable[Message], *, timeout: float | None) -> list[Message]:
    """``grid.send_and_receive``, but polling from 50 ms up to 0.25 s instead of every 3 s.

    Flower's grids wait a fixed 3 s between pulls, which a deployed round pays twice (train,
    evaluate) on top of its work. Here the wait starts short and grows while nothing comes;
    a reply resets it. ``timeout=None`` waits until every message has its reply.
    """
    pending = set(grid.push_messages(messages))
    replies: list[Message] = []
    deadline = None if timeout is None else time.monotonic() + timeout
    wait = POLL[0]
    while pending:
        pulled = list(grid.pull_messages(pending))
        replies += pulled
        pending -= {reply.metadata.reply_to_message_id for reply in pulled}
        if not pending or (deadline is not None and time.monotonic() >= deadline):
            break
        wait = POLL[0] if pulled else min(wait * 1.5, POLL[1])
        time.sleep(wait if deadline is None else max(0.0, min(wait, deadline - time.monotonic())))
    return replies


class _PromptGrid:
    """The SuperLink's grid, whose ``send_and_receive`` is :func:`exchange`."""

    def __init__(self, grid: Grid):
        self._grid = grid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        return exchange(self._grid, messages, timeout=timeout)


server_app = ServerApp()


@server_app.main()
def _coordinate(grid: Grid, context: Context) -> None:
    recorder = RunRecorder(context.run_config, context.run_id)
    plans: list[AgentPlan] = []
    aggregator: Aggregator | None = None
    results: dict[str, AgentRun] = {}
    store: ModelStore | None = None
    try:
        plans = parse_plans(context.run_config)
        aggregator = load_aggregator(context.run_config)
        store = open_store(context.run_config)
        inner = make_server_app(
            plans,
            aggregator,
            on_round=recorder.round,
            results=results,
            store=store,
            run_id=recorder.run_name,
        )
        inner(cast(Grid, _PromptGrid(grid)), context)
    except BaseException as err:
        recorder.finish(plans, results, aggregator, error=err)
        raise
    finally:
        if store is not None:
            store.close()
    recorder.finish(plans, results, aggregator)


def _agent_for_data(agent_name: str, run_config: Mapping[str, Any]) -> Any:
    """The agent as this run configures it (its config can change the CSV's schema)."""
    try:
        for plan in parse_plans(run_config):
            if plan.agent == agent_name:
                return plan.build_agent()
    except ConfigError:
        pass
    return registry.get(agent_name)()


def node_data(agent_name: str, context: Context) -> NodeData:
    """This MSP's rows for ``agent_name``.

    With ``data-loader = "package.module:function"`` in the node config, the MSP's own code
    provides them: ``function(agent_name, context)`` returns a DataFrame (split into
    training and held-out rows here) or a :class:`~meshfl.federation.NodeData`; either is
    validated against the agent's schema. Otherwise ``<data-dir>/<agent>.csv`` is read.
    """
    config = context.node_config
    loader_path = _text(config, "data-loader", "node config")
    if loader_path:
        return _from_loader(loader_path, agent_name, context)
    data_dir = _text(config, "data-dir", "node config")
    if not data_dir:
        raise ConfigError(
            "This SuperNode has no data: start it with --node-config "
            "\"data-dir='/path/to/csvs'\" (one <agent>.csv per agent)."
        )
    path = Path(data_dir).expanduser() / f"{agent_name}.csv"
    if not path.is_file():
        raise ConfigError(
            f"This SuperNode has no data for agent {agent_name!r}: {str(path)!r} is missing."
        )
    agent = _agent_for_data(agent_name, context.run_config)
    return _split(agent, agent.load_data(path), context)


def _split(agent: Any, frame: pd.DataFrame, context: Context) -> NodeData:
    """Training and held-out rows (node config ``test-fraction``, ``split-seed``).

    The agent decides how: a seeded random split, or the latest rows held out where it
    forecasts.
    """
    config = context.node_config
    fraction = float(config.get("test-fraction", DEFAULT_TEST_FRACTION))
    train, test = agent.split(frame, test_fraction=fraction, seed=int(config.get("split-seed", 0)))
    return NodeData(train, test)


def _from_loader(path: str, agent_name: str, context: Context) -> NodeData:
    module_name, _, attr = path.partition(":")
    try:
        loader = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(
            f"The node config's data-loader must be 'package.module:function', importable on "
            f"this MSP. Got {path!r} ({type(err).__name__}: {err})."
        ) from None
    agent = _agent_for_data(agent_name, context.run_config)
    loaded = loader(agent_name, context)
    if isinstance(loaded, NodeData):
        test = None if loaded.test is None else agent.load_data(loaded.test)
        return NodeData(agent.load_data(loaded.train), test)
    return _split(agent, agent.load_data(loaded), context)


client_app = make_client_app(node_data)
