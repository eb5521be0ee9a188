"""Configuration models and the error hierarchy (the bottom layer of meshfl)."""

from meshfl.config.base import MeshflConfig, format_validation_error
from meshfl.config.errors import (
    AgentNotBuiltError,
    ConfigError,
    DataSchemaError,
    InvalidUpdateError,
    MeshflError,
    UnknownAgentError,
)

__all__ = [
    "AgentNotBuiltError",
    "ConfigError",
    "DataSchemaError",
    "MeshflConfig",
    "MeshflError",
    "UnknownAgentError",
    "InvalidUpdateError",
    "format_validation_error",
]
