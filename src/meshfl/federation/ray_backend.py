"""Running a simulation on Flower's Simulation Engine (Ray), at the cost of the work.

Flower 1.42's engine has two costs that grow with the square of the number of virtual
MSPs, and this module removes both without replacing the engine:

* **Shipping.** The Ray backend pickles the ``ClientApp`` with every message it sends to an
  actor. A ClientApp whose loader closes over every MSP's partition therefore ships all N
  partitions with each of the N messages. :class:`Shipped` wraps such a read-only value so
  that it pickles as one reference into Ray's object store, put once by the driver and
  fetched once per worker process.
* **Finding messages.** ``InMemoryLinkState.get_message_ins`` scans every stored message
  (and checks each one's expiry and federation) for every node, and the engine's feeder
  thread asks for every node each 0.1 s: O(N²) per sweep. :func:`indexed_message_ins`
  replaces that method, for the duration of a run, with one that scans once per change of
  the store and then answers each node from an index. It returns the same messages and
  marks them delivered the same way; expired messages are still dropped by Flower's own
  ``_check_stored_messages``.

Measured by ``benchmarks/scale.py --ray`` (docs/scale.md): one anomaly round of 1,000
virtual MSPs went from over 11 minutes to about a minute on 2 cores.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict, deque
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from meshfl.config.errors import ConfigError

__all__ = ["Shipped", "indexed_message_ins", "run_on_ray"]

T = TypeVar("T")

_fetched: dict[str, Any] = {}  # per worker process: object id -> value
_fetch_lock = threading.Lock()


class Shipped(Generic[T]):
    """A read-only value that pickles as a reference into Ray's object store.

    In the driver, ``value`` is the object itself and nothing is copied. The first time the
    wrapper is pickled (Ray is running by then), the value is put into the object store
    once; every later pickle is the reference alone. A worker fetches the value once and
    shares it among every virtual MSP it runs.
    """

    def __init__(self, value: T) -> None:
        self.value = value
        self._ref: Any = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        import ray

        if self._ref is None:
            self._ref = ray.put(self.value)
        return (_fetch, (self._ref,))


def _fetch(ref: Any) -> Shipped[Any]:
    import ray

    key = ref.hex()
    with _fetch_lock:
        if key not in _fetched:
            _fetched.clear()  # one run's values at a time
            _fetched[key] = ray.get(ref)
        shipped = Shipped(_fetched[key])
    shipped._ref = ref
    return shipped


@contextlib.contextmanager
def indexed_message_ins() -> Iterator[None]:
    """Flower's in-memory LinkState finds a node's messages through an index (see above)."""
    from flwr.server.superlink.linkstate import InMemoryLinkState

    original = InMemoryLinkState.get_message_ins
    InMemoryLinkState.get_message_ins = _get_message_ins  # type: ignore[method-assign]
    try:
        yield
    finally:
        InMemoryLinkState.get_message_ins = original  # type: ignore[method-assign]


def _get_message_ins(
    self: Any, node_id: int, limit: int | None, *, run_id: int | None = None
) -> list[Any]:
    """``InMemoryLinkState.get_message_ins``, answered from a per-node index."""
    from flwr.supercore.date import now

    if limit is not None and limit < 1:
        raise AssertionError("`limit` must be >= 1")
    found: list[Any] = []
    with self.lock:
        queue = _pending(self).get(node_id, deque())
        skipped: list[str] = []  # another run's messages stay queued
        while queue and not (limit and len(found) == limit):
            msg_id = queue.popleft()
            self._check_stored_messages({msg_id})  # drops it if it expired
            message = self.message_ins_store.get(msg_id)
            if message is None or message.metadata.delivered_at != "":
                continue
            if run_id is not None and message.metadata.run_id != run_id:
                skipped.append(msg_id)
            else:
                found.append(message)
        queue.extendleft(reversed(skipped))
        delivered_at = now().isoformat()
        for message in found:
            message.metadata.delivered_at = delivered_at
    return found


def _pending(state: Any) -> dict[int, deque[str]]:
    """Undelivered message ids by destination node, rebuilt when the store has changed."""
    store = state.message_ins_store
    version = (len(store), next(reversed(store), None))
    cached = getattr(state, "_meshfl_pending", None)
    if cached is not None and cached[0] == version:
        return cached[1]
    state._check_stored_messages(set(store))  # one pass of Flower's own checks
    pending: dict[int, deque[str]] = defaultdict(deque)
    for msg_id, message in store.items():
        if message.metadata.delivered_at == "":
            pending[message.metadata.dst_node_id].append(msg_id)
    state._meshfl_pending = ((len(store), next(reversed(store), None)), pending)
    return pending


def run_on_ray(server_app: Any, client_app: Any, *, num_nodes: int) -> None:
    """Run ``server_app`` and ``client_app`` on Flower's Simulation Engine.

    Ray starts locally, or joins the cluster named by Ray's own ``RAY_ADDRESS``
    (docs/scale.md). Each virtual MSP's ClientApp asks for one CPU.
    """
    try:
        import ray  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            "backend='ray' needs Flower's Simulation Engine: pip install 'meshfl[ray]'."
        ) from err
    from flwr.simulation import run_simulation

    with indexed_message_ins():
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_nodes,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
