"""How ``meshfl-node`` runs Flower's SuperNode: warm ClientApps and short polls.

Flower 1.42's SuperNode (``--isolation subprocess``, its default) starts ``flower-superexec``,
which starts a fresh ``flwr-clientapp`` process for every message. Each train and each
evaluate message of every round imports Python, Flower, meshfl and torch again: seconds per
message. Fixed waits come on top: the SuperNode asks the SuperLink for messages every 3 s
when idle and looks for the ClientApp's reply every 0.5 s, the SuperExec looks for tasks
every second, and the ServerApp looks for replies every 3 s (meshfl's ServerApp polls
from 20 ms: :func:`meshfl.deploy.apps.exchange`). On the loopback deployment
(``benchmarks/deploy_overhead.py``) that made a round of 0.03 s of work take 14 s.

``meshfl-node`` keeps Flower's runtime and changes only what runs where:

``supernode``
    Flower's own ``flower-supernode``, started with ``--isolation process`` (Flower's mode
    for a SuperExec that runs outside the SuperNode), which asks the SuperLink for messages
    every ``--poll-interval`` seconds while idle instead of every 3 s, and waits at most
    0.1 s in its local loops instead of 0.5 s. A shorter poll costs the SuperLink one
    request per node per interval while idle: keep Flower's 3 s on a mesh of thousands.
``superexec``
    Flower's own SuperExec loop (:func:`flwr.supercore.superexec.run_superexec.run_superexec`)
    with one change: its executor *forks* each ClientApp from this process, which imported
    Flower, meshfl and the agents once, and runs Flower's own
    :func:`~flwr.supernode.runtime.run_clientapp.run_clientapp` in the child. Each message
    still gets its own process (a ClientApp's failure or memory stays its own), but starts
    in milliseconds. It looks for new tasks every 0.1 s (a local request; Flower: 1 s).
    Tasks other than ClientApps start as Flower starts them.

The parent never runs a model, opens a key or holds a message: a child inherits imported
code only. It forks before torch has started any thread, which is what makes fork safe.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

__all__ = ["ForkExecutor", "capped_sleep", "main"]

log = logging.getLogger(__name__)

WARM_MODULES = ("meshfl.deploy.apps", "meshfl.agents")
"""Imported by the SuperExec before it forks: the ClientApp and every registered agent."""


LOCAL_WAIT = 0.1
"""Longest wait of a loop on this machine (for a ClientApp's reply, for a new task)."""


class _CappedTime:
    """The ``time`` module, whose ``sleep`` waits at most ``remote`` seconds before asking the
    SuperLink again (Flower 1.42's SuperNode sleeps 3 s there) and at most :data:`LOCAL_WAIT`
    in its local waits (0.5 s in Flower 1.42), which cost nothing but a look at its state."""

    def __init__(self, remote: float):
        self.remote = remote

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.remote) if seconds >= 1 else min(seconds, LOCAL_WAIT))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def capped_sleep(module: Any, remote: float) -> None:
    """Make ``module``'s ``time.sleep`` calls wait at most ``remote`` (SuperLink polls) or
    :data:`LOCAL_WAIT` seconds (its waits of under a second)."""
    module.time = _CappedTime(remote)


PULL_MAX_SECONDS = 120.0
"""How long a SuperNode waits for a message's content before giving the message up.

Flower waits up to two hours (``PULL_MAX_TIME``). A coordinator pushes a message's content
right after the message, so content still missing after minutes belongs to a sender that
died: a coordinator killed mid-send left its MSPs retrying that message while its restarted
self asked them for keys (issue 13). The message is failed and the node takes the next one.
"""


def capped_pulls(module: Any, max_time: float = PULL_MAX_SECONDS) -> None:
    """Make ``module``'s ``pull_objects`` give up on a message after ``max_time`` seconds."""
    import functools

    from flwr.supercore.inflatable.inflatable_utils import pull_objects

    module.pull_objects = functools.partial(pull_objects, max_time=max_time)


