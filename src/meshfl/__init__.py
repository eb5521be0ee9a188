"""meshfl: federated learning for networks of managed service providers.

>>> import meshfl
>>> "threat_intel" in meshfl.agents.names()
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshfl import agents
from meshfl.agents.registry import load
from meshfl.config.errors import ConfigError, DataSchemaError, MeshflError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from meshfl.federation.exported_model import open_export
    from meshfl.simulation import SimulationResult, simulate

__all__ = [
    "ConfigError",
    "DataSchemaError",
    "MeshflError",
    "SimulationResult",
    "__version__",
    "agents",
    "load",
    "open_export",
    "simulate",
]


def __getattr__(name: str) -> Any:
    # simulate pulls in flwr and torch; import it on first use so `import meshfl` stays light.
    if name in ("simulate", "SimulationResult"):
        from meshfl import simulation

        return getattr(simulation, name)
    if name == "open_export":  # an export of a deployed mesh, opened with the MSPs' key
        from meshfl.federation.exported_model import open_export

        return open_export
    raise AttributeError(f"module 'meshfl' has no attribute {name!r}")
