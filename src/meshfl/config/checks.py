"""Argument checks for plain functions, with the same sentences as the pydantic configs.

"The 'n' parameter of security_events must be an integer >= 1. Got 0 instead."
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from meshfl.config.errors import ConfigError

__all__ = ["check_float", "check_int", "is_number"]


def is_number(value: Any) -> bool:
    """A real number that is not a bool (numpy scalars included)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _subject(name: str, where: str | None) -> str:
    return f"The {name!r} parameter" + (f" of {where}" if where else "")


def check_int(
    value: Any, name: str, *, where: str | None = None, minimum: int, maximum: int | None = None
) -> int:
    """``value`` as an int in ``[minimum, maximum]``; raises :class:`ConfigError` otherwise."""
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if is_int and minimum <= int(value) and (maximum is None or int(value) <= maximum):
        return int(value)
    rule = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    raise ConfigError(f"{_subject(name, where)} must be an integer {rule}. Got {value!r} instead.")


def check_float(
    value: Any, name: str, *, where: str | None = None, rule: str, ok: Callable[[float], bool]
) -> float:
    """``value`` as a float satisfying ``ok`` (described by ``rule``, e.g. "in (0, 1)")."""
    if is_number(value) and not math.isnan(float(value)) and ok(float(value)):
        return float(value)
    raise ConfigError(f"{_subject(name, where)} must be a float {rule}. Got {value!r} instead.")
