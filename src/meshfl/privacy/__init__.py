"""Differential privacy: events, mechanisms, accountant and ledger."""

from meshfl.privacy.events import Mechanism, PrivacyEvent

__all__ = ["Mechanism", "PrivacyEvent"]
