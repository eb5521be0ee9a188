"""Signal-to-noise estimates of one round's private update, for every mechanism.

A private model can be worse than a constant when the noise swamps the update; these
estimates say, round by round, how far from that a run is. Each is a ratio of norms: how
large the update's signal can be (or is estimated to be) against the norm of the noise
added to it. Below 1 the update is mostly noise.

What may leave an MSP: an estimate depends on the MSP's record count (through the
expected batch size, the calibrated noise multiplier or the size of the counts), so it
leaves only as a post-processing of what differential privacy already covers or of plan
values, and only coarsened to a power of 2 (:func:`coarse`): a size hint of one power of 2,
no more. The estimates:

* DP-SGD (:func:`dpsgd_snr`): each step sums at most ``B`` clipped per-record gradients
  (norm ≤ ``B·C``) and adds noise of norm ≈ ``sigma·C·√d``; ``B/(sigma·√d)``. An upper bound: it
  takes the clipped gradients to be aligned.
* The Gaussian mechanism on a released vector (:func:`gaussian_snr`): the noisy vector ``v``
  with known noise std ``s`` in each of its ``d`` coordinates has ``E‖v‖² = ‖x‖² + d·s²``;
  ``sqrt(max(0, ‖v‖²/(d·s²) - 1))`` estimates ``‖x‖/(s·√d)`` from the private output alone.
* MSP-level DP (:func:`msp_level_snr`): ``k`` clipped deltas (norm ≤ ``C`` each) against the
  distributed noise of ``k`` shares of ``sigma²C²/m``; ``sqrt(k·m)/(sigma·√d)``, from public plan
  values, computed by the coordinator itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from meshfl.agents.base import Agent
    from meshfl.agents.update import Update

__all__ = [
    "coarse",
    "dpsgd_snr",
    "gaussian_snr",
    "median_snr",
    "msp_level_snr",
    "update_snr",
]


def coarse(snr: float) -> float:
    """``snr`` rounded to the nearest power of 2 in log scale: ``2**round(log2(snr))``.

    0 and infinity stay as they are (no noise; nothing but noise).

    Examples
    --------
    >>> coarse(3.1), coarse(0.3), coarse(1.0), coarse(0.0), coarse(float("inf"))
    (4.0, 0.25, 1.0, 0.0, inf)
    """
    snr = float(snr)
    if math.isnan(snr) or snr < 0:
        raise ValueError(f"a signal-to-noise ratio is a number >= 0; got {snr!r}")
    if snr == 0 or math.isinf(snr):
        return snr
    return float(2.0 ** round(math.log2(snr)))


def dpsgd_snr(expected_batch: float, noise_multiplier: float, dim: int) -> float:
    """Signal-to-noise bound of one DP-SGD step: ``expected_batch / (sigma·√dim)``.

    The summed clipped gradients of a batch of ``B`` records have norm at most ``B·C``; the
    noise added to the sum has norm about ``sigma·C·√dim`` (``dim`` trained parameters).

    Parameters
    ----------
    expected_batch : float
        Expected records per step (Poisson rate times records).
    noise_multiplier : float
        sigma, the noise standard deviation over the clipping norm.
    dim : int
        Trained parameters (the length of the update).

    Examples
    --------
    >>> dpsgd_snr(128, 1.0, 4096)
    2.0
    >>> dpsgd_snr(128, 0.0, 4096)
    inf
    """
    if noise_multiplier <= 0:
        return math.inf
    return float(expected_batch) / (float(noise_multiplier) * math.sqrt(max(int(dim), 1)))


def gaussian_snr(released: np.ndarray, noise_std: float | np.ndarray) -> float:
    """Signal-to-noise estimate of a vector released by the Gaussian mechanism.

    ``sqrt(max(0, ‖v‖²/(d·s²) - 1))``: the released ``v = x + N(0, s²)`` has expected squared
    norm ``‖x‖² + d·s²``, so this estimates ``‖x‖/(s·√d)`` — signal norm over noise norm —
    from the private output alone (post-processing: it costs no privacy). A per-coordinate
    ``noise_std`` array weighs each coordinate by its own noise.

    Examples
    --------
    >>> gaussian_snr(np.array([3.0, 4.0]), 1.0)  # ‖v‖² = 25, d·s² = 2
    3.391164991562634
    >>> gaussian_snr(np.array([0.1, -0.2]), 1.0)
    0.0
    """
    v = np.asarray(released, dtype=np.float64).ravel()
    s = np.broadcast_to(np.asarray(noise_std, dtype=np.float64), v.shape)
    if v.size == 0:
        return 0.0
    if not np.all(s > 0):
        return math.inf
    ratio = float(np.mean((v / s) ** 2))
    return math.sqrt(max(0.0, ratio - 1.0))


def msp_level_snr(contributors: int, noise_multiplier: float, dim: int, *, shares: int) -> float:
    """Signal-to-noise bound of an MSP-level private round sum: ``sqrt(k·m)/(sigma·√dim)``.

    ``k`` MSPs' deltas, each clipped to norm ``C``, add up to at most ``k·C``; each MSP adds
    noise of variance ``sigma²C²/m`` per coordinate (``m`` = ``shares``), so the sum carries
    noise of norm ``sigma·C·√(dim·k/m)``. With ``k = m``: ``m/(sigma·√dim)``. Public values only.

    Examples
    --------
    >>> msp_level_snr(4, 2.0, 16, shares=4)
    0.5
    """
    if contributors <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    return math.sqrt(contributors * max(shares, 1)) / (
        float(noise_multiplier) * math.sqrt(max(int(dim), 1))
    )


def update_snr(agent: Agent[Any], update: Update, *, records: int) -> float | None:
    """The coarse (power of 2) signal-to-noise estimate of an MSP's sample-level private update.

    DP-SGD: :func:`dpsgd_snr` with the expected batch ``sample_rate · records`` and the
    update's length as the trained dimension. The Gaussian mechanism: :func:`gaussian_snr`
    on the coordinates the agent's :meth:`~meshfl.agents.base.Agent.noised_release` names.
    ``None`` for an update without a mechanism, or an agent that cannot say.
    """
    event = update.privacy_event
    if event.mechanism == "dp-sgd":
        expected = event.sample_rate * max(int(records), 0)
        return coarse(dpsgd_snr(expected, event.noise_multiplier, update.vector.size))
    if event.mechanism == "gaussian":
        release = agent.noised_release(update)
        if release is None:
            return None
        released, std = release
        return coarse(gaussian_snr(released, std))
    return None


def median_snr(values: Iterable[float | None]) -> float | None:
    """The lower median of the values given (``None`` left out), so a power of 2 stays one.

    Examples
    --------
    >>> median_snr([4.0, None, 1.0, 2.0, 8.0]), median_snr([None])
    (2.0, None)
    """
    present = sorted(float(v) for v in values if v is not None and not math.isnan(v))
    if not present:
        return None
    return present[(len(present) - 1) // 2]
