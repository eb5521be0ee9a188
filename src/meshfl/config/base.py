"""Base class of every meshfl configuration: strict, immutable, with readable errors.

pydantic's own messages read "Input should be greater than 0"; a person configuring a
federation needs to know *which* parameter of *which* config, so :class:`MeshflConfig`
rewrites them in scikit-learn's style: "The 'epsilon' parameter of DPConfig must be greater
than 0. Got -1.0 instead."
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from meshfl.config.errors import ConfigError

__all__ = ["MeshflConfig", "format_validation_error"]


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_validation_error(
    model: type[BaseModel] | str,
    error: ValidationError,
    *,
    parameters: Sequence[str] | None = None,
) -> str:
    """Turn a pydantic ``ValidationError`` into one sentence per wrong parameter.

    ``model`` is a config class, or the name of a function checked by
    :func:`meshfl.config.validation.checked`, whose ``parameters`` (in order) name the
    positional arguments pydantic locates by index.
    """
    if isinstance(model, str):
        name, valid = model, list(parameters or ())
    else:
        name, valid = model.__name__, list(model.model_fields)
    lines = []
    for item in error.errors():
        # validate_call locates positional arguments by index; a single value has no loc.
        where = item["loc"] or tuple(valid[:1] if isinstance(model, str) else ())
        loc = [valid[p] if isinstance(p, int) and p < len(valid) else p for p in where]
        param = ".".join(str(part) for part in loc) or "<config>"
        if isinstance(model, str) and len(loc) > 1:  # inside a function's list or mapping
            part = "a key" if loc[-1] == "[key]" else f"item {loc[1]!r}"
            rule = _rule(item["msg"])
            lines.append(
                f"The {loc[0]!r} parameter of {name} has {part} that is not valid: it must "
                f"{rule}. Got {_describe(item.get('input'))} instead."
            )
            continue
        got = _describe(item.get("input"))
        kind = item["type"]
        if kind in ("extra_forbidden", "unexpected_keyword_argument"):
            listed = ", ".join(sorted(set(valid) - {"self", "cls"}))
            lines.append(f"{param!r} is not a parameter of {name}. Valid parameters: {listed}.")
            continue
        if kind == "unexpected_positional_argument":
            lines.append(f"{name} takes {len(valid)} arguments at most. Got another: {got}.")
            continue
        if kind in ("missing", "missing_argument", "missing_keyword_only_argument"):
            lines.append(f"The {param!r} parameter of {name} is required.")
            continue
        inner = item.get("ctx", {}).get("error")
        if isinstance(inner, ConfigError):
            # A nested meshfl config already said it in full; say where it sits.
            lines.append(f"{param}: {inner}" if item["loc"] else str(inner))
            continue
        rule = _rule(item["msg"])
        lines.append(f"The {param!r} parameter of {name} must {rule}. Got {got} instead.")
    return " ".join(lines)


def _rule(msg: str) -> str:
    """pydantic's "Input should be greater than 0" as "be greater than 0"."""
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    for prefix in ("Input should be ", "Input must be "):
        if msg.startswith(prefix):
            return "be " + msg[len(prefix) :]
    return "satisfy: " + msg


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
