"""The scale path at 1,000 MSPs (issue 14): one round, 40 rows each, every MSP counted.

At this size ``simulate`` hands messages over by reference (``serialize_messages`` is off
above 100 MSPs), simulated MSPs share one CKKS context, and pooled synthetic data is
validated once. benchmarks/scale.py measures the time and memory of the same path up to
10,000 MSPs; here it must stay correct.
"""

from __future__ import annotations

import numpy as np
import pytest

import meshfl

pytestmark = pytest.mark.integration

MSPS = 1000


@pytest.mark.parametrize(
    ("agent", "mode", "metric", "floor"),
    [
        ("anomaly", "plaintext", "auc", 0.6),
        ("anomaly", "ckks", "auc", 0.6),
        ("client_health", "ckks", "auc", 0.6),
        ("revenue", "plaintext", "smape", None),
    ],
)
def test_one_round_of_a_thousand_msps_counts_every_msp(agent, mode, metric, floor):
    result = meshfl.simulate(
        agent=agent,
        num_msps=MSPS,
        rounds=1,
        samples_per_msp=40,
        secure_aggregation=mode,
        progress=False,
    )
    (record,) = result.history.to_dict("records")
    assert record["sampled"] == MSPS
    assert record["msps"] == MSPS and record["dropped"] == 0
    assert np.isfinite(result.model.vector).all()
    if floor is not None:
        assert record[metric] > floor, record
    else:
        assert 0 < record[metric] < 50, record  # sMAPE in percent: a usable forecast
