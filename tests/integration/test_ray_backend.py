"""The same apps on Flower's Simulation Engine (Ray)."""

import numpy as np
import pytest

import meshfl

pytestmark = pytest.mark.integration


def test_ray_backend_runs_the_same_apps():
    pytest.importorskip("ray")
    kwargs = dict(
        agent="anomaly",
        num_msps=3,
        rounds=2,
        seed=0,
        progress=False,
        agent_config={"trees_per_round": 5, "depth": 6},
        samples_per_msp=100,
    )
    on_ray = meshfl.simulate(backend="ray", **kwargs)
    in_process = meshfl.simulate(**kwargs)
    assert list(on_ray.history["msps"]) == [3, 3]
    # Same leaf counts from both engines, up to the CKKS encryption noise.
    np.testing.assert_allclose(on_ray.model.vector, in_process.model.vector, atol=1e-5)
    assert on_ray.history["auc"].iloc[-1] == pytest.approx(in_process.history["auc"].iloc[-1])
