"""meshfl: federated learning for networks of managed service providers.

>>> import meshfl
>>> "threat_intel" in meshfl.agents.names()
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from meshfl.config.errors import (
    ConfigError,
    DataSchemaError,
    FederationFailedError,
    MeshflError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from meshfl import agents
    from meshfl.agents.registry import load
    from meshfl.federation.exported_model import open_export
    from meshfl.simulation import SimulationResult, simulate

__all__ = [
    "ConfigError",
    "DataSchemaError",
    "FederationFailedError",
    "MeshflError",
    "SimulationResult",
    "__version__",
    "agents",
    "load",
    "open_export",
    "simulate",
]


def __getattr__(name: str) -> Any:
    # Everything heavy is imported on first use, so `import meshfl` stays light: the agents
    # (pandas), simulate (flwr, torch), open_export (tenseal).
    if name == "agents":
        return importlib.import_module("meshfl.agents")
    if name == "load":  # reads a model file; imports only the agent the file names
        from meshfl.agents.registry import load

        return load
    if name in ("simulate", "SimulationResult"):
        from meshfl import simulation

        return getattr(simulation, name)
    if name == "open_export":  # an export of a deployed mesh, opened with the MSPs' key
        from meshfl.federation.exported_model import open_export

        return open_export
    raise AttributeError(f"module 'meshfl' has no attribute {name!r}")
