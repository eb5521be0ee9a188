"""Pairwise masks inside CKKS ciphertexts: the arithmetic of secure aggregation (no I/O).

The protocol is SecAgg+ (Bell, Bonawitz, Gascón, Lepoint and Raykova, "Secure single-server
aggregation with (poly)logarithmic overhead", CCS 2020), itself Bonawitz et al.'s SecAgg
("Practical secure aggregation for privacy-preserving machine learning", CCS 2017) on a
sparse random graph. Here the masked values are not the update's numbers but the
coefficients of the CKKS ciphertexts that carry it.

Why the masks go into the ciphertext
------------------------------------
A CKKS ciphertext is a pair of polynomials ``(c0, c1)`` whose coefficients are residues
modulo each prime ``q_l`` of the ciphertext modulus (SEAL keeps them in NTT form, a linear
bijection of the same ring). Decryption computes ``c0 + c1·s = m + e``. Adding ciphertexts
adds coefficients modulo ``q_l``, one by one. So:

* masking ``c0`` alone suffices: ``c0' = c0 + r`` with ``r`` uniform modulo ``q_l`` and
  independent of everything else is itself uniform and independent of ``m``, whatever the
  reader knows of ``c1`` and ``s``: a key holder decrypts ``m + e + r·1``, noise;
* the masks cancel *exactly* in a sum (the pairwise ones: ``+r_ij`` at ``i``, ``-r_ij`` at
  ``j``), because the sum is taken modulo the same primes; the self-masks ``PRG(b_i)`` are
  subtracted by the coordinator once it has reconstructed ``b_i`` from Shamir shares;
* the NTT form changes nothing: a uniform vector in the NTT domain is a uniform polynomial.

What this module gives
----------------------
* :func:`expand`: a 32-byte seed → uniform residues modulo each ``q_l``: AES-256-CTR keystream
  (one stream per prime, read off OpenSSL's GCM encryptor, which runs the same counter mode
  faster), 64-bit words cut to ``q_l``'s bit length and *rejected* at or above ``q_l`` (no
  modular bias; a SEAL prime lies just below a power of 2, so almost no word is rejected).
  :func:`mask_sum` adds many seeds' residues block by block, a group of streams at a time,
  in a few numpy passes.
* :func:`add_mod`, :func:`sub_mod`: residues modulo each prime, in place.
* :func:`split_secret`, :func:`recover_secret`: Shamir's secret sharing of a 32-byte seed over
  the prime field ``2^521 - 1``, the share holders' node ids as abscissae; coefficients from
  OS entropy.
* :func:`pairwise_seed`, :func:`share_key`, :func:`self_share_key`: HKDF-SHA-256 from an
  X25519 shared secret, domain-separated by purpose and by the round's scope.
* :func:`encrypt_share`, :func:`decrypt_share`: AES-256-GCM, the scope and the pair as
  associated data.
* :func:`neighbour_graph`, :func:`default_degree`, :func:`threshold_for`: the round's
  random Harary graph (SecAgg+), drawn from OS entropy, and the Shamir threshold.

All randomness that must stay secret (self-mask seeds, Shamir coefficients, key pairs, the
graph) comes from the operating system (:mod:`secrets`, :func:`os.urandom`); nothing here
takes a seed but the masks' own seeds. Flower's SecAgg+ pseudo-random generator (flower
issue 7522) is not used.
"""

from __future__ import annotations

import hmac
import math
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meshfl.config.errors import ConfigError, InvalidUpdateError

__all__ = [
    "COMPLETE_UP_TO",
    "DEFAULT_DROPOUT",
    "SEED_BYTES",
    "KeyPair",
    "add_mod",
    "decrypt_share",
    "default_degree",
    "encrypt_share",
    "expand",
    "mask_sum",
    "neighbour_graph",
    "pairwise_seed",
    "recover_secret",
    "round_scope",
    "self_share_key",
    "share_key",
    "shared_secret",
    "split_secret",
    "sub_mod",
    "threshold_for",
]

SEED_BYTES = 32
"""Length of every mask seed (self-mask ``b_i`` and pairwise ``s_ij``)."""

DEFAULT_DROPOUT = 1 / 3
"""Share of an MSP's share holders that may vanish between sending and unmasking."""

COMPLETE_UP_TO = 24
"""Rounds of at most this many MSPs mask over the complete graph; larger ones over a random
Harary graph of :func:`default_degree` neighbours (SecAgg+)."""

_PRIME = (1 << 521) - 1  # Mersenne: the Shamir field, holds any 32-byte secret
_SHARE_BYTES = 66
_INFO = b"meshfl-secagg-v1"


