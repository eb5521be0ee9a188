"""The coordinator service: one ``mesh.toml`` in, a SuperLink, a run and ``/metrics`` out.

``meshfl-server run --config mesh.toml`` (:func:`serve`) does, in order:

1. validates ``mesh.toml`` and prints what protections it turns off;
2. writes, under the state directory, the Flower app project (``app/``, with the run
   config: plans, public key, state directory, run name) and the ``flwr`` CLI's connection
   (``flwr-cli/config.toml``);
3. starts ``flower-superlink`` as a child process (TLS and SuperNode authentication as
   configured; its database ``superlink.db`` in the state directory, so registered
   SuperNode keys survive a restart) and waits for its Control API;
4. serves Prometheus ``/metrics`` on ``metrics_address``;
5. submits the run (``flwr run``) and follows it: the ServerApp runs in a
   ``flwr-serverapp`` subprocess of the SuperLink, so its rounds are read back from the
   files it writes (``runs/<flwr-run-id>/rounds.jsonl``, polled every second), printed and
   counted; ε per MSP comes from the model store's mirror of the MSPs' ledgers;
6. exits when the run's ``summary.json`` appears (0: completed; 1: failed, or no round
   trained), when the SuperLink dies (1), or on SIGINT/SIGTERM (130/143), ending the
   SuperLink and every process it started (:class:`~meshfl.deploy.processes.Processes`).

State directory layout::

    coordinator.sqlite, blobs/   the model store (meshfl-server status / versions / export)
    runs/<flwr-run-id>/          rounds.jsonl, summary.json, <agent>.sealed.json
    superlink.db                 Flower's state: runs, registered SuperNode keys
    app/                         the Flower app project `flwr run` submits
    flwr-cli/, flwr-superlink/   FLWR_HOME of the flwr CLI and of the SuperLink
    logs/superlink.log           the SuperLink's output (its ServerApp's too)

The run's name (``[coordinator] run_name``) is its id in the model store: restarting
``meshfl-server run`` on the same state directory with the same name and plans resumes
after the last committed round.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, overload

from meshfl.config.errors import MeshflError
from meshfl.deploy.processes import BIN, ProcessError, Processes, flower_env, flwr_cli
from meshfl.deploy.project import write_app_project, write_flower_config
from meshfl.service.config import MeshConfig, preflight
from meshfl.service.metrics import MeshMetrics, drop_reasons
from meshfl.service.msp_names import label, read_names

__all__ = ["CONNECTION", "CoordinatorLayout", "RunFollower", "register_node", "serve"]

CONNECTION = "meshfl"
"""Name of the SuperLink connection in ``<state_dir>/flwr-cli/config.toml``."""
STARTUP_TIMEOUT = 60.0


class _UnderStateDir:
    """A read-only :class:`CoordinatorLayout` attribute: a fixed path below ``state_dir``."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, layout: None, owner: type | None = None) -> _UnderStateDir: ...
    @overload
    def __get__(self, layout: CoordinatorLayout, owner: type | None = None) -> Path: ...
    def __get__(
        self, layout: CoordinatorLayout | None, owner: type | None = None
    ) -> Path | _UnderStateDir:
        return self if layout is None else layout.state_dir / self.name


@dataclass(frozen=True)
class CoordinatorLayout:
    """Where the coordinator service keeps its files (see the module docstring)."""

    state_dir: Path

    app_dir = _UnderStateDir("app")
    cli_home = _UnderStateDir("flwr-cli")
    superlink_home = _UnderStateDir("flwr-superlink")
    database = _UnderStateDir("superlink.db")
    logs = _UnderStateDir("logs")

    def run_dir(self, flwr_run_id: int | str) -> Path:
        return self.state_dir / "runs" / str(flwr_run_id)


