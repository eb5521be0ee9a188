"""The Gaussian mechanism, as pure functions on arrays.

* :func:`add_gaussian_noise` — noise of standard deviation ``noise_multiplier ·
  sensitivity / sqrt(shares)``. With ``shares=1`` one party adds the whole noise (sample-level
  DP of an MSP's own statistics); with ``shares=m`` each of ``m`` parties adds an equal share
  so that their *sum* carries the full noise (distributed DP: the sum is private, each
  share alone is not, so it relies on the coordinator seeing only the sum — which is what
  secure aggregation gives).
* :func:`clip_l2` — scale a vector down to an L2 norm bound (the sensitivity of an MSP's
  update under MSP-level DP).

Dwork & Roth, "The Algorithmic Foundations of Differential Privacy" (2014), Thm. A.1;
McMahan et al., "Learning Differentially Private Recurrent Language Models" (ICLR 2018) for
clipping per-user updates.

The noise comes from :func:`meshfl.privacy.noise.noise_rng`, seeded from the operating
system's entropy at every call: there is deliberately no ``rng`` or seed parameter, since
noise anyone can regenerate (e.g. from a run's public seed) protects nothing.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from meshfl.config.validation import Count, Float, Positive, checked
from meshfl.privacy import noise as _noise
from meshfl.privacy.noise import noise_rng

__all__ = ["add_gaussian_noise", "clip_l2"]


@checked
def clip_l2(vector: np.ndarray, max_norm: Positive) -> tuple[np.ndarray, float]:
    """``vector`` scaled down to L2 norm at most ``max_norm``; also returns its original norm."""
    norm = float(np.linalg.norm(vector))
    return (vector * (max_norm / norm) if norm > max_norm else vector.copy()), norm


@checked
def add_gaussian_noise(
    vector: np.ndarray,
    *,
    sensitivity: Positive,
    noise_multiplier: Annotated[float, Float(">= 0", lambda v: v >= 0)],
    shares: Count = 1,
) -> np.ndarray:
    """``vector`` plus N(0, (noise_multiplier · sensitivity)² / shares) in every coordinate.

    Each call draws from a fresh generator seeded from OS entropy
    (:func:`meshfl.privacy.noise.noise_rng`), so two calls never add the same noise.
    """
    std = noise_multiplier * sensitivity / np.sqrt(shares)
    drawn = noise_rng().normal(0.0, std, size=np.shape(vector))
    if _noise.observing():  # test-only audit (record_releases_for_tests)
        _noise.report_noise(
            "gaussian", std=std, sensitivity=sensitivity, drawn=drawn, shares=shares
        )
    return np.asarray(vector, dtype=np.float64) + drawn