# --- seeds to residues ------------------------------------------------------------------


def expand(seed: bytes, moduli: Sequence[int], count: int) -> np.ndarray:
    """``count`` uniform residues modulo each prime of ``moduli``: shape ``(L, count)``.

    One AES-256 counter-mode keystream per prime (:func:`_keystream`), read as little-endian
    64-bit words, cut to the prime's bit length and rejected at or above it: the residues
    are the first ``count`` words that pass, in stream order. Exactly uniform, and the same
    on every machine for the same seed (whatever the block size it is read in).
    """
    _check_seed(seed)
    out = np.empty((len(moduli), count), dtype=np.uint64)
    if count == 0:
        return out
    width = min(_BLOCK, count)
    buf = np.empty((1, width + _BLOCK_WORDS), dtype="<u8")
    rows = [buf[0].view(np.uint8).data]
    for level, q in enumerate(moduli):
        streams = [_keystream(seed, level)]
        for start in range(0, count, _BLOCK):
            w = min(_BLOCK, count - start)
            out[level, start : start + w] = _draw(streams, buf, rows, w, int(q))[0]
    return out


_BLOCK_WORDS = 2  # AES's 16-byte block: update_into needs this much room beyond the data
_BLOCK = 1 << 13
"""Residues per stream read at a time: a group of :data:`_GROUP` streams' blocks (960 KiB)
stays in cache between the keystream, the cut, the check and the sum."""
_GROUP = 15
"""Streams summed before one reduction: 15 residues below 2^60, plus a reduced partial sum,
stay below 2^64."""


def _check_seed(seed: bytes) -> None:
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed is {SEED_BYTES} bytes; got {len(seed)}")


def _keystream(seed: bytes, level: int) -> Any:
    """The keystream of ``seed`` for the prime of index ``level``: AES-256 in counter mode,
    ``AES_seed(IV || c)`` for the 32-bit big-endian counter ``c = 2, 3, ...`` and the
    96-bit ``IV`` the level's index (big-endian).

    That is exactly the keystream an AES-256-GCM encryptor XORs its plaintext with, so it is
    read off GCM's encryptor fed zeros (its tag is never asked for): OpenSSL's GCM runs
    AES with wide vector instructions (VAES) where its CTR mode does not, about 1.7 times
    the throughput. A stream never wraps its counter: GCM refuses more than 2^36 - 32 bytes
    (64 GiB, some 8·10^9 residues per prime) under one IV, and each (seed, level) is one IV.
    """
    return Cipher(algorithms.AES(seed), modes.GCM(int(level).to_bytes(12, "big"))).encryptor()


def _draw(
    streams: Sequence[Any], buf: np.ndarray, rows: Sequence[memoryview], width: int, q: int
) -> np.ndarray:
    """The next ``width`` residues below ``q`` of each stream, in ``buf[:len(streams)]``
    (a view of it): keystream words cut to ``q``'s bit length, rejected at or above it."""
    zeros = _zeros(8 * width)
    for stream, row in zip(streams, rows, strict=False):
        stream.update_into(zeros, row)
    words = buf[: len(streams), :width]
    cut = np.uint64((1 << q.bit_length()) - 1)
    np.bitwise_and(words, cut, out=words)
    bound = np.uint64(q)
    if width and words.max() >= bound:  # rare: a SEAL prime is just below 2^bits
        for stream, row in zip(streams, words, strict=False):
            if row.max() >= bound:
                _refill(stream, row, cut, bound)
    return words


def _refill(stream: Any, row: np.ndarray, cut: np.uint64, bound: np.uint64) -> None:
    """Replace ``row``'s rejected words: keep the accepted ones in order and append the
    next accepted words of the stream, drawing exactly what is still missing each time (so
    the next block starts where this one stopped)."""
    kept = row[row < bound]
    while kept.size < row.size:
        need = row.size - kept.size
        more = np.frombuffer(stream.update(bytes(8 * need)), dtype="<u8") & cut
        kept = np.concatenate((kept, more[more < bound]))
    row[:] = kept


_ZERO_CACHE: list[bytes] = [b""]


def _zeros(size: int) -> memoryview:
    """``size`` zero bytes, from one buffer kept between calls (its pages already touched)."""
    if len(_ZERO_CACHE[0]) < size:
        _ZERO_CACHE[0] = bytes(size)
    return memoryview(_ZERO_CACHE[0])[:size]


