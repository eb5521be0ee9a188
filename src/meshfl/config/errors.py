"""The error hierarchy of meshfl.

Every error meshfl raises on purpose derives from :class:`MeshflError`, so callers can catch
the library's errors in one place. Errors caused by a caller's input also derive from
:class:`ValueError`, so code written for the standard library's convention keeps working.
"""

from __future__ import annotations

__all__ = [
    "AgentNotBuiltError",
    "ConfigError",
    "DataSchemaError",
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
