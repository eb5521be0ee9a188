"""MSP-side opening of the sealed global model: replay of ``combine``, memoized per prefix."""

from dataclasses import replace

import numpy as np
import pytest

from meshfl import agents
from meshfl.federation import sealed_model
from meshfl.federation.sealed_model import Verification, open_global
from meshfl.secure.aggregate import seal_payload
from meshfl.secure.backend import plaintext_backend
from meshfl.secure.binding import TAG_SLOTS, Binding, UnverifiedAggregateError, tags


class CountingSealer:
    """A plaintext sealer that counts how many sums it opens."""

    key_id = ""

    def __init__(self):
        self.sealer, _ = plaintext_backend()
        self.opened = 0

    def seal(self, values):
        return self.sealer.seal(values)

    @property
    def binding_key(self):
        return self.sealer.binding_key

    def open(self, sealed):
        self.opened += 1
        return self.sealer.open(sealed)

    def open_payload(self, sealed, *, expected_length=None):
        self.opened += 1
        return self.sealer.open_payload(sealed, expected_length=expected_length)


def _history(agent, rounds, sealer):
    rng = np.random.default_rng(0)
    vector = agent.init_vector(seed=0)
    sums = []
    for r in range(1, rounds + 1):
        size = agent.update_size(vector)
        update = rng.integers(0, 5, size).astype(np.float64)
        sums.append(sealer.seal(seal_payload(update, 2.0, tag=np.zeros(TAG_SLOTS))))
        vector = agent.combine(vector, 2.0 * update, 2.0, server_round=r)
    return sums, vector


@pytest.mark.filterwarnings("ignore:Secure aggregation is OFF")
def test_replay_opens_only_the_new_sums_and_matches_a_fresh_replay():
    sealed_model._opened.clear()
    agent = agents.get("anomaly")({"trees_per_round": 2, "depth": 3})
    sealer = CountingSealer()
    history, expected = _history(agent, 4, sealer)

    first = open_global(agent, history[:3], sealer, seed=0)
    assert sealer.opened == 3
    full = open_global(agent, history, sealer, seed=0)
    assert sealer.opened == 4  # rounds 1-3 came from the memo
    np.testing.assert_array_equal(full, expected)

    sealed_model._opened.clear()
    np.testing.assert_array_equal(open_global(agent, history, sealer, seed=0), expected)
    assert sealer.opened == 8
    again = first.copy()
    first[:] = -1  # callers own what they get back: the memo keeps its own copy
    np.testing.assert_array_equal(open_global(agent, history[:3], sealer, seed=0), again)


@pytest.mark.filterwarnings("ignore:Secure aggregation is OFF")
def test_another_config_or_seed_does_not_reuse_the_memo():
    sealed_model._opened.clear()
    agent = agents.get("anomaly")({"trees_per_round": 2, "depth": 3})
    sealer = CountingSealer()
    history, _ = _history(agent, 2, sealer)
    open_global(agent, history, sealer, seed=0)
    open_global(agent, history, sealer, seed=1)
    assert sealer.opened == 4


def _bound_history(agent, rounds, sealer, run="r"):
    """Round sums of two MSPs (nodes 1 and 2), bound and tagged as the strategy binds them."""
    rng = np.random.default_rng(0)
    vector = agent.init_vector(seed=0)
    sums = []
    for r in range(1, rounds + 1):
        binding = Binding(run, agent.name, r, 1)
        update = rng.integers(0, 5, agent.update_size(vector)).astype(np.float64)
        payloads = [
            seal_payload(update / 2, 1.0, tag=tags(sealer.binding_key, binding.scope, node))
            for node in (1, 2)
        ]
        total = sealer.seal(payloads[0] + payloads[1])
        sums.append(replace(total, binding=replace(binding, contributors=(1, 2)).to_json()))
        vector = agent.combine(vector, update, 2.0, server_round=r)
    return sums, vector


@pytest.mark.filterwarnings("ignore:Secure aggregation is OFF")
def test_verified_replay_opens_only_the_new_sum_each_round():
    """Round r must not re-open (nor re-verify) the r-1 sums it verified before: O(1) a round."""
    sealed_model._opened.clear()
    agent = agents.get("anomaly")({"trees_per_round": 2, "depth": 3})
    sealer = CountingSealer()
    history, expected = _bound_history(agent, 4, sealer)
    for r in range(1, 5):
        verify = Verification("r", before_round=r + 1, min_contributors=2)
        vector = open_global(agent, history[:r], sealer, seed=0, verify=verify)
    assert sealer.opened == 4
    np.testing.assert_allclose(vector, expected)
    # a memo entry never vouches for a round at or past the one asked about
    late = Verification("r", before_round=4, min_contributors=2)
    with pytest.raises(UnverifiedAggregateError):
        open_global(agent, history, sealer, seed=0, verify=late)


def test_a_key_of_another_key_set_does_not_open_what_the_memo_kept():
    from meshfl.secure.backend import InvalidUpdateError
    from meshfl.secure.ckks import ephemeral_ckks_backend

    sealed_model._opened.clear()
    agent = agents.get("anomaly")({"trees_per_round": 2, "depth": 3})
    ours, _ = ephemeral_ckks_backend()
    theirs, _ = ephemeral_ckks_backend()
    history, expected = _history(agent, 2, ours)
    np.testing.assert_allclose(open_global(agent, history, ours, seed=0), expected, atol=1e-3)
    with pytest.raises(InvalidUpdateError):
        open_global(agent, history, theirs, seed=0)