def mask_sum(terms: Iterable[tuple[bytes, bool]], moduli: Sequence[int], count: int) -> np.ndarray:
    """``Σ ± expand(seed)`` modulo each prime, for ``(seed, positive)`` terms.

    Block by block (:data:`_BLOCK` residues), the keystreams of up to :data:`_GROUP` terms
    of one sign are written side by side, cut and checked in one pass each, summed down
    the group without reduction and reduced once; positive minus negative last. Equal to
    adding :func:`expand` term by term (tested), in a few numpy passes per group.
    """
    terms = [(seed, bool(positive)) for seed, positive in terms]
    for seed, _ in terms:
        _check_seed(seed)
    if any(int(q) >= 1 << 60 for q in moduli):
        raise ValueError("mask_sum needs primes below 2^60")
    out = np.empty((len(moduli), count), dtype=np.uint64)
    if count == 0:
        return out
    width = min(_BLOCK, count)
    sides = [[seed for seed, positive in terms if positive == sign] for sign in (True, False)]
    buf = np.empty((max(1, min(_GROUP, max(map(len, sides)))), width + _BLOCK_WORDS), "<u8")
    rows = [row.view(np.uint8).data for row in buf]
    sums = np.empty((3, width), dtype=np.uint64)  # positive, negative, scratch
    for level, q in enumerate(moduli):
        q = int(q)
        bound = np.uint64(q)
        streams = [[_keystream(seed, level) for seed in side] for side in sides]
        for start in range(0, count, _BLOCK):
            w = min(_BLOCK, count - start)
            pos, neg, scratch = sums[0, :w], sums[1, :w], sums[2, :w]
            for side, acc in zip(streams, (pos, neg), strict=True):
                acc.fill(0)
                for g in range(0, len(side), _GROUP):
                    group = side[g : g + _GROUP]
                    words = _draw(group, buf, rows, w, q)
                    if g == 0:
                        np.add.reduce(words, axis=0, out=acc)
                    else:
                        np.add.reduce(words, axis=0, out=scratch)
                        acc += scratch  # acc < q: below 16 · 2^60 = 2^64
                    if len(group) > 1 or g > 0:
                        np.remainder(acc, bound, out=acc)
            target = out[level, start : start + w]
            np.subtract(pos, neg, out=target)  # wraps to above 2^64 - q where it borrows
            np.add(target, bound, out=scratch)
            np.minimum(target, scratch, out=target)
    return out


def _column(moduli: Sequence[int]) -> np.ndarray:
    return np.asarray([int(q) for q in moduli], dtype=np.uint64)[:, None]


def add_mod(acc: np.ndarray, delta: np.ndarray, moduli: Sequence[int]) -> np.ndarray:
    """``acc += delta`` modulo each row's prime, in place (both reduced; primes < 2^63)."""
    q = _column(moduli)
    acc += delta
    np.minimum(acc, acc - q, out=acc)  # acc - q wraps above acc unless acc >= q
    return acc


def sub_mod(acc: np.ndarray, delta: np.ndarray, moduli: Sequence[int]) -> np.ndarray:
    """``acc -= delta`` modulo each row's prime, in place."""
    q = _column(moduli)
    acc -= delta  # wraps modulo 2^64 where it borrows, to above 2^64 - q
    np.minimum(acc, acc + q, out=acc)  # acc + q brings a borrowed value back below q
    return acc


# --- Shamir's secret sharing ------------------------------------------------------------


def split_secret(secret: bytes, threshold: int, holders: Sequence[int]) -> dict[int, bytes]:
    """Shares of ``secret`` for each holder (its node id is the abscissa); any ``threshold``
    of them rebuild it, fewer say nothing of it. Coefficients come from OS entropy."""
    xs = [int(x) for x in holders]
    if len(set(xs)) != len(xs) or any(not 0 < x < _PRIME for x in xs):
        raise ValueError("share holders must be distinct positive node ids")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} must lie in [1, {len(xs)}] holders")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(_PRIME) for _ in range(threshold - 1)]
    top = coefficients[::-1]
    shares = {}
    for x in xs:
        # Horner over the integers, one reduction at the end: with node ids below 2^64 the
        # value grows by at most 64 bits a step, cheaper than reducing 521-bit numbers each
        # step; the result modulo 2^521 - 1 is the same.
        y = 0
        for c in top:
            y = y * x + c
        shares[x] = (y % _PRIME).to_bytes(_SHARE_BYTES, "big")
    return shares


