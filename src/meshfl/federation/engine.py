"""An in-process engine: the real ServerApp and ClientApp, one process, no Ray.

:class:`InProcessGrid` implements Flower's :class:`~flwr.serverapp.Grid`. By default every
message it carries is deflated into Flower's wire objects (the content-addressed byte
objects the SuperLink stores and the SuperNodes pull) and inflated again on the other
side, so apps that pass here serialize exactly as they would over the network, and nothing
is shared by reference between "server" and "MSP". At scale (thousands of simulated MSPs)
that fidelity costs more than the learning: ``serialize=False`` hands the Message objects
over as they are (read-only by contract) and counts no bytes. Nodes run one after another,
so a run is deterministic under a seed, except what must not be: MSP sampling and privacy
noise (OS entropy). :func:`run_in_process` wires it together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import cast

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from meshfl.federation.errors import safe_reply_error

__all__ = ["InProcessGrid", "from_wire", "run_in_process", "to_wire"]

log = logging.getLogger("meshfl.federation")
msp_log = logging.getLogger("meshfl.msp")
"""The nodes' own log: what a node's failure was, which never leaves the node."""


def to_wire(message: Message) -> dict[str, bytes]:
    """The message as Flower's wire objects: object id -> deflated bytes."""
    return {oid: obj.deflate() for oid, obj in get_all_nested_objects(message).items()}


def from_wire(root_id: str, objects: dict[str, bytes]) -> Message:
    """Inflate a message from its wire objects (as a SuperNode or the SuperLink does)."""
    message = cast(Message, inflate_object_from_contents(root_id, dict(objects)))
    message.metadata.__dict__["_message_id"] = root_id
    return message


class InProcessGrid(Grid):
    """A Grid whose nodes are ClientApp instances in this process.

    Parameters
    ----------
    client_app : ClientApp
        The app every node runs.
    num_nodes : int
        How many nodes (MSPs) the grid holds; node ``i`` sees ``partition-id = i``.
    seed : int
        Seeds the node ids.
    serialize : bool
        Pass every message through Flower's wire format (and count its bytes), as a
        deployment does; ``False`` hands messages over by reference, for speed at scale.
    """

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        *,
        seed: int = 0,
        run_id: int = 1,
        serialize: bool = True,
    ):
        self.client_app = client_app
        self.serialize = serialize
        self._sequence = 0
        rng = np.random.default_rng([seed, 0x6D657368])
        ids: list[int] = []
        while len(ids) < num_nodes:  # random unsigned 64-bit ids, as the SuperLink hands out
            candidate = int(rng.integers(1, 2**64 - 1, dtype=np.uint64))
            if candidate not in ids:
                ids.append(candidate)
        self._contexts = {
            int(node_id): Context(
                run_id=run_id,
                node_id=int(node_id),
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for i, node_id in enumerate(ids)
        }
        self._run = Run.create_empty(run_id)
        # Flower stamps new messages with the identity of the task running in this
        # process; here that task is the ServerApp of this grid's run.
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        self._replies: dict[str, dict[str, bytes] | Message] = {}
        self._reply_roots: dict[str, str] = {}
        self.bytes_sent = 0
        self.bytes_received = 0
        self.unavailable: set[int] = set()
        """Node ids that do not answer (to simulate MSPs that drop out)."""

    # -- Grid interface ---------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def node_id(self, partition_id: int) -> int:
        """The node id of partition ``partition_id``."""
        return list(self._contexts)[partition_id]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_run_id"] = self._run.run_id
            message.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
            message_id = message.object_id if self.serialize else self._next_id()
            message.metadata.__dict__["_message_id"] = message_id
            ids.append(message_id)
            if self.serialize:
                wire = to_wire(message)
                self.bytes_sent += sum(len(b) for b in wire.values())
                message = from_wire(message_id, wire)
            self._deliver(message_id, message)
        return ids

    def _next_id(self) -> str:
        self._sequence += 1
        return f"in-process-{self._sequence}"

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        out = []
        for mid in message_ids:
            reply = self._replies.pop(mid, None)
            if isinstance(reply, Message):
                out.append(reply)
            elif reply is not None:
                self.bytes_received += sum(len(b) for b in reply.values())
                out.append(from_wire(self._reply_roots.pop(mid), reply))
        return out

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        # Nodes run synchronously inside push_messages, so every reply that will ever
        # come is there already; a node that is unavailable never replies, exactly as
        # a timed-out node on a real grid.
        return self.pull_messages(self.push_messages(messages))

    # -- the node side ----------------------------------------------------------------
    def _deliver(self, root_id: str, message: Message) -> None:
        node_id = message.metadata.dst_node_id
        if node_id not in self._contexts or node_id in self.unavailable:
            return
        context = self._contexts[node_id]
        try:
            reply = self.client_app(message, context)
        except Exception as err:
            # A ClientApp error becomes an error reply, as in Flower, but as a code and a
            # fixed sentence: its text may hold what the node computed from what it
            # decrypted (issue 12 §1). The details stay in the node's log.
            code, reason = safe_reply_error(err)
            msp_log.error(
                "node %d failed on %s (replied %s): %s: %s",
                node_id,
                message.metadata.message_type,
                reason.split(":", 1)[0],
                type(err).__name__,
                err,
            )
            reply = Message(Error(code=code, reason=reason), reply_to=message)
        reply.metadata.__dict__["_src_node_id"] = node_id
        if not self.serialize:
            reply.metadata.__dict__["_message_id"] = self._next_id()
            self._replies[root_id] = reply
            return
        reply.metadata.__dict__["_message_id"] = reply.object_id
        self._replies[root_id] = to_wire(reply)
        self._reply_roots[root_id] = reply.object_id


def run_in_process(
    server_app: ServerApp,
    client_app: ClientApp,
    *,
    num_nodes: int,
    seed: int = 0,
    serialize: bool = True,
) -> InProcessGrid:
    """Run ``server_app`` to completion against ``num_nodes`` in-process nodes."""
    grid = InProcessGrid(client_app, num_nodes, seed=seed, serialize=serialize)
    context = Context(
        run_id=1, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(), run_config={}
    )
    server_app(grid, context)
    return grid
