"""Differential privacy: events, mechanisms, accountant and ledger."""

from meshfl.privacy.config import DPConfig
from meshfl.privacy.events import Mechanism, PrivacyEvent

__all__ = ["DPConfig", "Mechanism", "PrivacyEvent"]
