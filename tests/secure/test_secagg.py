"""The masking protocol (secure/secagg.py) round by round: dropouts, refusals, failing closed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meshfl.config.errors import ConfigError, InvalidUpdateError
from meshfl.secure.ckks import ephemeral_ckks_backend
from meshfl.secure.masking import (
    KeyPair,
    expand,
    neighbour_graph,
    recover_secret,
    round_scope,
    split_secret,
    threshold_for,
)
from meshfl.secure.secagg import (
    MaskedShares,
    MaskRecoveryError,
    RoundMasking,
    answer_unmask,
    mask_update,
    seal_masked,
    start_mask,
)

LENGTH = 300


@pytest.fixture(scope="module")
def backend():
    return ephemeral_ckks_backend()


def _round(
    backend, unmask_replies, n, *, unmask_drops=0, send_drops=0, degree=None, in_thread=False
):
    """n sampled MSPs; ``send_drops`` send nothing (D0), ``unmask_drops`` send but never
    answer the unmask request (D1); ``in_thread``: each MSP's mask is computed in the
    worker thread, as the ClientApp does (:func:`start_mask`, :func:`seal_masked`), else
    added after sealing (:func:`mask_update`).
    Returns (opened sum or MaskRecoveryError, survivors' sum)."""
    sealer, aggregator = backend
    rng = np.random.default_rng(n)
    nodes = list(range(101, 101 + n))
    keys = {node: KeyPair() for node in nodes}
    masking = RoundMasking.draw(nodes, {k: v.public for k, v in keys.items()}, degree=degree)
    scope = round_scope("r", "s", "a", 3)
    senders = nodes[send_drops:]
    updates, masked = {}, []
    for node in senders:
        updates[node] = rng.normal(size=LENGTH)
        how = dict(node=node, keys=keys[node], plan=masking.plan_for(node), scope=scope)
        if in_thread:
            pending = start_mask(sealer, LENGTH, **how)
            sealed, shares = seal_masked(sealer, updates[node], pending)
        else:
            sealed, shares = mask_update(sealer, sealer.seal(updates[node]), **how)
        masking.accept(node, shares)
        masked.append(sealed)
    total = aggregator.add(masked)
    replies = unmask_replies(
        masking, keys, scope, survivors=senders, sampled=nodes, answering=senders[unmask_drops:]
    )
    expected = np.sum([updates[node] for node in senders], axis=0)
    try:
        correction = masking.correction(senders, nodes, replies, aggregator, LENGTH)
    except MaskRecoveryError as err:
        return err, expected
    return sealer.open(aggregator.shift(total, correction, subtract=True)), expected


@pytest.mark.parametrize(("share", "in_thread"), [(0.0, False), (0.1, False), (0.3, True)])
def test_a_round_survives_dropouts_up_to_the_threshold(backend, share, in_thread, unmask_replies):
    n = 10
    drops = math.floor(share * n)
    opened, expected = _round(backend, unmask_replies, n, unmask_drops=drops, in_thread=in_thread)
    assert not isinstance(opened, MaskRecoveryError)
    np.testing.assert_allclose(opened, expected, atol=1e-4)


def test_a_round_with_40_percent_dropped_fails_closed_by_name(backend, unmask_replies):
    opened, _ = _round(backend, unmask_replies, 10, unmask_drops=4)
    assert isinstance(opened, MaskRecoveryError)
    assert opened.kind == "unmask_shares"
    assert "threshold t=7" in str(opened)


def test_msps_that_sent_nothing_have_their_pairwise_masks_removed(backend, unmask_replies):
    opened, expected = _round(backend, unmask_replies, 9, send_drops=2)
    assert not isinstance(opened, MaskRecoveryError)
    np.testing.assert_allclose(opened, expected, atol=1e-4)


def test_a_sparse_graph_round_with_dropouts(backend, unmask_replies):
    opened, expected = _round(backend, unmask_replies, 40, unmask_drops=2, degree=8)
    assert not isinstance(opened, MaskRecoveryError)
    np.testing.assert_allclose(opened, expected, atol=1e-4)


def test_an_unmask_request_names_only_the_msps_neighbourhood():
    """Whole survivor lists to every MSP cost n² bytes a round; each MSP needs its own
    neighbourhood's split, and gets exactly that."""
    nodes = list(range(101, 141))
    masking = RoundMasking.draw(nodes, {n: KeyPair().public for n in nodes}, degree=8)
    sent = nodes[3:]
    for node in sent:
        holders = (node, *masking.graph[node])
        masking.accept(node, MaskedShares(holders, tuple(b"x" for _ in holders)))
    for node, request in masking.requests(sent, nodes).items():
        near = {node, *masking.graph[node]}
        assert set(request.survivors) == near & set(sent)
        assert set(request.dropped) == near - set(sent)
        assert len(request.survivors) + len(request.dropped) <= 9


def test_a_pairwise_mask_held_only_by_vanished_msps_fails_closed(backend, unmask_replies):
    """Ten MSPs, one sends nothing, one survivor vanishes before unmasking: the seed it
    shares with the silent one is lost with it (only the two of them ever held it)."""
    opened, _ = _round(backend, unmask_replies, 10, send_drops=1, unmask_drops=1)
    assert isinstance(opened, MaskRecoveryError)
    assert opened.kind == "unmask_pairwise"


def test_an_msp_refuses_to_name_a_neighbour_both_sent_and_dropped():
    from meshfl.secure.secagg import UnmaskRequest

    keys = {n: KeyPair() for n in (1, 2, 3)}
    request = UnmaskRequest(survivors=(1, 2, 3), dropped=(2,))
    with pytest.raises(InvalidUpdateError, match="both"):
        answer_unmask(request, node=1, keys=keys[1], neighbours={2: keys[2].public}, scope=b"x")
    small = UnmaskRequest(survivors=(1, 2), dropped=(3,))
    with pytest.raises(InvalidUpdateError, match="fewer than 3"):
        answer_unmask(small, node=1, keys=keys[1], neighbours={2: keys[2].public}, scope=b"x")
    silent = UnmaskRequest(survivors=(1, 3, 4), dropped=())
    with pytest.raises(InvalidUpdateError, match="neither"):
        answer_unmask(silent, node=1, keys=keys[1], neighbours={2: keys[2].public}, scope=b"x")


def test_shamir_rebuilds_from_any_threshold_and_catches_a_wrong_share():
    secret = bytes(range(32))
    shares = split_secret(secret, 3, [5, 9, 12, 40])
    assert recover_secret({k: shares[k] for k in (9, 12, 40)}, 3) == secret
    assert recover_secret(shares, 3) == secret
    bad = dict(shares)
    bad[40] = (int.from_bytes(bad[40], "big") + 1).to_bytes(66, "big")
    with pytest.raises(InvalidUpdateError, match="inconsistent"):
        recover_secret(bad, 3)
    with pytest.raises(InvalidUpdateError, match="fewer"):
        recover_secret({5: shares[5], 9: shares[9]}, 3)


def test_expansion_is_uniform_below_each_prime_and_deterministic(backend):
    moduli = backend[1].moduli
    seed = bytes(32)
    a = expand(seed, moduli, 50_000)
    assert np.array_equal(a, expand(seed, moduli, 50_000))
    assert a.max() < moduli[0]
    # the top bit of a 60-bit prime's residues is set about (q - 2^59) / q of the time
    top = float(np.mean(a[0] >> np.uint64(59)))
    expected = (moduli[0] - 2**59) / moduli[0]
    assert abs(top - expected) < 0.01


def test_the_graph_is_symmetric_and_of_the_asked_degree():
    nodes = list(range(1, 61))
    graph = neighbour_graph(nodes, 10)
    assert all(len(peers) == 10 for peers in graph.values())
    assert all(a in graph[b] for a, peers in graph.items() for b in peers)
    assert neighbour_graph([1, 2, 3]) == {1: (2, 3), 2: (1, 3), 3: (1, 2)}


def test_the_dropout_parameter_is_checked_with_a_sentence():
    assert threshold_for(10) == 7
    assert threshold_for(3) == 2
    with pytest.raises(ConfigError, match="'masking_dropout' parameter must be a float"):
        threshold_for(10, 0.5)


def test_expansion_rejects_words_at_or_above_the_modulus():
    """A modulus far below its power of 2 (a quarter of the words rejected): still every
    residue below it, the same for the same seed, and the mask sum matches the naive one."""
    from meshfl.secure.masking import mask_sum

    q = 3 << 58
    a = expand(bytes(range(32)), [q], 20_000)
    assert a.max() < q and np.array_equal(a, expand(bytes(range(32)), [q], 20_000))
    assert abs(float(np.mean(a[0] >= 1 << 59)) - 1 / 3) < 0.02
    seeds = [bytes([i]) * 32 for i in range(20)]
    terms = [(s, i % 3 != 0) for i, s in enumerate(seeds)]
    naive = 0
    for seed, positive in terms:
        e = expand(seed, [q], 50)[0].astype(object)
        naive = naive + (e if positive else -e)
    assert [int(v) for v in mask_sum(terms, [q], 50)[0]] == [int(v) % q for v in naive]


def test_masking_while_sealing_equals_masking_after(backend):
    """``seal(values, mask=)`` writes the ciphertexts ``shift`` would: both open, summed with
    the mask subtracted, to the values."""
    sealer, aggregator = backend
    values = np.random.default_rng(3).normal(size=5000)
    mask = expand(bytes(32), sealer.moduli, sealer.mask_size(values.size))
    sealed = sealer.seal(values, mask=mask)
    aggregator.check(sealed, expected_length=values.size)
    with pytest.raises(InvalidUpdateError):
        sealer.open(sealed)
    opened = sealer.open(aggregator.shift(sealed, mask, subtract=True))
    np.testing.assert_allclose(opened, values, atol=1e-5)
    # a mask given as a function is asked for once, after encryption, and used the same way
    asked = []
    later = sealer.seal(values, mask=lambda: asked.append(1) or mask)
    assert asked == [1]
    opened = sealer.open(aggregator.shift(later, mask, subtract=True))
    np.testing.assert_allclose(opened, values, atol=1e-5)


def test_an_msp_refuses_a_plan_whose_threshold_is_not_above_half_its_holders(backend):
    """A coordinator that lowers t to what one colluding neighbour and the MSP's own share
    reach would rebuild the self-mask seed without the honest holders: refused. Every
    threshold the coordinator draws itself (threshold_for, any dropout) passes."""
    from meshfl.secure.secagg import MaskingPlan, mask_for

    sealer, _ = backend
    keys = {n: KeyPair() for n in range(1, 6)}
    peers = (2, 3, 4, 5)
    pubs = tuple(keys[p].public for p in peers)
    for bad in (1, 2, 6):  # 5 holders: t must be 3, 4 or 5
        with pytest.raises(InvalidUpdateError, match="threshold"):
            mask_for(sealer, LENGTH, node=1, keys=keys[1], plan=MaskingPlan(peers, pubs, bad),
                     scope=b"s")  # fmt: skip
    for dropout in (0.0, 1 / 3, 0.49):
        plan = MaskingPlan(peers, pubs, threshold_for(5, dropout))
        mask, shares = mask_for(sealer, LENGTH, node=1, keys=keys[1], plan=plan, scope=b"s")
        assert len(shares.boxes) == 5 and mask.size


def _reference_residues(seed: bytes, level: int, q: int, count: int) -> list[int]:
    """The PRG as specified, word by word: AES-256-CTR from the counter block
    ``level (12 bytes, big-endian) || 2`` (what GCM encrypts with), little-endian 64-bit
    words cut to q's bit length, the first ``count`` below q kept."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    block = int(level).to_bytes(12, "big") + (2).to_bytes(4, "big")
    stream = Cipher(algorithms.AES(seed), modes.CTR(block)).encryptor()
    cut, out = (1 << q.bit_length()) - 1, []
    while len(out) < count:
        word = int.from_bytes(stream.update(bytes(8)), "little") & cut
        if word < q:
            out.append(word)
    return out


@pytest.mark.parametrize("q", [(1 << 60) - (1 << 14) + 1, 3 << 58, (1 << 59) + 1])
def test_expansion_is_aes_256_ctr_with_rejection_across_blocks(q):
    """The vectorised expansion (blocks of 8192 words, rejected words refilled from the
    stream) gives exactly the word-by-word definition, for a prime with almost no
    rejections and for ones rejecting a quarter and a half of the words."""
    from meshfl.secure import masking

    seed = bytes(range(7, 39))
    count = 2 * masking._BLOCK + 5
    got = expand(seed, [q, q], count)
    for level in (0, 1):
        assert [int(v) for v in got[level]] == _reference_residues(seed, level, q, count)
    assert not np.array_equal(got[0], got[1])  # one stream per prime


@pytest.mark.parametrize("q", [(1 << 60) - (1 << 14) + 1, (1 << 59) + 1])
def test_mask_sum_equals_the_term_by_term_sum_beyond_one_group_and_one_block(q):
    """More terms than one group (15) and more residues than one block, both signs, two
    primes: the grouped sums equal adding each expansion modulo q."""
    from meshfl.secure import masking

    moduli = [q, (1 << 59) + (1 << 20) + 1]
    count = masking._BLOCK + 33
    for n_terms in (0, 1, 2, 16, 33):
        terms = [(bytes([i, 3]) * 16, i % 3 != 0) for i in range(n_terms)]
        got = masking.mask_sum(terms, moduli, count)
        for level, modulus in enumerate(moduli):
            naive = np.zeros(count, dtype=object)
            for seed, positive in terms:
                e = expand(seed, moduli, count)[level].astype(object)
                naive = naive + (e if positive else -e)
            assert [int(v) for v in got[level]] == [int(v) % modulus for v in naive]


def test_derivations_are_rfc_5869_hkdf_and_the_key_pair_caches_only_the_extract_step():
    """The module's HKDF (HMAC one-shots) equals cryptography's HKDF-SHA-256; a key pair's
    derivations (extract step kept per peer) equal the module's, at both ends of a pair."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from meshfl.secure import masking

    a, b = KeyPair(), KeyPair()
    scope = round_scope("run", "session", "agent", 7)
    shared = a.agree(b.public)
    info = b"\x1e".join((b"meshfl-secagg-v1", b"mask", scope, (3).to_bytes(8, "big"),
                         (9).to_bytes(8, "big")))  # fmt: skip
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
    assert masking.pairwise_seed(shared, scope, 9, 3) == expected
    for _ in range(2):  # computed, then from the kept extract step
        assert a.pairwise_seed(b.public, scope, 3, 9) == expected
        assert b.pairwise_seed(a.public, scope, 9, 3) == expected
        assert a.share_key(b.public, scope, 3, 9) == masking.share_key(shared, scope, 3, 9)
        assert b.share_key(a.public, scope, 3, 9) == masking.share_key(shared, scope, 3, 9)
        assert a.share_key(b.public, scope, 3, 9) != a.share_key(b.public, scope, 9, 3)
        assert a.self_share_key(scope, 3) == masking.self_share_key(a.private_bytes, scope, 3)
    with pytest.raises(InvalidUpdateError, match="32 bytes"):
        a.pairwise_seed(b"short", scope, 3, 9)
