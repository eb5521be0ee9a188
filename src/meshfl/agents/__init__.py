"""The mesh's agents: one registry, one interface, one update contract.

>>> from meshfl import agents
>>> agents.names()[:3]
['threat_intel', 'collaboration', 'federated_learning']
>>> agents.get("threat_intel").metric
'accuracy'
"""

from meshfl.agents.base import Agent, GlobalModel
from meshfl.agents.registry import KNOWN_AGENTS, built, get, names, register
from meshfl.agents.update import Update

__all__ = ["KNOWN_AGENTS", "Agent", "GlobalModel", "Update", "built", "get", "names", "register"]
