"""Aggregation of MSP updates: the weighted-sum payload format (plaintext for now)."""

from meshfl.secure.aggregate import open_payload, seal_payload, sum_payloads, validate_payload

__all__ = ["open_payload", "seal_payload", "sum_payloads", "validate_payload"]
