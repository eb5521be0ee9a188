"""Differential privacy: budget, events, mechanisms, accountant, ledger and DP-SGD.

The accountant and DP-SGD load Opacus and torch, so they are imported on first use:
``import meshfl.privacy`` stays light. All privacy noise and DP sampling is drawn from
:mod:`meshfl.privacy.noise`, seeded from OS entropy at every use, never from a run's seed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from meshfl.privacy.config import DPConfig
from meshfl.privacy.events import Mechanism, PrivacyEvent

if TYPE_CHECKING:
    from meshfl.privacy.accountant import PrivacyBudgetExhausted, calibrate_noise, epsilon_spent
    from meshfl.privacy.dpsgd import (
        DPIncompatibleModelError,
        PrivateTrainingResult,
        check_dp_compatible,
        train_private,
    )
    from meshfl.privacy.ledger import LedgerCorruptError, PrivacyLedger
    from meshfl.privacy.quantiles import DPBounds, dp_bounds

_LAZY = {
    "PrivacyBudgetExhausted": "meshfl.privacy.accountant",
    "calibrate_noise": "meshfl.privacy.accountant",
    "epsilon_spent": "meshfl.privacy.accountant",
    "DPIncompatibleModelError": "meshfl.privacy.dpsgd",
    "PrivateTrainingResult": "meshfl.privacy.dpsgd",
    "check_dp_compatible": "meshfl.privacy.dpsgd",
    "train_private": "meshfl.privacy.dpsgd",
    "LedgerCorruptError": "meshfl.privacy.ledger",
    "PrivacyLedger": "meshfl.privacy.ledger",
    "DPBounds": "meshfl.privacy.quantiles",
    "dp_bounds": "meshfl.privacy.quantiles",
}

__all__ = [
    "DPBounds",
    "DPConfig",
    "DPIncompatibleModelError",
    "LedgerCorruptError",
    "Mechanism",
    "PrivacyBudgetExhausted",
    "PrivacyEvent",
    "PrivacyLedger",
    "PrivateTrainingResult",
    "calibrate_noise",
    "check_dp_compatible",
    "dp_bounds",
    "epsilon_spent",
    "train_private",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'meshfl.privacy' has no attribute {name!r}")
