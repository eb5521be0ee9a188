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

:func:`record_releases_for_tests` lets a test audit the privacy actually given, independently
of the privacy ledger: within it, every place that draws privacy noise or Poisson-samples for
privacy reports what it *did* — the standard deviation it drew (and the root mean square of
the draws), the sensitivity it was calibrated for, the rate of each Poisson draw — as
:class:`NoiseDraw` and :class:`PoissonDraw` records, labelled with the MSP, node, run and
round that :func:`attribute_releases` names around an MSP's training.
``tests/privacy/test_independent_accounting.py`` recomputes each MSP's ε from them with
Google's dp-accounting. It is test-only in the same way; outside it, the hooks cost one
global ``None`` check.
"""

from __future__ import annotations

import contextvars
import math
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "NoiseDraw",
    "PoissonDraw",
    "attribute_releases",
    "fixed_noise_for_tests",
    "noise_rng",
    "noise_torch_generator",
    "observing",
    "record_releases_for_tests",
    "report_noise",
    "report_sampling",
]

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


# --------------------------------------------------------------------------- audit hooks


@dataclass(frozen=True)
class NoiseDraw:
    """One draw of privacy noise, as it was made (see :func:`record_releases_for_tests`).

    Attributes
    ----------
    mechanism : str
        ``"dp-sgd"`` (one step's noise on the sum of clipped gradients) or ``"gaussian"``.
    std : float
        Standard deviation per coordinate handed to the generator.
    sensitivity : float
        L2 sensitivity of the value the noise is added to, in the same units as ``std``:
        ``max_grad_norm / expected_batch`` for DP-SGD (whose buffer is divided by the
        expected batch), the ``sensitivity`` argument for the Gaussian mechanism.
    shares : int
        The draw is one of ``shares`` equal parts of a sum's noise (1: the whole noise).
    size : int
        Coordinates drawn.
    measured_std : float
        Root mean square of the values drawn (NaN when ``size`` is 0): what was added, not
        what was asked for.
    labels : mapping
        Who released it (``msp``, ``node``, ``run``, ``round``, ... from
        :func:`attribute_releases`).
    """

    mechanism: str
    std: float
    sensitivity: float
    shares: int
    size: int
    measured_std: float
    labels: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PoissonDraw:
    """One Poisson sampling draw made for privacy (see :func:`record_releases_for_tests`).

    ``where`` is ``"dp-sgd"`` (records of a batch) or ``"msp"`` (MSPs of a round); each of
    ``population`` candidates was included with probability ``rate``; ``drawn`` were.
    """

    where: str
    rate: float
    population: int
    drawn: int
    labels: Mapping[str, Any] = field(default_factory=dict)


_releases: list[NoiseDraw | PoissonDraw] | None = None  # set only by record_releases_for_tests
_releases_lock = threading.Lock()
_attribution: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "meshfl_release_attribution", default=None
)


def observing() -> bool:
    """Whether :func:`record_releases_for_tests` is active (the hooks' one check)."""
    return _releases is not None


@contextmanager
def record_releases_for_tests() -> Iterator[list[NoiseDraw | PoissonDraw]]:
    """TEST ONLY: collect a record of every privacy noise draw and Poisson draw, in order.

    Yields the list the records are appended to (from every thread). It does not change any
    draw. No configuration, message or :func:`meshfl.simulate` argument reaches it, and
    nothing in ``meshfl`` calls it. It is process-wide and does not nest.
    """
    global _releases
    if _releases is not None:
        raise RuntimeError("record_releases_for_tests does not nest")
    records: list[NoiseDraw | PoissonDraw] = []
    _releases = records
    try:
        yield records
    finally:
        _releases = None


@contextmanager
def attribute_releases(**labels: Any) -> Iterator[None]:
    """Label the draws made inside this block (e.g. ``msp=``, ``round=``) for the audit.

    A context variable, so it follows the code that trains (threads included). Outside
    :func:`record_releases_for_tests` it does nothing.
    """
    if _releases is None:
        yield
        return
    token = _attribution.set({**(_attribution.get() or {}), **labels})
    try:
        yield
    finally:
        _attribution.reset(token)


def _append(record: NoiseDraw | PoissonDraw) -> None:
    records = _releases
    if records is not None:
        with _releases_lock:
            records.append(record)


def _rms(drawn: Any) -> float:
    if hasattr(drawn, "detach"):  # a torch tensor
        flat = drawn.detach().double().reshape(-1)
        return float(flat.square().mean().sqrt()) if flat.numel() else math.nan
    values = np.asarray(drawn, dtype=np.float64).reshape(-1)
    return float(np.sqrt(np.mean(np.square(values)))) if values.size else math.nan


def report_noise(
    mechanism: str, *, std: float, sensitivity: float, drawn: Any, shares: int = 1
) -> None:
    """Record a noise draw (``drawn``: the noise itself, before anything is added to it).

    Call it only when :func:`observing`; it measures ``drawn``.
    """
    if _releases is None:
        return
    size = int(drawn.numel()) if hasattr(drawn, "numel") else int(np.size(drawn))
    _append(
        NoiseDraw(
            mechanism=mechanism,
            std=float(std),
            sensitivity=float(sensitivity),
            shares=int(shares),
            size=size,
            measured_std=_rms(drawn),
            labels=_attribution.get() or {},
        )
    )


def report_sampling(where: str, *, rate: float, population: int, drawn: int, **labels: Any) -> None:
    """Record a Poisson draw: ``population`` candidates at ``rate``, ``drawn`` included."""
    if _releases is None:
        return
    _append(
        PoissonDraw(
            where=where,
            rate=float(rate),
            population=int(population),
            drawn=int(drawn),
            labels={**(_attribution.get() or {}), **labels},
        )
    )
