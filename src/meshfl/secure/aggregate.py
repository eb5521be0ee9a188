"""Weighted-sum aggregation as pure functions on payload vectors.

An MSP turns its update into a *payload*: the vector pre-multiplied by its weight, with the
weight appended, ``[w·v, w]``. Payloads add up element by element, so the coordinator only
ever computes a plain sum (which CKKS can do on ciphertexts without a secret key); whoever
holds the sum splits it into ``(Σ w·v, Σ w)``. Means divide the first by the second.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from meshfl.config.errors import InvalidUpdateError

__all__ = ["open_payload", "seal_payload", "sum_payloads", "validate_payload"]


def seal_payload(vector: np.ndarray, weight: float) -> np.ndarray:
    """``[weight * vector, weight]`` as one float64 array."""
    vector = np.asarray(vector, dtype=np.float64)
    return np.concatenate([weight * vector, [float(weight)]])


def validate_payload(payload: np.ndarray, *, expected_size: int | None) -> np.ndarray:
    """Check one MSP's payload before it joins the sum; raises :class:`InvalidUpdateError`."""
    payload = np.asarray(payload)
    if payload.ndim != 1:
        raise InvalidUpdateError(f"payload must be a flat vector; got shape {payload.shape}")
    if not np.issubdtype(payload.dtype, np.floating):
        raise InvalidUpdateError(f"payload must hold floats; got dtype {payload.dtype}")
    if expected_size is not None and payload.size != expected_size:
        raise InvalidUpdateError(
            f"payload has {payload.size} values; this round expects {expected_size}"
        )
    if payload.size == 0:
        raise InvalidUpdateError("payload is empty; it must at least carry its weight")
    if not np.all(np.isfinite(payload)):
        raise InvalidUpdateError("payload holds NaN or inf")
    if not payload[-1] > 0:
        raise InvalidUpdateError(f"payload weight must be > 0; got {payload[-1]!r}")
    return payload.astype(np.float64, copy=False)


def sum_payloads(payloads: Sequence[np.ndarray]) -> np.ndarray:
    """Element-wise sum of equally long payloads."""
    if not payloads:
        raise ValueError("sum_payloads needs at least one payload")
    return np.sum(np.stack(payloads), axis=0)


def open_payload(total: np.ndarray) -> tuple[np.ndarray, float]:
    """Split a (summed) payload into ``(Σ w·v, Σ w)``."""
    return np.asarray(total[:-1], dtype=np.float64), float(total[-1])
