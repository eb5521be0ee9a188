"""Secure aggregation of MSP updates: payloads, sealing back ends, CKKS key sets.

* :mod:`~meshfl.secure.aggregate`: the weighted-sum payload ``[w·v, w, tag]``, as pure functions;
  :mod:`~meshfl.secure.binding`: the tags that let MSPs verify a sum's contributors.
* :mod:`~meshfl.secure.backend`: :class:`Sealed`, the :class:`Sealer` (MSP) and
  :class:`Aggregator` (coordinator) roles, and the plaintext twin (secure aggregation off).
* :mod:`~meshfl.secure.ckks`: the CKKS back end on TenSEAL; :mod:`~meshfl.secure.keys`: key
  files and the loaders that refuse the wrong kind.

The CKKS and key names are imported on first use, so ``import meshfl.secure`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from meshfl.secure.aggregate import open_payload, seal_payload, sum_payloads, validate_payload
from meshfl.secure.backend import (
    Aggregator,
    Sealed,
    Sealer,
    ValueRangeError,
    plaintext_backend,
)

if TYPE_CHECKING:
    from meshfl.secure.ckks import (
        CKKSAggregator,
        CKKSSealer,
        ckks_backend,
        ephemeral_ckks_backend,
    )
    from meshfl.secure.keys import (
        CKKSParams,
        KeyFileError,
        KeyFiles,
        generate_keys,
        key_id_of,
        load_coordinator_context,
        load_msp_context,
    )

__all__ = [
    "Aggregator",
    "CKKSAggregator",
    "CKKSParams",
    "CKKSSealer",
    "KeyFileError",
    "KeyFiles",
    "Sealed",
    "Sealer",
    "ValueRangeError",
    "ckks_backend",
    "ephemeral_ckks_backend",
    "generate_keys",
    "key_id_of",
    "load_coordinator_context",
    "load_msp_context",
    "open_payload",
    "plaintext_backend",
    "seal_payload",
    "sum_payloads",
    "validate_payload",
]

_LAZY = {
    "CKKSAggregator": "meshfl.secure.ckks",
    "CKKSSealer": "meshfl.secure.ckks",
    "ckks_backend": "meshfl.secure.ckks",
    "ephemeral_ckks_backend": "meshfl.secure.ckks",
    "CKKSParams": "meshfl.secure.keys",
    "KeyFileError": "meshfl.secure.keys",
    "KeyFiles": "meshfl.secure.keys",
    "generate_keys": "meshfl.secure.keys",
    "key_id_of": "meshfl.secure.keys",
    "load_coordinator_context": "meshfl.secure.keys",
    "load_msp_context": "meshfl.secure.keys",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'meshfl.secure' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
