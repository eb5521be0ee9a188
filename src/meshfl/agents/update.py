"""The update contract: what every agent's local step returns, and what aggregation sums.

Aggregation is always a weighted *sum* of vectors. Agents that average (neural networks)
divide the sum by the summed weight after aggregation; agents that count (histograms, leaf
masses, sufficient statistics) send ``weight=1`` and use the sum as it is. This is why one
aggregation path (plaintext or CKKS) serves every agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from meshfl.config.errors import InvalidUpdateError
from meshfl.privacy.events import PrivacyEvent

__all__ = ["Update"]


@dataclass(frozen=True)
class Update:
    """One MSP's contribution to one round of one agent.

    Parameters
    ----------
    vector : numpy.ndarray
        One flat float64 array: what gets (pre-weighted and) encrypted and summed.
    weight : float
        How much the update counts: the number of examples for averaged models, 1 for sums.
    metrics : Mapping[str, float]
        Small plain numbers about local training (loss, examples, ...).
    privacy_event : PrivacyEvent
        The mechanism applied to this update, for the privacy ledger.
    """

    vector: np.ndarray
    weight: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    privacy_event: PrivacyEvent = field(default_factory=PrivacyEvent.none)

    def __post_init__(self) -> None:
        vector = np.ascontiguousarray(self.vector, dtype=np.float64)
        if vector.ndim != 1:
            raise InvalidUpdateError(
                f"Update.vector must be a flat (1-D) array. Got shape {vector.shape} instead."
            )
        if not np.all(np.isfinite(vector)):
            raise InvalidUpdateError("Update.vector must hold finite numbers. Got NaN or inf.")
        weight = float(self.weight)
        if not (np.isfinite(weight) and weight > 0):
            raise InvalidUpdateError(
                f"Update.weight must be a finite number > 0. Got {self.weight!r} instead."
            )
        object.__setattr__(self, "vector", vector)
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "metrics", {k: float(v) for k, v in self.metrics.items()})
