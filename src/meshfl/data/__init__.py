"""Data layer: schemas and loaders for users' data, synthetic MSP data, non-IID partitions."""

from meshfl.data.partition import label_distribution, partition, train_test_split
from meshfl.data.schema import Column, Schema, load_frame
from meshfl.data.synthetic import (
    OPS_METRIC_BOUNDS,
    OPS_METRIC_FEATURES,
    OPS_METRICS_SCHEMA,
    SECURITY_EVENTS_SCHEMA,
    SEVERITIES,
    THREAT_CLASSES,
    WORKLOAD_PROFILES,
    operational_metrics,
    security_events,
)

__all__ = [
    "OPS_METRICS_SCHEMA",
    "OPS_METRIC_BOUNDS",
    "OPS_METRIC_FEATURES",
    "SECURITY_EVENTS_SCHEMA",
    "SEVERITIES",
    "THREAT_CLASSES",
    "WORKLOAD_PROFILES",
    "Column",
    "Schema",
    "label_distribution",
    "load_frame",
    "operational_metrics",
    "partition",
    "security_events",
    "train_test_split",
]
