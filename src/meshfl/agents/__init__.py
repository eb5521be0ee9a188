"""The mesh's agents: one registry, one interface, one update contract.

Agents register through entry points of the group ``meshfl.agents`` (meshfl's own ones in
its ``pyproject.toml``, another package's in its own); see docs/write-your-own-agent.md.

>>> from meshfl import agents
>>> agents.names()[:3]
['threat_intel', 'collaboration', 'federated_learning']
>>> agents.get("threat_intel").metric
'accuracy'
"""

from meshfl.agents.base import Agent, GlobalModel
from meshfl.agents.registry import KNOWN_AGENTS, built, get, load, names, register
from meshfl.agents.update import Update

__all__ = [
    "KNOWN_AGENTS",
    "Agent",
    "GlobalModel",
    "Update",
    "built",
    "get",
    "load",
    "names",
    "register",
]
