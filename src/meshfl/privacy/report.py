"""What an MSP says about its privacy spending in the clear: ε, rounded up to a coarse grid.

Every reply carries the MSP's ε so far, so that the coordinator can mirror it (and an MSP
whose ledger falls behind the mirror can be caught). The exact value would be a side
channel: with a fixed noise multiplier, ε is a function of the sampling rate, hence of the
MSP's record count, and inverting it gave the audit every MSP's size exactly. So the value
leaves rounded *up* to a multiple of 1/:data:`REPORT_STEPS` of the budget: the mirror never
shows less than was spent, and what it tells about size is one of 20 buckets. The MSP's own
ledger stays exact.
"""

from __future__ import annotations

import math

__all__ = ["REPORT_STEPS", "reported_epsilon"]

REPORT_STEPS = 20
"""ε leaves an MSP as a multiple of ``budget / REPORT_STEPS``."""


def reported_epsilon(spent: float, budget: float) -> float:
    """``spent`` rounded up to the grid of ``budget / REPORT_STEPS`` (never below ``spent``).

    Examples
    --------
    >>> reported_epsilon(0.0, 0.1), reported_epsilon(0.0123, 0.1), reported_epsilon(0.1, 0.1)
    (0.0, 0.015, 0.1)
    """
    if not math.isfinite(spent) or not budget > 0:
        return float("inf") if spent > 0 else 0.0
    step = budget / REPORT_STEPS
    units = math.ceil(spent / step - 1e-9)
    return max(units * step, 0.0) if units * step >= spent else (units + 1) * step
