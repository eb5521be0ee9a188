"""Schemas of the threat_intel and anomaly agents' data, and the labels and bounds they fix.

What an MSP's own security events and host metrics must look like: the columns
(:data:`SECURITY_EVENTS_SCHEMA`, :data:`OPS_METRICS_SCHEMA`), the label sets
(:data:`THREAT_CLASSES`, :data:`SEVERITIES`), the metric features and their public bounds
(:data:`OPS_METRIC_FEATURES`, :data:`OPS_METRIC_BOUNDS`). Agents import these; real data is
checked against them. The synthetic generators that produce data of this shape are
:mod:`meshfl.data.security_events_data` and :mod:`meshfl.data.ops_metrics_data`.

Not to be confused with :mod:`meshfl.data.schema` (singular): the machinery
(:class:`~meshfl.data.schema.Column`, :class:`~meshfl.data.schema.Schema`,
:func:`~meshfl.data.schema.load_frame`) these schemas are made of. The other agents' schemas
sit next to their generators (``REVENUE_SCHEMA`` in :mod:`meshfl.data.revenue_data`, ...).
"""

from __future__ import annotations

from meshfl.data.schema import Column, Schema

__all__ = [
    "OPS_METRICS_SCHEMA",
    "OPS_METRIC_BOUNDS",
    "OPS_METRIC_FEATURES",
    "SECURITY_EVENTS_SCHEMA",
    "SEVERITIES",
    "THREAT_CLASSES",
]

# ---------------------------------------------------------------------------------------
# Security events (threat_intel)
# ---------------------------------------------------------------------------------------

THREAT_CLASSES: tuple[str, ...] = (
    "benign",
    "brute_force",
    "malware",
    "phishing",
    "data_exfiltration",
    "privilege_escalation",
    "ddos",
    "ransomware",
)
"""The threat classes of the ``threat_intel`` agent, ``"benign"`` first."""

SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
"""Event severities, from least to most urgent."""

SECURITY_EVENTS_SCHEMA = Schema(
    "threat_intel data",
    (
        Column("message", "text", description="The raw log line or event text."),
        Column("threat_class", "category", description="Threat class, e.g. 'brute_force'."),
        Column("severity", "category", description="Severity: low, medium, high or critical."),
        Column("timestamp", "datetime", required=False, description="When the event happened."),
        Column("host", "text", required=False, description="The host that logged the event."),
        Column("source", "text", required=False, description="Log source, e.g. 'sshd'."),
    ),
)
"""Schema of the threat_intel agent's data;
:func:`~meshfl.data.security_events_data.security_events` produces it."""


# ---------------------------------------------------------------------------------------
# Operational metrics (anomaly)
# ---------------------------------------------------------------------------------------

OPS_METRIC_FEATURES: tuple[str, ...] = (
    "cpu_pct",
    "mem_pct",
    "disk_io_mbps",
    "net_in_mbps",
    "net_out_mbps",
    "latency_ms",
    "error_rate_pct",
    "open_connections",
)
"""The numeric features of the ``anomaly`` agent's data, in column order."""

OPS_METRIC_BOUNDS: dict[str, tuple[float, float]] = {
    "cpu_pct": (0.0, 100.0),
    "mem_pct": (0.0, 100.0),
    "disk_io_mbps": (0.0, 1000.0),  # NVMe-backed server disks
    "net_in_mbps": (0.0, 1000.0),  # 1 GbE links
    "net_out_mbps": (0.0, 1000.0),
    "latency_ms": (0.0, 2000.0),  # clients time out at 2 s
    "error_rate_pct": (0.0, 100.0),
    "open_connections": (0.0, 10000.0),
}
"""Public physical bounds of each metric; every generated value lies inside them.

A federated isolation forest draws its split points from these bounds rather than from any
MSP's data, so they are public knowledge, and kept tight enough that random splits land
where the data is.
"""

_FEATURE_DESCRIPTIONS = {
    "cpu_pct": "CPU utilisation, percent.",
    "mem_pct": "Memory in use, percent.",
    "disk_io_mbps": "Disk read + write throughput, MB/s.",
    "net_in_mbps": "Inbound network throughput, Mbit/s.",
    "net_out_mbps": "Outbound network throughput, Mbit/s.",
    "latency_ms": "Service response latency, milliseconds.",
    "error_rate_pct": "Share of requests that failed, percent.",
    "open_connections": "Open network connections.",
}

OPS_METRICS_SCHEMA = Schema(
    "anomaly data",
    (
        *(Column(f, "number", description=_FEATURE_DESCRIPTIONS[f]) for f in OPS_METRIC_FEATURES),
        Column("profile", "category", required=False, description="Workload profile."),
        Column(
            "is_anomaly",
            "bool",
            required=False,
            description="Ground truth, where known; unlabelled data is valid for training.",
        ),
        Column("timestamp", "datetime", required=False, description="Sample time."),
        Column("host", "text", required=False, description="The host measured."),
    ),
)
"""Schema of the anomaly agent's data;
:func:`~meshfl.data.ops_metrics_data.operational_metrics` produces it."""
