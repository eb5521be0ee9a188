"""Data layer: schemas and loaders for users' data, synthetic MSP data, non-IID partitions.

Where things are:

* :mod:`~meshfl.data.schema` — the machinery: :class:`Column`, :class:`Schema` and
  :func:`load_frame`, which checks and coerces what an MSP hands over;
* :mod:`~meshfl.data.schemas` — the threat_intel and anomaly agents' schemas, label sets and
  metric bounds (the other agents' schemas sit next to their generators);
* one module per synthetic generator, named after its data: ``security_events_data``,
  ``ops_metrics_data``, ``client_health_data``, ``dispatch_data``, ``revenue_data``,
  ``collaboration_data``, ``market_text``, ``compliance_text``, ``insights``; the template
  tables of the security events in ``security_event_templates`` and
  ``security_event_fields``; the text-template engine they share in ``templates``;
* :mod:`~meshfl.data.partition` — non-IID splits over MSPs, and train/test splits.
"""

from meshfl.data.ops_metrics_data import WORKLOAD_PROFILES, operational_metrics
from meshfl.data.partition import label_distribution, partition, train_test_split
from meshfl.data.schema import Column, Schema, load_frame
from meshfl.data.schemas import (
    OPS_METRIC_BOUNDS,
    OPS_METRIC_FEATURES,
    OPS_METRICS_SCHEMA,
    SECURITY_EVENTS_SCHEMA,
    SEVERITIES,
    THREAT_CLASSES,
)
from meshfl.data.security_events_data import security_events

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
