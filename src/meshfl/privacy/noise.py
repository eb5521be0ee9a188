"""The one source of the randomness differential privacy rests on: noise and DP sampling.

Differential privacy holds only while nobody can tell the noise: whoever can regenerate it
subtracts it from a release and holds the noiseless update. Whoever knows which records a
DP-SGD step used loses the amplification by subsampling the accountant counts on. So every
privacy-relevant draw in meshfl — the Gaussian mechanism (:mod:`meshfl.privacy.mechanisms`),
MSP-level noise, DP-SGD's noise and its Poisson sampling (:mod:`meshfl.privacy.dpsgd` and
resource_allocation's own DP-SGD loop), the revenue agent's noisy histogram — comes from a
generator that these functions seed afresh, at every call, from the operating system's
entropy (:func:`secrets.randbits`, i.e. ``os.urandom``). No seed, configuration value or
message reaches them: there is no argument to pass one.

Seeds (``meshfl.simulate(seed=...)``, ``mesh.toml``) keep making data, partitions, model
initialisation and dropout masks reproducible. A run *with* differential privacy is
therefore not bit-for-bit reproducible; a run without it still is.

Caveats
-------
* The generators are ordinary fast ones — PCG64 for numpy, torch's Mersenne Twister (CPU)
  or Philox (CUDA) — with secret seeds of 128 (numpy) and 64 (torch) bits: not a
  cryptographically secure stream. Recovering such a generator's state takes many exact
  outputs, while a release shows each draw only added to data, once; we know of no attack
  along those lines, but this is weaker than a CSPRNG for every draw (which would cost a
  large factor of DP-SGD's speed).
* The Gaussian draws are floating-point numbers, and a release is *not* hardened against
  floating-point attacks (Mironov, "On Significance of the Least Significant Bits for
  Differential Privacy", CCS 2012; for the Gaussian mechanism and Opacus, Jin et al.,
  arXiv:2112.05307): the set of floats ``value + noise`` can take depends on ``value``, so
  an observer of the exact bits of one MSP's release could in principle tell neighbouring
  inputs apart. Opacus' ``secure_mode`` mitigates this by summing several draws (Holohan
  & Braghin, arXiv:2107.10138); meshfl does not (it would multiply the cost of drawing the
  noise), and has no snapping or discrete mechanism. Secure aggregation, under which the
  coordinator sees an MSP's release only inside a sum, limits this exposure; plaintext
  aggregation does not.

Testing
-------
:func:`fixed_noise_for_tests` makes the draws reproducible *inside a test*, e.g. to check
that, noise aside, a DP run depends only on its seed. It is test-only: no configuration,
message or :func:`meshfl.simulate` argument reaches it, and nothing in ``meshfl`` calls it.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["fixed_noise_for_tests", "noise_rng", "noise_torch_generator"]

_lock = threading.Lock()
_fixed: np.random.Generator | None = None  # set only by fixed_noise_for_tests


def _secret_bits(bits: int) -> int:
    """A fresh ``bits``-bit seed from the OS (or, inside ``fixed_noise_for_tests``, a fixed one)."""
    fixed = _fixed
    if fixed is None:
        return secrets.randbits(bits)
    with _lock:
        raw = fixed.bytes((bits + 7) // 8)
    return int.from_bytes(raw, "big") >> (-bits % 8)


def noise_rng() -> np.random.Generator:
    """A NumPy generator seeded with 128 fresh bits from the OS, for privacy noise.

    Take a new one for every release (one call of a mechanism); never seed, store or share
    it. The global NumPy state is neither used nor changed.

    Examples
    --------
    >>> a, b = noise_rng().normal(size=3), noise_rng().normal(size=3)
    >>> bool((a != b).all())
    True
    """
    return np.random.Generator(np.random.PCG64(_secret_bits(128)))


def noise_torch_generator(device: torch.device | str | None = None) -> torch.Generator:
    """A torch generator on ``device`` (default CPU) seeded with 64 fresh bits from the OS.

    For DP-SGD's noise and Poisson sampling: take one per training call. torch's global
    generators are neither used nor changed (``torch.manual_seed`` does not reach it).

    Examples
    --------
    >>> import torch
    >>> g, h = noise_torch_generator(), noise_torch_generator()
    >>> torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=h))
    False
    """
    import torch  # here, not at module level: the Gaussian mechanism needs no torch

    generator = torch.Generator(device=torch.device(device if device is not None else "cpu"))
    generator.manual_seed(_secret_bits(64))
    return generator


@contextmanager
def fixed_noise_for_tests(seed: int) -> Iterator[None]:
    """TEST ONLY: within this block the noise sources are seeded from ``seed``, reproducibly.

    Each call of :func:`noise_rng` / :func:`noise_torch_generator` still gets its own seed,
    drawn in order from one stream seeded by ``seed``, so the same sequence of calls gives the
    same noise. This removes all privacy: never call it outside a test. It is process-wide
    (all threads) and does not nest.
    """
    global _fixed
    if _fixed is not None:
        raise RuntimeError("fixed_noise_for_tests does not nest")
    _fixed = np.random.default_rng([0x7E57, int(seed)])
    try:
        yield
    finally:
        _fixed = None