def _dial_address(address: str) -> str:
    """The address the flwr CLI dials for a SuperLink bound to ``address``."""
    host, _, port = address.rpartition(":")
    if host in ("0.0.0.0", "", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def superlink_command(config: MeshConfig) -> list[str]:
    """The ``flower-superlink`` command line ``mesh.toml`` asks for."""
    coordinator = config.coordinator
    host, _, port = coordinator.address.rpartition(":")
    layout = CoordinatorLayout(coordinator.state_dir)
    args = [str(BIN / "flower-superlink"), "--host", host.strip("[]"), "--port", port]
    if coordinator.tls is None:
        args.append("--insecure")
    else:
        args += [
            "--ssl-ca-certfile", str(coordinator.tls.ca_cert),
            "--ssl-certfile", str(coordinator.tls.cert),
            "--ssl-keyfile", str(coordinator.tls.key),
        ]  # fmt: skip
    if coordinator.node_auth:
        args.append("--enable-supernode-auth")
    # meshfl is installed next to Flower; a bundle must never install packages.
    args += ["--disable-runtime-dependency-installation", "--database", str(layout.database)]
    return args


def prepare(config: MeshConfig) -> CoordinatorLayout:
    """Write the app project and the flwr CLI's connection under the state directory."""
    coordinator = config.coordinator
    layout = CoordinatorLayout(coordinator.state_dir)
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    if coordinator.node_auth and coordinator.tls is None:
        raise MeshflError(
            "node_auth = true needs [coordinator.tls]: Flower authenticates SuperNodes only "
            "over TLS. Add the certificates (meshfl certs init), or set node_auth = false "
            "for a loopback test."
        )
    if not coordinator.public_key.is_file():
        raise MeshflError(
            f"The coordinator's public key {coordinator.public_key} does not exist: "
            "create it with `meshfl keys init --out keys` and point public_key at "
            "keys/coordinator.public.ckks."
        )
    plans = [plan.model_dump(mode="json") for plan in config.plans()]
    write_app_project(
        layout.app_dir,
        run_config={
            "plans": json.dumps(plans),
            "public-key": str(coordinator.public_key.resolve()),
            "state-dir": str(layout.state_dir.resolve()),
            "run-name": coordinator.run_name,
        },
    )
    write_flower_config(
        layout.cli_home,
        _dial_address(coordinator.address),
        name=CONNECTION,
        root_certificates=None if coordinator.tls is None else coordinator.tls.ca_cert,
    )
    return layout


def register_node(config: MeshConfig, public_key: str | Path) -> dict[str, Any]:
    """Register a SuperNode's public key with the running SuperLink (``flwr supernode
    register``); returns Flower's answer (it holds the ``node-id``)."""
    layout = prepare(config)
    key = Path(public_key).resolve()
    if not key.is_file():
        raise MeshflError(f"No SuperNode public key at {key} (meshfl node-keys init makes one).")
    env = flower_env(layout.cli_home)
    return flwr_cli(["supernode", "register", str(key), CONNECTION], env)


class RunFollower:
    """Reads a ServerApp's round records as they are appended, and its summary at the end."""

    def __init__(self, run_dir: Path, state_dir: Path) -> None:
        self.run_dir = run_dir
        self.state_dir = state_dir
        self._offset = 0

    def new_rounds(self) -> Iterator[dict[str, Any]]:
        """Round records appended since the last call (whole lines only)."""
        path = self.run_dir / "rounds.jsonl"
        if not path.is_file():
            return
        with path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            if line.strip():
                yield json.loads(line)

    def summary(self) -> dict[str, Any] | None:
        path = self.run_dir / "summary.json"
        if not path.is_file():
            return None
        summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return summary

    def epsilon_by_msp(self, agent: str) -> dict[int, float]:
        """ε per MSP from the store's ledger mirror ({} before the first commit)."""
        from meshfl.store.model_store import DB_FILE, ModelStore

        if not (self.state_dir / DB_FILE).is_file():
            return {}
        try:
            with ModelStore(self.state_dir, read_only=True) as store:
                return store.epsilon_mirror(agent)
        except Exception:  # a reader must never take the service down
            return {}


def replay_committed(metrics: MeshMetrics, state_dir: Path, run_id: str) -> int:
    """Feed ``metrics`` the rounds of ``run_id`` already in the store; returns how many.

    A restarted coordinator's counters then continue where the run is, not from zero.
    """
    from meshfl.store.model_store import DB_FILE, ModelStore

    if not (state_dir / DB_FILE).is_file():
        return 0
    with ModelStore(state_dir, read_only=True) as store:
        versions = store.versions(run_id=run_id)
        for version in versions:
            record = {
                "agent": version.agent,
                "round": version.round,
                "msps": version.n_msps,
                "skipped": version.digest is None,
                **version.metrics,
            }
            metrics.observe_round(record, store.epsilon_mirror(version.agent))
    return len(versions)


def format_round(record: dict[str, Any]) -> str:
    """One line per round for the operator's terminal."""
    parts = [f"{record['agent']} round {record['round']}:", f"msps={record.get('msps', 0)}"]
    reasons = drop_reasons(record)
    if reasons:
        why = ", ".join(f"{k}={v}" for k, v in reasons.items())
        parts.append(f"dropped={sum(reasons.values())} ({why})")
    elif record.get("dropped"):  # a record written before reasons were kept
        parts.append(f"dropped={record['dropped']}")
    if record.get("declined"):
        # records written before declines had kinds: all were for the privacy budget
        kinds = record.get("declined_by_kind") or {"budget": record["declined"]}
        words = {"budget": "privacy budget spent", "masking": "they require masking"}
        if len(kinds) == 1:
            why = words.get(next(iter(kinds)), str(next(iter(kinds))))
        else:
            why = ", ".join(f"{words.get(k, k)}: {n}" for k, n in sorted(kinds.items()))
        parts.append(f"declined={record['declined']} ({why})")
    for key in ("accuracy", "macro_f1", "auc", "average_precision", "epsilon_max"):
        if key in record:
            parts.append(f"{key}={float(record[key]):.4f}")
    if record.get("skipped"):
        skipped = record.get("skipped_reason")  # none in records written before
        parts.append(f"(skipped: {skipped})" if skipped else "(skipped: kept the global model)")
    parts.append(f"{float(record.get('seconds', 0.0)):.1f}s")
    return " ".join(parts)


class _StopSignalError(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _wait_for_control_api(
    processes: Processes, env: dict[str, str], stopping: threading.Event
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = ""
    while time.monotonic() < deadline and not stopping.is_set():
        processes.check_running("superlink")
        try:
            flwr_cli(["ls", CONNECTION], env, timeout=20)
            return
        except ProcessError as err:
            last = str(err)
        time.sleep(0.5)
    if not stopping.is_set():
        raise ProcessError(
            f"The SuperLink's Control API did not answer in {STARTUP_TIMEOUT:.0f}s:\n{last}\n"
            f"SuperLink log:\n{processes.log('superlink')}"
        )


def _serve_metrics(
    metrics: MeshMetrics, address: str | None, say: Callable[[str], None]
) -> MeshMetrics:
    """Serve ``/metrics`` on ``address`` (``host:port``) if one is configured."""
    if address is not None:
        host, _, port = address.rpartition(":")
        try:
            metrics.serve(int(port), host)
        except OSError as err:
            raise MeshflError(
                f"Cannot serve /metrics on {address}: {err}. Pick a free metrics_address in "
                "mesh.toml."
            ) from None
        say(f"metrics on http://{address}/metrics")
    return metrics


def _follow(
    follower: RunFollower,
    run_id: str,
    metrics: MeshMetrics,
    processes: Processes,
    say: Callable[[str], None],
    poll_interval: float,
) -> int:
    """Report every committed round until the run ends; its exit code (1 if the SuperLink
    dies first)."""
    while True:
        for record in follower.new_rounds():
            agent = str(record["agent"])
            metrics.observe_round(record, follower.epsilon_by_msp(agent))
            say(format_round(record))
        summary = follower.summary()
        if summary is not None:
            say(f"run {run_id} {summary['status']}")
            if summary.get("error"):
                say(f"error: {summary['error']}")
            return 0 if summary["status"] == "completed" else 1
        try:
            processes.check_running("superlink")
        except ProcessError as err:
            say(str(err))
            return 1
        time.sleep(poll_interval)


def _watch_nodes(
    metrics: MeshMetrics,
    env: Mapping[str, str],
    state_dir: Path,
    stopping: threading.Event,
    say: Callable[[str], None],
    interval: float,
) -> threading.Thread:
    """Keep ``/metrics``' connection gauges current, and say when an MSP comes or goes.

    A daemon thread asks the SuperLink (``flwr supernode list``) every ``interval`` seconds
    until ``stopping`` is set, and re-reads the MSPs' names (``register-node`` adds them
    while the service runs); a failed ask is skipped, never fatal.
    """

    def watch() -> None:
        online: set[str] | None = None
        while not stopping.is_set():
            try:
                nodes = list(flwr_cli(["supernode", "list", CONNECTION], env)["nodes"])
            except (ProcessError, KeyError, TypeError):
                nodes = None
            if nodes is not None and not stopping.is_set():
                with contextlib.suppress(MeshflError):  # a damaged file: node ids stay
                    metrics.names.update(read_names(state_dir))
                metrics.observe_nodes(nodes)
                now = {
                    label(n.get("node-id", "?"), metrics.names)
                    for n in nodes
                    if n.get("status") == "online"
                }
                for name in sorted(now - (online or set())):
                    say(f"MSP {name} connected ({len(now)} online)")
                for name in sorted((online or set()) - now):
                    say(f"MSP {name} disconnected ({len(now)} online)")
                online = now
            stopping.wait(interval)

    thread = threading.Thread(target=watch, name="meshfl-node-watch", daemon=True)
    thread.start()
    return thread


def serve(
    config: MeshConfig,
    *,
    poll_interval: float = 1.0,
    out: TextIO | None = None,
    metrics: MeshMetrics | None = None,
) -> int:
    """Run the coordinator service until its run ends; returns the exit code (see module)."""
    stream = out or sys.stdout

    def say(text: str) -> None:
        print(f"[meshfl-server] {text}", file=stream, flush=True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config.warn_about_weak_settings()
    for warning in caught:
        print(f"WARNING: {warning.message}", file=sys.stderr, flush=True)
    preflight(config)  # before anything starts: a late error would name no setting
    layout = prepare(config)
    coordinator = config.coordinator
    processes = Processes(layout.state_dir, layout.logs)
    stopping = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stopping.set()
        raise _StopSignalError(signum)

    previous: dict[signal.Signals, Callable[..., Any] | int | None] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    try:
        stale = processes.with_home(layout.superlink_home)
        if stale:
            raise MeshflError(
                f"Processes of an earlier coordinator on {layout.state_dir} still run (pids "
                f"{sorted(stale)}): end them first (kill {' '.join(map(str, sorted(stale)))})."
            )
        processes.start("superlink", superlink_command(config), flower_env(layout.superlink_home))
        say(f"SuperLink starting on {coordinator.address} (log: {layout.logs / 'superlink.log'})")
        cli_env = flower_env(layout.cli_home)
        _wait_for_control_api(processes, cli_env, stopping)
        metrics = metrics or MeshMetrics()
        try:
            metrics.names.update(read_names(layout.state_dir))
        except MeshflError as err:  # the run goes on, its MSPs labelled by node id
            say(str(err))
        metrics.start(config.agents)
        metrics = _serve_metrics(metrics, coordinator.metrics_address, say)
        _watch_nodes(
            metrics, cli_env, layout.state_dir, stopping, say, coordinator.node_poll_seconds
        )
        replayed = replay_committed(metrics, layout.state_dir, coordinator.run_name)
        if replayed:
            say(f"run {coordinator.run_name!r} resumes: {replayed} round(s) already stored")
        answer = flwr_cli(["run", str(layout.app_dir), CONNECTION], cli_env, timeout=120)
        run_id = str(answer["run-id"])
        say(
            f"run {run_id} submitted (run name {coordinator.run_name!r}; agents: "
            f"{', '.join(config.agents)}); waiting for MSPs"
        )
        follower = RunFollower(layout.run_dir(run_id), layout.state_dir)
        return _follow(follower, run_id, metrics, processes, say, poll_interval)
    except _StopSignalError as stop:
        say(f"{stop}: stopping")
        return 128 + stop.signum
    finally:
        stopping.set()  # ends the node watcher
        for sig in previous:  # a second Ctrl-C must not cut the cleanup short
            signal.signal(sig, lambda signum, frame: None)
        survivors = processes.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if survivors:
            say(f"could not end processes {sorted(survivors)}")
