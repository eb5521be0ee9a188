"""Immutable privacy events: what mechanism an MSP applied to one update, with which parameters.

Modelled on Google's dp-accounting ``dp_event.py``: an event records what was done and never
changes meaning; an accountant composes events into (ε, δ). A ledger stores them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["Mechanism", "PrivacyEvent"]

Mechanism = Literal["none", "dp-sgd", "gaussian"]


@dataclass(frozen=True)
class PrivacyEvent:
    """One application of a privacy mechanism to one update.

    Parameters
    ----------
    mechanism : {"none", "dp-sgd", "gaussian"}
        ``"none"`` means the update was sent without differential privacy.
    noise_multiplier : float
        Gaussian noise standard deviation divided by the sensitivity (clipping norm).
    sample_rate : float
        Poisson sampling rate per step (1.0 for a full-batch mechanism).
    steps : int
        How many times the mechanism was applied.
    unit : {"sample", "msp"}
        Whose privacy the event protects: one record, or one MSP's whole contribution.
    """

    mechanism: Mechanism = "none"
    noise_multiplier: float = 0.0
    sample_rate: float = 1.0
    steps: int = 0
    unit: Literal["sample", "msp"] = "sample"
    extra: dict[str, float] = field(default_factory=dict)

    @classmethod
    def none(cls) -> PrivacyEvent:
        """The event of an update sent without differential privacy."""
        return cls()

    @property
    def is_private(self) -> bool:
        """Whether any noise protects the update."""
        return self.mechanism != "none"

    def to_dict(self) -> dict[str, Any]:
        """A flat dict of plain values (for a Flower ``ConfigRecord`` or JSON)."""
        out = asdict(self)
        extra = out.pop("extra")
        out.update({f"extra.{k}": float(v) for k, v in extra.items()})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyEvent:
        """Inverse of :meth:`to_dict`."""
        extra = {k[len("extra.") :]: float(v) for k, v in data.items() if k.startswith("extra.")}
        return cls(
            mechanism=data.get("mechanism", "none"),
            noise_multiplier=float(data.get("noise_multiplier", 0.0)),
            sample_rate=float(data.get("sample_rate", 1.0)),
            steps=int(data.get("steps", 0)),
            unit=data.get("unit", "sample"),
            extra=extra,
        )
