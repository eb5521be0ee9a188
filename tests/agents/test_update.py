import numpy as np
import pytest

from meshfl.agents import Update
from meshfl.config.errors import InvalidUpdateError


def test_update_normalises_types():
    u = Update(vector=np.arange(3, dtype=np.float32), weight=2, metrics={"loss": 1})
    assert u.vector.dtype == np.float64 and u.weight == 2.0 and u.metrics == {"loss": 1.0}
    assert not u.privacy_event.is_private


@pytest.mark.parametrize(
    ("vector", "weight", "match"),
    [
        (np.zeros((2, 2)), 1.0, "flat"),
        (np.array([1.0, np.nan]), 1.0, "finite"),
        (np.zeros(2), 0.0, "weight"),
        (np.zeros(2), float("inf"), "weight"),
    ],
)
def test_bad_updates_are_rejected_with_reason(vector, weight, match):
    with pytest.raises(InvalidUpdateError, match=match):
        Update(vector=vector, weight=weight)
