"""``DPConfig``: the differential-privacy budget and how it is spent.

The mission's target is ε = 0.1 at δ = 1e-5. Two units of privacy (see docs/privacy.md):

* ``unit="sample"`` protects one record of one MSP: DP-SGD inside each MSP for the neural
  agents, the Gaussian mechanism on what the statistics-based agents send;
* ``unit="msp"`` protects one MSP's whole contribution: each MSP's update is clipped and
  Gaussian noise is split across the MSPs so that the sum carries the full noise
  (distributed DP; it keeps working when updates are encrypted).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

from pydantic import Field, field_validator

from meshfl.config.base import MeshflConfig

__all__ = ["DPConfig"]


class DPConfig(MeshflConfig):
    """A differential-privacy budget for one agent, per MSP.

    Parameters
    ----------
    epsilon : float
        Total ε each MSP may spend on the agent, over all rounds and runs (> 0, finite).
    delta : float
        δ of the (ε, δ) guarantee, in (0, 1); it should be below 1 / records.
    unit : {"sample", "msp"}
        Whose privacy is protected: one record, or one MSP's whole contribution.
    max_grad_norm : float
        Clipping norm: of each per-sample gradient (``"sample"``) or of each MSP's model
        delta (``"msp"``).
    accountant : {"prv", "rdp"}
        ``"prv"`` (privacy random variables; tight, certifies ε = 0.1) or ``"rdp"`` (Rényi DP
        with orders extended so that small ε can be certified).
    noise_multiplier : float, optional
        Fix the noise multiplier instead of calibrating it from the budget; rounds then stop
        (MSPs decline) once the next one would exceed ``epsilon``.
    """

    epsilon: float = Field(gt=0, description="Total epsilon per MSP and agent.")
    delta: float = Field(1e-5, gt=0, lt=1, description="Delta of the (epsilon, delta) guarantee.")
    unit: Literal["sample", "msp"] = Field("sample", description="Unit of privacy.")
    max_grad_norm: float = Field(1.0, gt=0, description="Clipping norm.")
    accountant: Literal["prv", "rdp"] = Field("prv", description="Privacy accountant.")
    noise_multiplier: float | None = Field(None, gt=0, description="Fixed noise multiplier.")

    @field_validator("epsilon")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("be a finite number (for no privacy, pass privacy=None)")
        return value

    def check_records(self, records: int, *, who: str = "an MSP") -> None:
        """Warn when δ is not below 1/records (δ ≥ 1/n allows leaking a whole record)."""
        if records > 0 and self.delta >= 1.0 / records:
            warnings.warn(
                f"DPConfig.delta={self.delta:g} is not below 1/records = {1.0 / records:.3g} "
                f"for {who} with {records} records: a mechanism may then reveal a whole "
                "record with probability δ. Use delta < 1/records (e.g. 1e-5).",
                UserWarning,
                stacklevel=2,
            )
