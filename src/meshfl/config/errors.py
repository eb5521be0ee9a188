"""The error hierarchy of meshfl.

Every error meshfl raises on purpose derives from :class:`MeshflError`, so callers can catch
the library's errors in one place. Errors caused by a caller's input also derive from
:class:`ValueError`, so code written for the standard library's convention keeps working.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "AgentNotBuiltError",
    "ConfigError",
    "DataSchemaError",
    "FederationFailedError",
    "MeshflError",
    "UnknownAgentError",
    "InvalidUpdateError",
]


class MeshflError(Exception):
    """Root of every error meshfl raises on purpose."""


class ConfigError(MeshflError, ValueError):
    """A configuration value is missing, unknown or out of range.

    The message names the parameter, what it must be, and what it got.
    """


class DataSchemaError(MeshflError, ValueError):
    """A user's data lacks a column, or a column holds the wrong type of values."""


class UnknownAgentError(MeshflError, KeyError, ValueError):
    """An agent name that is not one of the ten agents of meshfl."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class AgentNotBuiltError(MeshflError, NotImplementedError):
    """A known agent whose implementation has not landed in this release yet."""


class InvalidUpdateError(MeshflError, ValueError):
    """An MSP's reply failed validation; the coordinator drops it and the round goes on."""


class FederationFailedError(MeshflError, RuntimeError):
    """A federation in which no round produced a valid update: there is no model to return.

    The message lists each MSP's error (by its index, as in ``simulate``'s ``data``) and
    each skipped round's reason; the same are held as attributes.

    Attributes
    ----------
    agent : str
        The agent the federation trained.
    failures : dict of int to tuple of str
        Each MSP's errors, by MSP index: its own exception's text where the MSP runs in this
        process (a simulation), else the reason the coordinator dropped its reply.
    rounds : dict of int to str
        Why each round left the global model unchanged, by round.
    """

    def __init__(
        self,
        message: str,
        *,
        agent: str = "",
        failures: Mapping[int, Sequence[str]] | None = None,
        rounds: Mapping[int, str] | None = None,
    ):
        super().__init__(message)
        self.agent = agent
        self.failures = {int(k): tuple(v) for k, v in (failures or {}).items()}
        self.rounds = dict(rounds or {})
