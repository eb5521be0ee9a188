"""Flower's own processes, started and ended by pid: the edge of meshfl's deployment code.

Flower 1.42's SuperLink starts a SuperExec in a *new session*, and that SuperExec starts one
``flwr-serverapp`` per run; a SuperNode starts its SuperExec (``meshfl-node``: its warm
one) and ClientApp processes. Killing the process meshfl started is therefore not enough:
its descendants survive as orphans (they then hold the ports, and a later start fails).
:class:`Processes` tells its processes apart by their environment instead: every one of
them inherits a ``FLWR_HOME`` below one root directory, which :meth:`Processes.ours` looks
for in each process's environment (read with psutil). :meth:`Processes.stop` sends SIGTERM
to the process groups and to every such pid, then SIGKILL to what is left.

:func:`flwr_cli` runs the ``flwr`` CLI with ``--format json`` and returns its answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import psutil

from meshfl.config.errors import MeshflError

__all__ = [
    "BIN",
    "ProcessError",
    "Processes",
    "alive",
    "flower_env",
    "flwr_cli",
    "free_ports",
]

BIN = Path(sys.executable).parent
"""Where Flower's console scripts are: next to the Python that runs meshfl."""


class ProcessError(MeshflError, RuntimeError):
    """A Flower process or CLI call failed; the message carries the end of its output."""


def flower_env(flwr_home: str | os.PathLike[str], **extra: str) -> dict[str, str]:
    """This process's environment for a Flower process with its own ``FLWR_HOME``.

    Update checks and telemetry are off (a deployment should not call home), and the
    directory of Flower's console scripts comes first on ``PATH`` (the SuperLink starts
    ``flower-superexec`` and ``flwr-serverapp`` by name).
    """
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_HOME": str(Path(flwr_home).resolve()),
        }
    )
    env.update(extra)
    return env


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` TCP ports free on ``host`` right now (another process may still take them)."""
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind((host, 0))
        sockets.append(s)
    ports = [int(s.getsockname()[1]) for s in sockets]
    for s in sockets:
        s.close()
    return ports


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


class Processes:
    """Processes started in their own sessions, logged to files, ended by pid.

    Parameters
    ----------
    root : path
        Every process this object owns has ``FLWR_HOME`` below this directory (give each
        one its own home there: :func:`flower_env`).
    log_dir : path
        ``<name>.log`` per process (stdout and stderr); also their working directory.
    """

    def __init__(self, root: str | os.PathLike[str], log_dir: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, name: str, args: Sequence[str], env: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` as ``name`` in a new session, appending its output to its log."""
        log: BinaryIO
        with (self.log_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                list(args),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=self.log_dir,
                start_new_session=True,
            )
        self.started[name] = proc
        return proc

    def log(self, name: str, tail: int = 4000) -> str:
        """The last ``tail`` characters of ``name``'s log."""
        try:
            text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-tail:]

    def check_running(self, *names: str) -> None:
        """Raise :class:`ProcessError` with its log if one of ``names`` has exited."""
        for proc in self.started.values():
            proc.poll()  # reap promptly: Flower's parent monitors take a zombie for alive
        for name in names:
            code = self.started[name].poll()
            if code is not None:
                raise ProcessError(f"{name} exited with {code}:\n{self.log(name)}")

    def ours(self) -> set[int]:
        """Live processes whose ``FLWR_HOME`` is below :attr:`root` (this one excluded)."""
        below = f"{self.root}{os.sep}"
        return self._with_flwr_home(lambda home: home.startswith(below))

    def with_home(self, home: str | os.PathLike[str]) -> set[int]:
        """Live processes whose ``FLWR_HOME`` is ``home`` (descendants inherit it)."""
        wanted = str(Path(home).resolve())
        return self._with_flwr_home(lambda value: value == wanted)

    @staticmethod
    def _with_flwr_home(match: Callable[[str], bool]) -> set[int]:
        """Live processes (this one excluded) whose ``FLWR_HOME`` ``match`` accepts."""
        me = os.getpid()
        found = set()
        for proc in psutil.process_iter():
            if proc.pid == me:
                continue
            try:
                home = proc.environ().get("FLWR_HOME")
                if home is not None and match(home) and proc.status() != psutil.STATUS_ZOMBIE:
                    found.add(proc.pid)
            except psutil.Error:  # gone, a zombie, or another user's process
                continue
        return found

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to every process group started and every process of :meth:`ours`."""
        # Whole groups, even where the leader is gone (a SuperNode that exits on its own
        # can leave its SuperExec behind), then by pid what runs in other sessions (the
        # SuperLink starts its SuperExec in a new one).
        for proc in self.started.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        for pid in self.ours():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def stop(self, grace: float = 10.0) -> set[int]:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the survivors' pids."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            for proc in self.started.values():
                proc.poll()  # reap
            if not self.ours():
                break
            time.sleep(0.2)
        if self.ours():
            self.signal(signal.SIGKILL)
        for proc in self.started.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        time.sleep(0.5)
        return self.ours()


def flwr_cli(args: Sequence[str], env: Mapping[str, str], timeout: float = 60) -> dict[str, Any]:
    """Run ``flwr <args> --format json``; returns its JSON answer or raises ProcessError."""
    try:
        out = subprocess.run(
            [str(BIN / "flwr"), *args, "--format", "json"],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ProcessError(f"flwr {' '.join(args)} gave no answer in {timeout:.0f}s") from None
    start = out.stdout.find("{")
    try:
        result: dict[str, Any] = json.loads(out.stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        result = {}
    if out.returncode != 0 or not result.get("success"):
        raise ProcessError(
            f"flwr {' '.join(args)} failed ({out.returncode}):\n{out.stdout}{out.stderr}"
        )
    return result
