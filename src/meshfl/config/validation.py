"""Argument checks for public functions: ``pydantic.validate_call``, meshfl's sentences.

A function decorated with :func:`checked` validates its arguments against their
annotations, and a wrong one raises :class:`ConfigError` in the same words as a wrong config
value::

    @checked
    def security_events(n: Count, *, seed: Seed = 0, label_noise: Unit = 0.0): ...

    security_events(0)
    # ConfigError: The 'n' parameter of security_events must be an integer >= 1. Got 0 instead.

:func:`Int` and :func:`Float` make the rules (``Annotated[int, Int(1, 16)]``); the aliases
below name the common ones. They are strict: a bool, a string or (for ``Int``) a float is
refused rather than converted; numpy scalars are accepted as the Python numbers they hold.
:func:`check` applies the same types to one value where there is no function to decorate
(a dataclass's ``__post_init__``).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, overload

import numpy as np
from pydantic import ConfigDict, PlainValidator, TypeAdapter, ValidationError, validate_call
from pydantic_core import PydanticCustomError

from meshfl.config.base import format_validation_error
from meshfl.config.errors import ConfigError, MeshflError

__all__ = [
    "Count",
    "Float",
    "Int",
    "Name",
    "NonNegative",
    "OpenUnit",
    "Positive",
    "Seed",
    "Skew",
    "Unit",
    "check",
    "checked",
]

F = TypeVar("F", bound=Callable[..., Any])


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def Int(  # noqa: N802
    minimum: int, maximum: int | None = None, *, rule: str | None = None
) -> PlainValidator:
    """An integer in ``[minimum, maximum]`` (no upper bound when ``maximum`` is None).

    ``rule`` replaces the sentence's "an integer in [minimum, maximum]" where a name says it
    better ("an MSP id below 2**64").
    """
    if rule is None:
        rule = "an integer " + (
            f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        )

    def validate(value: Any) -> int:
        if _is_int(value) and minimum <= int(value) and (maximum is None or int(value) <= maximum):
            return int(value)
        raise PydanticCustomError("meshfl_int", f"Input should be {rule}")

    return PlainValidator(validate)


def Float(rule: str, ok: Callable[[float], bool]) -> PlainValidator:  # noqa: N802
    """A float, not NaN, for which ``ok`` holds; ``rule`` says which (e.g. "in (0, 1]")."""

    def validate(value: Any) -> float:
        if _is_real(value) and not math.isnan(float(value)) and ok(float(value)):
            return float(value)
        raise PydanticCustomError("meshfl_float", f"Input should be a float {rule}")

    return PlainValidator(validate)


def _non_empty(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    raise PydanticCustomError("meshfl_str", "Input should be a non-empty str")


Count = Annotated[int, Int(1)]
Name = Annotated[str, PlainValidator(_non_empty)]
NonNegative = Annotated[int, Int(0)]
Seed = NonNegative  # seeds make data reproducible; privacy noise never takes one
Unit = Annotated[float, Float("in [0, 1]", lambda v: 0 <= v <= 1)]
OpenUnit = Annotated[float, Float("in (0, 1)", lambda v: 0 < v < 1)]
Positive = Annotated[float, Float("in (0, inf]", lambda v: v > 0)]
Skew = Annotated[float, Float("in [0, inf)", lambda v: 0 <= v < math.inf)]


@overload
def checked(func: F, /) -> F: ...


@overload
def checked(*, error: type[MeshflError]) -> Callable[[F], F]: ...


def checked(
    func: F | None = None, /, *, error: type[MeshflError] = ConfigError
) -> F | Callable[[F], F]:
    """``pydantic.validate_call`` whose errors are sentences, raised as ``error``.

    ``@checked`` raises :class:`ConfigError`; ``@checked(error=InvalidRecordError)`` another
    error of meshfl's (one that is also a ``ValueError``).
    """
    if func is None:
        return functools.partial(_checked, error=error)
    return _checked(func, error=error)


def _checked(func: F, *, error: type[MeshflError]) -> F:
    validated = validate_call(config=ConfigDict(arbitrary_types_allowed=True))(func)
    name = func.__qualname__.replace(".<locals>", "")
    parameters = list(inspect.signature(func).parameters)  # self included: loc 0 of a method

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return validated(*args, **kwargs)
        except ValidationError as err:
            raise error(format_validation_error(name, err, parameters=parameters)) from None

    return wrapper  # type: ignore[return-value]


@functools.cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def check(value: Any, kind: Any, name: str, *, where: str) -> Any:
    """``value`` validated as ``kind`` (e.g. ``Int(1)``); ConfigError names ``name``."""
    try:
        return _adapter(kind).validate_python(value)
    except ValidationError as err:
        raise ConfigError(format_validation_error(where, err, parameters=[name])) from None
