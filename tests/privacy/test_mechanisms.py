import inspect

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
    # 200,000 draws: the sample std is within 0.16 % of the true one (1 sd), 1 % is 6 sd
    zeros = np.zeros(200_000)
    full = add_gaussian_noise(zeros, sensitivity=2.0, noise_multiplier=1.5)
    shares = sum(
        add_gaussian_noise(zeros, sensitivity=2.0, noise_multiplier=1.5, shares=5) for _ in range(5)
    )
    assert full.std() == pytest.approx(3.0, rel=0.01)
    assert shares.std() == pytest.approx(3.0, rel=0.01)
    assert abs(full.mean()) < 6 * 3.0 / np.sqrt(len(zeros))


def test_every_call_draws_fresh_noise_and_no_caller_can_seed_it():
    # noise anyone can regenerate protects nothing: there is no rng or seed to pass
    params = inspect.signature(add_gaussian_noise).parameters
    assert not {"rng", "seed", "generator", "random_state"} & set(params)
    a = add_gaussian_noise(np.zeros(1000), sensitivity=1.0, noise_multiplier=1.0)
    b = add_gaussian_noise(np.zeros(1000), sensitivity=1.0, noise_multiplier=1.0)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.2  # independent draws (correlation sd 0.03)
    np.testing.assert_array_equal(
        add_gaussian_noise(np.arange(3.0), sensitivity=1.0, noise_multiplier=0.0), np.arange(3.0)
    )


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ConfigError, match="'max_norm'"):
        clip_l2(np.ones(3), 0.0)
    with pytest.raises(ConfigError, match="'shares'"):
        add_gaussian_noise(np.ones(3), sensitivity=1, noise_multiplier=1, shares=0)
