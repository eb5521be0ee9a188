"""meshfl-node's runtime: ClientApps forked from a warm process, waits capped, prompt pulls."""

from __future__ import annotations

import inspect
import os
import time
import types
from dataclasses import dataclass

import pytest
from flwr.supercore.constant import TaskType

from meshfl.deploy import node_runtime
from meshfl.deploy.apps import exchange


@dataclass
class Spec:
    task_type: TaskType
    token: str = "t"


def test_a_clientapp_task_runs_in_a_forked_child_that_is_reaped(monkeypatch):
    ran_in = []

    def fake_run(spec):
        ran_in.append(os.getpid())  # only the child's list changes
        return 7

    monkeypatch.setattr(node_runtime, "_run_clientapp", fake_run)
    executor = node_runtime.ForkExecutor()
    result = executor.launch(Spec(TaskType.CLIENT_APP))
    assert result.status == "accepted"
    assert ran_in == []  # the parent did not run the task
    (child,) = executor.children
    deadline = time.monotonic() + 10
    while executor.children and time.monotonic() < deadline:
        executor.reconcile()
        time.sleep(0.01)
    assert not executor.children  # reaped: no zombie left behind
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)


def test_other_tasks_start_as_flower_starts_them(monkeypatch):
    executor = node_runtime.ForkExecutor()
    launched = []
    monkeypatch.setattr(executor._fallback, "launch", lambda spec: launched.append(spec) or "ok")
    spec = Spec(TaskType.SERVER_APP)
    assert executor.launch(spec) == "ok"
    assert launched == [spec] and not executor.children


def test_capped_sleep_shortens_a_modules_waits_only():
    module = types.SimpleNamespace(time=time)
    node_runtime.capped_sleep(module, 0.2)
    start = time.perf_counter()
    module.time.sleep(3)  # Flower's idle poll of the SuperLink
    assert 0.2 <= time.perf_counter() - start < 1
    start = time.perf_counter()
    module.time.sleep(0.5)  # Flower's local wait for a reply
    assert time.perf_counter() - start < 0.2
    assert module.time.monotonic() > 0  # the rest of the time module is still there


def test_a_message_whose_content_never_comes_is_given_up_not_retried_for_hours():
    import flwr.supernode.start_client_internal as node_loop
    from flwr.supercore.inflatable.inflatable_utils import ObjectPullError, ObjectUnavailableError

    module = types.SimpleNamespace()
    node_runtime.capped_pulls(module, max_time=1.5)
    tries = []

    def never(object_id):  # the coordinator died before pushing the content
        tries.append(object_id)
        raise ObjectUnavailableError(object_id)

    start = time.perf_counter()
    with pytest.raises(ObjectPullError):
        module.pull_objects(["a"], pull_object_fn=never)
    assert time.perf_counter() - start < 10 and len(tries) >= 2
    # Flower's SuperNode loop calls pull_objects by its module-level name, which
    # run_supernode replaces (a Flower release that moved it would void the cap).
    assert "pull_objects(" in inspect.getsource(node_loop)
    assert "pull_objects" in vars(node_loop)


class SlowGrid:
    """Replies to each message ``delay`` seconds after it was pushed; never to ``silent``."""

    def __init__(self, delay: float, silent: frozenset[str] = frozenset()):
        self.delay, self.silent, self.pushed, self.pulls = delay, silent, {}, 0

    def push_messages(self, messages):
        now = time.monotonic()
        self.pushed.update({m: now for m in messages})
        return list(messages)

    def pull_messages(self, ids):
        self.pulls += 1
        now = time.monotonic()
        ready = [m for m in ids if m not in self.silent and now - self.pushed[m] >= self.delay]
        return [types.SimpleNamespace(metadata=types.SimpleNamespace(reply_to_message_id=m))
                for m in ready]  # fmt: skip


def test_exchange_returns_soon_after_the_last_reply():
    grid = SlowGrid(delay=0.3)
    start = time.monotonic()
    replies = exchange(grid, ["a", "b"], timeout=None)
    took = time.monotonic() - start
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["a", "b"]
    assert took < 1.0  # Flower's grid would wait 3 s before its second pull


def test_exchange_gives_up_at_the_timeout_with_what_came():
    grid = SlowGrid(delay=0.0, silent=frozenset({"lost"}))
    start = time.monotonic()
    replies = exchange(grid, ["a", "lost"], timeout=0.5)
    assert [r.metadata.reply_to_message_id for r in replies] == ["a"]
    assert 0.5 <= time.monotonic() - start < 1.5
    assert grid.pulls < 30  # the waits grow while nothing comes


def test_a_refused_node_is_told_to_get_registered():
    from flwr.supercore.exit.exit_code import EXIT_CODE_HELP, ExitCode

    node_runtime.explain_refusals()
    node_runtime.explain_refusals()  # once only
    text = EXIT_CODE_HELP[ExitCode.SUPERNODE_CONNECTION_ERROR]
    assert text.count("meshfl-server register-node") == 1