def recover_secret(shares: Mapping[int, bytes], threshold: int, size: int = SEED_BYTES) -> bytes:
    """The secret behind ``threshold`` of ``shares`` (Lagrange interpolation at 0).

    With more shares than the threshold, a second subset rebuilds it again and both must
    agree (a wrong share is caught instead of silently corrupting the sum). Raises
    :class:`InvalidUpdateError` with too few shares or inconsistent ones.
    """
    points = sorted((int(x), int.from_bytes(y, "big")) for x, y in shares.items())
    if len(points) < threshold:
        raise InvalidUpdateError(f"{len(points)} share(s), fewer than the threshold {threshold}")
    secret = _interpolate(points[:threshold])
    if len(points) > threshold and _interpolate(points[-threshold:]) != secret:
        raise InvalidUpdateError("the shares are inconsistent (a holder sent a wrong share)")
    if secret >> (8 * size):
        raise InvalidUpdateError("the shares do not rebuild a seed")
    return secret.to_bytes(size, "big")


def _interpolate(points: Sequence[tuple[int, int]]) -> int:
    """Lagrange at 0, with one modular inversion for all points (Montgomery's trick)."""
    nums, dens = [], []
    for i, (xi, _) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * xj % _PRIME
                den = den * (xj - xi) % _PRIME
        nums.append(num)
        dens.append(den)
    prefix = [1]
    for den in dens:
        prefix.append(prefix[-1] * den % _PRIME)
    inverse = pow(prefix[-1], -1, _PRIME)  # of the product of every denominator
    total = 0
    for i in range(len(points) - 1, -1, -1):
        inv_i = inverse * prefix[i] % _PRIME  # 1 / dens[i]
        inverse = inverse * dens[i] % _PRIME
        total = (total + points[i][1] * nums[i] % _PRIME * inv_i) % _PRIME
    return total


# --- keys and derivations ---------------------------------------------------------------


class KeyPair:
    """An MSP's X25519 key pair for one run, from OS entropy (or its saved private bytes)."""

    def __init__(self, private: bytes | None = None) -> None:
        self._key = (
            X25519PrivateKey.generate()
            if private is None
            else X25519PrivateKey.from_private_bytes(private)
        )
        self.public = self._key.public_key().public_bytes_raw()
        self._agreed: dict[bytes, bytes] = {}
        self._prks: dict[bytes, bytes] = {}
        self._own_prk: bytes | None = None

    @property
    def private_bytes(self) -> bytes:
        """The 32 raw private bytes (to keep in the MSP's state; never sent)."""
        return self._key.private_bytes_raw()

    def agree(self, peer_public: bytes) -> bytes:
        """The X25519 shared secret with a peer (raises on a malformed or low-order key);
        remembered for the key pair's life (a run): masking and unmasking need it again."""
        if peer_public not in self._agreed:
            self._agreed[peer_public] = shared_secret(self._key, peer_public)
        return self._agreed[peer_public]

    # The derivations below equal the module's functions of the same names (tested); they
    # keep HKDF's extract step, which depends on the pair only and not on the round, for
    # the key pair's life next to the secret it comes from, and run only the expand step.

    def pairwise_seed(self, peer_public: bytes, scope: bytes, a: int, b: int) -> bytes:
        """:func:`pairwise_seed` of the secret agreed with ``peer_public``."""
        lo, hi = sorted((int(a), int(b)))
        return _expand(self._prk(peer_public), b"mask", scope, _id(lo), _id(hi))

    def share_key(self, peer_public: bytes, scope: bytes, sender: int, receiver: int) -> bytes:
        """:func:`share_key` of the secret agreed with ``peer_public``."""
        return _expand(self._prk(peer_public), b"share", scope, _id(sender), _id(receiver))

    def self_share_key(self, scope: bytes, node: int) -> bytes:
        """:func:`self_share_key` of this key pair's private bytes."""
        if self._own_prk is None:
            self._own_prk = _extract(self.private_bytes)
        return _expand(self._own_prk, b"own-share", scope, _id(node))

    def _prk(self, peer_public: bytes) -> bytes:
        if peer_public not in self._prks:
            self._prks[peer_public] = _extract(self.agree(peer_public))
        return self._prks[peer_public]


