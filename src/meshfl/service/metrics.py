"""Prometheus metrics of the coordinator: what an operator watches on ``/metrics``.

Only plaintext metadata is exported — counts, ε spent, bytes, evaluation metrics the MSPs
report — never an update or a model (the coordinator has none in the clear).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from meshfl.service.msp_names import label

__all__ = ["MeshMetrics", "drop_reasons"]


def drop_reasons(record: Mapping[str, Any]) -> dict[str, int]:
    """Why sampled MSPs' updates did not join a round, from its history record."""
    reasons = {str(k): int(v) for k, v in dict(record.get("dropped_by_kind") or {}).items()}
    if record.get("no_reply"):
        reasons["no_reply"] = int(record["no_reply"])
    return {k: v for k, v in reasons.items() if v > 0}


class MeshMetrics:
    """The coordinator's counters and gauges, in their own registry.

    Parameters
    ----------
    registry : prometheus_client.CollectorRegistry, optional
        Where to register; a fresh one by default (so tests and several coordinators in one
        process do not collide).
    names : mapping of int to str, optional
        Node id → MSP name (:mod:`meshfl.service.msp_names`): MSPs are labelled by name,
        by node id when they have none.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, names: Mapping[int, str] | None = None
    ):
        self.registry = registry or CollectorRegistry()
        self.names = dict(names or {})
        r = self.registry

        def counter(name: str, documentation: str) -> Counter:
            return Counter(name, documentation, ["agent"], registry=r)

        def gauge(name: str, documentation: str, *labels: str) -> Gauge:
            return Gauge(name, documentation, ["agent", *labels], registry=r)

        self.rounds = counter("meshfl_rounds_completed", "Rounds completed")
        self.rounds_skipped = counter("meshfl_rounds_skipped", "Rounds that kept the global model")
        self.msps = gauge("meshfl_round_msps", "MSPs whose update joined the last round")
        self.dropouts = counter(
            "meshfl_msp_dropouts",
            "Sampled MSPs that did not reply in time, or whose reply was dropped",
        )
        self.drops = Counter(
            "meshfl_updates_dropped",
            "Sampled MSPs' updates that did not join a round, by reason: no_reply, an MSP's "
            "error code (E_DATA, E_CONFIG, ...), flower_error, malformed, round_full, "
            "bad_ciphertext, bad_binding",
            ["agent", "reason"],
            registry=r,
        )
        self.declines = counter("meshfl_msp_declines", "Rounds declined by MSPs (privacy budget)")
        self.epsilon = gauge("meshfl_epsilon_spent", "ε spent per MSP, as it reports", "msp")
        self.bytes_received = counter(
            "meshfl_update_bytes_received", "Bytes of sealed updates received"
        )
        self.evaluation = gauge("meshfl_evaluation", "Latest averaged evaluation metric", "metric")
        self.connected = Gauge(
            "meshfl_msps_connected", "MSPs whose SuperNode is online now", registry=r
        )
        self.registered = Gauge(
            "meshfl_msps_registered", "MSPs whose SuperNode key is registered", registry=r
        )
        self.online = Gauge(
            "meshfl_msp_online", "1 while the MSP's SuperNode is online", ["msp"], registry=r
        )

    def start(self, agents: Iterable[str]) -> None:
        """Show every agent's counters at 0 before its first round (not an empty page)."""
        for agent in agents:
            for metric in (self.rounds, self.rounds_skipped, self.dropouts, self.declines):
                metric.labels(agent)
            self.bytes_received.labels(agent)

    def observe_nodes(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        """Update the connection gauges from ``flwr supernode list``'s nodes."""
        online = registered = 0
        for node in nodes:
            status = str(node.get("status"))
            if status in ("deleted", "unregistered"):
                continue
            registered += 1
            online += status == "online"
            self.online.labels(label(node.get("node-id", "?"), self.names)).set(
                1 if status == "online" else 0
            )
        self.connected.set(online)
        self.registered.set(registered)

    def observe_round(self, record: Mapping[str, Any], epsilon_by_msp: Mapping[int, float]) -> None:
        """Update every metric from one round's history record (see ``run_plan``)."""
        agent = str(record["agent"])
        if record.get("skipped"):
            self.rounds_skipped.labels(agent).inc()
        else:
            self.rounds.labels(agent).inc()
        self.msps.labels(agent).set(record.get("msps", 0))
        missing = record.get("sampled", 0) - record.get("msps", 0) - record.get("declined", 0)
        self.dropouts.labels(agent).inc(max(0, missing))
        self.declines.labels(agent).inc(record.get("declined", 0))
        for reason, count in drop_reasons(record).items():
            self.drops.labels(agent, reason).inc(count)
        self.bytes_received.labels(agent).inc(record.get("update_bytes", 0))
        for msp, eps in epsilon_by_msp.items():
            self.epsilon.labels(agent, label(msp, self.names)).set(eps)
        for key in ("accuracy", "macro_f1", "auc", "average_precision", "loss"):
            if key in record:
                self.evaluation.labels(agent, key).set(float(record[key]))

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` over HTTP on ``addr:port`` (a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)
