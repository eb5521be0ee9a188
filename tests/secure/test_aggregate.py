import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from meshfl.config.errors import InvalidUpdateError
from meshfl.secure import open_payload, seal_payload, sum_payloads, validate_payload

floats = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda n: st.lists(
            st.tuples(arrays(np.float64, n, elements=floats), st.floats(0.5, 1e4)),
            min_size=1,
            max_size=8,
        )
    )
)
def test_sum_of_payloads_is_the_weighted_sum(updates):
    total, weight, _ = open_payload(sum_payloads([seal_payload(v, w) for v, w in updates]))
    expected = sum(w * v for v, w in updates)
    np.testing.assert_allclose(total, expected, rtol=1e-9, atol=1e-6)
    assert weight == pytest.approx(sum(w for _, w in updates))


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.integers(1, 30), elements=floats), st.integers(1, 6))
def test_equal_updates_average_to_themselves(vector, n):
    total, weight, _ = open_payload(sum_payloads([seal_payload(vector, 3.0)] * n))
    np.testing.assert_allclose(total / weight, vector, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (np.zeros(12), "weight must be > 0"),
        (np.array([1.0, np.inf, *[1.0] * 8]), "NaN or inf"),
        (np.ones(5), "expects 12"),
        (np.ones((2, 2)), "flat"),
        (np.array([1, 2], dtype=np.int64), "floats"),
    ],
)
def test_malformed_payloads_are_rejected_with_reason(payload, match):
    with pytest.raises(InvalidUpdateError, match=match):
        validate_payload(payload, expected_size=12 if payload.size == 5 else None)
