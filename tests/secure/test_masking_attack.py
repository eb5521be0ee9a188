"""Issue 13: the coordinator colluding with one MSP tries to read another MSP's update.

The colluders hold every ciphertext (the coordinator receives them) and the CKKS secret key
(every MSP holds it). Without masks, decrypting the victim's ciphertext gives its update
exactly (the control below: this is what main did before masking). With masks inside the
ciphertexts, their best estimates are uncorrelated with the truth.
"""

from __future__ import annotations

import numpy as np
import pytest

from meshfl.config.errors import InvalidUpdateError
from meshfl.secure.ckks import ephemeral_ckks_backend

LENGTH = 3000  # two ciphertexts of 2048 values: a real vector, several chunks


@pytest.fixture(scope="module")
def backend():
    return ephemeral_ckks_backend()


def _raw_decrypt(sealer, sealed) -> np.ndarray:
    """What a key holder reads from a ciphertext, without any plausibility check."""
    from meshfl.secure.ckks import ckks_vector_from

    parts = [np.asarray(ckks_vector_from(sealer.context, c).decrypt()) for c in sealed.chunks]
    return np.concatenate(parts)[: sealed.length]


def _updates(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)  # data, not privacy randomness
    return [rng.normal(0.0, 1.0, LENGTH) for _ in range(n)]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if not (np.all(np.isfinite(a)) and np.std(a) > 0):
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def test_without_masks_the_colluders_read_the_victims_update_exactly(backend):
    """The control: today's sealing, where the coordinator hands the victim's ciphertext to
    a colluding MSP, who decrypts it with the shared secret key."""
    sealer, aggregator = backend
    victim = _updates(1)[0]
    sealed = sealer.seal(victim)  # what the coordinator receives from the victim
    aggregator.check(sealed, expected_length=LENGTH)
    estimate = _raw_decrypt(sealer, sealed)  # the colluding MSP's key
    np.testing.assert_allclose(estimate, victim, atol=1e-4)
    assert _corr(estimate, victim) > 0.999999


# --- with masks (issue 13) -----------------------------------------------------------------


def _masked_round(sealer, aggregator, updates):
    """Every MSP masks its sealed update; returns (nodes, keys, plan graph, masked, shares)."""
    from meshfl.secure.masking import KeyPair, round_scope
    from meshfl.secure.secagg import RoundMasking, mask_update

    nodes = list(range(11, 11 + len(updates)))
    keys = {n: KeyPair() for n in nodes}
    masking = RoundMasking.draw(nodes, {n: k.public for n, k in keys.items()})
    scope = round_scope("run", "session", "agent", 1)
    masked = {}
    for node, update in zip(nodes, updates, strict=True):
        sealed, shares = mask_update(
            sealer,
            sealer.seal(update),
            node=node,
            keys=keys[node],
            plan=masking.plan_for(node),
            scope=scope,
        )
        masking.accept(node, shares)
        masked[node] = sealed
    return nodes, keys, masking, masked, scope


def test_with_masks_the_coordinator_and_one_msp_learn_nothing_of_another_update(backend):
    """Four MSPs; the coordinator holds every masked ciphertext, the colluding MSP the
    secret key and its own pairwise seeds. Their estimates of the victim's update:
    decrypting its ciphertext, and decrypting it after removing every mask the colluder
    knows. Both are uncorrelated with the truth."""
    from meshfl.secure.masking import expand, pairwise_seed

    sealer, aggregator = backend
    updates = _updates(4)
    nodes, keys, _, masked, scope = _masked_round(sealer, aggregator, updates)
    victim, colluder = nodes[0], nodes[1]
    for sealed in masked.values():
        aggregator.check(sealed, expected_length=LENGTH)  # still valid ciphertexts
    truth = updates[0]

    direct = _raw_decrypt(sealer, masked[victim])
    # The colluder removes the pairwise mask it shares with the victim (it knows s_vc).
    seed = pairwise_seed(keys[colluder].agree(keys[victim].public), scope, victim, colluder)
    mask = expand(seed, sealer.moduli, sealer.mask_size(LENGTH))
    stripped = sealer.shift(masked[victim], mask, subtract=victim < colluder)
    informed = _raw_decrypt(sealer, stripped)
    for estimate in (direct, informed):
        assert abs(_corr(estimate, truth)) < 0.06  # 3000 values: chance level ~ 0.018
    # Nor does a masked ciphertext open under the MSPs' checks: it is noise to them.
    with pytest.raises(InvalidUpdateError):
        sealer.open(masked[victim])


def test_the_sum_of_masked_updates_still_opens_to_the_sum(backend, unmask_replies):
    sealer, aggregator = backend
    updates = _updates(4)
    nodes, keys, masking, masked, scope = _masked_round(sealer, aggregator, updates)
    total = aggregator.add(list(masked.values()))
    replies = unmask_replies(masking, keys, scope, survivors=nodes, sampled=nodes)
    correction = masking.correction(nodes, nodes, replies, aggregator, LENGTH)
    opened = sealer.open(aggregator.shift(total, correction, subtract=True))
    np.testing.assert_allclose(opened, np.sum(updates, axis=0), atol=1e-4)
