"""The one registry of meshfl's agents.

All ten agents of the mesh are *known* by name from the start; an agent is *built* once its
implementation registers itself with :func:`register`. ``get`` tells the two apart, so a
user asking for an agent that has not landed yet learns that, not "unknown agent".
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any, TypeVar

from meshfl.agents.base import Agent
from meshfl.config.errors import AgentNotBuiltError, MeshflError, UnknownAgentError

__all__ = ["COORDINATOR", "KNOWN_AGENTS", "built", "get", "names", "register"]

KNOWN_AGENTS: dict[str, str] = {
    "threat_intel": "classify security events and log lines into threat classes with severity",
    "collaboration": "partner matching between MSPs from profiles and past projects",
    "federated_learning": "the coordinator itself: rounds, aggregation, ledger, model store",
    "market_intel": "sentiment and pricing signals in market text",
    "client_health": "churn risk from tabular client features",
    "revenue": "revenue forecasting",
    "anomaly": "anomalies in operational metrics",
    "nlp_query": "natural-language questions over the mesh's insights",
    "resource_allocation": "technician and ticket assignment",
    "compliance": "map controls and evidence to SOC 2 / ISO 27001 / HIPAA / GDPR requirements",
}

COORDINATOR = "federated_learning"
"""The agent that is the coordinator itself (``meshfl-server``): it trains no model."""

_REGISTRY: dict[str, type[Agent[Any]]] = {}

A = TypeVar("A", bound=type[Agent[Any]])


def register(cls: A) -> A:
    """Class decorator that makes an agent available under its ``name``."""
    name = getattr(cls, "name", None)
    if name not in KNOWN_AGENTS:
        raise UnknownAgentError(
            f"Cannot register {cls.__name__}: its name {name!r} is not one of the mesh's "
            f"agents ({', '.join(KNOWN_AGENTS)})."
        )
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise MeshflError(
            f"Agent {name!r} is already registered (by {_REGISTRY[name].__qualname__})."
        )
    _REGISTRY[name] = cls
    return cls


def names(*, built_only: bool = False) -> list[str]:
    """Names of the mesh's agents (all ten, or only those implemented in this release)."""
    _load_builtin()
    return [n for n in KNOWN_AGENTS if not built_only or n in _REGISTRY]


def built() -> list[str]:
    """Names of the agents implemented in this release."""
    return names(built_only=True)


def get(name: str) -> type[Agent[Any]]:
    """The agent class registered under ``name``.

    Raises
    ------
    UnknownAgentError
        ``name`` is not one of the ten agents; the message lists the valid names.
    AgentNotBuiltError
        ``name`` is a known agent whose implementation has not landed yet.
    """
    _load_builtin()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name == COORDINATOR:
        raise AgentNotBuiltError(
            f"Agent {name!r} is the coordinator itself (rounds, aggregation, ledger, model "
            "store): it runs as meshfl-server and trains no model of its own. Trainable "
            f"agents: {', '.join(built())}."
        )
    if name in KNOWN_AGENTS:
        raise AgentNotBuiltError(
            f"Agent {name!r} ({KNOWN_AGENTS[name]}) is part of the mesh but not built in "
            f"this release of meshfl. Built agents: {', '.join(built())}."
        )
    raise UnknownAgentError(f"Unknown agent {name!r}. Valid agents: {', '.join(KNOWN_AGENTS)}.")


_BUILTIN_MODULES = tuple(f"meshfl.agents.{name}" for name in KNOWN_AGENTS if name != COORDINATOR)


def _load_builtin() -> None:
    # Importing the modules runs their @register decorators; done lazily so that
    # importing meshfl.agents does not load torch and transformers. A known agent without
    # a module is simply not built in this release.
    for module in _BUILTIN_MODULES:
        if module not in sys.modules and importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