class ForkExecutor:
    """A SuperExec executor that forks each ClientApp from the warm SuperExec process.

    It has the interface of Flower's ``SubprocessExecutor`` (``launch``,
    ``get_eligible_capacity``, ``wait_for_capacity``, ``reconcile``, ``close``), and hands
    every task that is not a ClientApp to one.
    """

    def __init__(self) -> None:
        from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

        self._fallback = SubprocessExecutor()
        self.children: set[int] = set()

    def get_eligible_capacity(self, supported_task_types: Any, **kwargs: Any) -> Any:
        return self._fallback.get_eligible_capacity(supported_task_types, **kwargs)

    def wait_for_capacity(self, *args: Any, **kwargs: Any) -> None:
        self._fallback.wait_for_capacity(*args, **kwargs)

    def launch(self, spec: Any) -> Any:
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor.types import LaunchResult

        if spec.task_type != TaskType.CLIENT_APP:
            return self._fallback.launch(spec)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child ends in os._exit, coverage cannot see it
            os._exit(_run_clientapp(spec))
        self.children.add(pid)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap the ClientApps that have ended."""
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
            self.children.discard(pid)

    def close(self) -> None:
        """Nothing to release: running ClientApps end with their task."""


def _run_clientapp(spec: Any) -> int:
    """Run one ClientApp task in this (forked) process; returns its exit status."""
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    code = 1
    try:
        run_clientapp(
            runtime_api_address=spec.runtime_api_address,
            token=spec.token,
            insecure=spec.insecure,
            certificates=validate_and_resolve_root_certificates(
                spec.root_certificates_path, spec.insecure
            ),
            parent_pid=spec.parent_pid,
            runtime_dependency_install=spec.runtime_dependency_install,
        )
        code = 0
    except SystemExit as done:  # Flower ends a task with flwr_exit (sys.exit)
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _warm_up() -> None:
    """Import the ClientApp and every registered agent, so that forked children start warm."""
    for name in WARM_MODULES:
        importlib.import_module(name)
    from meshfl.agents import registry

    for agent in registry.built():
        try:
            registry.get(agent)
        except Exception as err:
            log.warning("could not pre-load agent %s: %s", agent, err)


def _wait_for_port(address: str, timeout: float) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_superexec(runtime_api_address: str, parent_pid: int) -> None:
    """Flower's SuperExec loop with a :class:`ForkExecutor`, after a warm-up."""
    from flwr.supercore.superexec import run_superexec as loop

    _warm_up()
    _wait_for_port(runtime_api_address, timeout=120)
    os.environ["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(LOCAL_WAIT)  # a local request
    executor = ForkExecutor()
    loop.get_executor = lambda *args, **kwargs: executor
    loop.run_superexec(
        runtime_api_address=runtime_api_address, insecure=True, parent_pid=parent_pid
    )


REFUSED_HINT = (
    "\nmeshfl: a coordinator with node authentication refuses a node whose public key it "
    "has not registered: its operator runs `meshfl-server register-node --config mesh.toml "
    "<this node's key>.pub`. A registered node restarted right after an unclean stop is "
    "refused too, until the SuperLink lets its earlier session expire (a few minutes); "
    "start it again then."
)
"""Added to Flower's help for exit code 305 (``SUPERNODE_CONNECTION_ERROR``)."""


def explain_refusals() -> None:
    """Make a refused SuperNode's exit message say what to do (:data:`REFUSED_HINT`)."""
    from flwr.supercore.exit.exit_code import EXIT_CODE_HELP, ExitCode

    code = ExitCode.SUPERNODE_CONNECTION_ERROR
    if REFUSED_HINT not in EXIT_CODE_HELP.get(code, ""):
        EXIT_CODE_HELP[code] = EXIT_CODE_HELP.get(code, "") + REFUSED_HINT


def run_supernode(flower_args: Sequence[str], poll_interval: float) -> None:
    """Flower's ``flower-supernode`` with ``flower_args``, its waits capped at ``poll_interval``."""
    import flwr.supernode.start_client_internal as node_loop
    from flwr.supernode.cli.flower_supernode import flower_supernode

    capped_sleep(node_loop, poll_interval)
    capped_pulls(node_loop)
    explain_refusals()
    sys.argv = ["flower-supernode", *flower_args]
    flower_supernode()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m meshfl.deploy.node_runtime {supernode,superexec} ...`` (meshfl-node's)."""
    parser = argparse.ArgumentParser(
        prog="python -m meshfl.deploy.node_runtime", allow_abbrev=False
    )
    parser.add_argument("role", choices=["supernode", "superexec"])
    parser.add_argument("--poll-interval", type=float, help="supernode: seconds between polls")
    parser.add_argument("--runtime-api-address", help="superexec: the SuperNode's Runtime API")
    parser.add_argument("--parent-pid", type=int, help="superexec: end with this process")
    args, flower_args = parser.parse_known_args(argv)
    if args.role == "superexec":
        run_superexec(args.runtime_api_address, args.parent_pid)
    else:
        run_supernode(flower_args, args.poll_interval)


if __name__ == "__main__":  # pragma: no cover
    main()