def shared_secret(key: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519(key, peer); refuses a key that is not 32 bytes or yields the zero secret."""
    if len(peer_public) != 32:
        raise InvalidUpdateError("a peer's public key is not 32 bytes")
    try:
        return key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise InvalidUpdateError("a peer's public key is a low-order point") from None


def round_scope(run_id: str, session: str, agent: str, server_round: int) -> bytes:
    """What every seed and share of one round is bound to."""
    return "\x1f".join((run_id, session, agent, str(int(server_round)))).encode()


def _hkdf(material: bytes, *parts: bytes) -> bytes:
    """HKDF-SHA-256 (RFC 5869) of ``material``, no salt, 32 bytes, info ``_INFO`` and
    ``parts`` joined by 0x1e."""
    return _expand(_extract(material), *parts)


def _extract(material: bytes) -> bytes:
    """HKDF-Extract without salt: HMAC-SHA-256 keyed with 32 zero bytes."""
    return hmac.digest(bytes(32), material, "sha256")


def _expand(prk: bytes, *parts: bytes) -> bytes:
    """HKDF-Expand to 32 bytes (one SHA-256 block: ``T(1) = HMAC(prk, info || 0x01)``)."""
    info = b"\x1e".join((_INFO, *parts))
    return hmac.digest(prk, info + b"\x01", "sha256")


def _id(node: int) -> bytes:
    return int(node).to_bytes(8, "big", signed=False)


def pairwise_seed(shared: bytes, scope: bytes, a: int, b: int) -> bytes:
    """``s_ab`` for one round: the same at both ends, new every round and coordinator session."""
    lo, hi = sorted((int(a), int(b)))
    return _hkdf(shared, b"mask", scope, _id(lo), _id(hi))


def share_key(shared: bytes, scope: bytes, sender: int, receiver: int) -> bytes:
    """The AES-256 key of the one share ``sender`` sends ``receiver`` in this round."""
    return _hkdf(shared, b"share", scope, _id(sender), _id(receiver))


def self_share_key(private: bytes, scope: bytes, node: int) -> bytes:
    """The key of the share an MSP keeps of its own seed (held by the coordinator meanwhile)."""
    return _hkdf(private, b"own-share", scope, _id(node))


def encrypt_share(key: bytes, share: bytes, aad: bytes) -> bytes:
    """AES-256-GCM: 12-byte random nonce, then the ciphertext and its tag."""
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, share, aad)


def decrypt_share(key: bytes, box: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`encrypt_share`; raises :class:`InvalidUpdateError` if forged."""
    from cryptography.exceptions import InvalidTag

    if len(box) < 12 + 16:
        raise InvalidUpdateError("an encrypted share is truncated")
    try:
        return AESGCM(key).decrypt(box[:12], box[12:], aad)
    except InvalidTag:
        raise InvalidUpdateError("an encrypted share does not authenticate") from None


# --- the round's graph and threshold ----------------------------------------------------


def default_degree(n: int) -> int:
    """Neighbours per MSP for a round of ``n``: everyone up to :data:`COMPLETE_UP_TO`, else
    the even number at or above ``3·log2(n)`` (SecAgg+'s O(log n))."""
    if n <= COMPLETE_UP_TO:
        return max(0, n - 1)
    k = math.ceil(3 * math.log2(n))
    return min(n - 1, k + (k % 2))


def neighbour_graph(nodes: Sequence[int], degree: int | None = None) -> dict[int, tuple[int, ...]]:
    """Each node's neighbours: a Harary graph on a random order of ``nodes`` (OS entropy).

    Position ``p`` is joined to ``p ± 1, ..., p ± degree/2``; with ``degree >= n - 1`` the
    graph is complete. The relation is symmetric: ``j`` in ``graph[i]`` iff ``i`` in
    ``graph[j]``.
    """
    order = [int(n) for n in nodes]
    n = len(order)
    k = default_degree(n) if degree is None else int(degree)
    if k >= n - 1:
        return {a: tuple(sorted(b for b in order if b != a)) for a in order}
    secrets.SystemRandom().shuffle(order)
    half = (k + 1) // 2
    graph: dict[int, set[int]] = {a: set() for a in order}
    for p, a in enumerate(order):
        for step in range(1, half + 1):
            b = order[(p + step) % n]
            graph[a].add(b)
            graph[b].add(a)
    return {a: tuple(sorted(bs)) for a, bs in graph.items()}


def threshold_for(holders: int, dropout: float = DEFAULT_DROPOUT) -> int:
    """Shares needed to rebuild a seed held by ``holders`` (an MSP and its neighbours), so
    that up to ``⌊dropout · holders⌋`` of them may vanish: ``holders - ⌊dropout · holders⌋``.

    ``dropout`` must lie in [0, 1/2): the threshold then stays above half the holders (two
    disjoint halves can never both rebuild a seed) and at 2 or more (one colluding MSP
    never rebuilds another's seed alone).
    """
    if isinstance(dropout, bool) or not (isinstance(dropout, int | float) and 0 <= dropout < 0.5):
        raise ConfigError(
            "The 'masking_dropout' parameter must be a float in [0, 0.5) (the share of an "
            "MSP's neighbours that may drop between sending and unmasking). "
            f"Got {dropout!r} instead."
        )
    return max(2, holders - math.floor(dropout * holders))
