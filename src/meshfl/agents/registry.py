"""The one registry of meshfl's agents.

Agents register through Python entry points of the group ``meshfl.agents``: the name is
the agent's :attr:`~meshfl.agents.base.Agent.name`, the value its class (``module:Class``).
meshfl's own agents are registered that way in its ``pyproject.toml``; another package adds
an agent by declaring one in its own::

    [project.entry-points."meshfl.agents"]
    ticket_escalation = "meshfl_tickets.escalation:Escalation"

Nothing is imported until an agent is asked for (:func:`get`): :func:`names` and
:func:`built` read the entry points' names only, so ``import meshfl`` loads no agent, torch
or transformers. :func:`register` also takes a class defined at run time.

All ten agents of the mesh (:data:`KNOWN_AGENTS`) are *known* by name from the start, built
or not; ``get`` tells the two apart, so a user asking for an agent that has not landed yet
learns that, not "unknown agent".
"""

from __future__ import annotations

import json
import os
import re
import sys
from importlib import metadata
from typing import Any, TypeVar

import numpy as np

from meshfl.agents.base import Agent, GlobalModel
from meshfl.config.errors import (
    AgentNotBuiltError,
    ConfigError,
    MeshflError,
    UnknownAgentError,
)

__all__ = [
    "COORDINATOR",
    "ENTRY_POINT_GROUP",
    "KNOWN_AGENTS",
    "built",
    "get",
    "load",
    "names",
    "register",
]

ENTRY_POINT_GROUP = "meshfl.agents"
"""The entry point group agents register in (``name = "module:Class"``)."""

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
"""The mesh's ten agents and what each does, in the order :func:`names` lists them. An agent
from an entry point needs no row here: it is listed after these, by name."""

COORDINATOR = "federated_learning"
"""The agent that is the coordinator itself (``meshfl-server``): it trains no model."""

_NAME = re.compile(r"[a-z][a-z0-9_]*")
# An agent's name becomes a Flower message type (``train.<name>``), a file name
# (``<data-dir>/<name>.csv``) and a key of the coordinator's store.

_REGISTRY: dict[str, type[Agent[Any]]] = {}
"""Agent classes loaded so far (from an entry point or :func:`register`)."""

_discovered: tuple[tuple[str, ...], dict[str, metadata.EntryPoint]] | None = None

A = TypeVar("A", bound=type[Agent[Any]])


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"{what} must have a 'name' of lowercase letters, digits and underscores that "
            f"starts with a letter (it names files and message types). Got {name!r} instead."
        )
    return name


def _origin(entry: metadata.EntryPoint) -> str:
    dist = getattr(entry, "dist", None)
    source = f" of {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point {entry.name} = {entry.value!r}{source}"


def _names_class(entry: metadata.EntryPoint, cls: type) -> bool:
    return (entry.module, entry.attr) == (cls.__module__, cls.__qualname__)


def _entry_points() -> dict[str, metadata.EntryPoint]:
    """The group's entry points by name, read once per ``sys.path``; two that name different
    classes under one name raise."""
    global _discovered
    key = tuple(sys.path)
    if _discovered is not None and _discovered[0] == key:
        return _discovered[1]
    found: dict[str, metadata.EntryPoint] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        first = found.setdefault(entry.name, entry)
        if (first.module, first.attr) != (entry.module, entry.attr):
            raise MeshflError(
                f"Agent {entry.name!r} is registered twice: by {_origin(first)} and by "
                f"{_origin(entry)}. Uninstall one of the two packages."
            )
    _discovered = (key, found)
    return found


def register(cls: A) -> A:
    """Make an agent class available under its ``name`` (a class decorator).

    An entry point of the group ``meshfl.agents`` does the same without importing the
    class until it is needed; ``register`` is for a class defined at run time.

    Raises
    ------
    ConfigError
        The class's ``name`` is not lowercase letters, digits and underscores.
    MeshflError
        Another class is registered under that name (here or by an entry point).
    """
    name = _check_name(getattr(cls, "name", None), f"Agent class {cls.__name__}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise MeshflError(
            f"Agent {name!r} is already registered (by {_REGISTRY[name].__qualname__})."
        )
    entry = _entry_points().get(name)
    if entry is not None and not _names_class(entry, cls):
        raise MeshflError(f"Agent {name!r} is already registered (by {_origin(entry)}).")
    _REGISTRY[name] = cls
    return cls


