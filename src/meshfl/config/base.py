"""Base class of every meshfl configuration: strict, immutable, with readable errors.

pydantic's own messages read "Input should be greater than 0"; a person configuring a
federation needs to know *which* parameter of *which* config, so :class:`MeshflConfig`
rewrites them in scikit-learn's style: "The 'epsilon' parameter of DPConfig must be greater
than 0. Got -1.0 instead."
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from meshfl.config.errors import ConfigError

__all__ = ["MeshflConfig", "format_validation_error"]


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_validation_error(model: type[BaseModel], error: ValidationError) -> str:
    """Turn a pydantic ``ValidationError`` into one sentence per wrong parameter."""
    name = model.__name__
    lines = []
    for item in error.errors():
        param = ".".join(str(part) for part in item["loc"]) or "<config>"
        got = _describe(item.get("input"))
        kind = item["type"]
        if kind == "extra_forbidden":
            valid = ", ".join(sorted(model.model_fields))
            lines.append(f"{param!r} is not a parameter of {name}. Valid parameters: {valid}.")
            continue
        if kind == "missing":
            lines.append(f"The {param!r} parameter of {name} is required.")
            continue
        inner = item.get("ctx", {}).get("error")
        if isinstance(inner, ConfigError):
            # A nested meshfl config already said it in full; say where it sits.
            lines.append(f"{param}: {inner}" if item["loc"] else str(inner))
            continue
        msg = item["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif msg.startswith("Assertion failed, "):
            msg = msg[len("Assertion failed, ") :]
        for prefix in ("Input should be ", "Input must be "):
            if msg.startswith(prefix):
                msg = "be " + msg[len(prefix) :]
                break
        else:
            msg = "satisfy: " + msg
        lines.append(f"The {param!r} parameter of {name} must {msg}. Got {got} instead.")
    return " ".join(lines)


class MeshflConfig(BaseModel):
    """Strict, frozen pydantic model; invalid values raise :class:`ConfigError`."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ConfigError(format_validation_error(type(self), err)) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as err:
            raise ConfigError(format_validation_error(cls, err)) from None
