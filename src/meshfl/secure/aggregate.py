"""Weighted-sum aggregation as pure functions on payload vectors.

An MSP turns its update into a *payload*: the vector pre-multiplied by its weight, with the
weight and the MSP's binding tag appended, ``[w·v, w, tag]`` (the tag takes
:data:`~meshfl.secure.binding.TAG_SLOTS` values, see :mod:`meshfl.secure.binding`). Payloads
add up element by element, so the coordinator only ever computes a plain sum (which CKKS can
do on ciphertexts without a secret key); whoever holds the sum splits it into
``(Σ w·v, Σ w, Σ tag)``. Means divide the first by the second; the third proves who took part.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from meshfl.config.errors import InvalidUpdateError
from meshfl.secure.binding import TAG_SLOTS

__all__ = ["PAYLOAD_EXTRA", "open_payload", "seal_payload", "sum_payloads", "validate_payload"]


PAYLOAD_EXTRA = 1 + TAG_SLOTS
"""Values a payload holds beyond the update itself: the weight and the tag."""


def seal_payload(vector: np.ndarray, weight: float, *, tag: np.ndarray | None = None) -> np.ndarray:
    """``[weight * vector, weight, tag]`` as one float64 array (no ``tag``: zeros, unbound)."""
    vector = np.asarray(vector, dtype=np.float64)
    tag = np.zeros(TAG_SLOTS) if tag is None else np.asarray(tag, dtype=np.float64)
    if tag.shape != (TAG_SLOTS,):
        raise ValueError(f"a tag has {TAG_SLOTS} values; got shape {tag.shape}")
    return np.concatenate([weight * vector, [float(weight)], tag])


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
    if payload.size <= PAYLOAD_EXTRA:
        raise InvalidUpdateError("payload is too short; it must carry its weight and tag")
    if not np.all(np.isfinite(payload)):
        raise InvalidUpdateError("payload holds NaN or inf")
    if not payload[-1 - TAG_SLOTS] > 0:  # fixed text: the weight is the MSP's data size
        raise InvalidUpdateError("payload weight must be > 0")
    return payload.astype(np.float64, copy=False)


def sum_payloads(payloads: Sequence[np.ndarray]) -> np.ndarray:
    """Element-wise sum of equally long payloads."""
    if not payloads:
        raise ValueError("sum_payloads needs at least one payload")
    return np.sum(np.stack(payloads), axis=0)


def open_payload(total: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Split a (summed) payload into ``(Σ w·v, Σ w, Σ tag)``."""
    total = np.asarray(total, dtype=np.float64)
    if total.ndim != 1 or total.size <= PAYLOAD_EXTRA:
        raise InvalidUpdateError("a sealed payload is too short to hold a weight and a tag")
    cut = total.size - TAG_SLOTS
    return total[: cut - 1], float(total[cut - 1]), total[cut:]