def names(*, built_only: bool = False) -> list[str]:
    """Names of the mesh's agents: the ten of :data:`KNOWN_AGENTS` (built or not), then
    those other packages register, sorted; with ``built_only``, only agents with an
    implementation (an entry point or a registered class)."""
    available = _REGISTRY.keys() | _entry_points().keys()
    listed = [*KNOWN_AGENTS, *sorted(available - KNOWN_AGENTS.keys())]
    return [n for n in listed if not built_only or n in available]


def built() -> list[str]:
    """Names of the agents implemented in this installation."""
    return names(built_only=True)


def get(name: str) -> type[Agent[Any]]:
    """The agent class registered under ``name`` (loading its entry point on first use).

    Raises
    ------
    UnknownAgentError
        ``name`` is none of the agents; the message lists the valid names.
    AgentNotBuiltError
        ``name`` is a known agent whose implementation has not landed yet.
    MeshflError
        The entry point of ``name`` does not name an agent class of that name.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    entry = _entry_points().get(name)
    if entry is not None:
        return _load_entry_point(entry)
    if name == COORDINATOR:
        raise AgentNotBuiltError(
            f"Agent {name!r} is the coordinator itself (rounds, aggregation, ledger, model "
            "store): it runs as meshfl-server and trains no model of its own. Trainable "
            f"agents: {', '.join(built())}."
        )
    if name in KNOWN_AGENTS:
        raise AgentNotBuiltError(
            f"Agent {name!r} ({KNOWN_AGENTS[name]}) is part of the mesh but not built in "
            f"this release of meshfl. Built agents: {', '.join(built())}.{_install_hint()}"
        )
    raise UnknownAgentError(f"Unknown agent {name!r}. Valid agents: {', '.join(names())}.")


def _install_hint() -> str:
    own = [e for e in _entry_points().values() if e.module.startswith("meshfl.")]
    if own:
        return ""
    return (
        f" (No {ENTRY_POINT_GROUP!r} entry points of meshfl itself are installed: reinstall "
        "meshfl, e.g. `pip install -e .` in a checkout, to register its agents.)"
    )


def _load_entry_point(entry: metadata.EntryPoint) -> type[Agent[Any]]:
    cls = entry.load()
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise MeshflError(
            f"The {_origin(entry)} must name a subclass of meshfl.agents.Agent. "
            f"Got {cls!r} instead."
        )
    if getattr(cls, "name", None) != entry.name:
        raise MeshflError(
            f"The {_origin(entry)} names {cls.__qualname__}, whose name is "
            f"{getattr(cls, 'name', None)!r}: an agent's entry point is named after the agent."
        )
    return register(cls)  # a no-op when the module's own @register already ran


def load(path: str | os.PathLike[str]) -> GlobalModel:
    """Read a model written by :meth:`GlobalModel.save <meshfl.agents.base.GlobalModel.save>`.

    The file names its agent, whose class (found through this registry) rebuilds the model;
    no pickle is involved, so loading a model file cannot run code. Also reachable as
    ``meshfl.load`` and ``GlobalModel.load``.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(str(archive["header"]))
            vector = archive["vector"]
    except (OSError, KeyError, ValueError) as err:
        raise MeshflError(f"{os.fspath(path)!r} is not a meshfl model file: {err}") from err
    if header.get("format") != "meshfl.model/1":
        raise MeshflError(
            f"{os.fspath(path)!r} has model format {header.get('format')!r}; "
            "this meshfl reads 'meshfl.model/1'."
        )
    agent = get(header["agent"])(header["config"])
    return agent.model(vector)


# GlobalModel.load(path) reads through the registry, which base.py cannot import (the
# registry imports base); the registry installs it here, before anyone can hold a model.
GlobalModel.load = staticmethod(load)
