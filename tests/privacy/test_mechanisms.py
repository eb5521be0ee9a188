import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from meshfl.config.errors import ConfigError
from meshfl.privacy.mechanisms import add_gaussian_noise, clip_l2


@settings(max_examples=80, deadline=None)
@given(arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e6, 1e6)), st.floats(0.01, 100))
def test_clipping_bounds_the_norm_and_keeps_direction(vector, bound):
    clipped, norm = clip_l2(vector, bound)
    assert np.linalg.norm(clipped) <= bound * (1 + 1e-9)
    assert norm == pytest.approx(np.linalg.norm(vector))
    if norm <= bound:
        np.testing.assert_array_equal(clipped, vector)
    else:
        np.testing.assert_allclose(clipped * norm / bound, vector, rtol=1e-9, atol=1e-9)


def test_noise_shares_add_up_to_the_full_noise():
    rng = np.random.default_rng(0)
    zeros = np.zeros(200_000)
    full = add_gaussian_noise(zeros, sensitivity=2.0, noise_multiplier=1.5, rng=rng)
    shares = sum(
        add_gaussian_noise(zeros, sensitivity=2.0, noise_multiplier=1.5, rng=rng, shares=5)
        for _ in range(5)
    )
    assert full.std() == pytest.approx(3.0, rel=0.01)
    assert shares.std() == pytest.approx(3.0, rel=0.01)


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ConfigError, match="'max_norm'"):
        clip_l2(np.ones(3), 0.0)
    with pytest.raises(ConfigError, match="'shares'"):
        add_gaussian_noise(
            np.ones(3), sensitivity=1, noise_multiplier=1, rng=np.random.default_rng(0), shares=0
        )
